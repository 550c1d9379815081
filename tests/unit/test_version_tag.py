"""A version to release is a Docker image tag, whole: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.

The role's asserts (release.yml, mark_bad.yml) are evaluated as Ansible
evaluates them (its Templar, the role's defaults and vars), and CD's
scripts/image-digest.py reads the same grammar from a reference: a trailing
newline, a first `-` or `.`, a `+`, a letter outside ASCII or a 129th
character is refused everywhere, before anything is pulled.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from trusted_vars import trusted

init_plugin_loader()

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "bluegreen"
GRAMMAR = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
SHA = "0123456789abcdef0123456789abcdef01234567"

ACCEPTED = ["v2", "1.2.3", "a_b-c.d", SHA, "_v2", "V2", "a" * 128, "9"]
REFUSED = ["v2\n", "-v2", ".v2", "v2+x", "a" * 129, "", "v 2", "v2/x", "v2:x", "vé", "v2\r", " v2"]


def _id(version: str) -> str:
    return repr(version) if len(version) < 41 else f"{len(version)} characters"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_digest", ROOT / "scripts/image-digest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _task(tasks_file: str, name: str) -> dict[str, Any]:
    tasks = yaml.safe_load((ROLE / "tasks" / tasks_file).read_text())
    return next(t for t in tasks if t.get("name") == name)


ASSERTS = {
    "release": _task("release.yml", "Assert a version to release was given"),
    "mark_bad": _task("mark_bad.yml", "Assert a version was given"),
}


def _templar(version: Any) -> Templar:
    variables: dict[str, Any] = {}
    for part in ("defaults", "vars"):
        variables |= yaml.safe_load((ROLE / part / "main.yml").read_text()) or {}
    variables |= {"bluegreen_version": version, "bluegreen_image_digest": ""}
    return Templar(loader=DataLoader(), variables=trusted(variables))


def _accepts(entry: str, version: Any) -> bool:
    templar = _templar(version)
    that = ASSERTS[entry]["ansible.builtin.assert"]["that"]
    conditions = [that] if isinstance(that, str) else that
    return all(templar.evaluate_conditional(trust_as_template(c)) for c in conditions)


@pytest.mark.parametrize("entry", sorted(ASSERTS))
@pytest.mark.parametrize("version", ACCEPTED, ids=_id)
def test_the_role_accepts_a_docker_tag(entry: str, version: str) -> None:
    assert _accepts(entry, version)


@pytest.mark.parametrize("entry", sorted(ASSERTS))
@pytest.mark.parametrize("version", REFUSED, ids=_id)
def test_the_role_refuses_what_is_not_a_whole_docker_tag(entry: str, version: str) -> None:
    assert not _accepts(entry, version)


@pytest.mark.parametrize("entry", sorted(ASSERTS))
def test_the_role_refuses_a_version_that_is_not_text(entry: str) -> None:
    assert not _accepts(entry, 2)


@pytest.mark.parametrize("entry", sorted(ASSERTS))
def test_the_refusal_states_the_grammar(entry: str) -> None:
    message = _templar("-v2").template(
        trust_as_template(ASSERTS[entry]["ansible.builtin.assert"]["fail_msg"])
    )
    assert GRAMMAR in " ".join(str(message).split())
    assert "'-v2'" in message


def test_the_grammar_has_one_definition_in_the_role() -> None:
    """Every task that checks the version uses the role's one pattern, no copy of its own."""
    checks = [
        line.strip()
        for path in sorted((ROLE / "tasks").glob("*.yml"))
        for line in path.read_text().splitlines()
        if "bluegreen_version is" in line and "string" not in line
    ]
    assert checks, "no task checks bluegreen_version"
    assert {c.removeprefix("- ").removeprefix("that: ") for c in checks} == {
        "bluegreen_version is match(_bluegreen_tag_re)"
    }, checks


@pytest.mark.parametrize(
    ("version", "accepted"),
    [(v, True) for v in ACCEPTED] + [(v, False) for v in REFUSED if v],
    ids=lambda v: _id(v) if isinstance(v, str) else str(v),
)
def test_cd_reads_the_same_grammar_from_a_reference(version: str, accepted: bool) -> None:
    script = _script()
    reference = f"ghcr.io/owner/app:{version}"
    if accepted:
        assert script.split(reference) == ("ghcr.io", "owner/app", version)
    else:
        with pytest.raises(script.DigestError, match="is not <registry>/<repository>:<tag>"):
            script.split(reference)


@pytest.mark.parametrize(
    ("digest", "accepted"),
    [("", True), ("sha256:" + "ab" * 32, True), ("sha256:" + "ab" * 32 + "\n", False)],
    ids=["none", "sha256", "trailing-newline"],
)
def test_a_release_takes_a_whole_digest_or_none(digest: str, accepted: bool) -> None:
    templar = _templar("v2")
    templar.available_variables = {**templar.available_variables, "bluegreen_image_digest": digest}
    that = ASSERTS["release"]["ansible.builtin.assert"]["that"]
    assert all(templar.evaluate_conditional(trust_as_template(c)) for c in that) is accepted
