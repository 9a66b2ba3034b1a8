"""The sample alert rules and Grafana dashboard in docs/ops/ speak only of metrics hub actually exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import HubFactory

DOCS = Path(__file__).resolve().parents[1] / "docs" / "ops"
METRIC = re.compile(r"\bhub_[a-z_]+")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_alerts_and_dashboard_use_exported_metrics(hub_factory: HubFactory, backend: str) -> None:
    hub = hub_factory()
    exported = set(re.findall(r"^# TYPE (hub_[a-z_]+) (\w+)", hub.http.get("/metrics").text, re.MULTILINE))
    names = {name for name, _ in exported}
    # a counter is scraped as <name>_total, a histogram as <name>_bucket/_sum/_count
    names |= {f"{n}_total" for n, kind in exported if kind == "counter"}
    names |= {f"{n}_{s}" for n, kind in exported if kind == "histogram" for s in ("bucket", "sum", "count")}
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used and used <= names, sorted(used - names)
