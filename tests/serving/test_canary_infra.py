"""The example Argo Rollouts AnalysisTemplate parses and queries the metrics the server exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "canary" / "analysis-template.yaml"
EXPORTED = {
    "mirec_canary_impressions_total",
    "mirec_canary_clicks_total",
    "mirec_canary_requests_total",
    "mirec_canary_fallbacks_total",
    "mirec_canary_request_seconds_bucket",
}


def test_analysis_template_has_the_argo_keys_and_our_metric_names() -> None:
    doc = yaml.safe_load(TEMPLATE.read_text())
    assert doc["apiVersion"] == "argoproj.io/v1alpha1" and doc["kind"] == "AnalysisTemplate"
    assert doc["metadata"]["name"]
    args = {a["name"] for a in doc["spec"]["args"]}
    metrics = doc["spec"]["metrics"]
    assert len(metrics) >= 3
    for metric in metrics:
        assert {"name", "interval", "successCondition", "provider"} <= set(metric)
        assert metric["successCondition"].startswith("result[0]")
        query = metric["provider"]["prometheus"]["query"]
        assert metric["provider"]["prometheus"]["address"] == "{{args.prometheus-address}}"
        used = set(re.findall(r"mirec_[a-z_]+", query))
        assert used and used <= EXPORTED, used - EXPORTED
        assert set(re.findall(r"\{\{args\.([a-z-]+)\}\}", query)) <= args
