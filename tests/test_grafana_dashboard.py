"""The Grafana dashboard only charts metrics the app really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from db.metrics_queries import MetricsSnapshot
from triage.web.metrics import families

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "pacs-triage.json"


def test_every_dashboard_query_names_an_exported_metric() -> None:
    snap = MetricsSnapshot(
        instances=0, studies=0, associations_rejected=0, studies_by_state={}, jobs_by_state={},
        inference_seconds=[], to_result_seconds=[], to_delivered_seconds=[],
        delivery_failures={("sr", "X"): 1}, last_job_finished_at=None,
        bundles_in_use=[{"name": "n", "version": "v", "sha256": "s", "synthetic_demo": True,
                         "shadow": False}],
    )  # fmt: skip
    exported = {s.name for f in families(snap) for s in f.samples} | {
        f.name for f in families(snap)
    }
    exported.add("triage_worker_last_result_age_seconds")  # absent before a first job
    dashboard = json.loads(DASHBOARD.read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\btriage_[a-z_]+", target["expr"])
    }
    assert used and used <= exported, used - exported
