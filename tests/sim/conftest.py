"""Deterministic stand-in cost models for simulator tests (the real one is tested by costmodel)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


class FakeModel:
    """Prefill step = base + per_token * max_j new_j (lock-step max over ranks); decode step =
    dbase + per_kv * max_j kv_j (affine in KV); KV transfer = transfer_us."""

    def __init__(self, *, base_us=100_000.0, per_token_us=0.0, dbase_us=10_000.0, per_kv_us=0.0,
                 transfer_us=0.0, kv_tokens=10**7):
        self.base_us = base_us
        self.per_token_us = per_token_us
        self.dbase_us = dbase_us
        self.per_kv_us = per_kv_us
        self.transfer_us = transfer_us
        self.kv_capacity_tokens_per_rank = kv_tokens

    def prefill_step_us(self, new_tokens, attn_pairs, requests=None):
        return self.base_us + self.per_token_us * float(np.max(new_tokens))

    def decode_step_us(self, batch, kv_tokens, query_tokens=1):
        return self.dbase_us + self.per_kv_us * float(np.max(kv_tokens))

    def prefill_coefficients(self):
        return SimpleNamespace(base_us=self.base_us, alpha_us_per_token=self.per_token_us,
                               beta_us_per_pair=0.0, gamma_us_per_request=0.0)

    def decode_coefficients(self, query_tokens=1):
        return SimpleNamespace(base_us=self.dbase_us, us_per_request=0.0, us_per_kv_token=self.per_kv_us)

    def kv_transfer_us(self, tokens):
        return self.transfer_us


@pytest.fixture
def fake_model():
    """Factory of :class:`FakeModel` pairs ``(prefill, decode)`` for ``simulate(cost_models=...)``."""

    def make(**kwargs):
        model = FakeModel(**kwargs)
        return model, model

    return make
