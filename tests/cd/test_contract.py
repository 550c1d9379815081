"""`make contract`: the reference app passes the app contract, by digest from the
local registry; so does the example Node service on archibald-contract
(node/, harness/images/node-example); an image the harness builds to break it
(harness/images/nonconforming) fails on each point, each with its reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cd import sandbox
from harness import testbed

ROOT = Path(__file__).resolve().parents[2]


def _contract(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "harness/contract.py"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    print("\n" + result.stdout + result.stderr)
    return result


def rows(output: str) -> dict[tuple[str, str], tuple[str, str]]:
    found = {}
    for line in output.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) >= 3 and parts[2] in ("PASS", "FAIL", "SKIP"):
            found[(parts[0], parts[1])] = (parts[2], parts[3] if len(parts) > 3 else "")
    return found


def test_the_reference_app_meets_the_contract() -> None:
    ref = f"{testbed.PUSH_REGISTRY}/{testbed.APP_REPOSITORY}@{sandbox.digest('v2')}"
    result = _contract(ref, "--version", "v2", "--reference")
    assert result.returncode == 0
    table = rows(result.stdout)
    assert {check for check, _ in table} == {"health", "user", "listen", "metrics", "drain"}
    assert table[("drain", "backend")][0] == "PASS", "the backend drains with a job in flight"
    # The frontend has no work to put in flight: said, not passed.
    assert table[("drain", "frontend")][0] == "SKIP"
    assert "contract: 9 passed, 0 failed, 1 skipped" in result.stdout


def test_the_example_node_service_meets_the_contract() -> None:
    # Built by `testbed.py app-images` (which cd-test depends on).
    image = "archibald/node-example:12"
    busy = 'backend=POST /api/render {"seconds": 3}'
    result = _contract(image, "--version", "n1", "--busy", busy, "--timeout", "20")
    assert result.returncode == 0
    table = rows(result.stdout)
    assert table[("drain", "backend")][0] == "PASS", "the backend drains with a job in flight"
    assert table[("drain", "frontend")][0] == "SKIP"
    assert "contract: 9 passed, 0 failed, 1 skipped" in result.stdout


def test_the_node_package_passes_its_tests_on_debians_node() -> None:
    """The package's own tests (make node-unit runs them on this machine's Node) on
    Debian 12's nodejs, the one the example image runs: app-images built the package
    and installed its test dependencies, mounted read-only here."""
    package = ROOT / "node" / "archibald-contract"
    result = subprocess.run(
        [
            "docker", "run", "--rm", "--network", "none",
            "-v", f"{package}:/pkg:ro", "-w", "/pkg", "--entrypoint", "sh",
            "archibald/node-example:12", "-c", "node --version && node --test test/*.test.js",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )  # fmt: skip
    summary = [line for line in result.stdout.splitlines() if line.startswith(("v", "# "))]
    print("\n[node] Debian's " + " ".join(summary))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert result.stdout.startswith("v18."), result.stdout[:200]
    assert "# fail 0" in result.stdout and "# cancelled 0" in result.stdout


def test_a_nonconforming_image_fails_each_point_with_its_reason() -> None:
    # On the harness's python image (`make images` built it), like the app.
    image = testbed.build_from_dockerfile(
        "nonconforming", "12", "archibald/python:12", testbed.IMAGES_DIR / "nonconforming"
    )
    result = _contract(image, "--timeout", "5", "--grace", "3")
    assert result.returncode == 1
    table = rows(result.stdout)
    for service in ("backend", "frontend"):
        assert table[("health", service)] == ("FAIL", "not JSON: b'OK\\n'")
        assert table[("user", service)][1].endswith("run as root (uid 0)")
        assert "listens on 0.0.0.0" in table[("listen", service)][1]
        assert table[("metrics", service)] == ("FAIL", "GET /metrics answered 404")
        assert table[("drain", service)] == (
            "FAIL",
            "still running 3 s after SIGTERM (the stop grace)",
        )
    assert "contract: 0 passed, 10 failed, 0 skipped" in result.stdout
