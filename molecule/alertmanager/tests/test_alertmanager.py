"""Verify role `alertmanager`: loopback only, checked config, and real deliveries.

The receivers are real: molecule/resources/alert_sink.py runs inside the host
(converge.yml) as an SMTP server on 127.0.0.1:2525 and an HTTP server on
127.0.0.1:9199, and records every mail and request. The tests post alerts
to Alertmanager's API, as Prometheus does, and read what arrived.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from harness.wait import until

API = "http://127.0.0.1:9093/api/v2"
SINK = "/var/lib/alert-sink"


# Every wait goes through harness/wait.py; this file's default bound and interval.
_poll = partial(until, timeout=60, interval=1)


def _records(host, kind: str) -> list[dict[str, Any]]:
    path = f"{SINK}/{kind}.jsonl"
    if not host.file(path).exists:
        return []
    return [json.loads(line) for line in host.file(path).content_string.splitlines() if line]


def _post(host, alerts: list[dict[str, Any]]) -> None:
    body = json.dumps(alerts).replace("'", "'\\''")
    host.check_output(
        f"curl -fsS --max-time 5 -X POST -H 'Content-Type: application/json' "
        f"-d '{body}' {API}/alerts"
    )


def _alert(run: str, name: str, severity: str, ends: datetime | None = None, **labels: str) -> dict:
    now = datetime.now(UTC)
    alert: dict[str, Any] = {
        "labels": {"alertname": name, "severity": severity, "run": run, **labels},
        # The run's id in the summary: e-mails show annotations, not every label.
        "annotations": {"summary": f"{name} test {run}", "value": "42%", "version": "v9"},
        "startsAt": (now - timedelta(seconds=5)).isoformat(),
        "generatorURL": "http://127.0.0.1:9090/graph",
    }
    alert["endsAt"] = (ends or now + timedelta(minutes=5)).isoformat()
    return alert


def _hooks(host, path: str, run: str, status: str | None = None) -> list[dict[str, Any]]:
    found = []
    for rec in _records(host, "http"):
        body = rec["body"]
        if rec["path"] != path or not isinstance(body, dict):
            continue
        text = json.dumps(body)
        if run in text and (status is None or body.get("status") == status):
            found.append(body)
    return found


def _mails(host, run: str) -> list[dict[str, Any]]:
    return [m for m in _records(host, "smtp") if run in m["text"]]


@pytest.mark.parametrize("service", ["prometheus-alertmanager", "alert-sink"])
def test_services_enabled_and_running(host, service: str) -> None:
    unit = host.service(service)
    assert unit.is_enabled
    assert unit.is_running


def test_listens_on_loopback_only_and_does_not_gossip(host) -> None:
    assert host.socket("tcp://127.0.0.1:9093").is_listening
    assert not host.socket("tcp://0.0.0.0:9093").is_listening
    assert not host.socket("tcp://:::9093").is_listening
    # Clustering is off: nothing on 9094, TCP or UDP.
    listening = host.check_output("ss -Htuln")
    assert ":9094" not in listening, listening


def test_config_is_private_and_checked(host) -> None:
    config = host.file("/etc/prometheus/alertmanager.yml")
    assert config.mode == 0o640
    assert config.user == "root" and config.group == "prometheus"
    assert "Ansible managed" in config.content_string
    host.check_output("amtool check-config /etc/prometheus/alertmanager.yml")


def test_memory_limit_is_live(host) -> None:
    limit = host.check_output("systemctl show -p MemoryMax --value prometheus-alertmanager")
    assert limit == str(128 * 2**20)
    rss_kib = int(host.check_output("ps -o rss= -C prometheus-alertmanager").split()[0])
    print(f"\n[alertmanager] {rss_kib / 1024:.1f} MiB resident, limit 128 MiB")


def test_critical_alert_reaches_email_and_both_webhooks_then_resolves(host) -> None:
    run = uuid.uuid4().hex[:8]
    started = time.monotonic()
    _post(host, [_alert(run, "AppHighErrorRate", "critical", color="green")])
    mail = _poll("the e-mail", lambda: _mails(host, run))[0]
    hook = _poll("the generic webhook", lambda: _hooks(host, "/hook", run, "firing"))[0]
    slack = _poll("the Slack-style webhook", lambda: _hooks(host, "/slack", run))[0]
    print(f"\n[alertmanager] firing alert delivered in {time.monotonic() - started:.1f} s")
    assert mail["to"] == ["oncall@archibald.test"]
    assert mail["subject"].startswith("[FIRING:1] AppHighErrorRate on green (critical)")
    print(f"\n[alertmanager] e-mail subject: {mail['subject']}")
    for line in (
        "colour:   green",
        "version:  v9",
        "value:    42%",
        "runbook:  https://ops.archibald.test/OPERATIONS.md#apphigherrorrate",
    ):
        assert line in mail["text"], mail["text"]
    labels = hook["alerts"][0]["labels"]
    assert labels["alertname"] == "AppHighErrorRate" and labels["color"] == "green"
    assert hook["alerts"][0]["annotations"]["version"] == "v9"
    assert "colour:   green" in slack["attachments"][0]["text"]
    assert slack["attachments"][0]["color"] == "danger"

    _post(
        host, [_alert(run, "AppHighErrorRate", "critical", ends=datetime.now(UTC), color="green")]
    )
    _poll("the resolved webhook", lambda: _hooks(host, "/hook", run, "resolved"))
    resolved = _poll(
        "the resolved e-mail", lambda: [m for m in _mails(host, run) if "RESOLVED" in m["subject"]]
    )
    assert "RESOLVED AppHighErrorRate" in resolved[0]["text"]


def test_warning_goes_to_the_generic_webhook_only(host) -> None:
    run = uuid.uuid4().hex[:8]
    _post(host, [_alert(run, "ProbeSlow", "warning", instance="https://site.test/health")])
    _poll("the generic webhook", lambda: _hooks(host, "/hook", run))
    time.sleep(3)  # one group interval more: a wrong route would have delivered by now
    assert not _mails(host, run), "a warning was e-mailed; e-mail is for critical only here"
    assert not _hooks(host, "/slack", run), "a warning reached the critical-only chat"


def test_target_down_silences_the_symptoms_of_its_colour(host) -> None:
    run = uuid.uuid4().hex[:8]
    # The cause first, as in life (TargetDown's 2 min; the symptom needs
    # its own window): once it is delivered, the symptom must stay silent.
    _post(
        host,
        [_alert(run, "TargetDown", "critical", job="archibald", color="blue", service="backend")],
    )
    _poll("TargetDown", lambda: _hooks(host, "/hook", run))
    _post(host, [_alert(run, "AppHighErrorRate", "critical", color="blue")])
    time.sleep(6)  # past group_wait (1 s) and a group_interval (5 s)
    names = {
        a["labels"]["alertname"] for body in _hooks(host, "/hook", run) for a in body["alerts"]
    }
    assert names == {"TargetDown"}, f"inhibited symptom was sent: {names}"


def test_watchdog_pings_the_heartbeat_and_nobody_else(host) -> None:
    run = uuid.uuid4().hex[:8]
    _post(host, [_alert(run, "Watchdog", "none")])
    pings = _poll(
        "two heartbeat pings",
        lambda: (p := _hooks(host, "/ping/heartbeat", run)) and len(p) >= 2 and p,
        timeout=60,
    )
    times = [r["time"] for r in _records(host, "http") if r["path"] == "/ping/heartbeat"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print(f"\n[alertmanager] heartbeat every {min(gaps):.0f}-{max(gaps):.0f} s (interval 10s)")
    assert max(gaps) < 15, f"heartbeat gaps {gaps}: the interval is 10 s"
    assert pings[0]["alerts"][0]["labels"]["alertname"] == "Watchdog"
    assert not _hooks(host, "/hook", run) and not _mails(host, run)
