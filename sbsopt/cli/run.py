"""``sbsopt run``: the main job, a capacity plan on the bundled defaults, SBS versus immediate dispatch."""

from __future__ import annotations

import json
import time

import click

from sbsopt.cli._options import hardware_option, mtp_option
from sbsopt.sim.config import DEFAULT_TPOT_SLO_MS, DEFAULT_TTFT_SLO_MS, IMMEDIATE_ROUTERS

__all__ = ["run"]


@click.command()
@click.option("--trace", default="azure-conv", show_default=True, help="Bundled trace name or path.")
@click.option("--duration-s", type=float, default=20.0, show_default=True,
              help="Arrival window simulated per search step (about 20 s wall on 2 busy cores).")
@click.option("--prefill-instances", type=int, default=1, show_default=True)
@click.option("--decode-instances", type=int, default=1, show_default=True)
@click.option("--ttft-slo-ms", type=float, default=DEFAULT_TTFT_SLO_MS, show_default=True)
@click.option("--tpot-slo-ms", type=float, default=DEFAULT_TPOT_SLO_MS, show_default=True)
@click.option("--attainment", type=float, default=0.9, show_default=True)
@click.option("--tolerance-frac", type=float, default=0.02, show_default=True,
              help="Rate tolerance as a fraction of the prefill-capacity rate.")
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

    \b
    sbsopt run                       # bundled Azure conversation trace, 1 prefill (EP32) + 1 decode (EP144)
    sbsopt run --duration-s 60       # longer windows: slower, closer to steady state
    """
    from sbsopt.errors import InvalidInputError
    from sbsopt.plan import SLO, Runner, max_rate
    from sbsopt.sim import ClusterConfig, prefill_capacity_tok_s
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
    cluster = ClusterConfig(prefill_instances=prefill_instances, decode_instances=decode_instances, **shared)
    capacity_rate = prefill_capacity_tok_s(workload, cluster) / float(workload.input_tokens.mean())
    plans = {}
    with Runner(backend=backend, workers=workers, progress=not as_json) as runner:
        for router in ["sbs", *immediate]:
            plans[router] = max_rate(workload, cluster, router, slo, duration_s=duration_s,
                                     tolerance_req_s=tolerance_frac * capacity_rate,
                                     gpu_hour_price=gpu_hour_price, runner=runner)
    result = _answer(plans, immediate)
    result.update({"trace": workload.name, "duration_s": duration_s, "cluster": {
        "prefill_instances": prefill_instances, "decode_instances": decode_instances,
        "prefill_ep": cluster.prefill_ep, "decode_ep": cluster.decode_ep}, "slo": {
        "ttft_ms": ttft_slo_ms, "tpot_ms": tpot_slo_ms, "attainment": attainment},
        "wall_s": time.perf_counter() - started})
    if as_json:
        click.echo(json.dumps(result))
        return
    from sbsopt.cli.plan import print_table

    note = (f"DeepSeek-V3 on {cluster.hardware.upper()}, {prefill_instances} prefill (EP{cluster.prefill_ep}) + {decode_instances} "
            f"decode (EP{cluster.decode_ep}) instances; trace {workload.name}, each search step simulates a "
            f"{duration_s:g} s arrival window at the rate tried (--duration-s); SLO: TTFT <= {ttft_slo_ms:g} ms "
            f"and TPOT <= {tpot_slo_ms:g} ms for {attainment:.0%} of requests; rate tolerance "
            f"{tolerance_frac * capacity_rate:.3g} req/s.\n{result['verdict']} (* = best immediate router)  "
            f"({result['wall_s']:.0f} s wall)")
    print_table("sbsopt run: highest request rate at the SLO, SBS versus immediate dispatch",
                result["columns"], result["rows"], note=note)


def _answer(plans: dict, immediate: list[str]) -> dict:
    """Table rows (one per router) and the verdict: SBS's rate gain over the best immediate router."""
    def rate(router: str) -> float:
        return plans[router].search.rate_req_s or 0.0

    best = max(immediate, key=rate)
    columns = ["router", "max rate req/s", "fails at", "gain vs best", "P", "D", "GPUs", "TTFT p50 ms",
               "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms", "attainment", "tok/GPU/s", "$/Mtok"]
    rows, plans_json = [], {}
    for router, plan in plans.items():
        d = plan.as_dict()
        c = d["confirm"] or {}
        gain = rate(router) / rate(best) - 1.0 if rate(best) > 0 else None
        rows.append([router + ("*" if router == best else ""),
                     d["max_rate_req_s"] if d["feasible"] else "infeasible", d["fail_rate_req_s"],
                     None if gain is None else f"{gain:+.1%}", c.get("prefill_instances"), c.get("decode_instances"),
                     d["gpus"], c.get("ttft_p50_ms"), c.get("ttft_p99_ms"), c.get("tpot_p50_ms"),
                     c.get("tpot_p99_ms"), c.get("slo_attainment"), d.get("tokens_per_gpu_s"),
                     d.get("cost_per_million_tokens")])
        plans_json[router] = {k: d[k] for k in ("feasible", "bounded", "max_rate_req_s", "fail_rate_req_s",
                                                "tolerance_req_s", "gpus", "evaluations", "message")}
        plans_json[router]["cost_per_million_tokens"] = d.get("cost_per_million_tokens")
        plans_json[router]["confirm"] = {k: c.get(k) for k in ("ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms",
                                                                 "tpot_p50_ms", "tpot_p90_ms", "tpot_p99_ms",
                                                                 "slo_attainment", "requests")}
    gain = rate("sbs") / rate(best) - 1.0 if rate(best) > 0 else float("nan")
    verdict = (f"SBS sustains {rate('sbs'):.4g} req/s at the SLO versus {rate(best):.4g} req/s for the best "
               f"immediate router ({best}): {gain:+.1%}.")
    return {"columns": columns, "rows": rows, "plans": plans_json, "best_immediate": best,
            "sbs_gain": gain, "verdict": verdict}
