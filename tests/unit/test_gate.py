"""The deploy gate: absolute threshold, regression margin against production."""

from __future__ import annotations

import pytest

from mirec.config import GateConfig
from mirec.evaluate import gate


def test_first_model_passes_on_threshold_only() -> None:
    res = gate({"recall@20": 0.30}, None, GateConfig(metric="recall@20", min_value=0.2))
    assert res.passed and res.decision == "pass" and res.production_value is None


def test_threshold_fails() -> None:
    res = gate({"recall@20": 0.10}, None, GateConfig(metric="recall@20", min_value=0.2))
    assert not res.passed and "threshold" in res.reasons[0]


def test_regression_margin() -> None:
    cfg = GateConfig(metric="ndcg@10", min_value=0.0, max_regression=0.01)
    assert gate({"ndcg@10": 0.195}, {"ndcg@10": 0.2}, cfg).passed
    res = gate({"ndcg@10": 0.18}, {"ndcg@10": 0.2}, cfg)
    assert not res.passed and "regresses production" in res.reasons[0]


def test_missing_metric_is_an_error() -> None:
    with pytest.raises(KeyError, match="recall@20"):
        gate({"ndcg@10": 0.1}, None, GateConfig(metric="recall@20"))
