"""playbooks/adopt-compose.yml's switch rewrites nginx's site from the temporary
ports to 80/443 on disk; the result must be exactly what the nginx role renders
with its defaults, or a rerun of the provisioning would change the file (and
reload nginx) after every adoption. molecule/cutover checks the same on a host."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from test_nginx_site import directive, render

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "adopt-compose.yml"


def task(name: str) -> dict[str, Any]:
    for play in yaml.safe_load(PLAYBOOK.read_text()):
        for entry in play.get("tasks", []):
            for item in entry.get("block", [entry]):
                if item.get("name") == name:
                    return dict(item)
    raise AssertionError(f"no task {name!r} in {PLAYBOOK}")


def switch(conf: str, http: int, https: int) -> str:
    """The playbook's own replace task, applied as Ansible's replace module does."""
    replace = task("Point nginx's site at 80 and 443 on disk")["ansible.builtin.replace"]
    for old, new in ((http, 80), (https, 443)):
        pattern = replace["regexp"].replace("{{ item.from }}", str(old))
        repl = replace["replace"].replace("{{ item.to }}", str(new))
        conf = re.sub(pattern, repl, conf, flags=re.M)
    return conf


def test_the_site_listens_on_the_ports_it_is_given() -> None:
    conf = render(nginx_http_port=8081, nginx_https_port=8444)
    assert directive(conf, "listen") == [
        "8081 default_server",
        "[::]:8081 default_server",
        "8444 ssl default_server",
        "[::]:8444 ssl default_server",
    ]


def test_the_switch_writes_what_the_role_renders_for_80_and_443() -> None:
    staging = render(nginx_http_port=8081, nginx_https_port=8444)
    assert switch(staging, 8081, 8444) == render()
    assert render() != staging
