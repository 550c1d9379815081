"""playbooks/adopt-compose.yml against the emulated compose stack (converge.yml).

In order: the preflight refuses a host without the layout and a project name
that is not there; the adoption runs under load (reads, writes with retries,
and a prober that opens a new TLS connection every 50 ms to count refusals)
and prints failed requests, seconds of refusal, jobs before and after and the
wall time; a rerun changes nothing; the old stack is kept, stopped; and
playbooks/rollback-compose.yml goes back to it with every job.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import testinfra

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from harness import postload  # noqa: E402

HOST = "cutover-deb12"
BARE = "cutover-bare-deb12"
EDGE = "https://127.0.0.1:18445"
OLD_VOLUME = "archibald_data"
NEW_VOLUME = "archibald-data"
RECORD = "/var/lib/archibald/adopt-compose.json"
# Every load stops by itself after this long, whatever happens to the test.
LOAD_MAX_S = 480
# Writes: the app's documented retry (4 attempts, ~0.3 s of backoff), and a
# patient client (40 attempts, ~40 s) that outlasts the write pause.
WRITE_RATE = 5.0
TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE


def host() -> Any:
    return testinfra.get_host(f"docker://{HOST}")


def run_adopt(
    *extra: str, limit: str = HOST, playbook: str = "adopt-compose.yml"
) -> tuple[int, str, float]:
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.fail("MOLECULE_INVENTORY_FILE is not set: run these tests through `molecule verify`")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    started = time.monotonic()
    result = subprocess.run(
        [
            *("ansible-playbook", "-i", inventory, "--limit", limit),
            *(str(ROOT / "playbooks" / playbook), "-e", "app_version=v1", *extra),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    print(f"[{playbook}] {' '.join(extra)} on {limit} -> rc={result.returncode} in {elapsed:.1f} s")
    return result.returncode, output, elapsed


def flat(text: str) -> str:
    return " ".join(text.split())


def job_ids(volume: str) -> set[int]:
    """Every job id in the job database of a Docker volume on the host."""
    path = f"/var/lib/docker/volumes/{volume}/_data/jobs.sqlite3"
    script = (
        "import json, sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
        "print(json.dumps([r[0] for r in c.execute('SELECT id FROM jobs')]))"
    )
    out = host().check_output(f"python3 -c {json.dumps(script)} {path}")
    return set(json.loads(out))


def health(timeout: float = 2.0) -> tuple[int, str]:
    """One request on a new connection: (status, colour); status 0: no connection."""
    request = urllib.request.Request(EDGE + "/health", headers={"Host": "localhost"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=TLS) as resp:
            return resp.status, str(json.loads(resp.read() or b"{}").get("color", "?"))
    except urllib.error.HTTPError as exc:
        return exc.code, "?"
    except OSError:
        return 0, "error"


class Prober(threading.Thread):
    """A new TCP + TLS connection to 443 every 50 ms: counts refusals and 5xx by time."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int, str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + LOAD_MAX_S
        while not self.halt.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            status, color = health()
            self.samples.append((started, status, color))
            time.sleep(0.05)

    def seconds(self, bad: Any) -> float:
        """Time covered by samples for which `bad(status)` holds (to the next sample)."""
        total = 0.0
        for (start, status, _), (after, _, _) in zip(self.samples, self.samples[1:], strict=False):
            if bad(status):
                total += after - start
        return total

    def longest(self, bad: Any) -> float:
        longest, begun = 0.0, None
        for start, status, _ in self.samples:
            if bad(status):
                begun = start if begun is None else begun
            elif begun is not None:
                longest, begun = max(longest, start - begun), None
        return longest

    def colors(self) -> list[str]:
        seen: list[str] = []
        for _, status, color in self.samples:
            if status == 200 and (not seen or seen[-1] != color):
                seen.append(color)
        return seen

    def __enter__(self) -> Prober:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join(10)


def refused(status: int) -> bool:
    return status == 0


def server_error(status: int) -> bool:
    return status >= 500


def test_preflight_refuses_a_host_without_docker_or_compose() -> None:
    rc, out, _ = run_adopt(limit=BARE)
    assert rc != 0, "the adoption ran on a host without a compose stack"
    assert "No Docker engine on this host, so no compose stack to adopt" in flat(out), out[-3000:]
    bare = testinfra.get_host(f"docker://{BARE}")
    assert not bare.package("nginx").is_installed, "the refused run installed nginx"


def test_preflight_refuses_a_project_that_is_not_there() -> None:
    rc, out, _ = run_adopt("-e", "adopt_compose_project=shop")
    text = flat(out)
    assert rc != 0
    assert "does not have the compose layout this playbook adopts" in text, out[-3000:]
    assert 'found projects: ["archibald"]' in text, out[-3000:]
    assert not host().package("nginx").is_installed, "the refused run installed nginx"


