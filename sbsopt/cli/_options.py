"""Click options shared by ``sbsopt simulate``/``compare`` and the planning commands.

One definition per flag, so ``sbsopt plan ...`` and ``sbsopt sweep`` accept the cluster and
engine flags exactly as ``sbsopt simulate`` does. Choices and defaults are read from their homes:
router names from :data:`sbsopt.sim.config.ROUTER_MODES`, cluster defaults from
:class:`sbsopt.sim.ClusterConfig`, batching names from the two policy registries.
"""

from __future__ import annotations

import functools
from typing import Any

import click

from sbsopt.errors import InvalidInputError
from sbsopt.sim.config import (
    DEFAULT_INTERVAL,
    DEFAULT_ROUTER,
    DEFAULT_SOLVER,
    MODES,
    ROUTERS,
    ClusterConfig,
    routers_for,
)

__all__ = ["ROUTER_CHOICES", "BATCHING_CHOICES", "SOLVER_CHOICES", "cluster_options", "engine_options",
           "router_option", "window_options", "cluster_from_options", "hardware_option", "mtp_option"]

ROUTER_CHOICES = list(ROUTERS)
SOLVER_CHOICES = ["greedy", "cpsat", "auto"]


def _batching_choices() -> dict[str, list[str]]:
    from sbsopt.sim.batching import ITERATION_POLICIES
    from sbsopt.sim.chunking import PREFILL_CHUNKINGS

    return {"disaggregated": list(PREFILL_CHUNKINGS), "colocated": list(ITERATION_POLICIES)}


BATCHING_CHOICES = list(dict.fromkeys(name for names in _batching_choices().values() for name in names))
_PD_FLAGS = ("prefill_instances", "decode_instances", "prefill_ep", "decode_ep")
_COLOCATED_FLAGS = ("instances", "ep")
_SHARED_FLAGS = ("hardware", "mtp_acceptance")


def _apply(options, func):
    return functools.reduce(lambda f, opt: opt(f), reversed(options), func)


def cluster_options(func):
    """``--prefill-instances --decode-instances --prefill-ep --decode-ep`` (disaggregated cluster),
    ``--hardware`` and ``--mtp-acceptance`` (both modes)."""
    return _apply([click.option(f"--{name.replace('_', '-')}", type=int, default=None,
                                help=f"[default: {getattr(ClusterConfig, name)}] disaggregated mode")
                   for name in _PD_FLAGS] + [hardware_option, mtp_option], func)


def hardware_option(func):
    """``--hardware``: a bundled hardware card (h800, h100, h200) or a card path."""
    return click.option("--hardware", default=None,
                        help=f"hardware card: h800, h100, h200 or a .toml path [default: {ClusterConfig.hardware}]")(func)


def mtp_option(func):
    """``--mtp-acceptance``: MTP acceptance rate of decode (0 = no MTP)."""
    return click.option("--mtp-acceptance", type=float, default=None,
                        help="decode MTP acceptance rate, 0 = no MTP [default: "
                        f"{ClusterConfig.mtp_acceptance:g}, DeepSeek-V3 report]")(func)


def engine_options(func):
    """``--mode --batching --token-budget --instances --ep`` (engine batching, colocated cluster)."""
    choices = _batching_choices()
    return _apply([
        click.option("--mode", type=click.Choice(MODES), default="disaggregated", show_default=True,
                     help=f"colocated: instances serve both phases (routers {', '.join(routers_for('colocated'))})"),
        click.option("--batching", type=click.Choice(BATCHING_CHOICES), default="default", show_default=True,
                     help="engine batch formation: " + "; ".join(f"{m} {', '.join(c)}" for m, c in choices.items())),
        click.option("--token-budget", type=int, default=None,
                     help="colocated: Sarathi per-rank token budget (512) / FairBatching per-rank token cap (8192)"),
        click.option("--instances", type=int, default=None, help="[default: 1] colocated instances"),
        click.option("--ep", type=int, default=None,
                     help="DP ranks per colocated instance (default: one 8-GPU node, or the fewest nodes "
                     "the model fits on; 1 = a plain single-GPU engine)"),
    ], func)


def router_option(func):
    """``--router``; its default depends on ``--mode``."""
    return click.option("--router", type=click.Choice(ROUTER_CHOICES), default=None,
                        help=f"[default: {DEFAULT_ROUTER['disaggregated']}; colocated "
                        f"{DEFAULT_ROUTER['colocated']}]")(func)


def window_options(func):
    """``--interval --solver`` of SBS windows (disaggregated mode)."""
    return _apply([
        click.option("--interval", default=None,
                     help=f"SBS interval: engine_paced, adaptive, fixed or fixed:MS [default: {DEFAULT_INTERVAL}; "
                     "disaggregated mode]"),
        click.option("--solver", type=click.Choice(SOLVER_CHOICES), default=None,
                     help=f"SBS window solver [default: {DEFAULT_SOLVER}; disaggregated mode]"),
    ], func)


def cluster_from_options(mode: str, **flags: Any) -> ClusterConfig:
    """The cluster of ``--mode`` from the cluster and engine flags; unset flags take the defaults
    of :class:`~sbsopt.sim.ClusterConfig` (colocated: :func:`~sbsopt.sim.colocated.colocated_cluster`).

    Raises
    ------
    InvalidInputError
        A flag of the other mode was given.

    Examples
    --------
    >>> cluster_from_options("disaggregated", prefill_instances=2, decode_instances=None, prefill_ep=None,
    ...                      decode_ep=None, instances=None, ep=None).prefill_instances
    2
    >>> cluster_from_options("colocated", prefill_instances=2, decode_instances=None, prefill_ep=None,
    ...                      decode_ep=None, instances=None, ep=8)
    Traceback (most recent call last):
    ...
    sbsopt.errors.InvalidInputError: --prefill-instances = 2: expected unset in colocated mode (use --instances and --ep)
    """
    colocated = mode == "colocated"
    shared: dict[str, Any] = {name: flags[name] for name in _SHARED_FLAGS if flags.get(name) is not None}
    if "hardware" in shared:
        from sbsopt.costmodel import load_hardware_card

        load_hardware_card(str(shared["hardware"]))  # a bad card fails here, naming file and field
    for name in _PD_FLAGS if colocated else _COLOCATED_FLAGS:
        if flags.get(name) is not None:
            raise InvalidInputError(f"--{name.replace('_', '-')}", flags[name], f"unset in {mode} mode (use "
                                    + ("--instances and --ep)" if colocated else "the --prefill-*/--decode-* flags)"))
    if colocated:
        from sbsopt.sim.colocated import colocated_cluster

        return colocated_cluster(flags.get("instances"), flags.get("ep"), **shared)
    given: dict[str, Any] = {name: flags[name] for name in _PD_FLAGS if flags.get(name) is not None}
    return ClusterConfig(**given, **shared)
