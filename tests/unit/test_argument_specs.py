"""Each role's meta/argument_specs.yml describes exactly its defaults/main.yml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.parent.parent for p in ROOT.glob("roles/*/defaults/main.yml"))


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_argument_specs_match_defaults(role: Path) -> None:
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    specs_file = role / "meta/argument_specs.yml"
    assert specs_file.is_file(), f"{role.name}: meta/argument_specs.yml is missing"
    options = yaml.safe_load(specs_file.read_text())["argument_specs"]["main"]["options"]
    only_defaults = sorted(set(defaults) - set(options))
    only_specs = sorted(set(options) - set(defaults))
    assert not only_defaults and not only_specs, (
        f"{role.name}: defaults and argument_specs differ: only in defaults "
        f"{only_defaults}, only in specs {only_specs}"
    )
    for name, value in defaults.items():
        spec = options[name]
        assert spec.get("description"), f"{role.name}: {name} has no description"
        assert name.startswith(role.name + "_"), f"{role.name}: {name} lacks the role prefix"
        if isinstance(value, str) and "{{" in value:
            continue  # computed from other variables; the spec documents the default
        assert spec.get("default") == value, (
            f"{role.name}: {name} defaults to {value!r} but argument_specs says "
            f"{spec.get('default')!r}"
        )


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_every_entry_point_has_its_task_file_and_the_main_options(role: Path) -> None:
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]
    for entry, spec in specs.items():
        assert (role / "tasks" / f"{entry}.yml").is_file(), (
            f"{role.name}: entry point {entry} has no tasks/{entry}.yml"
        )
        assert spec["options"] == specs["main"]["options"], (
            f"{role.name}: entry point {entry} documents other options than main"
        )
