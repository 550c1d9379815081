"""The release flow stays flat: entry points include at most two levels of task files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INCLUDES = ("ansible.builtin.include_tasks", "ansible.builtin.import_tasks")
MAX_DEPTH = 3


def included(tasks: Any) -> list[str]:
    """Task files a task list includes or imports, blocks searched."""
    found: list[str] = []
    for task in tasks or []:
        for key in INCLUDES:
            if key in task:
                target = task[key]
                found.append(str(target["file"] if isinstance(target, dict) else target))
        for section in ("block", "rescue", "always"):
            found += included(task.get(section))
    return found


def depth(role: Path, name: str, seen: tuple[str, ...] = ()) -> int:
    assert name not in seen, f"{role.name}: task files include each other: {(*seen, name)}"
    tasks = yaml.safe_load((role / "tasks" / name).read_text())
    children = [depth(role, child, (*seen, name)) for child in included(tasks)]
    return 1 + max(children, default=0)


ROLES = sorted(p.parent.parent for p in ROOT.glob("roles/*/meta/argument_specs.yml"))


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_entry_points_are_at_most_three_files_deep(role: Path) -> None:
    entries = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]
    for entry in entries:
        assert depth(role, f"{entry}.yml") <= MAX_DEPTH, f"{role.name}:{entry} nests too deep"


def test_every_bluegreen_task_file_is_an_entry_point_or_included() -> None:
    role = ROOT / "roles" / "bluegreen"
    entries = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]
    reached = {f"{e}.yml" for e in entries}
    todo = list(reached)
    while todo:  # through every level: move.yml's own includes count too
        found = set(included(yaml.safe_load((role / "tasks" / todo.pop()).read_text())))
        todo += sorted(found - reached)
        reached |= found
    on_disk = {p.name for p in (role / "tasks").glob("*.yml")}
    assert on_disk - reached == set(), f"task files nothing uses: {sorted(on_disk - reached)}"
