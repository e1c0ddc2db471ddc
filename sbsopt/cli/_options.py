"""Click options shared by ``sbsopt simulate``/``compare`` and the planning commands.

One definition per flag, so ``sbsopt plan ...`` and ``sbsopt sweep`` accept the cluster and
engine flags exactly as ``sbsopt simulate`` does.
"""

from __future__ import annotations

import functools

import click

__all__ = ["ROUTER_CHOICES", "cluster_options", "engine_options", "colocated_engine"]

ROUTER_CHOICES = ["sbs", "round_robin", "least_requests", "least_tokens", "vllm_score", "shortest_queue",
                  "fair_load"]


def _apply(options, func):
    return functools.reduce(lambda f, opt: opt(f), reversed(options), func)


def cluster_options(func):
    """``--prefill-instances --decode-instances --prefill-ep --decode-ep`` (disaggregated cluster)."""
    return _apply([
        click.option("--prefill-instances", type=int, default=4, show_default=True),
        click.option("--decode-instances", type=int, default=1, show_default=True),
        click.option("--prefill-ep", type=int, default=32, show_default=True),
        click.option("--decode-ep", type=int, default=144, show_default=True),
    ], func)


def engine_options(func):
    """``--mode --batching --token-budget --instances --ep`` (engine batching, colocated cluster)."""
    return _apply([
        click.option("--mode", type=click.Choice(["disaggregated", "colocated"]), default="disaggregated",
                     show_default=True, help="colocated: instances serve both phases (router fair_load, "
                     "round_robin or least_tokens)"),
        click.option("--batching", type=click.Choice(["default", "sarathi", "fairbatching"]), default="default",
                     show_default=True, help="engine-level batch formation"),
        click.option("--token-budget", type=int, default=None,
                     help="Sarathi per-rank token budget (512) / FairBatching per-rank token cap (8192)"),
        click.option("--instances", type=int, default=1, show_default=True, help="colocated instances"),
        click.option("--ep", type=int, default=None,
                     help="DP ranks per colocated instance (default: one 8-GPU node, or the fewest nodes "
                     "the model fits on; 1 = a plain single-GPU engine)"),
    ], func)


def colocated_engine(batching: str, *, token_budget: int | None, tpot_slo_ms: float | None):
    """The colocated engine policy object for ``--batching`` (``default`` means Sarathi).

    Examples
    --------
    >>> colocated_engine("fairbatching", token_budget=None, tpot_slo_ms=50).tpot_slo_s
    0.05
    """
    from sbsopt.sim.batching import make_policy
    from sbsopt.sim.colocated import DEFAULT_TPOT_SLO_MS

    name = "sarathi" if batching == "default" else batching
    return make_policy(name, tpot_slo_s=(tpot_slo_ms or DEFAULT_TPOT_SLO_MS) / 1e3, token_budget=token_budget)
