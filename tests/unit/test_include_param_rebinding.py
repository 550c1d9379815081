"""No block or plain task may re-bind a name the role passes as an include parameter.

Ansible ranks include parameters (``vars:`` on ``include_tasks``) above block
and task vars. A block that re-binds such a name inside an included file is
silently ignored: the automatic rollback once "switched back" to the bad
colour that way while the state file recorded the good one. Re-bind those
names with another ``include_tasks ... vars:`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INCLUDES = {"include_tasks", "ansible.builtin.include_tasks"}


def _tasks(items: Any) -> Iterator[dict[str, Any]]:
    for task in items or []:
        if not isinstance(task, dict):
            continue
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))


def _role_task_files() -> dict[str, list[Path]]:
    roles: dict[str, list[Path]] = {}
    for path in sorted(ROOT.glob("roles/*/tasks/*.yml")):
        roles.setdefault(path.parts[-3], []).append(path)
    return roles


@pytest.mark.parametrize("role", sorted(_role_task_files()))
def test_include_parameters_are_not_rebound_by_block_or_task_vars(role: str) -> None:
    files = {p: list(_tasks(yaml.safe_load(p.read_text()))) for p in _role_task_files()[role]}
    include_params = {
        name
        for tasks in files.values()
        for task in tasks
        if INCLUDES & task.keys()
        for name in (task.get("vars") or {})
    }
    offenders = [
        f"{path.relative_to(ROOT)}: '{task.get('name', '?')}' binds {name}"
        for path, tasks in files.items()
        for task in tasks
        if not INCLUDES & task.keys()
        for name in (task.get("vars") or {})
        if name in include_params
    ]
    assert not offenders, (
        "these vars are ignored where the name already came in as an include parameter "
        "(include parameters rank higher); pass them with include_tasks vars instead:\n"
        + "\n".join(offenders)
    )
