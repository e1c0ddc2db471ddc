"""``sbsopt validate``: the table holds every group, in and out of sample, and leave-one-group-out rows."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("cvxpy")

from sbsopt.cli import main  # noqa: E402
from sbsopt.costmodel.validate import leave_one_group_out, summary, validation_table  # noqa: E402


def test_table_has_in_and_out_of_sample_rows() -> None:
    rows = validation_table()
    groups = {r.group for r in rows}
    assert {"profile kernels", "deepep normal ep32", "deepep low-latency", "production throughput"} <= groups
    assert any(r.in_fit for r in rows) and any(not r.in_fit for r in rows)


def test_leave_one_group_out_predicts_each_ep_size() -> None:
    rows = leave_one_group_out()
    groups = {r.group for r in rows}
    for ep in (8, 16, 32, 64):
        assert f"logo: deepep normal ep{ep}" in groups
    assert all(not r.in_fit for r in rows)
    assert summary(rows)["leave_one_group_out"]["rows"] == len(rows)


def test_cli_json(capsys) -> None:
    assert main(["validate", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["summary"]["leave_one_group_out"]["rows"] > 0


def test_per_kernel_median_within_target() -> None:
    # the in-sample kernel durations (profile kernels, DeepGEMM dense and contiguous)
    stats = summary(validation_table())["per_kernel"]
    assert stats["rows"] == 40
    assert stats["median_abs_err"] <= 0.046
