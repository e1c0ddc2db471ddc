"""Adapters that let existing routers consult the SBS sidecar (``sbsopt serve``).

- :class:`~sbsopt.serve.adapters.vllm_router.SbsRoutingLogic`: a vLLM production-stack routing
  class (``route_request(endpoints, engine_stats, request_stats, request) -> url``).

The SGLang / vLLM Rust routers are configured, not subclassed: see ``docs/guides/serve.md``.
"""

from sbsopt.serve.adapters.vllm_router import SbsRoutingLogic

__all__ = ["SbsRoutingLogic"]
