"""HTTP serving: the oracle over HTTP, the SBS sidecar and front, a mock engine, trace replay.

``sbsopt serve`` puts the staggered-window scheduler in front of DP-attention + EP workers
(real SGLang/vLLM servers or :mod:`sbsopt.serve.mock` engines); ``sbsopt mock-engine`` runs one
cost-model-timed engine; ``sbsopt replay`` replays a trace over the wire. See
``docs/guides/serve.md`` for the protocol.

Only the configuration and the pure scheduling state import without aiohttp; the HTTP modules
(:mod:`~sbsopt.serve.app`, :mod:`~sbsopt.serve.proxy`, :mod:`~sbsopt.serve.mock.server`,
:mod:`~sbsopt.serve.replay`) need the ``serve`` extra (``pip install 'sbsopt[serve]'``).

Examples
--------
>>> from sbsopt.serve import ServeConfig
>>> ServeConfig(workers=("http://127.0.0.1:8001",), ep=2).units
2
"""

from sbsopt.serve.config import IMMEDIATE_POLICIES, POLICIES, ServeConfig, load_config

__all__ = ["ServeConfig", "load_config", "POLICIES", "IMMEDIATE_POLICIES", "require_aiohttp"]


def require_aiohttp(feature: str = "sbsopt serve"):  # noqa: ANN201 - returns the aiohttp module
    """Import aiohttp, or raise :class:`~sbsopt.errors.MissingExtraError` naming the ``serve`` extra.

    Examples
    --------
    >>> require_aiohttp().__name__
    'aiohttp'
    """
    from sbsopt._optional import require

    return require("aiohttp", "serve", feature=feature)
