"""roles/backup/files/backup.py, the host's backup script, loaded as a module for
the tests that call its functions (it is a script on the host, not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "backup" / "files" / "backup.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("backup_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
