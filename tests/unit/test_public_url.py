"""Everything that names the site's public address follows the inventory's public_url.

For each inventory host (and the whole-stack scenario's host, which reads
the sandbox's group_vars plus its own host_vars), grafana.ini is rendered
from the grafana role's template with the inventory's variables: its
root_url is public_url + /grafana/ and its domain public_url's host name.
Prometheus' external URL and the probe's target follow the same variable.
"""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from ansible.vars.manager import VariableManager
from trusted_vars import trusted

# The whole-stack host's public_url looks its port up in the environment.
init_plugin_loader()

ROOT = Path(__file__).resolve().parents[2]
INVENTORIES = ["production", "sandbox"]
VAULT_EXAMPLE = ROOT / "inventory" / "production" / "group_vars" / "all" / "vault.yml.example"
WHOLE_STACK_HOST_VARS = ROOT / "molecule" / "default" / "host_vars" / "default-deb12.yml"


def _role_vars(role: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for part in ("defaults", "vars"):
        found |= yaml.safe_load((ROOT / "roles" / role / part / "main.yml").read_text()) or {}
    return found


def _hosts() -> list[tuple[str, dict[str, Any]]]:
    """(name, variables) per host: role defaults, the inventory over them, vault stand-ins."""
    # The vault is not in the repository: its example's keys stand in for it.
    vault = yaml.safe_load(VAULT_EXAMPLE.read_text())
    hosts = []
    for name in INVENTORIES:
        loader = DataLoader()
        inventory = InventoryManager(loader=loader, sources=[str(ROOT / "inventory" / name)])
        manager = VariableManager(loader=loader, inventory=inventory)
        for host in inventory.get_hosts():
            inv_vars = dict(manager.get_vars(host=host, include_hostvars=False))
            hosts.append((f"{name}/{host.name}", inv_vars))
            if name == "sandbox":
                stack = inv_vars | yaml.safe_load(WHOLE_STACK_HOST_VARS.read_text())
                hosts.append(("molecule/default/default-deb12", stack))
    result = []
    for label, inv_vars in hosts:
        variables = _role_vars("grafana") | _role_vars("prometheus") | vault | inv_vars
        variables |= {"ansible_managed": "Ansible managed"}
        result.append((label, trusted(variables)))
    return result


HOSTS = _hosts()


def _render(variables: dict[str, Any], text: str) -> Any:
    templar = Templar(loader=DataLoader(), variables=variables)
    return templar.template(trust_as_template(text))


def test_every_inventory_has_a_host_with_a_public_url() -> None:
    assert {label.split("/")[0] for label, _ in HOSTS} >= {"production", "sandbox", "molecule"}
    for label, variables in HOSTS:
        assert "public_url" in variables, f"{label} sets no public_url"


@pytest.mark.parametrize(("label", "variables"), HOSTS, ids=[label for label, _ in HOSTS])
def test_grafana_root_url_is_the_public_url(label: str, variables: dict[str, Any]) -> None:
    public_url = str(_render(variables, "{{ public_url }}"))
    source = (ROOT / "roles" / "grafana" / "templates" / "grafana.ini.j2").read_text()
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(str(_render(variables, source)))
    assert ini["server"]["root_url"] == public_url.rstrip("/") + "/grafana/", label
    assert ini["server"]["domain"] == urlsplit(public_url).hostname, label


@pytest.mark.parametrize(("label", "variables"), HOSTS, ids=[label for label, _ in HOSTS])
def test_prometheus_links_and_probes_follow_the_public_url(
    label: str, variables: dict[str, Any]
) -> None:
    public_url = str(_render(variables, "{{ public_url }}")).rstrip("/")
    args = list(_render(variables, "{{ _prometheus_args }}"))
    assert f"--web.external-url={public_url}/prometheus/" in args, args
    assert "--web.route-prefix=/" in args, "the loopback API must stay at /api/v1"
    targets = list(_render(variables, "{{ prometheus_blackbox_targets }}"))
    if label.startswith("production"):
        assert targets == [f"{public_url}/health"], targets
    else:
        # public_url's port belongs to the outer machine; inside, nginx is on 443.
        assert targets == ["https://127.0.0.1/health"], targets
