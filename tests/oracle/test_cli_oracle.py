"""``sbsopt oracle`` as a process: JSON lines in and out, no traceback on stdout."""

from __future__ import annotations

import json
import subprocess
import sys

_ENTRY = "import sys; from sbsopt.cli import main; sys.exit(main())"


def test_oracle_process_round_trip() -> None:
    good = {"id": "w1", "phase": "prefill", "method": "greedy", "time_limit_ms": 50,
            "requests": [{"id": "r1", "new_tokens": 1200, "cached_tokens": 0, "arrival_s": 0.0}],
            "units": [{"id": "u0", "load_tokens": 0, "capacity_tokens": 16384,
                       "free_kv_blocks": 1000}]}
    lines = [json.dumps(good), "garbage {", json.dumps({**good, "id": "w2"})]
    proc = subprocess.run([sys.executable, "-c", _ENTRY, "oracle"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [a["id"] for a in answers] == ["w1", None, "w2"]
    assert answers[0]["assignment"] == {"r1": "u0"} and answers[1]["status"] == "error"
