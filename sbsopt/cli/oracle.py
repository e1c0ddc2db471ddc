"""``sbsopt oracle``: the JSON-lines policy oracle on stdin/stdout."""

from __future__ import annotations

import sys

import click

__all__ = ["oracle"]


@click.command()
@click.option("--model", default="deepseek-v3", show_default=True, help="Model card.")
@click.option("--hardware", default="h800", show_default=True, help="Hardware card.")
@click.option("--ep", default=32, show_default=True, type=click.IntRange(min=1),
              help="DP units per instance of the cost model (EP size).")
@click.option("--warm/--no-warm", default=True, show_default=True,
              help="Compile the greedy kernels before reading the first line.")
@click.option("--max-line-mb", default=64.0, show_default=True,
              type=click.FloatRange(min=0.001),
              help="Longest input line accepted; a longer one gets an error answer.")
def oracle(model: str, hardware: str, ep: int, warm: bool, max_line_mb: float) -> None:
    """Answer one window problem per stdin line with one JSON answer per stdout line.

    The schema is in docs/guides/oracle.md (Oracle protocol). Bad lines get an
    error answer; the process serves until EOF.
    """
    from sbsopt.costmodel import load_cost_model
    from sbsopt.oracle import serve
    from sbsopt.window import warm_up

    cost_model = load_cost_model(model, hardware, ep=ep)

    def coefficients(phase: str):
        if phase == "prefill":
            return cost_model.prefill_coefficients()
        return cost_model.decode_coefficients()

    if warm:
        warm_up()
    serve(sys.stdin.buffer, sys.stdout.buffer, coefficients=coefficients,
          max_line_bytes=int(max_line_mb * 2**20))
