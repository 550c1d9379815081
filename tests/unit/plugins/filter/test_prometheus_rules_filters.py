"""Unit tests for filter_plugins/prometheus_rules.py, on the role's real rule file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from prometheus_rules import FilterModule, prometheus_alert_names, prometheus_rule_overrides

REPO = Path(__file__).resolve().parents[4]
RULES = REPO / "roles" / "prometheus" / "files" / "rules" / "archibald.rules.yml"


@pytest.fixture
def rules() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text())  # type: ignore[no-any-return]


def _alert(rules: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name)


def test_alert_names_lists_the_alerts_in_file_order(rules: dict[str, Any]) -> None:
    names = prometheus_alert_names(rules)
    assert names[0] == "AppHighErrorRate"
    assert len(names) == len(set(names)) >= 6


def test_override_replaces_only_the_named_fields(rules: dict[str, Any]) -> None:
    patched = prometheus_rule_overrides(rules, {"AppHighErrorRate": {"for": "30s"}})
    assert _alert(patched, "AppHighErrorRate")["for"] == "30s"
    assert _alert(patched, "AppHighErrorRate")["expr"] == _alert(rules, "AppHighErrorRate")["expr"]
    assert _alert(rules, "AppHighErrorRate")["for"] == "5m", "the input must not be changed"
    others = [n for n in prometheus_alert_names(rules) if n != "AppHighErrorRate"]
    for name in others:
        assert _alert(patched, name) == _alert(rules, name)


def test_no_overrides_is_the_same_file(rules: dict[str, Any]) -> None:
    assert prometheus_rule_overrides(rules, {}) == rules
    assert prometheus_rule_overrides(rules, None) == rules


def test_names_of_other_files_are_ignored(rules: dict[str, Any]) -> None:
    assert prometheus_rule_overrides(rules, {"SomeOtherFilesAlert": {"for": "1m"}}) == rules


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"AppHighErrorRate": {"alert": "Renamed"}}, "alert cannot be overridden"),
        ({"AppHighErrorRate": {}}, "non-empty mapping"),
        ({"AppHighErrorRate": "1m"}, "non-empty mapping"),
        (["AppHighErrorRate"], "must map alert names"),
    ],
)
def test_bad_overrides_say_what_is_wrong(
    rules: dict[str, Any], overrides: Any, message: str
) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        prometheus_rule_overrides(rules, overrides)


def test_not_a_rule_file_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="'groups' list"):
        prometheus_alert_names({"scrape_configs": []})


def test_filters_are_registered() -> None:
    assert set(FilterModule().filters()) == {"prometheus_rule_overrides", "prometheus_alert_names"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not found (apt prometheus)")
def test_rendered_override_is_a_valid_rule_file(rules: dict[str, Any], tmp_path: Path) -> None:
    """What the role writes (the override, through YAML) still passes `promtool check rules`."""
    patched = prometheus_rule_overrides(
        rules, {"AppHighErrorRate": {"for": "30s", "labels": {"severity": "test"}}}
    )
    out = tmp_path / "archibald.rules.yml"
    out.write_text(yaml.safe_dump(patched, sort_keys=False, width=120))
    result = subprocess.run(
        ["promtool", "check", "rules", str(out)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
