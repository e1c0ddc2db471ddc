"""Engine reports of the disaggregated simulator: writing a pool's report into its router views.

Engines report every ``SchedulerConfig.report_period_s``. The simulator passes report
boundaries lazily (no heap event; ``_Simulation.reports_before``) and marks both pools' views
stale; a pool's report is written before the next event of that pool, which is the first to
read the view or change what the report reads. At a trace's own light rate that is a few
reports per request, so the common case (one view under router pinning, as SBS has) is one
compiled call; the others go through :meth:`sbsopt.sim.router.RouterPool.report`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sbsopt._jit import njit

if TYPE_CHECKING:  # the simulator imports this module
    from sbsopt.sim.simulator import _Simulation

__all__ = ["PREFILL_POOL", "DECODE_POOL", "apply_report", "write_reports"]

# the pools of a report, as bits
PREFILL_POOL, DECODE_POOL = 1, 2


@njit()
def write_reports(pools, pstate, pview, dcounts, dblocks, dview):  # pragma: no cover - compiled
    """Write the reports of ``pools`` into view states (rows tokens, waiting, running): prefill
    from ``pstate`` (rows queued tokens, queued requests, running), waiting = queued less
    running; decode from ``dcounts`` (batch, waiting) and ``dblocks`` (used, waiting blocks),
    tokens = all the blocks. The arithmetic is RouterPool.report's inputs', element by element."""
    if pools & PREFILL_POOL:
        for j in range(pstate.shape[1]):
            pview[0, j] = pstate[0, j]
            pview[1, j] = pstate[1, j] - pstate[2, j]
            pview[2, j] = pstate[2, j]
    if pools & DECODE_POOL:
        for j in range(dcounts.shape[1]):
            dview[0, j] = np.float64(dblocks[0, j] + dblocks[1, j])
            dview[1, j] = dcounts[1, j]
            dview[2, j] = dcounts[0, j]


def apply_report(sim: _Simulation, pools: int = PREFILL_POOL | DECODE_POOL) -> None:
    """Overwrite the router views of ``pools`` (bits) with their engines' report."""
    direct = pools & sim.direct_pools
    if direct:
        write_reports(direct, *sim.report_arrays)
    rest = pools & ~direct
    if rest & PREFILL_POOL:
        tokens, queued, running = sim.pstate
        sim.prouter.report(tokens, queued - running, running)
    if rest & DECODE_POOL:
        batch, waiting = sim.dcounts
        sim.drouter.report((sim.dblocks[0] + sim.dblocks[1]).astype(np.float64), waiting, batch)
    sim.stale &= ~pools
