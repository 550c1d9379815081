"""Verify role `grafana` when Grafana's repository is unreachable.

The scenario points the repository at a name that never resolves, so this
holds on any network. The files are rendered and provisioned; the package is
not installed and the role says so plainly; with grafana_required true
(production) it fails.
"""

from __future__ import annotations

import configparser
import functools
import json
import os
from pathlib import Path

import yaml

from filter_plugins.openpgp import openpgp_primary_fingerprints
from harness import playbook

SCENARIO = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", Path(__file__).parents[1]))
DASHBOARDS = sorted(
    p.name for p in (SCENARIO.parents[1] / "roles/grafana/files/dashboards").glob("*.json")
)


@functools.cache
def _playbook(playbook_name: str, limit: str) -> tuple[int, str]:
    """Run a playbook of this scenario against one host (once per host), the way
    every test runs one (harness/playbook.py): (exit code, stdout and stderr)."""
    rc, output, _ = playbook.run(SCENARIO / playbook_name, limit=limit, timeout=600)
    return rc, output


def _said(result: tuple[int, str]) -> str:
    """The playbook's output (stdout and stderr) with the YAML callback's wrapping undone."""
    return " ".join(result[1].split())


def _ini(host) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read_string(host.file("/etc/grafana/grafana.ini").content_string)
    return parser


def test_grafana_ini_is_rendered_from_data(host) -> None:
    ini_file = host.file("/etc/grafana/grafana.ini")
    assert ini_file.mode == 0o640
    assert ini_file.user == "root"
    ini = _ini(host)
    assert ini.get("server", "root_url") == "%(protocol)s://%(domain)s/grafana/"
    assert ini.get("server", "serve_from_sub_path") == "true"
    assert ini.get("server", "http_addr") == "127.0.0.1"
    assert ini.get("server", "http_port") == "3000"
    assert ini.get("server", "domain") == "archibald.test"
    assert ini.get("security", "admin_password") == "molecule-grafana-admin-pw"
    # Reached through nginx over HTTPS only: no session cookie over plain HTTP.
    assert ini.get("security", "cookie_secure") == "true"
    assert ini.get("auth.anonymous", "enabled") == "false"
    assert ini.get("analytics", "reporting_enabled") == "false"
    assert ini.get("analytics", "check_for_updates") == "false"


def test_datasource_is_provisioned(host) -> None:
    data = yaml.safe_load(
        host.file("/etc/grafana/provisioning/datasources/archibald.yml").content_string
    )
    (source,) = data["datasources"]
    assert source["uid"] == "prometheus"
    assert source["type"] == "prometheus"
    assert source["url"] == "http://127.0.0.1:9090"


def test_dashboards_are_provisioned(host) -> None:
    data = yaml.safe_load(
        host.file("/etc/grafana/provisioning/dashboards/archibald.yml").content_string
    )
    (provider,) = data["providers"]
    path = provider["options"]["path"]
    assert path == "/etc/grafana/dashboards"
    assert len(DASHBOARDS) == 4
    for name in DASHBOARDS:
        dashboard = host.file(f"{path}/{name}")
        assert dashboard.mode == 0o640
        assert json.loads(dashboard.content_string)["uid"].startswith("archibald-")


def test_the_memory_limit_waits_for_the_service(host) -> None:
    """Written before the package: systemd applies it when grafana-server first starts
    (grafana_online checks it in force)."""
    dropin = host.file("/etc/systemd/system/grafana-server.service.d/memory.conf")
    assert dropin.exists and dropin.mode == 0o644
    assert "MemoryMax=512M" in dropin.content_string


def test_package_and_service_are_absent_when_repo_unreachable(host) -> None:
    assert not host.package("grafana").is_installed
    assert not host.socket("tcp://127.0.0.1:3000").is_listening
    assert not host.file("/etc/apt/sources.list.d/grafana.sources").exists


def test_the_repository_is_unreachable_by_construction(host) -> None:
    # The premise of every test here: not an accident of the network.
    assert ".invalid/" in _probe_url()


def _probe_url() -> str:
    config = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
    return str(config["provisioner"]["inventory"]["group_vars"]["molecule"]["grafana_apt_key_url"])


def test_skip_is_said_plainly(host) -> None:
    result = _playbook("converge.yml", host.backend.host)
    assert result[0] == 0, result[1]
    said = _said(result)
    assert "SKIPPED Grafana package install and service" in said
    assert f"its repository {_probe_url()} is unreachable" in said


def test_required_and_unreachable_fails_in_preflight(host) -> None:
    result = _playbook("required.yml", host.backend.host)
    assert result[0] != 0, result[1]
    said = _said(result)
    assert "Grafana is required (grafana_required: true)" in said
    assert "is unreachable" in said
    assert "set grafana_required: false" in said


KEY_TEST = "/root/grafana-key-test"  # key.yml's key_test_dir


def test_a_signing_key_is_installed_only_with_the_pinned_fingerprint(host) -> None:
    """roles/grafana/tasks/key.yml with a key made on the host (key.yml): a pin
    that is not the key's fails the run and leaves no keyring; the key's own pin,
    written with spaces as Grafana prints it, installs the key, and a rerun
    changes nothing; a download that is no key is refused and the key stays."""
    limit = host.backend.host
    wrong = "0123 4567 89AB CDEF 0123  4567 89AB CDEF 0123 4567"
    rc, output, _ = playbook.run(SCENARIO / "key.yml", "-e", f"key_test_pin='{wrong}'", limit=limit)
    said = " ".join(output.split())
    assert rc != 0, output
    assert "not grafana_apt_key_fingerprint (0123456789ABCDEF0123456789ABCDEF01234567)" in said
    assert "It was not installed" in said
    assert not host.file(f"{KEY_TEST}/keyrings/grafana.asc").exists, "a refused key was trusted"

    shown = host.check_output(
        f"GNUPGHOME={KEY_TEST}/home gpg --batch --show-keys --with-colons {KEY_TEST}/key.asc"
    )
    (fingerprint,) = openpgp_primary_fingerprints(shown)
    spaced = " ".join(fingerprint[i : i + 4] for i in range(0, 40, 4))
    for attempt in ("installs", "changes nothing"):
        rc, output, _ = playbook.run(
            SCENARIO / "key.yml", "-e", f"key_test_pin='{spaced}'", limit=limit
        )
        assert rc == 0, output
        if attempt == "changes nothing":
            assert "changed=0" in output, output
    keyring = host.file(f"{KEY_TEST}/keyrings/grafana.asc")
    assert keyring.content == host.file(f"{KEY_TEST}/key.asc").content
    assert keyring.mode == 0o644 and keyring.user == "root"

    # A download that is no key at all (a portal's page): refused with gpg's
    # words, and the key trusted before stays.
    rc, output, _ = playbook.run(
        SCENARIO / "key.yml",
        *("-e", f"key_test_pin='{spaced}'", "-e", "key_test_file=not-a-key.asc"),
        limit=limit,
    )
    said = " ".join(output.split())
    assert rc != 0, output
    assert "has the fingerprint(s) none (gpg:" in said, said[-2000:]
    assert keyring.content == host.file(f"{KEY_TEST}/key.asc").content
