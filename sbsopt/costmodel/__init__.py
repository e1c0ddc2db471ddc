"""What one forward pass of a DP-attention + EP-MoE instance costs (calibrated on H800).

Examples
--------
>>> from sbsopt.costmodel import load_cost_model
>>> cm = load_cost_model(ep=32)
>>> cm.kv_bytes_per_token
70272
"""

from sbsopt.costmodel.cards import HardwareCard, ModelCard, load_hardware_card, load_model_card
from sbsopt.costmodel.coefficients import KernelCoefficients, load_coefficients
from sbsopt.costmodel.step import (
    CostModel,
    DecodeCoefficients,
    PrefillCoefficients,
    StepBreakdown,
    load_cost_model,
)

__all__ = [
    "CostModel",
    "DecodeCoefficients",
    "HardwareCard",
    "KernelCoefficients",
    "ModelCard",
    "PrefillCoefficients",
    "StepBreakdown",
    "load_cost_model",
    "load_coefficients",
    "load_hardware_card",
    "load_model_card",
]
