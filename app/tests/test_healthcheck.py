"""Docker's HEALTHCHECK probe (archibald_app.healthcheck): its verdicts against
a real backend, and that it imports nothing but the standard library, so a
probe costs a fraction of the service's start and stays inside --timeout on a
busy host (a cut-over rollback once waited 147 s for a probe that imported the
service and timed out at load 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

from apptest_support import APP_DIR, AppProcess, free_port


def run(*args: str, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env={**os.environ, "PYTHONPATH": str(APP_DIR), "APP_PORT": str(port)},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_the_probe_imports_only_the_standard_library() -> None:
    loaded = run(
        "-c",
        "import sys, json, archibald_app.healthcheck; print(json.dumps(sorted(sys.modules)))",
        port=1,
    )
    assert loaded.returncode == 0, loaded.stderr
    modules = json.loads(loaded.stdout)
    ours = sorted(m for m in modules if m.startswith("archibald_app"))
    assert ours == ["archibald_app", "archibald_app.healthcheck"]
    foreign = sorted(
        m
        for m in modules
        if m.split(".")[0] not in sys.stdlib_module_names
        and not m.startswith("archibald_app")
        # the interpreter's own start-up, before any import of ours
        and m.split(".")[0] not in sys.builtin_module_names
        and m not in ("__main__", "sitecustomize", "usercustomize")
        and not m.startswith("_distutils_hack")
    )
    assert foreign == [], f"the probe loads more than the standard library: {foreign}"
    assert "asyncio" not in modules


def test_healthy_backend_passes_both_spellings(spawn: Callable[..., AppProcess]) -> None:
    app = spawn(APP_VERSION="v7")
    app.wait_healthy()
    for argv in (["-m", "archibald_app.healthcheck"], ["-m", "archibald_app", "healthcheck"]):
        result = run(*argv, port=app.port)
        assert result.returncode == 0, result.stdout + result.stderr
        body = json.loads(result.stdout)
        assert (body["status"], body["version"]) == ("ok", "v7")


def test_unhealthy_backend_fails_with_its_status(spawn: Callable[..., AppProcess]) -> None:
    app = spawn(APP_FAULT_UNHEALTHY="1")
    app.wait_health(503)
    result = run("-m", "archibald_app.healthcheck", port=app.port)
    assert (result.returncode, result.stdout.strip()) == (1, "unhealthy: HTTP 503")


def test_nothing_listening_fails() -> None:
    result = run("-m", "archibald_app.healthcheck", port=free_port())
    assert result.returncode == 1
    assert result.stdout.startswith("unhealthy: ")
