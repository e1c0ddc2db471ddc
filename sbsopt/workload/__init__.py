"""Request workloads: public-trace loaders, synthetic arrivals, the prefix cache."""

from sbsopt.workload.arrivals import ARRIVAL_PROCESSES, synthetic_arrivals
from sbsopt.workload.prefix_cache import PrefixCache
from sbsopt.workload.trace import BUNDLED_TRACES, Workload, load_trace

__all__ = [
    "ARRIVAL_PROCESSES",
    "BUNDLED_TRACES",
    "PrefixCache",
    "Workload",
    "load_trace",
    "synthetic_arrivals",
]
