"""What the release lock tells a person (issue 24): a held lock names its holder,
its last renewal and its expiry and says what to do; a run that lost its lock
is told how: gone, expired and taken over, or taken over by force."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils import bluegreen as core

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def at(seconds: int) -> str:
    return core.iso(NOW + timedelta(seconds=seconds))


def taken(
    ttl: int = 300,
    *,
    token: str | None = None,
    at_s: int = 0,
    expires_in: int = 60,
    owner: str = "run A",
    current: dict[str, Any] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """The lock `owner` takes at NOW + at_s (refreshing `token` when given)."""
    now = NOW + timedelta(seconds=at_s)
    _, lock, _ = core.plan_acquire("/l", current, owner, ttl, now, token, force)
    return lock


def test_a_lock_records_when_it_was_last_renewed() -> None:
    first = taken()
    assert first["renewed_at"] == first["acquired_at"] == at(0)
    later = taken(token=first["token"], current=first, at_s=100)
    assert later["renewed_at"] == at(100) and later["acquired_at"] == at(0)
    assert later["expires_at"] == at(400)


def test_fenced_renewal_is_a_renewal(tmp_path: Path) -> None:
    first = taken()
    (tmp_path / core.LOCK_FILE).write_text(json.dumps(first))
    with core.fenced(str(tmp_path), first["token"], lambda: NOW + timedelta(seconds=7), 300):
        pass
    on_disk = json.loads((tmp_path / core.LOCK_FILE).read_text())
    assert on_disk["renewed_at"] == at(7) and on_disk["expires_at"] == at(307)


def test_a_held_lock_names_holder_renewal_expiry_and_what_to_do() -> None:
    mine = taken(ttl=300)
    renewed = taken(token=mine["token"], current=mine, at_s=40)
    with pytest.raises(core.LockError) as refused:
        core.plan_acquire("/l", renewed, "run B", 300, NOW + timedelta(seconds=100))
    message = str(refused.value)
    assert "held by run A since 2025-01-02T03:04:05Z" in message
    assert f"last renewed {at(40)} (60 s ago)" in message
    assert f"expires {at(340)} (in 240 s)" in message
    assert "bluegreen_lock_force=true" in message and "playbooks/status.yml" in message


def test_a_lock_without_a_recorded_renewal_says_so() -> None:
    old = {"owner": "run A", "token": "t1", "acquired_at": at(0), "expires_at": at(60)}
    assert "last renewed: not recorded" in core.describe_lock("/l", old, NOW)


@pytest.mark.parametrize(
    ("expires_in", "force", "how"),
    [(-1, False, "expired"), (-1, True, "expired"), (60, True, "forced")],
    ids=["expired", "expired-and-forced", "forced"],
)
def test_a_takeover_records_how_and_whose(expires_in: int, force: bool, how: str) -> None:
    theirs = taken()
    theirs["expires_at"] = at(expires_in)
    mine = taken(owner="run B", current=theirs, force=force)
    assert mine["taken"] == {
        "how": how,
        "from": "run A",
        "token": theirs["token"],
        "expired_at": at(expires_in),
        "at": at(0),
    }


def _lost(current: dict[str, Any] | None, token: str, seconds: int = 0) -> str:
    with pytest.raises(core.LockLost) as lost:
        core.check_held("/l", current, token, NOW + timedelta(seconds=seconds))
    return " ".join(str(lost.value).split())


def test_a_lock_that_expired_and_was_taken_over_says_so() -> None:
    mine = taken(ttl=10)
    theirs = taken(owner="run B", current=mine, at_s=30)
    message = _lost(theirs, mine["token"], 31)
    assert f"expired at {at(10)} and was taken over at {at(30)} by run B" in message
    assert "bluegreen_lock_ttl_s" in message
    assert "removed by hand" not in message and "forced" not in message


def test_a_lock_taken_over_by_force_says_so() -> None:
    mine = taken(ttl=300)
    theirs = taken(owner="run B", current=mine, at_s=30, force=True)
    message = _lost(theirs, mine["token"], 31)
    assert f"taken over at {at(30)} by a forced run (bluegreen_lock_force) of run B" in message
    assert f"before it expired ({at(300)})" in message
    assert "removed by hand" not in message


def test_a_lock_taken_from_another_holder_names_the_holder_only() -> None:
    mine = taken(ttl=10)
    between = taken(owner="run B", current=mine, at_s=30, ttl=10)
    last = taken(owner="run C", current=between, at_s=60)
    message = _lost(last, mine["token"], 61)
    assert "was taken over: release lock /l is held by run C" in message
    assert "expired at" not in message.split(":")[0]


def test_a_lock_that_is_gone_says_what_can_remove_it() -> None:
    message = _lost(None, "t1")
    assert "is gone" in message
    assert "removed by hand" in message and "has finished" in message
    assert "playbooks/status.yml" in message


def test_a_lock_that_expired_untaken_says_so() -> None:
    mine = taken(ttl=10)
    message = _lost(mine, mine["token"], 20)
    assert f"expired at {at(10)}" in message and "taken over" not in message