def test_cutover_under_load_loses_nothing_and_refuses_briefly() -> None:
    before = job_ids(OLD_VOLUME)
    assert len(before) >= 40, f"the compose stack's volume holds {len(before)} jobs"
    assert health() == (200, "compose")
    url = f"{EDGE}/api/jobs"
    writers = [
        postload.Writer("writes, retry (4 attempts)", url, WRITE_RATE, retry=True, connections=4),
        postload.Writer(
            "writes, patient retry (40 attempts)",
            url,
            WRITE_RATE,
            retry=True,
            attempts=40,
            connections=4,
        ),
    ]
    tmp = Path(tempfile.mkdtemp(prefix="cutover-load-"))
    outs = [tmp / f"writer-{i}.json" for i in range(len(writers))]
    reads = subprocess.Popen(
        [
            *("hey", "-z", f"{LOAD_MAX_S}s", "-c", "2", "-q", "5", "-host", "localhost"),
            f"{EDGE}/api/jobs?limit=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    procs = [postload.start_process(w, LOAD_MAX_S, o) for w, o in zip(writers, outs, strict=True)]
    with Prober() as prober:
        time.sleep(3)
        rc, out, wall = run_adopt()
        time.sleep(5)
    reads.send_signal(signal.SIGINT)
    hey_out, _ = reads.communicate(timeout=60)
    for writer, proc, o in zip(writers, procs, outs, strict=True):
        postload.finish_process(writer, proc, o)
    assert rc == 0, out[-6000:]

    after = job_ids(NEW_VOLUME)
    accepted = {int(o.job_id) for w in writers for o in w.outcomes if o.ok and o.job_id}
    lost_before = before - after
    lost_accepted = accepted - after
    unaccounted = after - before - accepted
    summaries = [postload.summary(w) for w in writers]
    codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", hey_out))
    hey_errors = sum(
        int(n)
        for n in re.findall(r"^\s*\[(\d+)\]", hey_out.partition("Error distribution:")[2], re.M)
    )
    switch = re.search(r"443 refused for at most ([\d.]+) s", flat(out))
    print("\n[cutover] figures")
    print(f"  wall time of the adoption: {wall:.1f} s (provision beside + data + release + switch)")
    print(
        f"  switch on the host (old proxy stop -> nginx bound): "
        f"{switch.group(1) if switch else '?'} s"
    )
    print(
        f"  refused or timed out on 443 (new connection every 50 ms): "
        f"{prober.seconds(refused):.2f} s in all, longest {prober.longest(refused):.2f} s, "
        f"{sum(refused(s) for _, s, _ in prober.samples)} of {len(prober.samples)} probes"
    )
    print(
        f"  answered 5xx (the write pause: old backend stopped until our release): "
        f"{prober.seconds(server_error):.2f} s in all, longest "
        f"{prober.longest(server_error):.2f} s"
    )
    print(f"  colours seen in turn: {prober.colors()}")
    for s in summaries:
        print(
            f"  {s['name']}: sent {s['sent']}, accepted {s['accepted']}, failed {s['failed']},"
            f" retried {s['retried']}, replayed {s['replayed']}, keys with two jobs "
            f"{s['keys_with_two_jobs']}, errors {s['errors']}"
        )
    print(f"  reads (hey, no retry): status counts {codes}, errors {hey_errors}")
    print(
        f"  jobs before {len(before)}, accepted during {len(accepted)}, after {len(after)};"
        f" lost {len(lost_before) + len(lost_accepted)}, in the database but answered as failed"
        f" {len(unaccounted)}"
    )

    assert not lost_before, f"jobs of the compose stack missing after the adoption: {lost_before}"
    assert not lost_accepted, f"accepted jobs missing after the adoption: {lost_accepted}"
    patient = summaries[1]
    assert patient["failed"] == 0, f"writes with the patient retry failed: {patient['errors']}"
    assert all(s["keys_with_two_jobs"] == 0 for s in summaries)
    assert prober.longest(refused) <= 5.0, "443 refused connections for more than 5 s"
    assert prober.colors()[0] == "compose" and prober.colors()[-1] in ("blue", "green")
    assert health()[0] == 200


def test_a_rerun_after_success_changes_nothing() -> None:
    rc, out, wall = run_adopt()
    assert rc == 0, out[-4000:]
    recap = re.search(rf"^{HOST}\s*:.*$", out, re.M)
    assert recap, out[-2000:]
    print(f"[rerun] {wall:.1f} s: {' '.join(recap.group(0).split())}")
    assert re.search(r"changed=0\b", recap.group(0)), recap.group(0)
    assert "adopted before: nothing to do but check" in flat(out)


def test_the_old_stack_is_kept_stopped_and_cannot_start_by_itself() -> None:
    h = host()
    record = json.loads(h.file(RECORD).content_string)
    assert record["phase"] == "adopted"
    for name in ("archibald-backend-1", "archibald-frontend-1", "archibald-nginx-proxy-1"):
        state = json.loads(h.check_output(f"docker inspect --format '{{{{json .}}}}' {name}"))
        assert not state["State"]["Running"], f"{name} still runs"
        assert state["HostConfig"]["RestartPolicy"]["Name"] == "no", name
        assert record["containers"][name] == "unless-stopped"
    assert h.check_output(f"docker volume ls -q --filter name=^{OLD_VOLUME}$") == OLD_VOLUME
    listeners = h.check_output("ss -Hltnp 'sport = :443'")
    assert '"nginx"' in listeners and "docker-proxy" not in listeners, listeners


def test_rollback_goes_back_to_compose_with_every_job() -> None:
    ours = job_ids(NEW_VOLUME)
    with Prober() as prober:
        rc, out, wall = run_adopt(playbook="rollback-compose.yml")
        time.sleep(2)
    assert rc == 0, out[-4000:]
    back = job_ids(OLD_VOLUME)
    print(
        f"[rollback] {wall:.1f} s; refused {prober.seconds(refused):.2f} s (longest "
        f"{prober.longest(refused):.2f} s), 5xx {prober.seconds(server_error):.2f} s; jobs ours"
        f" {len(ours)}, back in the compose volume {len(back)}; colours {prober.colors()}"
    )
    assert ours <= back, f"jobs lost on the way back: {ours - back}"
    assert health() == (200, "compose")
    assert json.loads(host().file(RECORD).content_string)["phase"] == "rolled-back"
