"""scripts/cd-plan.py: CD's plan from the host's read-only observer, made by the
engine's own planner; the hosts from the inventory without the vault."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("cd_plan", ROOT / "scripts" / "cd-plan.py")
assert _spec and _spec.loader
cd_plan: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cd_plan)
core: Any = cd_plan.core


def facts(active: str | None = "blue", **changes: Any) -> dict[str, Any]:
    """What the observer prints for a host serving v1 on blue, v0 warm on green."""
    state = core.empty_state("archibald", ["blue", "green"])
    state["active"] = active
    state["colors"]["blue"].update(version="v1")
    state["colors"]["green"].update(version="v0")
    containers = [
        {"color": c, "service": s, "version": v, "running": True}
        for c, v in (("blue", "v1"), ("green", "v0"))
        for s in ("backend", "frontend")
    ]
    out = {
        "observed_at": "2026-12-06T10:00:00Z",
        "app": "archibald",
        "colors_order": ["blue", "green"],
        "services": ["backend", "frontend"],
        "maintenance": False,
        "state": state,
        "lock": None,
        "edge": {"status": 200, "color": "blue", "version": "v1", "error": None},
        "colors": core.colors_of(containers, ["blue", "green"], ["backend", "frontend"]),
        "drift": [],
    }
    out.update(changes)
    return out


def run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], seen: dict[str, Any], *args: str
) -> tuple[int, str]:
    path = tmp_path / "formicanera.json"
    path.write_text(json.dumps(seen))
    code = cd_plan.main(["--facts", str(path), *args])
    return code, capsys.readouterr().out


def test_a_deploy_is_planned_to_the_other_colour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(tmp_path, capsys, facts(), "--action", "deploy", "--version", "v2")
    assert code == 0, out
    assert "**plan: release v2 to green** (version v1 → v2)" in out
    assert "the record says blue v1; nginx answers blue v1" in out
    assert "- drift: none" in out and "- canary: none" in out


def test_a_deploy_the_host_would_refuse_fails_the_plan_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drifted = facts(drift=["nginx answers from green, the record says blue"])
    code, out = run(tmp_path, capsys, drifted, "--action", "deploy", "--version", "v2")
    assert code == 1
    assert "::error title=The deploy would be refused on formicanera::" in out
    assert "the host does not match its record" in out and "repair" in out


def test_a_version_marked_bad_is_refused_and_a_rollback_is_planned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = facts()
    seen["state"]["bad_versions"] = {"v2": {"at": "x", "by": "ci", "reason": "5xx"}}
    code, out = run(tmp_path, capsys, seen, "--action", "deploy", "--version", "v2")
    assert code == 1 and "listed in bad_versions" in out and "- marked bad: v2" in out
    code, out = run(tmp_path, capsys, facts(), "--action", "rollback")
    assert code == 0 and "**plan: roll back to v0 on green**" in out


def test_a_host_that_cannot_be_read_fails_the_plan_and_says_what_to_check(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cd_plan, "inventory_hosts", lambda _inv: {"formicanera": {}})

    def refused(name: str, _vars: Any) -> str:
        raise OSError("ssh as archibald-observer exited 255: Permission denied (publickey)")

    code = cd_plan.main(["--action", "deploy", "--version", "v2"], observe=refused)
    out = capsys.readouterr().out
    assert code == 1
    assert "**cannot read the host**: ssh as archibald-observer exited 255" in out
    assert "VPS_OBSERVER_KEY" in out


def test_the_hosts_come_from_the_inventory_without_the_vault(tmp_path: Path) -> None:
    """The plan job has no vault password: group variables (an encrypted vault
    among them) are not read, the host entries are."""
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    hosts = {
        "all": {
            "children": {
                "archibald": {
                    "hosts": {"vps": {"ansible_host": "192.0.2.10", "ansible_port": 2222}}
                }
            }
        }
    }
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    vault = inventory / "group_vars" / "all" / "vault.yml"
    vault.write_text("secret: x\n")
    (tmp_path / "pw").write_text("pw\n")
    subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-vault"),
            "encrypt",
            "--vault-password-file",
            str(tmp_path / "pw"),
            str(vault),
        ],
        check=True,
        capture_output=True,
    )
    found = cd_plan.inventory_hosts(str(inventory))
    assert found == {"vps": {"ansible_host": "192.0.2.10", "ansible_port": 2222}}


def test_the_observer_user_is_the_roles() -> None:
    shared = yaml.safe_load((ROOT / "group_vars" / "all.yml").read_text())
    assert cd_plan.observer_user({}) == f"{shared['bluegreen_app']}-observer"
    assert cd_plan.observer_user({"bluegreen_app": "shop"}) == "shop-observer"
    assert cd_plan.observer_user({"bluegreen_observer_user": "eyes"}) == "eyes"
