"""``sbsopt run``: the main job, a capacity plan on the bundled defaults, SBS versus immediate dispatch."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import click

from sbsopt.cli._options import hardware_option, mtp_option
from sbsopt.sim.config import DEFAULT_TPOT_SLO_MS, DEFAULT_TTFT_SLO_MS, IMMEDIATE_ROUTERS

__all__ = ["run"]

#: The longest arrival window a search step simulates by default (s).
_MAX_DURATION_S = 20.0
#: Production-shaped immediate routing: three router replicas behind a random load balancer, the
#: prefill DP rank from SGLang's bootstrap room (sources: sbsopt.sim.config.SchedulerConfig).
_PRODUCTION = {"router_replicas": 3, "dp_pinning": "bootstrap_room"}


@click.command()
@click.option("--trace", default="azure-conv", show_default=True, help="Bundled trace name or path.")
@click.option("--duration-s", type=float, default=None,
              help=f"Arrival window simulated per search step [default: {_MAX_DURATION_S:g} s, or the trace's "
                   "length at the cluster's saturation rate when shorter].")
@click.option("--prefill-instances", type=int, default=None,
              help="[default: the trace's P:D shape, as many as the decode instances keep up with]")
@click.option("--decode-instances", type=int, default=1, show_default=True)
@click.option("--ttft-slo-ms", type=float, default=DEFAULT_TTFT_SLO_MS, show_default=True)
@click.option("--tpot-slo-ms", type=float, default=DEFAULT_TPOT_SLO_MS, show_default=True)
@click.option("--attainment", type=float, default=0.9, show_default=True)
@click.option("--tolerance-frac", type=float, default=0.02, show_default=True,
              help="Rate tolerance as a fraction of the cluster's saturation rate.")
@click.option("--routers", default=",".join(IMMEDIATE_ROUTERS), show_default=True, help="Immediate routers SBS is compared with.")
@click.option("--gpu-hour-price", type=float, default=2.0, show_default=True)
@click.option("--backend", type=click.Choice(["local", "ray", "serial"]), default="local", show_default=True)
@click.option("--workers", type=int, default=None, help="Parallel simulations (default: one per core).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@hardware_option
@mtp_option
def run(trace, duration_s, prefill_instances, decode_instances, ttft_slo_ms, tpot_slo_ms, attainment,
        tolerance_frac, routers, gpu_hour_price, backend, workers, as_json, hardware, mtp_acceptance) -> None:
    """Plan DeepSeek-V3 on H800 for a trace: highest rate at the SLO, SBS versus the best immediate router.

    Every immediate router is searched twice: with ideal routing (one router reading per-rank
    state) and production-shaped (three replicas, SGLang's bootstrap-room DP pinning).

    \b
    sbsopt run                          # bundled Azure conversation trace, its P:D shape (decode EP144)
    sbsopt run --prefill-instances 1    # a fixed shape instead of the trace's
    """
    from sbsopt.errors import InvalidInputError
    from sbsopt.plan import SLO, Runner, attribute, max_rate, pd_shape, run_one, step_params
    from sbsopt.sim import ClusterConfig, SchedulerConfig, saturation_capacity
    from sbsopt.workload import load_trace

    started = time.perf_counter()
    immediate = [r.strip() for r in routers.split(",") if r.strip()]
    for name in immediate:
        if name not in IMMEDIATE_ROUTERS:
            raise InvalidInputError("--routers", name, f"immediate routers among {', '.join(IMMEDIATE_ROUTERS)}")
    if not immediate:
        raise InvalidInputError("--routers", routers, "at least one immediate router")
    if not 0 < tolerance_frac < 1:
        raise InvalidInputError("--tolerance-frac", tolerance_frac, "a fraction in (0, 1)")
    slo = SLO(ttft_ms=ttft_slo_ms, tpot_ms=tpot_slo_ms, attainment=attainment)
    workload = load_trace(trace)
    shared = {k: v for k, v in (("hardware", hardware), ("mtp_acceptance", mtp_acceptance)) if v is not None}
    if "hardware" in shared:
        from sbsopt.costmodel import load_hardware_card

        load_hardware_card(hardware)  # a bad card fails here, naming file and field
    base = ClusterConfig(decode_instances=decode_instances, **shared)
    shape = pd_shape(workload, base, decode_instances=decode_instances)
    picked = prefill_instances is None
    cluster = dataclasses.replace(base, prefill_instances=shape.prefill_instances if picked else prefill_instances)
    capacity = saturation_capacity(workload, cluster)
    if duration_s is None:
        # one window length for every step: the trace's whole length at saturation when shorter
        duration_s = min(_MAX_DURATION_S, math.floor(10 * (len(workload) - 1) / capacity.req_s) / 10)
    production = SchedulerConfig(**_PRODUCTION)
    search = {"duration_s": duration_s, "tolerance_req_s": tolerance_frac * capacity.req_s,
              "gpu_hour_price": gpu_hour_price}
    with Runner(backend=backend, workers=workers, progress=not as_json) as runner:
        plans = {r: max_rate(workload, cluster, r, slo, runner=runner, **search) for r in ["sbs", *immediate]}
        prod = {"sbs": plans["sbs"], **{r: max_rate(workload, cluster, r, slo, scheduler=production, runner=runner,
                                                      **search) for r in immediate}}
        ideal_answer, prod_answer = _answer(plans, immediate, capacity), _answer(prod, immediate, capacity)
        # both comparisons at the winner's rate, where the other misses: the split says why
        routings = {"ideal": (plans, ideal_answer["best_immediate"], None),
                    "production": (prod, prod_answer["best_immediate"], production)}
        common = {name: max(_rate(table, "sbs"), _rate(table, best)) for name, (table, best, _) in routings.items()}
        steps: dict[tuple[str, str], int] = {}
        tasks: list[dict] = []
        for name, (table, best, scheduler) in routings.items():
            for router in ("sbs", best):
                # a rate the router's search simulated already (the winner's own, or one both tried)
                if common[name] > 0 and common[name] not in table[router].search.evaluated:
                    steps[name, router] = len(tasks)
                    tasks.append(step_params(workload, cluster, router, slo, common[name], duration_s=duration_s,
                                             scheduler=None if router == "sbs" else scheduler))
        rows = runner.map(run_one, tasks, description="mechanism") if tasks else []
    mechanism: dict[str, dict | None] = {}
    for name, (table, best, _) in routings.items():
        if common[name] <= 0:
            mechanism[name] = None  # both infeasible: no rate to compare at
            continue
        at = {r: rows[steps[name, r]] if (name, r) in steps else table[r].search.evaluated[common[name]][1]
              for r in ("sbs", best)}
        passing, failing = ("sbs", best) if _rate(table, "sbs") >= _rate(table, best) else (best, "sbs")
        mechanism[name] = {"rate_req_s": common[name], "passing_router": passing, "failing_router": failing,
                           **attribute(at[passing] or {}, at[failing] or {})}
    result = {**ideal_answer, "trace": workload.name, "duration_s": duration_s, "cluster": {
        "prefill_instances": cluster.prefill_instances, "decode_instances": cluster.decode_instances,
        "prefill_ep": cluster.prefill_ep, "decode_ep": cluster.decode_ep}, "slo": {
        "ttft_ms": ttft_slo_ms, "tpot_ms": tpot_slo_ms, "attainment": attainment},
        "shape": {**shape.as_dict(), "picked": picked}, "capacity": capacity.as_dict(),
        "production": {"scheduler": dict(_PRODUCTION), **prod_answer}, "mechanism": mechanism,
        "wall_s": time.perf_counter() - started}
    if as_json:
        click.echo(json.dumps(result))
        return
    _print(result, cluster, search["tolerance_req_s"])


def _rate(plans: dict, router: str) -> float:
    return plans[router].search.rate_req_s or 0.0


def _answer(plans: dict, immediate: list[str], capacity) -> dict:
    """Table rows (one per router) and the verdict: SBS's rate gain over the best immediate router."""
    best = max(immediate, key=lambda r: _rate(plans, r))
    columns = ["router", "max rate req/s", "fails at", "gain vs best", "P", "D", "GPUs", "TTFT p50 ms",
               "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms", "attainment", "tok/GPU/s", "$/Mtok"]
    rows, plans_json = [], {}
    for router, plan in plans.items():
        d = plan.as_dict()
        c = d["confirm"] or {}
        gain = _rate(plans, router) / _rate(plans, best) - 1.0 if _rate(plans, best) > 0 else None
        rows.append([router + ("*" if router == best else ""),
                     d["max_rate_req_s"] if d["feasible"] else "infeasible", d["fail_rate_req_s"],
                     None if gain is None else f"{gain:+.1%}", c.get("prefill_instances"), c.get("decode_instances"),
                     d["gpus"], c.get("ttft_p50_ms"), c.get("ttft_p99_ms"), c.get("tpot_p50_ms"),
                     c.get("tpot_p99_ms"), c.get("slo_attainment"), d.get("tokens_per_gpu_s"),
                     d.get("cost_per_million_tokens")])
        plans_json[router] = {k: d[k] for k in ("feasible", "bounded", "max_rate_req_s", "fail_rate_req_s",
                                                "tolerance_req_s", "gpus", "evaluations", "message")}
        plans_json[router]["cost_per_million_tokens"] = d.get("cost_per_million_tokens")
        # the decode side's share of its saturation rate at the answer (Little's law, sbsopt.sim.capacity)
        plans_json[router]["decode_load"] = _rate(plans, router) / capacity.decode_req_s
        plans_json[router]["confirm"] = {k: c.get(k) for k in (
            "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p90_ms", "tpot_p99_ms",
            "slo_attainment", "requests", "sched_wait_ms", "engine_wait_ms", "exec_ms", "bubble_fraction",
            "chunk_utilization", "decode_batch_mean", "decode_batch_imbalance")}
    gain = _rate(plans, "sbs") / _rate(plans, best) - 1.0 if _rate(plans, best) > 0 else float("nan")
    verdict = (f"SBS sustains {_rate(plans, 'sbs'):.4g} req/s at the SLO versus {_rate(plans, best):.4g} req/s for "
               f"the best immediate router ({best}): {gain:+.1%}.")
    unsettled = [f"{r}: {plans[r].message}" for r in ("sbs", best) if plans[r].search.feasible and not plans[r].bounded]
    if unsettled:
        verdict += " Not a settled answer (" + "; ".join(unsettled) + ")."
    return {"columns": columns, "rows": rows, "plans": plans_json, "best_immediate": best,
            "sbs_gain": gain, "verdict": verdict}


def _mechanism_line(name: str, m: dict) -> str:
    """One line: who misses at the common rate, on which SLO, and the split that says why."""
    a, b = m["passing"], m["failing"]

    def pair(key: str, fmt: str) -> str:
        return " vs ".join("-" if row.get(key) is None else format(row[key], fmt) for row in (b, a))

    def split(row: dict) -> str:
        return "/".join(f"{row.get(k) or 0.0:.0f}" for k in ("sched_wait_ms", "engine_wait_ms", "exec_ms"))

    return (f"{name}: at {m['rate_req_s']:.4g} req/s {m['failing_router']} misses on {m['side'].upper()} "
            f"(attainment {pair('slo_attainment', '.0%')} for {m['passing_router']}) -> {m['mechanism']}. "
            f"Mean TTFT buffer/queue/exec {split(b)} vs {split(a)} ms; bubbles {pair('bubble_fraction', '.1%')}; "
            f"chunk use {pair('chunk_utilization', '.1%')}; TPOT p99 {pair('tpot_p99_ms', '.1f')} ms; decode batch "
            f"imbalance (max/mean) {pair('decode_batch_imbalance', '.2f')}.")


def _print(result: dict, cluster, tolerance_req_s: float) -> None:
    from sbsopt.cli.plan import print_table

    shape, sbs = result["shape"], result["plans"]["sbs"]
    c = result["cluster"]
    rule = (f"the trace's P:D shape: one prefill instance saturates at {shape['prefill_req_s']:.4g} req/s and one "
            f"decode instance at {shape['decode_req_s']:.4g} req/s on its length mix (MTP acceptance "
            f"{cluster.mtp_acceptance:g}), ratio {shape['ratio']:.3g}" if shape["picked"] else
            f"--prefill-instances (the trace's own shape would be {shape['prefill_instances']}:{shape['decode_instances']})")
    confirm = sbs["confirm"]
    decode = (f"Decode at SBS's answer: {sbs['decode_load']:.0%} of the decode saturation rate, mean batch "
              f"{confirm.get('decode_batch_mean') or float('nan'):.3g} of {cluster.max_decode_batch} per rank, "
              f"TPOT p99 {confirm.get('tpot_p99_ms') or float('nan'):.3g} ms (SLO {result['slo']['tpot_ms']:g} ms).")
    note = (f"DeepSeek-V3 on {cluster.hardware.upper()}, {c['prefill_instances']} prefill (EP{c['prefill_ep']}) + "
            f"{c['decode_instances']} decode (EP{c['decode_ep']}) instances: {rule}. Trace {result['trace']}, each "
            f"search step simulates a {result['duration_s']:g} s arrival window at the rate tried (--duration-s); "
            f"SLO: TTFT <= {result['slo']['ttft_ms']:g} ms and TPOT <= {result['slo']['tpot_ms']:g} ms for "
            f"{result['slo']['attainment']:.0%} of requests; rate tolerance {tolerance_req_s:.3g} req/s. {decode}\n"
            f"{result['verdict']} (* = best immediate router)")
    print_table("sbsopt run: highest request rate at the SLO, SBS versus immediate dispatch (ideal routing)",
                result["columns"], result["rows"], note=note)
    prod = result["production"]
    lines = [f"Production-shaped: {prod['verdict']}",
             *(_mechanism_line(name, m) for name, m in (("Ideal", result["mechanism"]["ideal"]),
                                                        ("Production-shaped", result["mechanism"]["production"]))
               if m is not None),
             f"({result['wall_s']:.0f} s wall)"]
    print_table(f"Immediate routers production-shaped ({prod['scheduler']['router_replicas']} router replicas, "
                f"DP rank from the bootstrap room; SBS unchanged)", prod["columns"], prod["rows"],
                note="\n".join(lines))
