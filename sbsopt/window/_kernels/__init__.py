"""Numba kernels of the greedy heuristics and the bounds, with plain-Python references.

Kernels take contiguous arrays only and never allocate Python objects; the typed wrappers in
``sbsopt.window.greedy`` and ``sbsopt.window.bounds`` validate and copy. Modules by concern:

* ``prefill``: the water-filling pass; ``chunks``: first chunks, chunk fill, step-chunk trim;
* ``decode``: the decode passes and objective;
* ``searches``: local search and ruin and recreate; ``exchange``: the exchange search;
  ``steps``: per-instance step helpers they share;
* ``relaxation``: fractional knapsack and chunk-fraction relaxations (``sbsopt.window.relaxation``
  in numpy); ``bounds``: analytic bounds; ``split``: the step-split bound;
* ``orders``: the greedy's request orders; ``drivers``: one call per window;
* ``reference``: the plain-Python ``*_py`` statements the tests compare the kernels with.

The names other modules use are re-exported here.
"""

from sbsopt.window._kernels.bounds import decode_analytic_bound, prefill_analytic_bound
from sbsopt.window._kernels.chunks import chunk_fill, trim_step_chunks
from sbsopt.window._kernels.decode import decode_iqr_lex, decode_min_step, decode_value
from sbsopt.window._kernels.drivers import (
    decode_best_of,
    decode_solve,
    prefill_best_of,
    prefill_solve,
)
from sbsopt.window._kernels.exchange import EXCHANGE_MEMBERS, prefill_exchange_search
from sbsopt.window._kernels.orders import (
    ORDER_DENSITY,
    ORDER_KNAPSACK,
    ORDER_LPT,
    ORDER_PBAA,
    prefill_orders,
)
from sbsopt.window._kernels.prefill import prefill_greedy
from sbsopt.window._kernels.reference import (
    chunk_fill_py,
    decode_iqr_lex_py,
    decode_min_step_py,
    prefill_greedy_py,
)
from sbsopt.window._kernels.searches import prefill_local_search, prefill_ruin_recreate
from sbsopt.window._kernels.split import prefill_split_bound

__all__ = [
    "prefill_greedy",
    "prefill_greedy_py",
    "chunk_fill",
    "trim_step_chunks",
    "chunk_fill_py",
    "decode_iqr_lex",
    "decode_iqr_lex_py",
    "decode_min_step",
    "decode_min_step_py",
    "decode_value",
    "prefill_local_search",
    "prefill_ruin_recreate",
    "prefill_exchange_search",
    "EXCHANGE_MEMBERS",
    "prefill_analytic_bound",
    "decode_analytic_bound",
    "prefill_split_bound",
    "ORDER_PBAA",
    "ORDER_LPT",
    "ORDER_DENSITY",
    "ORDER_KNAPSACK",
    "prefill_orders",
    "prefill_best_of",
    "decode_best_of",
    "prefill_solve",
    "decode_solve",
]
