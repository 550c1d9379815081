"""Release hooks on the live host (bluegreen_hooks): a pre-switch hook runs in a
one-off container of the new image before any traffic moves (it writes into the
shared data volume, as a migration would, and reaches the new colour through
the edge with the preview token, which the run never prints) and its output is
in the journal; a
failing one and a hanging one stop the release with traffic untouched; a
failing post-switch hook rolls the release back and marks the version bad."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PREVIEW_TOKEN, VERSIONS, Prober, other, read_state, run_playbook, serving

from harness.ansible_plugins.vars import nsenter_hosts

VOLUME = "/var/lib/docker/volumes/archibald-data/_data"
# The app image's entrypoint is the app's own command line; a hook names its own.
PY = ["python3", "-c"]
SECRET_MARKER = "S3cret-failed-hook-8d31f0"


@pytest.fixture(autouse=True, scope="module")
def over_nsenter() -> Iterator[None]:
    """This file's releases reach the host through nsenter, not Mitogen (the suite's
    way, harness/ansible_plugins/strategy). A hook is an async docker_container task
    with poll 2; under Mitogen 0.3.54 it never reported finished, so every hook ran
    into its whole time limit (302 s for 300, whether its container exited 0 or 3; the
    8 s hanging one stopped in time), and this file's three tests failed in this
    stop's first clean-clone CI. A plain async command finishes under Mitogen (its
    unit test), and so does the release's analysis (poll 0). Production runs never
    use Mitogen; this file tests the hooks as they run there."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(nsenter_hosts.CONNECTION_ENV, "nsenter")
        yield


def hooks(**spec: dict[str, Any]) -> str:
    return json.dumps({"bluegreen_hooks": spec})


def next_version() -> str:
    return next(v for v in VERSIONS if v != serving()[1])


def release(version: str, *extra: str) -> tuple[int, str, float]:
    return run_playbook(
        "release.yml", "-e", f"app_version={version}", "-e", "app_force=true", *extra
    )


def test_pre_switch_hook_runs_before_traffic_moves(host: Any) -> None:
    before = serving()[1]
    version = next_version()
    # A migration (a file in the shared volume), then a smoke test of the new
    # colour through the edge with the preview token, before anyone is sent there;
    # the token upper-cased (header or cookie) is not the token: the stable colour answers.
    script = """
import json, os, ssl, urllib.request
env = os.environ
print('migrating the job store to', env['APP_VERSION'])
open('/data/migrated-' + env['APP_VERSION'], 'w').write(env['APP_COLOR'])
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
def version(**headers):
    request = urllib.request.Request(env['ARCHIBALD_EDGE_URL'] + '/health',
                                     headers={'Host': env['ARCHIBALD_EDGE_HOST'], **headers})
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        return json.load(answer)['version']
token, header = env['ARCHIBALD_PREVIEW_TOKEN'], env['ARCHIBALD_PREVIEW_HEADER']
print('the preview serves', version(**{header: token}))
print('the upper-cased token header gets', version(**{header: token.upper()}))
print('the upper-cased token cookie gets', version(Cookie='archibald_preview=' + token.upper()))
status = dict(line.split(':\t', 1) for line in open('/proc/self/status') if ':\t' in line)
print('least privilege: uid', os.getuid(), 'no_new_privs', status['NoNewPrivs'].strip(),
      'capabilities', status['CapEff'].strip(), 'root writable', os.access('/', os.W_OK),
      'tmp writable', os.access('/tmp', os.W_OK))
"""
    with Prober() as prober:
        rc, out, seconds = release(
            version, "-e", hooks(pre_switch={"entrypoint": PY, "command": [script]})
        )
    assert rc == 0, out[-3000:]
    color, served = serving()
    assert served == version
    assert host.file(f"{VOLUME}/migrated-{version}").content_string == color
    journal = host.check_output(
        "journalctl --no-pager -o cat CONTAINER_NAME=archibald-hook-pre-switch -n 20"
    )
    assert f"migrating the job store to {version}" in journal
    assert f"the preview serves {version}" in journal, journal
    assert f"the upper-cased token header gets {before}" in journal, journal
    assert f"the upper-cased token cookie gets {before}" in journal, journal
    # The hook runs as the colours do (bluegreen_read_only, ...): as the image's
    # user, with no capability, no privilege to gain and a read-only root.
    assert (
        "least privilege: uid 10001 no_new_privs 1 capabilities 0000000000000000 "
        "root writable False tmp writable True"
    ) in journal, journal
    assert PREVIEW_TOKEN not in out, "the preview token is in the run's output"
    # The hook's container is gone (cleanup), the colours are untouched by it.
    assert host.run("docker inspect archibald-hook-pre-switch").rc != 0
    print(
        f"\n[hooks] pre-switch hook then release of {version} in {seconds:.0f} s; "
        f"{prober.summary()}"
    )
    assert not prober.failed()


