"""Secrets stay in the vault and out of the log.

- Every vault_* variable the production inventory uses is shown in
  vault.yml.example, and the example holds no key nobody uses.
- Every task that handles a secret has `no_log: true`. A secret is a role
  option marked `no_log: true` in meta/argument_specs.yml (or an option with
  such a sub-option); a task handles it when the task, or the template it
  renders, names it. The whole-stack scenario checks the same on a real,
  verbose run (molecule/default/tests/test_6_security.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "inventory" / "production"
EXAMPLE = PRODUCTION / "group_vars" / "all" / "vault.yml.example"
ROLES = sorted(p.parent.parent for p in ROOT.glob("roles/*/meta/argument_specs.yml"))
# Computed from a secret but holding none of it.
NOT_SECRET = {
    "_nginx_prometheus_enabled": "a boolean: whether any Prometheus UI user is configured",
    "_bluegreen_config": "a hash of the containers' settings; the secrets enter it hashed",
    "_alertmanager_receiver_count": "a number: how many receivers are configured",
    "_alertmanager_url_problems": "sentences that name a webhook by its name, never its URL",
}


def test_vault_example_shows_every_key_the_inventory_uses() -> None:
    used = set()
    for path in PRODUCTION.rglob("*.yml"):
        used |= set(re.findall(r"\bvault_\w+", path.read_text()))
    shown = set(yaml.safe_load(EXAMPLE.read_text()))
    assert used, "the production inventory uses no vault variable: is this the right path?"
    assert used == shown, (
        f"vault.yml.example and the inventory differ: used but not shown {sorted(used - shown)}, "
        f"shown but unused {sorted(shown - used)}"
    )


def _secret_options(role: Path) -> set[str]:
    """Options marked no_log, plus the role's vars/main.yml names computed from them."""
    spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    found = set()
    for name, option in spec["argument_specs"]["main"]["options"].items():
        subs = (option.get("options") or {}).values()
        if option.get("no_log") or any(sub.get("no_log") for sub in subs):
            found.add(name)
    role_vars_file = role / "vars" / "main.yml"
    role_vars = yaml.safe_load(role_vars_file.read_text()) if role_vars_file.is_file() else {}
    while found:  # a computed variable that uses a secret holds it too
        grown = {
            name
            for name, value in (role_vars or {}).items()
            if name not in NOT_SECRET
            and re.search(r"\b(" + "|".join(sorted(found)) + r")\b", yaml.safe_dump(value))
        }
        if grown <= found:
            break
        found |= grown
    return found


def _tasks(items: Any) -> Iterator[dict[str, Any]]:
    for task in items or []:
        if isinstance(task, dict):
            if any(key in task for key in ("block", "rescue", "always")):
                for key in ("block", "rescue", "always"):
                    yield from _tasks(task.get(key))
            else:
                yield task


def _template_text(role: Path, task: dict[str, Any]) -> str:
    for module in ("ansible.builtin.template", "template"):
        args = task.get(module)
        if isinstance(args, dict) and isinstance(args.get("src"), str):
            path = role / "templates" / args["src"]
            return path.read_text() if path.is_file() else ""
    return ""


SECRET_ROLES = [role for role in ROLES if _secret_options(role)]


def test_some_roles_declare_secrets() -> None:
    names = {role.name for role in SECRET_ROLES}
    assert {"docker", "grafana", "nginx"} <= names, f"roles with no_log options: {names}"


@pytest.mark.parametrize("role", SECRET_ROLES, ids=[r.name for r in SECRET_ROLES])
def test_tasks_that_handle_secrets_are_no_log(role: Path) -> None:
    secrets = _secret_options(role)
    pattern = re.compile(r"\b(" + "|".join(sorted(secrets)) + r")\b")
    offenders = []
    for path in sorted((role / "tasks").glob("*.yml")):
        for task in _tasks(yaml.safe_load(path.read_text())):
            body = {k: v for k, v in task.items() if k not in ("name", "when", "no_log")}
            text = yaml.safe_dump(body) + _template_text(role, task)
            if pattern.search(text) and task.get("no_log") is not True:
                offenders.append(f"{path.relative_to(ROOT)}: {task.get('name', '?')}")
    assert not offenders, "tasks that handle a secret without no_log: true:\n" + "\n".join(
        offenders
    )


def _grafana_passwords() -> Iterator[tuple[str, str]]:
    """(where, password) for every literal Grafana admin password the repository sets."""
    for path in [
        ROOT / "inventory" / "sandbox" / "group_vars" / "all" / "main.yml",
        *sorted(ROOT.glob("molecule/*/molecule.yml")),
        EXAMPLE,
    ]:
        for match in re.finditer(r"grafana_admin_password:\s*(\S+)", path.read_text()):
            value = match.group(1).strip("\"'")
            if "{{" not in value:
                yield str(path.relative_to(ROOT)), value
    vault = re.search(
        r"vault_cdtest_grafana_admin_password: (\S+)", (ROOT / "tests/cd/sandbox.py").read_text()
    )
    assert vault, "tests/cd/sandbox.py no longer writes the sandbox's Grafana password"
    yield "tests/cd/sandbox.py", vault.group(1).split("\\n")[0]


def test_every_grafana_password_the_repository_sets_meets_the_roles_minimum() -> None:
    """The role refuses a password under its minimum (the login is public at /grafana/):
    the sandbox, the scenarios and the vault's example must pass their own preflight."""
    least = yaml.safe_load((ROOT / "roles/grafana/vars/main.yml").read_text())[
        "__grafana_admin_password_min"
    ]
    found = dict(_grafana_passwords())
    assert "inventory/sandbox/group_vars/all/main.yml" in found, found
    short = {where: value for where, value in found.items() if len(value) < least}
    assert not short, f"shorter than {least} characters: {short}"
