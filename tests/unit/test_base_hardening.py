"""The base role's hardening as its templates render it from the defaults (issue 29).

The SSH drop-in: no forwarding beyond `ssh -L`, and the preflight's list of keywords
the role writes itself is exactly what the template writes, so an extra option can
never be silently overridden. The base scenario checks `sshd -T` and a real `ssh -R`.

The kernel settings: every key names a setting this machine's kernel has (a typo
would make systemd-sysctl fail at boot), none turns off Docker's forwarding. The base
scenario applies the network keys in a network namespace of its hosts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "base"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
MANAGED = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_base_sshd_managed_keywords"]


def sysctl_lines(**overrides: Any) -> list[str]:
    values = {**DEFAULTS, **overrides}
    pairs = sorted({**values["base_sysctl"], **values["base_sysctl_extra"]}.items())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters["comment"] = lambda text: f"# {text}"
    text = env.from_string((ROLE / "templates" / "sysctl.conf.j2").read_text()).render(
        _base_sysctl=pairs, ansible_managed="Ansible managed"
    )
    return [line for line in text.splitlines() if line and line[0] != "#"]


def test_every_kernel_setting_exists_and_docker_keeps_forwarding() -> None:
    lines = sysctl_lines()
    keys = [line.split(" = ")[0] for line in lines]
    missing = [key for key in keys if not (Path("/proc/sys") / key.replace(".", "/")).exists()]
    assert not missing, f"no such kernel setting here: {missing}"
    assert "net.ipv4.ip_forward" not in keys
    assert "net.ipv4.conf.all.accept_redirects = 0" in lines
    assert "net.ipv4.tcp_syncookies = 1" in sysctl_lines()
    extra = sysctl_lines(base_sysctl_extra={"net.ipv4.conf.all.rp_filter": 2})
    assert "net.ipv4.conf.all.rp_filter = 2" in extra and len(extra) == len(lines)


def render(**overrides: Any) -> dict[str, str]:
    """keyword (lower case) -> value of the rendered drop-in."""
    values = {**DEFAULTS, "base_deploy_user": "deploy", **overrides}
    values["base_ssh_allow_users"] = overrides.get("base_ssh_allow_users", ["deploy"])
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters["comment"] = lambda text: f"# {text}"
    text = env.from_string((ROLE / "templates" / "sshd.conf.j2").read_text()).render(
        values, ansible_managed="Ansible managed"
    )
    pairs = [line.split(None, 1) for line in text.splitlines() if line and line[0] != "#"]
    return {keyword.lower(): value for keyword, value in pairs}


def test_only_local_tcp_forwarding_by_default() -> None:
    conf = render()
    assert conf["allowtcpforwarding"] == "local"
    for keyword in ("allowagentforwarding", "allowstreamlocalforwarding", "x11forwarding"):
        assert conf[keyword] == "no", keyword
    assert conf["gatewayports"] == "no" and conf["permittunnel"] == "no"
    assert render(base_ssh_tcp_forwarding="no")["allowtcpforwarding"] == "no"


def test_the_preflight_knows_every_keyword_the_template_writes() -> None:
    written = set(render()) - {k.lower() for k in DEFAULTS["base_ssh_extra_options"]}
    assert written == set(MANAGED)
    # An extra option is written after the role's own, so the role's would win.
    extra = render(base_ssh_extra_options={"ClientAliveInterval": 300})
    assert extra["clientaliveinterval"] == "300"
