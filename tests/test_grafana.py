"""The Grafana dashboard under configs/ is well formed and plots only metrics memoryd exports."""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from daemon.memory.observer import ObserverStats
from daemon.metrics import Metrics
from tests.harness import ROOT

DASHBOARD = ROOT / "configs" / "grafana" / "memoryd.json"
METRIC = re.compile(r"\b((?:memoryd|process)_[a-z_]+)\b")


SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"]}


def exported() -> set[str]:
    """Every series name /metrics can have (a labelled metric has none before its first use)."""
    metrics = Metrics()
    metrics.observe(ObserverStats, lambda: {"email": 1})
    text = metrics.render().decode()
    return {
        f.name + suffix
        for f in text_string_to_metric_families(text)
        for suffix in SUFFIXES.get(f.type, [""])
    }


def test_grafana_dashboard_is_valid_and_uses_exported_metrics() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    names = exported()
    used: set[str] = set()
    for p in panels:
        assert p["title"] and p["type"] in {"timeseries", "stat"}
        assert {"x", "y", "w", "h"} <= p["gridPos"].keys() and p["gridPos"]["x"] + p["gridPos"][
            "w"
        ] <= 24
        assert p["datasource"]["uid"] == "${datasource}"
        for target in p["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            found = set(METRIC.findall(target["expr"]))
            assert found, target["expr"]
            used |= found
    assert used <= names, used - names
    assert {
        "memoryd_requests_total",
        "memoryd_refusals_total",
        "memoryd_observer_redacted_total",
    } <= used
