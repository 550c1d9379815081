"""Make the repository's plugins importable and run modules' main() in-process."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.testing import patch_module_args

REPO = Path(__file__).resolve().parents[3]
for folder in ("library", "filter_plugins"):
    if str(REPO / folder) not in sys.path:
        sys.path.insert(0, str(REPO / folder))

RunModule = Callable[..., dict[str, Any]]


@pytest.fixture
def run_module(capsys: pytest.CaptureFixture[str]) -> RunModule:
    """Run a module's main() with arguments; return its JSON result (``failed`` on failure)."""

    def _run(
        main: Callable[[], None], args: dict[str, Any], check: bool = False, diff: bool = False
    ) -> dict[str, Any]:
        capsys.readouterr()
        full = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
        with patch_module_args(full), pytest.raises(SystemExit):
            main()
        result: dict[str, Any] = json.loads(capsys.readouterr().out)
        return result

    return _run
