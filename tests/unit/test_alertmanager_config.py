"""The alertmanager role's configuration and notification templates, rendered from data.

Rendered with Ansible's Templar from the role's defaults and vars, then read
as YAML (routes, receivers, inhibitions) and, where amtool is found, checked
with `amtool check-config` and rendered with `amtool template render`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from trusted_vars import trusted

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "alertmanager"
# Debian's prometheus-alertmanager brings amtool; a copy unpacked under .cache
# (`apt-get download prometheus-alertmanager; dpkg -x ...`) counts too.
AMTOOL = shutil.which("amtool") or next(
    (str(p) for p in [ROOT / ".cache/amtool/root/usr/bin/amtool"] if p.exists()), None
)
needs_amtool = pytest.mark.skipif(
    AMTOOL is None,
    reason="amtool not found, config not checked: apt-get install prometheus-alertmanager",
)

PRODUCTION_LIKE: dict[str, Any] = {
    "alertmanager_email_to": ["oncall@example.org", "second@example.org"],
    "alertmanager_email_from": "alertmanager@example.org",
    "alertmanager_email_smarthost": "smtp.example.org:587",
    "alertmanager_email_auth_username": "alertmanager",
    "alertmanager_email_auth_password": "s3cret-smtp",
    "alertmanager_email_severities": ["critical"],
    "alertmanager_webhooks": [
        {"name": "chat", "url": "https://chat.example.org/hooks/t0ken", "format": "slack"},
        {
            "name": "ntfy",
            "url": "https://ntfy.example.org/archibald",
            "severities": ["critical", "warning"],
        },
    ],
    "alertmanager_heartbeat_url": "https://hc.example.org/ping/uuid",
}

# One firing and one resolved alert, as Alertmanager hands them to a template.
NOTIFICATION: dict[str, Any] = {
    "receiver": "severity-critical",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "AppHighErrorRate", "severity": "critical", "color": "green"},
            "annotations": {
                "summary": "More than 10 % of API requests fail",
                "value": "35.2%",
                "version": "v7",
            },
            "startsAt": "2026-11-29T12:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://example.org/prometheus/graph",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "TargetDown", "severity": "critical", "job": "node"},
            "annotations": {"summary": "Scrape target down"},
            "startsAt": "2026-11-29T11:00:00Z",
            "endsAt": "2026-11-29T11:30:00Z",
            "generatorURL": "https://example.org/prometheus/graph",
        },
    ],
    "groupLabels": {"alertname": "AppHighErrorRate"},
    "commonLabels": {"alertname": "AppHighErrorRate", "severity": "critical", "color": "green"},
    "commonAnnotations": {"summary": "More than 10 % of API requests fail"},
    "externalURL": "http://127.0.0.1:9093",
}


def _variables(overrides: dict[str, Any]) -> dict[str, Any]:
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables |= yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    variables |= overrides
    variables |= {"ansible_managed": "Ansible managed"}
    return trusted(variables)


def _templar(overrides: dict[str, Any]) -> Templar:
    return Templar(loader=DataLoader(), variables=_variables(overrides))


def render(name: str, overrides: dict[str, Any]) -> str:
    source = trust_as_template((ROLE / "templates" / name).read_text())
    return str(_templar(overrides).template(source))


def config(overrides: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(render("alertmanager.yml.j2", overrides))


def problems(overrides: dict[str, Any]) -> list[str]:
    return list(_templar(overrides).template(trust_as_template("{{ _alertmanager_url_problems }}")))


def _receiver(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in cfg["receivers"] if r["name"] == name)


def test_watchdog_goes_to_the_heartbeat_first_and_alone() -> None:
    cfg = config(PRODUCTION_LIKE)
    first = cfg["route"]["routes"][0]
    assert first["matchers"] == ['alertname="Watchdog"']
    assert first["receiver"] == "heartbeat"
    # Every flush of the group (each interval) pings; the repeat never holds one back.
    assert first["group_interval"] == "1m" and first["repeat_interval"] == "1s"
    heartbeat = _receiver(cfg, "heartbeat")
    assert heartbeat["webhook_configs"] == [
        {"url": "https://hc.example.org/ping/uuid", "send_resolved": False}
    ]


def test_severities_route_to_their_receivers() -> None:
    cfg = config(PRODUCTION_LIKE)
    routes = {r["receiver"]: r for r in cfg["route"]["routes"][1:]}
    assert routes["severity-critical"]["matchers"] == ['severity="critical"']
    assert routes["severity-critical"]["repeat_interval"] == "4h"
    assert routes["severity-warning"]["repeat_interval"] == "24h"
    critical = _receiver(cfg, "severity-critical")
    warning = _receiver(cfg, "severity-warning")
    # E-mail only for critical here; the slack hook has no severities (all).
    assert critical["email_configs"][0]["to"] == "oncall@example.org, second@example.org"
    assert "email_configs" not in warning
    assert [h["api_url"] for h in critical["slack_configs"]] == [
        "https://chat.example.org/hooks/t0ken"
    ]
    assert [h["api_url"] for h in warning["slack_configs"]] == [
        "https://chat.example.org/hooks/t0ken"
    ]
    assert [h["url"] for h in warning["webhook_configs"]] == ["https://ntfy.example.org/archibald"]
    # An unknown severity reaches everybody rather than nobody.
    assert cfg["route"]["receiver"] == "everyone"
    everyone = _receiver(cfg, "everyone")
    assert {"email_configs", "slack_configs", "webhook_configs"} <= set(everyone)


def test_every_notification_says_when_it_is_resolved() -> None:
    cfg = config(PRODUCTION_LIKE)
    for receiver in cfg["receivers"]:
        if receiver["name"] == "heartbeat":
            continue
        for kind in ("email_configs", "slack_configs", "webhook_configs"):
            for entry in receiver.get(kind, []):
                assert entry["send_resolved"] is True, (receiver["name"], kind)


def test_email_uses_the_templates_and_the_vault_password() -> None:
    email = _receiver(config(PRODUCTION_LIKE), "severity-critical")["email_configs"][0]
    assert email["headers"]["Subject"] == '{{ template "archibald.subject" . }}'
    assert email["text"] == '{{ template "archibald.text" . }}'
    assert email["auth_password"] == "s3cret-smtp"
    assert email["require_tls"] is True
    without_auth = config(PRODUCTION_LIKE | {"alertmanager_email_auth_password": ""})
    assert "auth_password" not in _receiver(without_auth, "everyone")["email_configs"][0]


def test_inhibitions_and_grouping_come_from_data() -> None:
    cfg = config(PRODUCTION_LIKE)
    assert cfg["route"]["group_by"] == ["alertname", "color", "service", "instance"]
    sources = [rule["source_matchers"] for rule in cfg["inhibit_rules"]]
    assert ['alertname="TargetDown"', 'job="archibald"'] in sources
    assert ['alertname="SiteDown"'] in sources


def test_no_receiver_renders_a_config_that_sends_nothing() -> None:
    cfg = config({"alertmanager_heartbeat_enabled": False})
    for receiver in cfg["receivers"]:
        assert set(receiver) == {"name"}, receiver


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (PRODUCTION_LIKE, []),
        ({"alertmanager_heartbeat_enabled": False}, []),
        (
            {},
            [
                "alertmanager_heartbeat_url must be the http(s) URL your heartbeat service gave you"
                " (it is empty)"
            ],
        ),
        (
            {"alertmanager_heartbeat_enabled": False, "alertmanager_heartbeat_url": "https://hc/x"},
            ["alertmanager_heartbeat_url is set but alertmanager_heartbeat_enabled is false"],
        ),
        (
            PRODUCTION_LIKE
            | {"alertmanager_webhooks": [{"name": "chat", "url": "chat.example.org/t0ken"}]},
            ["chat: url must be an http:// or https:// URL"],
        ),
        (
            PRODUCTION_LIKE
            | {"alertmanager_webhooks": [{"name": "c", "url": "https://c/t", "format": "teams"}]},
            ["c: format must be alertmanager or slack, not teams"],
        ),
        (
            PRODUCTION_LIKE
            | {"alertmanager_webhooks": [{"name": "c", "url": "https://c/t", "severities": ["x"]}]},
            ["c: severity x has no route (known: critical, warning)"],
        ),
    ],
    ids=[
        "complete",
        "heartbeat-off",
        "heartbeat-missing",
        "heartbeat-both",
        "bad-url",
        "bad-format",
        "bad-severity",
    ],
)
def test_url_problems_name_the_webhook_never_its_url(
    overrides: dict[str, Any], expected: list[str]
) -> None:
    found = problems(overrides)
    assert len(found) == len(expected), found
    for sentence, start in zip(found, expected, strict=True):
        assert sentence.startswith(start), sentence
        assert "t0ken" not in sentence


@needs_amtool
def _amtool_checked(
    tmp_path: Path, template_vars: dict[str, Any], overrides: dict[str, Any]
) -> None:
    """Render the templates and the config into tmp_path; amtool check-config must pass."""
    assert AMTOOL is not None
    (tmp_path / "archibald.tmpl").write_text(render("archibald.tmpl.j2", template_vars))
    cfg = config(overrides)
    cfg["templates"] = [str(tmp_path / "*.tmpl")]
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg))
    check = subprocess.run(
        [AMTOOL, "check-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_amtool_accepts_the_config_and_renders_the_templates(tmp_path: Path) -> None:
    assert AMTOOL is not None
    _amtool_checked(
        tmp_path,
        {"alertmanager_runbook_url": "https://ops.example/OPS.md"},
        PRODUCTION_LIKE,
    )
    data = tmp_path / "data.json"
    data.write_text(json.dumps(NOTIFICATION))

    def rendered(name: str) -> str:
        result = subprocess.run(
            [
                AMTOOL,
                "template",
                "render",
                f"--template.glob={tmp_path}/*.tmpl",
                f"--template.data={data}",
                f'--template.text={{{{ template "{name}" . }}}}',
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert rendered("archibald.subject") == (
        "[FIRING:1] AppHighErrorRate on green (critical): More than 10 % of API requests fail"
    )
    text = rendered("archibald.text")
    for line in (
        "FIRING AppHighErrorRate (critical)",
        "colour:   green",
        "version:  v7",
        "value:    35.2%",
        "runbook:  https://ops.example/OPS.md#apphigherrorrate",
        "RESOLVED TargetDown (critical)",
    ):
        assert line in text, text


@needs_amtool
def test_amtool_accepts_the_config_without_receivers(tmp_path: Path) -> None:
    _amtool_checked(tmp_path, {}, {"alertmanager_heartbeat_enabled": False})
