"""sbsopt: staggered-window batch formation and DP-unit assignment for DP+EP LLM serving.

Subpackages (each depends only on those listed before it):

- :mod:`sbsopt.costmodel`: calibrated H800 DP+EP cost model of one forward pass.
- :mod:`sbsopt.window`: one window as an integer program (CP-SAT) or a Numba greedy.
- :mod:`sbsopt.workload`: public traces and synthetic arrival processes.
- :mod:`sbsopt.sim`: discrete-event simulator of a P/D-disaggregated cluster.
- :mod:`sbsopt.plan`: capacity planning and parameter sweeps.
- :mod:`sbsopt.oracle`: the policy-oracle embedding API and JSON-lines server.

Importing :mod:`sbsopt` is cheap: subpackages are imported on first use.
"""

from __future__ import annotations

from sbsopt import errors

__all__ = ["errors", "__version__"]
__version__ = "0.1.0"
