"""Money for a plan: GPUs, GPU-hours, tokens per GPU-second, cost per million tokens."""

from __future__ import annotations

from dataclasses import dataclass

from sbsopt._validate import check_int, check_number

__all__ = ["DEFAULT_GPU_HOUR_PRICE", "PlanCost", "cluster_gpus", "plan_cost"]

# DeepSeek's own V3 report prices H800 rental at $2 per GPU-hour; a parameter everywhere.
DEFAULT_GPU_HOUR_PRICE = 2.0


@dataclass(frozen=True)
class PlanCost:
    """Hardware and money of serving a workload with a given cluster.

    Attributes
    ----------
    gpus : int
        GPUs of the cluster (prefill + decode instances times their EP sizes).
    gpu_hours : float
        ``gpus * duration_s / 3600``.
    tokens_per_gpu_s : float
        Input + output tokens served per GPU-second.
    cost_per_million_tokens : float
        ``gpu_hour_price * gpu_hours / tokens * 1e6`` (``inf`` if no token was served).
    gpu_hour_price : float
        Price used, in money per GPU-hour.
    """

    gpus: int
    gpu_hours: float
    tokens_per_gpu_s: float
    cost_per_million_tokens: float
    gpu_hour_price: float

    def as_dict(self) -> dict:
        """JSON-able fields."""
        return {"gpus": self.gpus, "gpu_hours": self.gpu_hours, "tokens_per_gpu_s": self.tokens_per_gpu_s,
                "cost_per_million_tokens": self.cost_per_million_tokens, "gpu_hour_price": self.gpu_hour_price}


def cluster_gpus(*, prefill_instances: int, decode_instances: int, prefill_ep: int, decode_ep: int) -> int:
    """GPUs of a P/D cluster (one GPU per DP/EP rank).

    Examples
    --------
    >>> cluster_gpus(prefill_instances=4, decode_instances=1, prefill_ep=32, decode_ep=144)
    272
    """
    for name, value in (("prefill_instances", prefill_instances), ("decode_instances", decode_instances),
                        ("prefill_ep", prefill_ep), ("decode_ep", decode_ep)):
        check_int(name, value, minimum=1)
    return prefill_instances * prefill_ep + decode_instances * decode_ep


def plan_cost(*, gpus: int, tokens: float, duration_s: float,
              gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE) -> PlanCost:
    """Cost of serving ``tokens`` (input + output) on ``gpus`` GPUs for ``duration_s`` seconds.

    Examples
    --------
    >>> c = plan_cost(gpus=10, tokens=3.6e6, duration_s=3600.0, gpu_hour_price=2.0)
    >>> c.gpu_hours, c.tokens_per_gpu_s, round(c.cost_per_million_tokens, 3)
    (10.0, 100.0, 5.556)
    """
    check_int("gpus", gpus, minimum=1)
    tokens = check_number("tokens", tokens, minimum=0.0)
    duration_s = check_number("duration_s", duration_s, strict_min=True)
    gpu_hour_price = check_number("gpu_hour_price", gpu_hour_price, minimum=0.0)
    gpu_hours = gpus * duration_s / 3600.0
    per_gpu_s = tokens / (gpus * duration_s)
    cost = gpu_hour_price * gpu_hours / tokens * 1e6 if tokens > 0 else float("inf")
    return PlanCost(gpus=gpus, gpu_hours=gpu_hours, tokens_per_gpu_s=per_gpu_s,
                    cost_per_million_tokens=cost, gpu_hour_price=gpu_hour_price)
