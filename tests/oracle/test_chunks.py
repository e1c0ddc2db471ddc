"""What the oracle chunks, with the bundled cost model: never a lone prompt that fits an idle
unit whole (its remainder would need another forward), always one that fits no unit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sbsopt.oracle import answer_line
from sbsopt.window import PrefillWindow, objective

_UNITS = [{"id": f"u{j}", "load_tokens": 0, "capacity_tokens": 16384, "free_kv_blocks": 1000}
          for j in range(2)]


def _ask(tokens: int, method: str, units: list[dict] = _UNITS) -> dict:
    line = json.dumps({"id": "w", "phase": "prefill", "method": method, "units": units,
                       "requests": [{"id": "r1", "new_tokens": tokens, "cached_tokens": 0,
                                     "arrival_s": 0.0}]})
    return json.loads(answer_line(line))


@pytest.mark.parametrize("method", ["greedy", "cpsat", "auto"])
@pytest.mark.parametrize("tokens", [1200, 5000, 12_000])
def test_a_lone_prompt_that_fits_an_idle_unit_runs_whole(tokens: int, method: str) -> None:
    answer = _ask(tokens, method)
    assert answer["chunks"] == {} and answer["assignment"] == {"r1": "u0"}
    # every chunk size costs more: the remainder's forward is priced
    w = PrefillWindow.from_arrays([tokens], [0], [0.0], capacity_tokens=[16384, 16384],
                                  free_kv_blocks=[1000, 1000])
    whole = objective(w, np.array([0]))
    assert answer["objective"] == pytest.approx(whole)
    assert min(objective(w, np.array([0]), {0: k}) for k in range(1, tokens, 37)) > whole


@pytest.mark.parametrize("method", ["greedy", "cpsat", "auto"])
def test_a_prompt_no_unit_holds_whole_fills_a_unit_with_its_chunk(method: str) -> None:
    """40,000 tokens on units of 16,384: placing 16,384 now beats deferring all of it."""
    answer = _ask(40_000, method, _UNITS + [{**_UNITS[0], "id": "u2"}])
    assert answer["chunks"] == {"r1": 16384} and answer["deferred"] == []
