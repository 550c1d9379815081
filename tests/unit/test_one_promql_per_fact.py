"""One PromQL per fact: the app's error ratio and p99 are written once, as
recording rules, and read by name by the alerts, the dashboards, the release
analysis and the whole-stack scenario's alert override."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "roles" / "prometheus" / "files" / "rules"
# Where the facts are read; none of them may compute one itself.
READERS = [
    ROOT / "roles" / "bluegreen" / "tasks" / "analysis.yml",
    ROOT / "monitoring" / "dashboards" / "generate.py",
    ROOT / "molecule" / "default" / "host_vars" / "default-deb12.yml",
    *(ROOT / "roles" / "grafana" / "files" / "dashboards").glob("*.json"),
]
# The computations that belong in a recording rule only.
COMPUTATIONS = {
    "API 5xx share": re.compile(r'http_requests_total\{[^}]*status_code=~\\?"5\.\.'),
    "p99 of the app's request duration": re.compile(
        r"histogram_quantile\(\s*0\.99,.{0,120}?http_request_duration_seconds_bucket", re.S
    ),
}
NAME = re.compile(r"\b(?:archibald|archibald_service|color|color_service):[a-z0-9_]+:[a-z0-9_]+\b")


def _recorded() -> dict[str, str]:
    return {
        rule["record"]: path.name
        for path in sorted(RULES_DIR.glob("*.rules.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


@pytest.mark.parametrize("reader", READERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_readers_read_facts_by_name_and_compute_none(reader: Path) -> None:
    text = reader.read_text()
    for fact, pattern in COMPUTATIONS.items():
        assert not pattern.search(text), (
            f"{reader.relative_to(ROOT)} computes the {fact} itself; read the recording rule "
            f"of roles/prometheus/files/rules/archibald.rules.yml instead"
        )
    unknown = set(NAME.findall(text)) - set(_recorded())
    assert not unknown, f"{reader.relative_to(ROOT)} reads {sorted(unknown)}, which no rule records"


def test_alerts_read_the_recorded_facts() -> None:
    rules = yaml.safe_load((RULES_DIR / "archibald.rules.yml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts["AppHighErrorRate"].strip() == "archibald:api_error_ratio:rate5m > 0.10"
    assert alerts["AppHighLatencyP99"].strip() == (
        "archibald_service:request_duration_seconds:p99_5m > 1"
    )


def test_each_computation_is_written_once_in_the_rules() -> None:
    text = (RULES_DIR / "archibald.rules.yml").read_text()
    # One error-ratio numerator per window (1m, 5m), one p99 per grouping.
    assert len(COMPUTATIONS["API 5xx share"].findall(text)) == 2
    assert len(COMPUTATIONS["p99 of the app's request duration"].findall(text)) == 2
