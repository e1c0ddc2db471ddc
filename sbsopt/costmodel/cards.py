"""Model and hardware cards: validated frozen dataclasses loaded from ``models/*.toml``.

A card is data, not code.  Every field is checked for type and range on load, and a bad
field raises :class:`~sbsopt.errors.ModelCardError` naming the file and the field.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sbsopt._resources import models_dir
from sbsopt.errors import ModelCardError

__all__ = ["ModelCard", "HardwareCard", "load_model_card", "load_hardware_card", "resolve_card_path"]


@dataclass(frozen=True)
class ModelCard:
    """Shapes of a DeepSeek-V3-style MLA + MoE transformer (units in the field names)."""

    name: str
    hidden_size: int
    num_layers: int
    dense_layers: int
    dense_intermediate_size: int
    moe_intermediate_size: int
    routed_experts: int
    experts_per_token: int
    shared_experts: int
    expert_groups: int
    groups_per_token: int
    redundant_experts: int
    attention_heads: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    vocab_size: int
    kv_bytes_per_token: int
    weight_bytes: int
    weight_bytes_per_param: float
    activation_bytes: int
    dispatch_bytes_per_element: int
    dispatch_scale_bytes_per_128: int
    combine_bytes_per_element: int

    @property
    def moe_layers(self) -> int:
        """Number of MoE layers (all layers after the first ``dense_layers``)."""
        return self.num_layers - self.dense_layers

    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert (gate, up and down projections)."""
        return 3 * self.hidden_size * self.moe_intermediate_size

    @property
    def dispatch_bytes_per_token(self) -> int:
        """Bytes of one token sent by the dispatch (FP8 payload + per-128 scales)."""
        h = self.hidden_size
        return h * self.dispatch_bytes_per_element + (h // 128) * self.dispatch_scale_bytes_per_128

    @property
    def combine_bytes_per_token(self) -> int:
        """Bytes of one token returned by the combine (BF16)."""
        return self.hidden_size * self.combine_bytes_per_element


@dataclass(frozen=True)
class HardwareCard:
    """One GPU model and its node/fabric links (bandwidths in B/s, peaks in FLOP/s)."""

    name: str
    sms: int
    hbm_bytes: int
    hbm_bw_Bps: float
    bf16_peak_flops: float
    bf16_practical_flops: float
    fp8_peak_flops: float
    fp8_practical_flops: float
    nvlink_Bps: float
    ib_Bps: float
    gpus_per_node: int
    comm_sms: int
    kv_reserve_fraction: float


# field -> (kind, minimum, maximum); kind "int" or "float"; bounds are inclusive.
_MODEL_SPEC: dict[str, tuple[str, float, float]] = {
    "hidden_size": ("int", 128, 1 << 20),
    "num_layers": ("int", 1, 1000),
    "dense_layers": ("int", 0, 1000),
    "dense_intermediate_size": ("int", 1, 1 << 22),
    "moe_intermediate_size": ("int", 1, 1 << 22),
    "routed_experts": ("int", 1, 1 << 16),
    "experts_per_token": ("int", 1, 1 << 10),
    "shared_experts": ("int", 0, 64),
    "expert_groups": ("int", 1, 1 << 10),
    "groups_per_token": ("int", 1, 1 << 10),
    "redundant_experts": ("int", 0, 1 << 16),
    "attention_heads": ("int", 1, 1 << 12),
    "q_lora_rank": ("int", 1, 1 << 20),
    "kv_lora_rank": ("int", 1, 1 << 20),
    "qk_nope_head_dim": ("int", 1, 1 << 12),
    "qk_rope_head_dim": ("int", 0, 1 << 12),
    "v_head_dim": ("int", 1, 1 << 12),
    "vocab_size": ("int", 1, 1 << 24),
    "kv_bytes_per_token": ("int", 1, 1 << 30),
    "weight_bytes": ("int", 1, 1 << 50),
    "weight_bytes_per_param": ("float", 0.125, 8.0),
    "activation_bytes": ("int", 1, 8),
    "dispatch_bytes_per_element": ("int", 1, 8),
    "dispatch_scale_bytes_per_128": ("int", 0, 64),
    "combine_bytes_per_element": ("int", 1, 8),
}
_HARDWARE_SPEC: dict[str, tuple[str, float, float]] = {
    "sms": ("int", 1, 10_000),
    "hbm_bytes": ("int", 1 << 30, 1 << 45),
    "hbm_bw_Bps": ("float", 1e9, 1e15),
    "bf16_peak_flops": ("float", 1e12, 1e18),
    "bf16_practical_flops": ("float", 1e12, 1e18),
    "fp8_peak_flops": ("float", 1e12, 1e18),
    "fp8_practical_flops": ("float", 1e12, 1e18),
    "nvlink_Bps": ("float", 1e9, 1e15),
    "ib_Bps": ("float", 1e8, 1e15),
    "gpus_per_node": ("int", 1, 1024),
    "comm_sms": ("int", 0, 10_000),
    "kv_reserve_fraction": ("float", 0.0, 0.9),
}


def resolve_card_path(name_or_path: str | Path, *, kind: str) -> Path:
    """Path of a card given a bundled card name (``"h800"``) or a file path.

    Parameters
    ----------
    name_or_path : str or Path
        A bundled card name (case-insensitive) or a path to a ``.toml`` card.
    kind : str
        ``"model"`` or ``"hardware"``, named in the error message.

    Returns
    -------
    Path
        An existing card file.

    Raises
    ------
    ModelCardError
        If the file does not exist or no bundled card has that name.

    Examples
    --------
    >>> resolve_card_path("h800", kind="hardware").name
    'h800.toml'
    """
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.suffix == ".toml" or candidate.is_file():
        if not candidate.is_file():
            raise ModelCardError(text, kind, text, "an existing TOML card file")
        return candidate
    bundled = models_dir() / f"{text.lower()}.toml"
    if not bundled.is_file():
        known = sorted(p.stem for p in models_dir().glob("*.toml"))
        raise ModelCardError(text, kind, text, f"a card name among {known} or a path to a .toml file")
    return bundled


def load_model_card(name_or_path: str | Path = "deepseek-v3") -> ModelCard:
    """Load and validate a model card.

    Parameters
    ----------
    name_or_path : str or Path, default "deepseek-v3"
        A bundled card name or a path (see :func:`resolve_card_path`).

    Returns
    -------
    ModelCard
        The validated card (cached per path).

    Raises
    ------
    ModelCardError
        If the card is missing, is not valid TOML, or has a missing or out-of-range field.

    Examples
    --------
    >>> card = load_model_card("deepseek-v3")
    >>> card.moe_layers, card.kv_bytes_per_token
    (58, 70272)
    """
    return _load_model_card(str(resolve_card_path(name_or_path, kind="model")))


def load_hardware_card(name_or_path: str | Path = "h800") -> HardwareCard:
    """Load and validate a hardware card.

    Parameters
    ----------
    name_or_path : str or Path, default "h800"
        A bundled card name or a path (see :func:`resolve_card_path`).

    Returns
    -------
    HardwareCard
        The validated card (cached per path).

    Raises
    ------
    ModelCardError
        If the card is missing, is not valid TOML, or has a missing or out-of-range field.

    Examples
    --------
    >>> load_hardware_card("h800").sms
    132
    """
    return _load_hardware_card(str(resolve_card_path(name_or_path, kind="hardware")))


@lru_cache(maxsize=32)
def _load_model_card(path: str) -> ModelCard:
    table, name = _read_table(path, "model")
    values = _validated(path, "model", table, _MODEL_SPEC)
    card = ModelCard(name=name, **values)
    if card.dense_layers >= card.num_layers:
        raise ModelCardError(path, "model.dense_layers", card.dense_layers, f"< num_layers ({card.num_layers})")
    if card.experts_per_token > card.routed_experts:
        raise ModelCardError(path, "model.experts_per_token", card.experts_per_token, "<= routed_experts")
    if card.routed_experts % card.expert_groups or card.groups_per_token > card.expert_groups:
        raise ModelCardError(
            path, "model.expert_groups", card.expert_groups,
            "a divisor of routed_experts, >= groups_per_token",
        )
    return card


@lru_cache(maxsize=32)
def _load_hardware_card(path: str) -> HardwareCard:
    table, name = _read_table(path, "hardware")
    values = _validated(path, "hardware", table, _HARDWARE_SPEC)
    card = HardwareCard(name=name, **values)
    if card.comm_sms >= card.sms:
        raise ModelCardError(path, "hardware.comm_sms", card.comm_sms, f"< sms ({card.sms})")
    if card.bf16_practical_flops > card.bf16_peak_flops:
        raise ModelCardError(path, "hardware.bf16_practical_flops", card.bf16_practical_flops, "<= bf16_peak_flops")
    if card.fp8_practical_flops > card.fp8_peak_flops:
        raise ModelCardError(path, "hardware.fp8_practical_flops", card.fp8_practical_flops, "<= fp8_peak_flops")
    return card


def _read_table(path: str, section: str) -> tuple[dict[str, Any], str]:
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ModelCardError(path, "<toml>", str(exc), "valid TOML") from None
    name = document.get("name", Path(path).stem)
    if not isinstance(name, str) or not name:
        raise ModelCardError(path, "name", name, "a non-empty string")
    table = document.get(section)
    if not isinstance(table, dict):
        raise ModelCardError(path, f"[{section}]", table, f"a [{section}] table")
    return table, name


def _validated(
    path: str, section: str, table: dict[str, Any], spec: dict[str, tuple[str, float, float]]
) -> dict[str, Any]:
    unknown = sorted(set(table) - set(spec))
    if unknown:
        raise ModelCardError(path, f"{section}.{unknown[0]}", table[unknown[0]], f"one of {sorted(spec)}")
    values: dict[str, Any] = {}
    for field_name, (kind, low, high) in spec.items():
        where = f"{section}.{field_name}"
        if field_name not in table:
            raise ModelCardError(path, where, None, f"a value ({kind} in [{low:g}, {high:g}])")
        value = table[field_name]
        ok_type = isinstance(value, int) if kind == "int" else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type:
            raise ModelCardError(path, where, value, f"a {kind} in [{low:g}, {high:g}]")
        if not math.isfinite(float(value)) or not low <= value <= high:
            raise ModelCardError(path, where, value, f"a {kind} in [{low:g}, {high:g}]")
        values[field_name] = int(value) if kind == "int" else float(value)
    return values
