"""The main job's headline tables: ``sbsopt run --json`` (SBS versus immediate dispatch, highest
request rate at the SLO, ideal and production-shaped routing, and the mechanism of the gain),
written as a results fragment.

Run: ``python benchmarks/main_job.py [--markdown PATH] [-- SBSOPT_RUN_ARGS...]``; the arguments
after ``--`` go to ``sbsopt run`` unchanged.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import _report

_SHOWN = ["router", "max rate req/s", "gain vs best", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms",
          "tok/GPU/s", "$/Mtok"]
_MECHANISM = [("router", None), ("SLO attainment", "slo_attainment"), ("TTFT attainment", "slo_attainment_ttft"),
              ("buffer ms", "sched_wait_ms"), ("engine queue ms", "engine_wait_ms"), ("exec ms", "exec_ms"),
              ("bubbles", "bubble_fraction"), ("chunk use", "chunk_utilization"), ("TPOT p99 ms", "tpot_p99_ms"),
              ("decode imbalance", "decode_batch_imbalance")]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _metric(key: str, value: float | None) -> str:
    if value is None:
        return ""
    if key.endswith("_ms"):
        return f"{value:.1f}" if key.startswith("tpot") else f"{value:.0f}"
    return f"{value:.2f}" if key == "decode_batch_imbalance" else f"{value:.1%}"


def _rates(result: dict) -> _report.Table:
    """One row per router and routing; SBS, one central scheduler, is the same under both."""
    table = _report.Table(["routing", *_SHOWN, "decode load"], "ll" + "r" * len(_SHOWN))
    for routing, answer in (("ideal", result), ("production", result["production"])):
        for row in answer["rows"]:
            cells = dict(zip(answer["columns"], row, strict=True))
            router = cells["router"].rstrip("*")
            if router == "sbs" and routing == "production":
                continue
            load = answer["plans"][router]["decode_load"]
            print(table.add("central" if router == "sbs" else routing, *(_cell(cells[c]) for c in _SHOWN),
                            f"{load:.0%}"))
    return table


def _mechanism(result: dict) -> _report.Table:
    """Both routers of each comparison at the winner's highest rate, where the other misses."""
    table = _report.Table(["routing", "rate req/s", *(name for name, _ in _MECHANISM), "mechanism"],
                          "lrl" + "r" * (len(_MECHANISM) - 1) + "l")
    for routing, m in result["mechanism"].items():
        for side in ("passing", "failing"):
            row = m[side]
            cells = [_metric(key, row.get(key)) for _, key in _MECHANISM[1:]]
            print(table.add(routing, f"{m['rate_req_s']:.4g}", m[f"{side}_router"], *cells,
                            m["mechanism"] if side == "failing" else "passes"))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _report.add_option(parser)
    parser.add_argument("run_args", nargs="*", help="arguments for `sbsopt run` (after --)")
    args = parser.parse_args()
    sbsopt = [sys.executable, "-c", "from sbsopt.cli import main; main()"]
    done = subprocess.run([*sbsopt, "run", "--json", *args.run_args],
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    rates = _rates(result)
    cluster, slo, shape = result["cluster"], result["slo"], result["shape"]
    how = (f"the trace's P:D shape (one prefill instance saturates at {shape['prefill_req_s']:.4g} req/s, one "
           f"decode instance at {shape['decode_req_s']:.4g} req/s)" if shape["picked"] else "set by --prefill-instances")
    setup = (f"Trace {result['trace']}, {cluster['prefill_instances']} prefill (EP{cluster['prefill_ep']}) + "
             f"{cluster['decode_instances']} decode (EP{cluster['decode_ep']}) instances, {how}; "
             f"{result['plans']['sbs']['gpus']} GPUs; {result['duration_s']:g} s of arrivals per search step; SLO "
             f"TTFT <= {slo['ttft_ms']:g} ms and TPOT <= {slo['tpot_ms']:g} ms for {slo['attainment']:.0%} of "
             f"requests; decode load = max rate / decode saturation rate. Ideal: {result['verdict']} "
             f"Production-shaped ({result['production']['scheduler']['router_replicas']} router replicas, DP rank "
             f"from the bootstrap room): {result['production']['verdict']} ({result['wall_s']:.0f} s wall)")
    print(setup)
    mechanism = _mechanism(result)
    why = ("Mechanism: both routers of each comparison at the higher of their two max rates (mean TTFT split into "
           "the SBS buffer, the engine queue and execution; decode imbalance = fullest decode rank's batch over "
           "the mean).")
    print(why)
    _report.write(args.markdown, [rates, setup, mechanism, why])


if __name__ == "__main__":
    main()
