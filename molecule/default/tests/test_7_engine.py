"""The release engine observes the host: every outage path that once went unreported.

Each test breaks the host the way a real incident would (a run killed halfway,
a lost state file, a lock taken over, a colour that crash-loops or hangs) with
traffic counted through nginx, and checks that the engine refuses what it
cannot do safely, names the repair, and that the repair moves no traffic.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from conftest import (
    HOST_CONTAINER,
    LOCK,
    STATE,
    STATE_DIR,
    Prober,
    flat,
    other,
    read_state,
    run_playbook,
    serving,
    start_playbook,
    wait_for,
)

from harness import faults, playbook

UPSTREAMS = "/etc/nginx/archibald/upstreams.conf"
NO_WAIT = ["-e", "bluegreen_lock_wait_s=0"]
# Judge quickly; the crash-looping image crashes 40 s after each start.
ANALYSIS = ["-e", "bluegreen_analysis_window_s=60", "-e", "bluegreen_analysis_interval_s=5"]


def next_version(host: Any) -> str:
    return "v3" if serving()[1] != "v3" else "v2"


def started_at(host: Any, color: str) -> list[str]:
    out = host.check_output(
        f"docker ps -q --filter label=org.archibald.color={color} | "
        "xargs -r docker inspect -f '{{.Name}} {{.State.StartedAt}}'"
    )
    return sorted(out.splitlines())


def start_release(*extra: str) -> playbook.Background:
    return start_playbook("release.yml", *extra)


def repair() -> str:
    rc, out, elapsed = run_playbook("repair.yml", *NO_WAIT)
    assert rc == 0, out[-3000:]
    print(f"[repair] {elapsed:.1f} s")
    return out


def test_a_run_killed_between_switch_and_record_is_refused_then_repaired(host: Any) -> None:
    before = serving()
    version = next_version(host)
    with Prober() as prober:
        release = start_release("-e", f"app_version={version}")
        try:
            wait_for("nginx to serve the new colour", lambda: serving()[0] != before[0], 120, 0.02)
        finally:
            release.kill_group()
            release.communicate(timeout=30)
        assert read_state(host)["active"] == before[0], "the record was written before the kill"
        # The killed run still holds the lock: the next run names its holder, its last
        # renewal and its expiry, and what to do, before it waits (2 s here) and stops.
        rc, out, _ = run_playbook(
            "release.yml", "-e", "app_version=v1", "-e", "bluegreen_lock_wait_s=2"
        )
        assert rc != 0, out[-3000:]
        said = flat(out)
        named = said.index("Say who holds the release lock before waiting for it")
        waited = said.index("Wait for the release lock, up to bluegreen_lock_wait_s")
        assert named < waited, out[-3000:]
        held = said[named:waited]
        for phrase in ("is held by", "release ", "last renewed", "expires", "s ago)", "(in "):
            assert phrase in held, (phrase, held)
        assert "-e bluegreen_lock_force=true" in held, held
        # Its holder is gone, so take it over.
        rc, out, _ = run_playbook(
            "release.yml", "-e", "app_version=v1", "-e", "bluegreen_lock_force=true", *NO_WAIT
        )
        assert rc != 0, out[-3000:]
        assert "a run stopped between the switch and the record" in out, out[-3000:]
        assert "playbooks/repair.yml" in out, out[-3000:]
        assert serving() == (other(before[0]), version)
        out = repair()
        assert "traffic did not move" in out, out[-3000:]
    state = read_state(host)
    assert (state["active"], state["colors"][state["active"]]["version"]) == serving()
    assert state["history"][-1]["event"] == "repair"
    print(f"\n[killed after switch] {prober.summary()}")
    assert not prober.failed(), prober.failed()[:5]


def test_a_run_killed_between_render_and_reload_is_refused_then_repaired(host: Any) -> None:
    served = serving()
    target = other(served[0])
    rc, out, _ = run_playbook("status.yml")
    assert rc == 0 and "no drift" in out, out[-3000:]
    # What a run killed after writing the file and before the reload leaves.
    ports = {"blue": "81", "green": "82"}
    host.check_output(
        f'sed -i -e \'s/"color": "{served[0]}"/"color": "{target}"/\' '
        f"-e 's/127.0.0.1:{ports[served[0]]}/127.0.0.1:{ports[target]}/' {UPSTREAMS}"
    )
    with Prober() as prober:
        rc, out, _ = run_playbook("release.yml", "-e", "app_version=v1", *NO_WAIT)
        assert rc != 0, out[-3000:]
        assert "between writing the file and reloading nginx" in out, out[-3000:]
        assert serving() == served
        repair()
        # The hazard is gone: an unrelated reload (certbot's hook) keeps the colour.
        host.check_output("systemctl reload nginx")
        time.sleep(1)
        assert serving() == served
    assert f'"color": "{served[0]}"' in host.file(UPSTREAMS).content_string
    print(f"\n[killed before reload] {prober.summary()}")
    assert not prober.failed(), prober.failed()[:5]


def test_an_empty_state_file_with_colours_running_is_refused(host: Any) -> None:
    served = serving()
    both = {c: started_at(host, c) for c in ("blue", "green")}
    assert all(both.values()), f"both colours should be running here: {both}"
    host.check_output(f"cp {STATE} {STATE}.before && : > {STATE}")
    with Prober() as prober:
        rc, out, _ = run_playbook("release.yml", "-e", f"app_version={next_version(host)}")
        assert rc != 0, out[-3000:]
        assert "state.json records no release (missing or empty) but containers" in out
        assert {c: started_at(host, c) for c in both} == both, "a colour was recreated"
        out = repair()
    assert read_state(host)["active"] == served[0]
    assert "Versions marked bad before a lost state file" in out, out[-3000:]
    print(f"\n[empty state] {prober.summary()}")
    assert not prober.failed(), prober.failed()[:5]


def test_a_changed_env_for_the_live_version_rolls_out_blue_green(host: Any) -> None:
    color, version = serving()
    live = started_at(host, color)
    env = json.dumps({"bluegreen_env": {"APP_LOG_LEVEL": "debug"}})
    with Prober("/api/jobs?limit=1") as prober:
        rc, out, _ = run_playbook("release.yml", "-e", f"app_version={version}", "-e", env)
        assert rc == 0, out[-3000:]
        assert "container configuration changed" in out, out[-3000:]
        assert serving() == (other(color), version)
        assert started_at(host, color) == live, "the serving containers were recreated in place"
        rc, out, _ = run_playbook("release.yml", "-e", f"app_version={version}", "-e", env)
    assert rc == 0 and re.search(r"changed=0 ", out), out[-2000:]
    assert "already serves" in out, out[-3000:]
    # Planned in check mode (as CD's plan job), the same no-op says changed=0 too:
    # the image is on the host, so its pull changes nothing.
    rc, out, _ = run_playbook(
        "release.yml", "-e", f"app_version={version}", "-e", env, "--check", "--diff"
    )
    assert rc == 0 and re.search(r"changed=0 ", out), out[-2000:]
    print(f"\n[config change] {prober.summary()}")
    assert not prober.failed(), prober.failed()[:5]
    # Back to the default configuration for the tests that follow (blue/green again).
    rc, out, _ = run_playbook("release.yml", "-e", f"app_version={version}")
    assert rc == 0, out[-3000:]


def test_app_secrets_reach_the_containers_roll_out_blue_green_and_are_never_printed(
    host: Any,
) -> None:
    """bluegreen_secret_env with a marker value, released verbose with --diff: the new
    colour's containers have it, from a root-only file; no line of the output has it; the
    serving colour was not touched. A name the role sets itself is refused, by name only."""
    marker = "S3cret-app-marker-4c7d1a"
    color, version = serving()
    live = started_at(host, color)
    secrets = json.dumps({"bluegreen_secret_env": {"APP_TEST_SECRET": marker}})
    with Prober("/api/jobs?limit=1") as prober:
        rc, out, _ = run_playbook(
            "release.yml", "-e", f"app_version={version}", "-e", secrets, "--diff", "-v"
        )
        assert rc == 0, out[-3000:]
        new = other(color)
        assert serving() == (new, version), "a changed secret must move traffic blue/green"
        assert started_at(host, color) == live, "the serving containers were recreated in place"
    leaks = [line for line in out.splitlines() if marker in line]
    secrets_file = host.file(f"{STATE_DIR}/secrets-{new}.env")
    seen = host.check_output(f"docker exec archibald-backend-{new} printenv APP_TEST_SECRET")
    print(
        f"\n[app secrets] verbose --diff release: {len(leaks)} lines with the secret; "
        f"{secrets_file.path} {oct(secrets_file.mode)} {secrets_file.user}; the container has it: "
        f"{seen == marker}; {prober.summary()}"
    )
    assert not leaks, "\n".join(leaks[:5])
    assert seen == marker
    assert (secrets_file.user, secrets_file.group, secrets_file.mode) == ("root", "root", 0o600)
    assert not prober.failed(), prober.failed()[:5]

    refused = json.dumps({"bluegreen_secret_env": {"APP_PORT": marker}})
    rc, out, _ = run_playbook("release.yml", "-e", f"app_version={version}", "-e", refused, "-v")
    assert rc == 2, out[-3000:]
    assert "secret environment (vault) has names that cannot be used: APP_PORT" in out
    assert marker not in out

    # Back to no secrets for the tests that follow (blue/green again).
    rc, out, _ = run_playbook("release.yml", "-e", f"app_version={version}")
    assert rc == 0, out[-3000:]


def test_a_run_whose_lock_was_taken_over_stops_before_writing(host: Any) -> None:
    before_state = host.file(STATE).content_string
    served = serving()
    intruder = {
        "owner": "test: a second run, after the lease of the first ran out",
        "token": "intruder",
        "acquired_at": "2026-01-01T00:00:00Z",
        "expires_at": "2099-01-01T00:00:00Z",
    }
    release = start_release("-e", f"app_version={next_version(host)}")
    try:
        wait_for("the release to take the lock", lambda: host.file(LOCK).exists, 120, 0.05)
        host.check_output(f"echo '{json.dumps(intruder)}' > {LOCK}")
        out, _ = release.communicate(timeout=300)
        assert release.returncode != 0, out[-3000:]
        assert "this run's release lock was taken over" in flat(out), out[-3000:]
        assert serving() == served
        assert host.file(STATE).content_string == before_state
        assert json.loads(host.file(LOCK).content_string)["token"] == "intruder"
    finally:
        release.kill_group()
        host.check_output(f"rm -f {LOCK}")


def test_the_retirement_timer_waits_for_the_release_lock(host: Any) -> None:
    served = serving()
    idle = other(served[0])
    assert started_at(host, idle), f"{idle} should still be warm here"
    holder = {
        "owner": "test: a release in progress",
        "token": "someone",
        "acquired_at": "2026-01-01T00:00:00Z",
        "expires_at": "2099-01-01T00:00:00Z",
    }
    host.check_output(f"echo '{json.dumps(holder)}' > {LOCK}")
    try:
        host.check_output(
            f"echo '{{\"deadline\": 1}}' > {STATE_DIR}/retire-{idle}.json"
            " && systemctl start archibald-retire.service"
        )
        assert started_at(host, idle), "the timer stopped a colour while a release held the lock"
        journal = host.check_output("journalctl -u archibald-retire.service --no-pager -n 20")
        assert '"retire_deferred"' in journal and "held by test: a release in progress" in journal
    finally:
        host.check_output(f"rm -f {LOCK}")
    host.check_output("systemctl start archibald-retire.service")
    wait_for(f"{idle} to be retired", lambda: not started_at(host, idle), 120, 1)
    assert not host.file(LOCK).exists, "the timer left its lock behind"
    assert serving() == served


def test_a_crash_looping_release_is_rolled_back_and_cannot_be_rolled_back_to(host: Any) -> None:
    good = serving()
    with Prober() as prober:
        rc, out, elapsed = run_playbook("release.yml", "-e", "app_version=bad-crashloop", *ANALYSIS)
        assert rc != 0, out[-3000:]
        assert "was rolled back automatically" in out, out[-3000:]
        # The edge's judgement sees the 502s of a crashing colour within seconds (the
        # way back then waits for no restart count); else the restarts, or no data.
        assert any(
            why in out
            for why in ("Why: at the edge: ", "restart(s) during the window", "no data to judge")
        ), out[-3000:]
        assert serving() == good
        rc, out, _ = run_playbook("rollback.yml")
    assert rc != 0 and "bad-crashloop is listed in bad_versions" in out, out[-3000:]
    assert serving() == good
    failed = prober.failed()
    print(f"\n[crash loop] rolled back after {elapsed:.0f} s; {prober.summary()}")
    assert "bad-crashloop" in read_state(host)["bad_versions"]
    # Requests caught by a crash fail: that is what the analysis is for.
    assert all(s[1] in (0, 502, 503, 504) for s in failed), failed[:5]


def test_a_hanging_release_is_rolled_back(host: Any) -> None:
    good = serving()
    version = next_version(host)
    target = other(good[0])
    release = start_release("-e", f"app_version={version}", *ANALYSIS)
    started = time.monotonic()
    try:
        # Freeze the backend once the switch is recorded: the analysis is running.
        # Beside two other hosts on two cores the way to the switch takes minutes.
        wait_for(
            "the switch to be recorded", lambda: read_state(host)["active"] == target, 300, 0.2
        )
        with faults.frozen(faults.docker_exec(HOST_CONTAINER), [f"archibald-backend-{target}"]):
            paused = time.monotonic()
            out, _ = release.communicate(timeout=420)
            out = flat(out)
            took = time.monotonic() - paused
    except BaseException:
        # Say what the release did: a lane stopped over its budget prints no summary.
        release.kill_group()
        print(
            f"\n[hang] failed {time.monotonic() - started:.0f} s after the release started; "
            f"its output:\n{flat(release.communicate()[0])[-3000:]}"
        )
        raise
    finally:
        release.kill_group()
    print(f"\n[hang] rolled back {took:.0f} s after the backend froze")
    assert release.returncode != 0, out[-3000:]
    assert "was rolled back automatically" in out, out[-3000:]
    assert serving() == good
    assert version in read_state(host)["bad_versions"]
    # The version is good, only its container was frozen: take the mark off, so
    # that the parts after this one (test_9 releases it) find the host as usual.
    rc, out, _ = run_playbook(
        "mark-bad.yml", "-e", f"app_version={version}", "-e", "bluegreen_bad=false"
    )
    assert rc == 0, out[-2000:]
    assert version not in read_state(host)["bad_versions"]


def backend_env(host: Any, color: str) -> dict[str, str]:
    """The environment the backend of `color` runs with (the image's and the engine's)."""
    inspect = "docker inspect -f '{{json .Config.Env}}'"
    out = host.check_output(f"{inspect} archibald-backend-{color}")
    return dict(item.split("=", 1) for item in json.loads(out))


def watch(seconds: float) -> Prober:
    """Count every answer through nginx for `seconds` (an observation window, not a wait)."""
    with Prober() as prober:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.5)
    return prober


# The crash comes this long after each start of the new colour: its gate passes,
# the analysis sees the restarts and rolls back.
CRASH_AFTER_S = 20


def test_an_automatic_rollback_leaves_the_old_colour_as_it_ran(host: Any) -> None:
    """Issue 24: the way back from a failed analysis once recreated the old colour with the
    failed release's settings (its crash included), so the rollback crashed in turn."""
    good = serving()
    recorded = read_state(host)["colors"][good[0]]
    started, env = started_at(host, good[0]), backend_env(host, good[0])
    version = next_version(host)
    crash = json.dumps({"bluegreen_env": {"APP_FAULT_CRASH_AFTER_S": str(CRASH_AFTER_S)}})
    rc, out, elapsed = run_playbook(
        "release.yml", "-e", f"app_version={version}", "-e", crash, *ANALYSIS
    )
    try:
        assert rc != 0 and "was rolled back automatically" in out, out[-3000:]
        assert serving() == good
        assert started_at(host, good[0]) == started, "the old colour was restarted"
        assert backend_env(host, good[0]) == env
        assert "APP_FAULT_CRASH_AFTER_S" not in backend_env(host, good[0])
        after = read_state(host)["colors"][good[0]]
        assert (after["config"], after["spec"]) == (recorded["config"], recorded["spec"])
        # Longer than the crash delay: a colour recreated with it would fail here.
        prober = watch(CRASH_AFTER_S + 10)
        print(f"\n[auto rollback] {elapsed:.0f} s; after it: {prober.summary()}")
        assert not prober.failed(), prober.failed()[:5]
    finally:
        run_playbook("mark-bad.yml", "-e", f"app_version={version}", "-e", "bluegreen_bad=false")


