"""The committed dashboards are what the generator makes, and every panel is usable."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "monitoring" / "dashboards" / "generate.py"
COMMITTED = ROOT / "roles" / "grafana" / "files" / "dashboards"
EXPECTED_TITLES = {"System Overview", "Application Health", "Job Queue", "Worker Pool"}
DEPLOY_METRIC = "archibald_deploy_switch_timestamp_seconds"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


def _dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(COMMITTED.glob("*.json"))}


def _panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in model.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
    return [p for p in panels if p.get("type") != "row"]


def test_committed_json_is_what_the_generator_makes(tmp_path: Path) -> None:
    generate.write(tmp_path)
    fresh = {p.name: p.read_text() for p in sorted(tmp_path.glob("*.json"))}
    committed = {p.name: p.read_text() for p in sorted(COMMITTED.glob("*.json"))}
    stale = sorted(
        name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name)
    )
    assert not stale, (
        f"dashboards out of date with monitoring/dashboards/generate.py: {stale}; "
        "run `make dashboards` and commit the JSON"
    )


def test_the_four_dashboards_exist_with_unique_uids() -> None:
    models = _dashboards().values()
    assert {m["title"] for m in models} == EXPECTED_TITLES
    uids = [m["uid"] for m in models]
    assert len(uids) == len(set(uids)), f"duplicate dashboard uids: {uids}"


@pytest.mark.parametrize("name", sorted(_dashboards()))
def test_every_panel_has_a_prometheus_query(name: str) -> None:
    model = _dashboards()[name]
    panels = _panels(model)
    assert panels, f"{name}: no panels"
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids {ids}"
    for panel in panels:
        where = f"{name}: panel {panel['id']} {panel.get('title')!r}"
        assert panel.get("datasource", {}).get("uid") == "prometheus", f"{where}: datasource"
        targets = panel.get("targets") or []
        assert targets, f"{where}: no query"
        for target in targets:
            assert target.get("expr", "").strip(), f"{where}: empty query {target}"
            uid = target.get("datasource", {}).get("uid", "prometheus")
            assert uid == "prometheus", f"{where}: target datasource {uid}"


@pytest.mark.parametrize("name", sorted(_dashboards()))
def test_deploy_markers_are_annotated(name: str) -> None:
    annotations = _dashboards()[name]["annotations"]["list"]
    deploys = [a for a in annotations if DEPLOY_METRIC in a.get("expr", "")]
    assert deploys, f"{name}: no annotation on {DEPLOY_METRIC}"
    assert all(a["datasource"]["uid"] == "prometheus" for a in deploys)


def test_list_queries_covers_every_panel_query() -> None:
    listed = {row["expr"] for row in generate.list_queries()}
    in_json = {
        t["expr"] for model in _dashboards().values() for p in _panels(model) for t in p["targets"]
    }
    assert in_json <= listed
    assert all("$__" not in row["promql"] for row in generate.list_queries())


def test_every_app_series_a_dashboard_reads_is_one_the_reference_app_exports() -> None:
    """The whole stack's "every panel has data" test runs the reference app: a panel
    on a series only the contract's Node package exports would be empty there."""
    sys.path.insert(0, str(ROOT / "app"))
    try:
        from archibald_app.metrics import Metrics
    finally:
        sys.path.remove(str(ROOT / "app"))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    exported = {"up"}  # Prometheus' own series for every target
    for family in Metrics(service="backend", color="blue", version="v1").registry.collect():
        exported |= {family.name + end for end in ("", *suffixes.get(family.type, ()))}
    selector = re.escape("{" + generate.APP)
    read = {
        name
        for row in generate.list_queries()
        for name in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)" + selector, row["promql"])
    }
    assert read, "no query selects the app's job: the selector changed"
    missing = sorted(read - exported)
    assert not missing, f"dashboards read series the reference app does not export: {missing}"


def test_list_queries_cli_prints_json() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--list-queries"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    rows = json.loads(result.stdout)
    assert {row["dashboard"] for row in rows} == EXPECTED_TITLES


@pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool not found")
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rows = generate.list_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"dashboard_query_{i}", "expr": row["promql"]}
                    for i, row in enumerate(rows)
                ],
            }
        ]
    }
    path = tmp_path / "queries.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, f"invalid PromQL in a dashboard:\n{result.stdout}{result.stderr}"
