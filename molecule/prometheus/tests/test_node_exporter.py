"""Verify role `node_exporter`: loopback only, enabled, textfile collector exports .prom files."""

from __future__ import annotations

import pytest

from harness.wait import until

METRICS = "curl -fsS --max-time 5 http://127.0.0.1:9100/metrics"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


def test_service_enabled_and_running(host) -> None:
    unit = host.service("prometheus-node-exporter")
    assert unit.is_enabled
    assert unit.is_running


def test_listens_on_loopback_only(host) -> None:
    assert host.socket("tcp://127.0.0.1:9100").is_listening
    assert not host.socket("tcp://0.0.0.0:9100").is_listening
    assert not host.socket("tcp://:::9100").is_listening


def test_flags_are_live(host) -> None:
    args = host.check_output("cat /proc/$(pidof prometheus-node-exporter)/cmdline | tr '\\0' ' '")
    assert "--web.listen-address=127.0.0.1:9100" in args
    assert f"--collector.textfile.directory={TEXTFILE_DIR}" in args
    defaults = host.file("/etc/default/prometheus-node-exporter")
    assert defaults.mode == 0o644
    assert "Ansible managed" in defaults.content_string


def test_textfile_dir(host) -> None:
    directory = host.file(TEXTFILE_DIR)
    assert directory.is_directory
    assert directory.user == "root"
    assert directory.mode == 0o755


@pytest.fixture()
def deploy_prom(host):
    path = f"{TEXTFILE_DIR}/molecule_probe.prom"
    host.check_output(
        f"printf '# TYPE archibald_deploy_switch_timestamp_seconds gauge\\n"
        f"archibald_deploy_switch_timestamp_seconds 1700000000\\n' > {path}.tmp"
        f" && mv {path}.tmp {path}"
    )
    yield path
    host.run(f"rm -f {path}")


def test_textfile_collector_exports_deploy_metrics(host, deploy_prom: str) -> None:
    def exported() -> str:
        text = host.check_output(METRICS)
        return text if "archibald_deploy_switch_timestamp_seconds 1.7e+09" in text else ""

    out = until("node_exporter to export the deploy metric", exported, 30, 1)
    assert "node_textfile_scrape_error 0" in out


def test_machine_metrics_are_exported(host) -> None:
    out = host.check_output(METRICS)
    for metric in (
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_filesystem_avail_bytes",
        "node_network_receive_bytes_total",
    ):
        assert metric in out, metric


def test_a_pending_reboot_is_exported_and_only_the_apt_collector_runs(host) -> None:
    """Debian's apt collector reports /run/reboot-required as node_reboot_required (the
    RebootRequired alert reads it); the package's hardware timers stay off."""
    timers = host.check_output(
        "systemctl list-units --no-legend --type=timer --state=active "
        "'prometheus-node-exporter-*.timer' | awk '{print $1}'"
    ).split()
    assert timers == ["prometheus-node-exporter-apt.timer"], timers

    def reboot_required(expected: str) -> str:
        host.check_output("systemctl start prometheus-node-exporter-apt.service")
        text = host.check_output(METRICS)
        return text if f"\nnode_reboot_required {expected}\n" in text else ""

    try:
        host.check_output("touch /run/reboot-required")
        out = until("node_reboot_required 1", lambda: reboot_required("1"), 60, 2)
        assert "apt_upgrades_pending" in out
    finally:
        host.run("rm -f /run/reboot-required")
    until("node_reboot_required 0", lambda: reboot_required("0"), 60, 2)