def test_rollback_restores_the_warm_colour_as_it_ran_after_an_inventory_change(
    host: Any,
) -> None:
    """A rollback moves back to the colour as it was recorded: a warm colour that runs is left
    untouched, one that is gone is recreated from its own record, never from the inventory."""
    good = serving()
    version = next_version(host)
    rc, out, _ = run_playbook("release.yml", "-e", f"app_version={version}")
    assert rc == 0, out[-3000:]
    warm = good[0]
    started, env = started_at(host, warm), backend_env(host, warm)
    changed = ["-e", json.dumps({"bluegreen_env": {"APP_LOG_LEVEL": "debug"}})]
    with Prober() as prober:
        rc, out, elapsed = run_playbook("rollback.yml", *changed)
    assert rc == 0, out[-3000:]
    print(f"\n[rollback, warm colour running] {elapsed:.1f} s; {prober.summary()}")
    assert serving() == good and not prober.failed(), prober.failed()[:5]
    assert started_at(host, warm) == started, "the warm colour was recreated"
    assert backend_env(host, warm) == env
    # Now the other way, to a colour whose containers are gone: recreated from its record.
    gone = other(warm)
    recorded = read_state(host)["colors"][gone]
    host.check_output(f"docker rm -f archibald-backend-{gone} archibald-frontend-{gone}")
    rc, out, elapsed = run_playbook("rollback.yml", *changed)
    assert rc == 0, out[-3000:]
    print(f"[rollback, containers recreated from the record] {elapsed:.1f} s")
    assert serving() == (gone, version)
    assert backend_env(host, gone).get("APP_LOG_LEVEL") != "debug"
    label = host.check_output(
        f"docker inspect -f '{{{{index .Config.Labels \"org.archibald.config\"}}}}' "
        f"archibald-backend-{gone}"
    )
    assert label == recorded["config"] == read_state(host)["colors"][gone]["config"]
    # Back to where the test began.
    rc, out, _ = run_playbook("rollback.yml")
    assert rc == 0 and serving() == good, out[-3000:]
