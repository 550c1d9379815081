"""The SSH drop-in as sshd.conf.j2 renders it from the base role's defaults: no
forwarding beyond `ssh -L` (issue 29), and the preflight's list of keywords the
role writes itself is exactly what the template writes, so an extra option can
never be silently overridden. The base scenario checks `sshd -T` and a real
`ssh -R` on its hosts.
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
