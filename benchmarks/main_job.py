"""The main job's headline table: ``sbsopt run --json`` (SBS versus immediate dispatch, highest
request rate at the SLO), written as a results fragment.

Run: ``python benchmarks/main_job.py [--markdown PATH] [-- SBSOPT_RUN_ARGS...]``; the arguments
after ``--`` go to ``sbsopt run`` unchanged.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import _report

_SHOWN = ["router", "max rate req/s", "gain vs best", "GPUs", "TTFT p50 ms", "TTFT p99 ms",
          "TPOT p50 ms", "TPOT p99 ms", "tok/GPU/s", "$/Mtok"]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _report.add_option(parser)
    parser.add_argument("run_args", nargs="*", help="arguments for `sbsopt run` (after --)")
    args = parser.parse_args()
    sbsopt = [sys.executable, "-c", "from sbsopt.cli import main; main()"]
    done = subprocess.run([*sbsopt, "run", "--json", *args.run_args],
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    columns = result["columns"]
    table = _report.Table(_SHOWN, "l" + "r" * (len(_SHOWN) - 1))
    for row in result["rows"]:
        cells = dict(zip(columns, row, strict=True))
        print(table.add(*(_cell(cells[c]) for c in _SHOWN)))
    cluster, slo = result["cluster"], result["slo"]
    setup = (f"Trace {result['trace']}, {cluster['prefill_instances']} prefill (EP{cluster['prefill_ep']}) + "
             f"{cluster['decode_instances']} decode (EP{cluster['decode_ep']}) instances, "
             f"{result['duration_s']:g} s of arrivals per search step; SLO TTFT <= {slo['ttft_ms']:g} ms and "
             f"TPOT <= {slo['tpot_ms']:g} ms for {slo['attainment']:.0%} of requests. "
             f"{result['verdict']} ({result['wall_s']:.0f} s wall)")
    print(setup)
    _report.write(args.markdown, [table, setup])


if __name__ == "__main__":
    main()
