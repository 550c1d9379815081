"""filter_plugins/provision_stamp.py: a deploy provisions a host only when what
provisioning reads changed since its last full provisioning, that one is too
old, or the run asks for it; it always says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from provision_stamp import (
    INPUTS,
    FilterModule,
    decision,
    fingerprint,
    provision_decision,
    provision_fingerprint,
    tree_entries,
)

ROOT = Path(__file__).resolve().parents[4]
NOW = 1_800_000_000.0
CURRENT = "a" * 64


def stamp(fingerprint: str = CURRENT, hours_ago: float = 1.0) -> str:
    return json.dumps({"fingerprint": fingerprint, "at": NOW - hours_ago * 3600})


def test_the_fingerprint_follows_every_path_and_content_and_the_extra_facts() -> None:
    base = fingerprint([("roles/a", b"1"), ("roles/b", b"2")], {"ansible": "2.19"})
    assert base == fingerprint([("roles/b", b"2"), ("roles/a", b"1")], {"ansible": "2.19"})
    assert base != fingerprint([("roles/a", b"1"), ("roles/b", b"3")], {"ansible": "2.19"})
    assert base != fingerprint([("roles/a", b"1"), ("roles/c", b"2")], {"ansible": "2.19"})
    assert base != fingerprint([("roles/a", b"1")], {"ansible": "2.19"})
    assert base != fingerprint([("roles/a", b"1"), ("roles/b", b"2")], {"ansible": "2.20"})


def test_a_tree_skips_caches_and_records_an_absent_input(tmp_path: Path) -> None:
    (tmp_path / "roles" / "x" / "__pycache__").mkdir(parents=True)
    (tmp_path / "roles" / "x" / "main.yml").write_text("a: 1\n")
    (tmp_path / "roles" / "x" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "roles" / "x" / "old.retry").write_text("host\n")
    (tmp_path / "deploy.yml").write_text("---\n")
    entries = tree_entries(tmp_path, ["roles", "deploy.yml", "monitoring"])
    assert entries == [
        ("roles/x/main.yml", b"a: 1\n"),
        ("deploy.yml", b"---\n"),
        ("monitoring", b"\0absent"),
    ]


def test_the_repository_fingerprint_changes_with_the_inventory(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text("all: {}\n")
    vars_file = inventory / "group_vars" / "all" / "main.yml"
    vars_file.write_text("nginx_worker_connections: 1024\n")
    before = provision_fingerprint(str(inventory), "2.19.1")
    assert before == provision_fingerprint(str(inventory), "2.19.1")
    vars_file.write_text("nginx_worker_connections: 2048\n")
    assert provision_fingerprint(str(inventory), "2.19.1") != before
    assert provision_fingerprint(str(inventory), "2.19.2") != provision_fingerprint(
        str(inventory), "2.19.1"
    )
    with pytest.raises(AnsibleFilterError, match="no inventory directory"):
        provision_fingerprint(str(tmp_path / "missing"), "2.19.1")


def test_the_inputs_are_what_the_provisioning_play_reads() -> None:
    # Every role provision.yml names, and the code the roles load from outside
    # roles/, is under an input; tests and the harness are not.
    play = yaml.safe_load((ROOT / "playbooks/provision.yml").read_text())
    roles = [r["role"] for p in play for r in p.get("roles", [])]
    assert roles and all((ROOT / "roles" / r).is_dir() for r in roles)
    assert {"roles", "playbooks", "module_utils", "library", "group_vars"} <= set(INPUTS)
    assert not {"tests", "molecule", "harness", "app", "node"} & set(INPUTS)
    assert all((ROOT / name).exists() for name in INPUTS)


def test_nothing_changed_and_recent_skips_and_says_how_to_force() -> None:
    result = decision(stamp(hours_ago=2), CURRENT, NOW, 24)
    assert result["needed"] is False and result["stamp"] is None
    assert result["why"].startswith("provisioning skipped: nothing it reads changed")
    assert "2.0 h ago" in result["why"] and "-e provision_mode=always" in result["why"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "the host has no stamp"),
        ("{not json", "unreadable"),
        (json.dumps({"at": NOW}), "has no fingerprint"),
        (json.dumps({"fingerprint": CURRENT}), "has no time"),
        (json.dumps(["a list"]), "has no fingerprint"),
    ],
    ids=["missing", "unreadable", "no-fingerprint", "no-time", "not-an-object"],
)
def test_a_missing_or_broken_stamp_provisions(text: str, reason: str) -> None:
    result = decision(text, CURRENT, NOW, 24)
    assert result["needed"] is True and reason in result["why"]
    assert result["stamp"] == {"fingerprint": CURRENT, "at": NOW}


def test_a_changed_fingerprint_provisions_and_names_both() -> None:
    result = decision(stamp(fingerprint="b" * 64), CURRENT, NOW, 24)
    assert result["needed"] is True
    assert "what it reads changed" in result["why"]
    assert "bbbbbbbbbbbb then, aaaaaaaaaaaa now" in result["why"]
    assert result["stamp"] == {"fingerprint": CURRENT, "at": NOW}


@pytest.mark.parametrize("hours_ago", [24.0, 30.0, -1.0], ids=["at-the-limit", "older", "future"])
def test_an_old_stamp_provisions_to_repair_drift(hours_ago: float) -> None:
    result = decision(stamp(hours_ago=hours_ago), CURRENT, NOW, 24)
    assert result["needed"] is True and "repairs drift" in result["why"]


def test_always_provisions_and_stamps() -> None:
    result = decision(stamp(), CURRENT, NOW, 24, mode="always")
    assert result["needed"] is True and "provision_mode=always" in result["why"]
    assert result["stamp"] is not None


@pytest.mark.parametrize(
    ("check_mode", "run_tags", "skip_tags", "said"),
    [
        (True, ["all"], [], "a dry run"),
        (False, ["nginx"], [], "--tags nginx"),
        (False, ["all"], ["grafana"], "--skip-tags grafana"),
    ],
    ids=["check", "tags", "skip-tags"],
)
def test_a_partial_run_provisions_but_writes_no_stamp(
    check_mode: bool, run_tags: list[str], skip_tags: list[str], said: str
) -> None:
    result = decision(stamp(), CURRENT, NOW, 24, "changed", check_mode, run_tags, skip_tags)
    assert result["needed"] is True and said in result["why"]
    assert result["stamp"] is None


def test_an_unknown_mode_is_refused_with_the_choices() -> None:
    with pytest.raises(AnsibleFilterError, match=r"'sometimes'.*\['changed', 'always'\]"):
        decision(stamp(), CURRENT, NOW, 24, mode="sometimes")


def test_the_filter_reads_the_clock_only_when_no_time_is_given() -> None:
    given = provision_decision(stamp(hours_ago=2), CURRENT, 24, now=NOW)
    assert given["needed"] is False
    # On the real clock, a stamp from NOW (2027) lies in the future: provision.
    assert provision_decision(stamp(hours_ago=-1e6), CURRENT, 24)["needed"] is True
    assert set(FilterModule().filters()) == {"provision_fingerprint", "provision_decision"}


def test_provision_yml_by_itself_always_provisions() -> None:
    result = decision(stamp(hours_ago=1), CURRENT, NOW, 24, mode="direct")
    assert result["needed"] is True and "run by itself" in result["why"]
    assert result["stamp"] == {"fingerprint": CURRENT, "at": NOW}


def test_only_deploy_yml_asks_to_skip_a_current_host() -> None:
    deploy = yaml.safe_load((ROOT / "deploy.yml").read_text())
    imports = {p["ansible.builtin.import_playbook"]: p.get("vars", {}) for p in deploy}
    assert imports["playbooks/provision.yml"] == {"provision_via_deploy": True}
    decide, provision = yaml.safe_load((ROOT / "playbooks/provision.yml").read_text())
    decided = next(t for t in decide["tasks"] if "ansible.builtin.set_fact" in t)
    text = " ".join(decided["ansible.builtin.set_fact"]["provision_decided"].split())
    assert "provision_mode if provision_via_deploy | default(false) else 'direct'" in text
    assert provision["hosts"] == "archibald:&provision_needed"
    # The stamp goes first and comes back last, only for a complete run.
    assert provision["pre_tasks"][0]["ansible.builtin.file"]["state"] == "absent"
    assert provision["post_tasks"][-1]["when"] == "provision_decided.stamp is not none"
