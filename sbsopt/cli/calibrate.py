"""``sbsopt calibrate``: refit the cost-model coefficients from kernel measurements."""

from __future__ import annotations

import click

__all__ = ["calibrate"]


@click.command()
@click.option("--profile", type=click.Path(dir_okay=False), default=None,
              help="Prefill kernel profile CSV (format of models/calibration/dsv3_profile_prefill_kernels_ep32.csv).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the fitted JSON (default: models/calibration/fitted_coefficients.json).")
@click.option("--held-out/--no-held-out", default=True, show_default=True,
              help="Also print the held-out checks (DeepEP, masked GEMMs, FlashMLA).")
def calibrate(profile, out, held_out) -> None:
    """Fit per-kernel-class coefficients (cvxpy, Huber, non-negative) and print the errors."""
    from sbsopt._optional import require
    from sbsopt.costmodel.calibrate import calibrate as run
    from sbsopt.costmodel.calibrate import held_out_checks

    # fail before reading the measurements, naming the command rather than the fit function
    require("cvxpy", "calibrate", feature="sbsopt calibrate")
    report = run(profile, out=out)
    click.echo(report.table())
    for name, predicted, measured, err in report.layer_rows:
        click.echo(f"{name:<40} {predicted:>10.1f} {measured:>10.1f} {err:>+8.1%}")
    if held_out:
        click.echo("held out (never fitted):")
        for name, predicted, measured, err, note in held_out_checks(report.coefficients):
            click.echo(f"{name:<45} {predicted:>9.2f} {measured:>9.2f} {err:>+8.1%}  {note}")
