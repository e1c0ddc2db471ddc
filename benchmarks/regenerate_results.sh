#!/usr/bin/env bash
# Regenerate every results fragment the docs include (docs/results/generated/*.md), one
# benchmark after another on an otherwise idle machine (about 15 minutes on 2 cores). Each
# fragment's first line records the date, the commit and its own command.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
out=docs/results/generated
mkdir -p "$out"
run() { echo "== $*" >&2; "$PY" "$@"; }
run benchmarks/window.py --markdown "$out/window.md"
run benchmarks/window.py --no-chunking --phase prefill --markdown "$out/window_whole.md"
run benchmarks/window.py --trace mooncake-conv --phase prefill --markdown "$out/window_mooncake.md"
run benchmarks/cpsat.py --markdown "$out/cpsat.md"
run benchmarks/cpsat.py --size 128x16 --markdown "$out/cpsat_128x16.md"
run benchmarks/budget.py --markdown "$out/budget.md"
run benchmarks/simulate.py --markdown "$out/simulate.md"
run benchmarks/sweep.py --workers 1 --markdown "$out/sweep.md"
run benchmarks/sbs_vs_immediate.py --markdown "$out/sbs_vs_immediate.md"
run benchmarks/sbs_vs_immediate.py --traces sharegpt,arxiv --markdown "$out/sbs_vs_immediate_lengths.md"
run benchmarks/sbs_vs_immediate.py --traces sharegpt,arxiv --limit 10000,20000,all --production-replicas 0 \
    --markdown "$out/sbs_vs_immediate_lengths_prefixes.md"
run benchmarks/sbs_vs_immediate.py --traces azure-conv,azure-code --limit 4000,8000,12000 \
    --markdown "$out/sbs_vs_immediate_azure_prefixes.md"
run benchmarks/sbs_vs_immediate.py --traces mooncake-conv --limit 3000,3500,4000,4500,5000,5500,6000 \
    --markdown "$out/sbs_vs_immediate_prefixes.md"
run benchmarks/fairbatching.py --duration-s 5 --markdown "$out/fairbatching.md"
run benchmarks/costmodel.py --markdown "$out/costmodel.md"
run benchmarks/main_job.py --markdown "$out/main_job.md"
run benchmarks/serve.py --stack --repeats 2 --markdown "$out/serve.md"
"$PY" benchmarks/sync_readme.py
