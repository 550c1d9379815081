"""The alert and recording rules load in Prometheus and behave as their promtool unit tests say."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "roles" / "prometheus" / "files" / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
TEST_FILES = sorted((ROOT / "monitoring" / "tests").glob("*.rules.test.yml"))
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# Every alert this repository promises (DESIGN.md, Monitoring).
EXPECTED_ALERTS = {
    "AppHighErrorRate",
    "TargetDown",
    "AppHighLatencyP99",
    "DrainDidNotFinish",
    "DiskFilling",
    "ContainerRestartLoop",
    "Watchdog",
}
# Fire at every evaluation by design (the dead-man's switch): tested firing
# at the first and a late evaluation instead of firing and not firing.
ALWAYS_FIRING = {"Watchdog"}

pytestmark = pytest.mark.skipif(
    not Path(PROMTOOL).exists(),
    reason="promtool not found: apt-get install prometheus (make venv does)",
)


def _promtool(*args: str, cwd: Path = ROOT) -> None:
    result = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        pytest.fail(
            f"promtool {' '.join(args)} failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}",
            pytrace=False,
        )


def _alerts(path: Path) -> set[str]:
    data = yaml.safe_load(path.read_text())
    return {rule["alert"] for group in data["groups"] for rule in group["rules"] if "alert" in rule}


def test_rule_and_test_files_exist() -> None:
    assert RULE_FILES, f"no *.rules.yml in {RULES_DIR}"
    assert TEST_FILES, "no monitoring/tests/*.rules.test.yml"


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(rule_file: Path) -> None:
    _promtool("check", "rules", str(rule_file))


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(test_file: Path) -> None:
    _promtool("test", "rules", test_file.name, cwd=test_file.parent)


def test_every_promised_alert_exists() -> None:
    defined = set().union(*(_alerts(p) for p in RULE_FILES))
    missing = EXPECTED_ALERTS - defined
    assert not missing, f"alert rules missing: {sorted(missing)}"


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    """Each alert has one eval that expects it and one that expects nothing."""
    firing: set[str] = set()
    silent: set[str] = set()
    for test_file in TEST_FILES:
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    defined = set().union(*(_alerts(p) for p in RULE_FILES))
    assert defined - firing == set(), f"never tested firing: {sorted(defined - firing)}"
    quiet = defined - ALWAYS_FIRING
    assert quiet - silent == set(), f"never tested not firing: {sorted(quiet - silent)}"
    assert not ALWAYS_FIRING & silent, f"tested silent but always fire: {ALWAYS_FIRING & silent}"


def test_every_recording_rule_is_tested() -> None:
    """Each recorded fact has a promql_expr_test that reads it."""
    recorded = {
        rule["record"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    tested = " ".join(
        check["expr"]
        for test_file in TEST_FILES
        for case in yaml.safe_load(test_file.read_text())["tests"]
        for check in case.get("promql_expr_test", [])
    )
    untested = {name for name in recorded if not re.search(rf"{re.escape(name)}(?![\w:])", tested)}
    assert not untested, f"recording rules without a promql_expr_test: {sorted(untested)}"


def _duration_s(text: str) -> float:
    return float(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]


def test_only_test_inventories_shorten_the_windows() -> None:
    """The whole stack's tests alert on shorter windows
    (molecule/default/host_vars); what ships and every real inventory keep
    production's, which the promtool tests above judge."""
    defaults = yaml.safe_load((ROOT / "roles/prometheus/defaults/main.yml").read_text())
    assert defaults["prometheus_scrape_interval"] == "15s"
    assert defaults["prometheus_evaluation_interval"] == "15s"
    assert not defaults.get("prometheus_alert_overrides")
    shortening = re.compile(
        r"^\s*(prometheus_scrape_interval|prometheus_evaluation_interval|"
        r"prometheus_alert_overrides)\s*:",
        re.M,
    )
    inventories = [p for p in (ROOT / "inventory").rglob("*") if p.suffix in (".yml", ".yaml")]
    assert inventories
    found = [str(p.relative_to(ROOT)) for p in inventories if shortening.search(p.read_text())]
    assert not found, f"a real inventory changes Prometheus' windows: {found}"
    # Where a test inventory shortens the scrape interval, the timeout must follow
    # (Prometheus refuses a timeout above the interval: promtool check config).
    test_vars = yaml.safe_load((ROOT / "molecule/default/host_vars/default-deb12.yml").read_text())
    merged = {**defaults, **test_vars}
    interval = _duration_s(merged["prometheus_scrape_interval"])
    assert _duration_s(merged["prometheus_scrape_timeout"]) <= interval
    # The promtool tests evaluate at the shipped interval or coarser, never finer.
    for test_file in TEST_FILES:
        interval = yaml.safe_load(test_file.read_text()).get("evaluation_interval", "1m")
        assert _duration_s(interval) >= _duration_s(defaults["prometheus_evaluation_interval"])
