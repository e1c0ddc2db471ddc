"""``sbsopt validate``: every public measurement vs the cost model, in and out of sample."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

__all__ = ["validate"]


@click.command()
@click.option("--hardware", default="h800", show_default=True,
              help="Hardware card the measurements are compared on (they were taken on H800).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def validate(hardware, as_json) -> None:
    """Predicted vs measured for every row of models/calibration, plus leave-one-group-out.

    \b
    sbsopt validate
    sbsopt validate --json
    """
    from sbsopt.costmodel import load_hardware_card
    from sbsopt.costmodel.validate import leave_one_group_out, summary, validation_table

    hw = load_hardware_card(hardware)
    rows = validation_table(hardware=hw) + leave_one_group_out(hardware=hw)
    stats = summary(rows)
    if as_json:
        payload = {"rows": [{**asdict(r), "error": r.error} for r in rows], "summary": stats}
        click.echo(json.dumps(payload, sort_keys=True))
        return
    width = max(len(r.name) for r in rows)
    click.echo(f"{'group':<34} {'measurement':<{width}} {'predicted':>11} {'measured':>11} {'error':>8}  fit")
    for r in rows:
        click.echo(f"{r.group:<34} {r.name:<{width}} {r.predicted:>11.2f} {r.measured:>11.2f} {r.error:>+8.1%}  "
                   f"{'yes' if r.in_fit else 'no'}  {r.unit}")
    for name, s in stats.items():
        click.echo(f"{name}: median |err| {s['median_abs_err']:.1%}, max {s['max_abs_err']:.1%} over {s['rows']} rows")