def test_failing_or_hanging_pre_switch_hook_stops_the_release(host: Any) -> None:
    before = serving()
    history = len(read_state(host)["history"])
    version = next_version()
    failing = {"entrypoint": PY, "command": ["print('schema v9 needs a newer job store'); exit(3)"]}
    hanging = {"entrypoint": PY, "command": ["import time; time.sleep(600)"], "timeout_s": 8}
    # With a secret in the app's environment and -v: the new colour stopped after the
    # failed hook (each result its inspect) prints it nowhere (issue 29).
    secret = json.dumps({"bluegreen_secret_env": {"APP_TEST_SECRET": SECRET_MARKER}})
    with Prober() as prober:
        rc_fail, out_fail, fail_s = release(
            version, "-e", hooks(pre_switch=failing), "-e", secret, "-v"
        )
        started = time.monotonic()
        rc_hang, out_hang, hang_s = release(version, "-e", hooks(pre_switch=hanging))
    assert rc_fail != 0 and "The pre-switch hook of" in out_fail, out_fail[-3000:]
    assert "schema v9 needs a newer job store" in out_fail and "No traffic moved" in out_fail
    leaks = [line for line in out_fail.splitlines() if SECRET_MARKER in line]
    assert not leaks, "\n".join(leaks[:5])
    # The new colour was stopped as it was, not recreated bare (no labels, no
    # environment: the stop task once did that, and the leak check above passed
    # for that wrong reason).
    stopped = other(before[0])
    label = '{{index .Config.Labels "org.archibald.version"}} {{.State.Status}}'
    kept = host.check_output(f"docker inspect -f '{label}' archibald-backend-{stopped}")
    assert kept == f"{version} exited", kept
    assert rc_hang != 0 and "The pre-switch hook of" in out_hang, out_hang[-3000:]
    assert serving() == before
    assert len(read_state(host)["history"]) == history, "the record changed"
    assert host.run("docker inspect archibald-hook-pre-switch").rc != 0, "the hung hook still runs"
    print(
        f"\n[hooks] failing pre-switch hook: release stopped in {fail_s:.0f} s; hanging one "
        f"(8 s limit): stopped in {hang_s:.0f} s ({time.monotonic() - started:.0f} s); "
        f"{prober.summary()}"
    )
    assert not prober.failed()


def test_failing_post_switch_hook_rolls_back(host: Any) -> None:
    before = serving()
    version = next_version()
    smoke = {
        "entrypoint": PY,
        "command": [
            "import os; print('smoke test against', os.environ['ARCHIBALD_EDGE_URL']); exit(1)"
        ],
    }
    with Prober() as prober:
        rc, out, seconds = release(version, "-e", hooks(post_switch=smoke))
    assert rc != 0 and "was rolled back automatically" in out, out[-3000:]
    assert "the post-switch hook failed" in out and "smoke test against" in out
    assert serving() == before
    state = read_state(host)
    assert state["history"][-1]["event"] == "mark_bad" and version in state["bad_versions"]
    print(f"\n[hooks] failing post-switch hook: rolled back in {seconds:.0f} s; {prober.summary()}")
    assert not prober.failed()
    rc, out, _ = run_playbook(
        "mark-bad.yml", "-e", f"app_version={version}", "-e", "bluegreen_bad=false"
    )
    assert rc == 0, out[-2000:]
