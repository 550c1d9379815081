"""Unit tests for library/bluegreen_facts.py: observe files, nginx's answer and containers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bluegreen_facts
import pytest
from ansible.module_utils import bluegreen as core
from conftest import FakeDocker, docker_doc

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def inspect(color: str, service: str, version: str) -> dict[str, Any]:
    return {
        "Name": f"/archibald-{service}-{color}",
        "Image": f"img-{version}",
        "RestartCount": 0,
        "State": {"Running": True, "StartedAt": "2025-01-01T00:00:00Z"},
        "Config": {
            "Labels": {
                "org.archibald.color": color,
                "org.archibald.service": service,
                "org.archibald.version": version,
                "org.archibald.config": "c1",
            }
        },
    }


def write_state(directory: Path, active: str, versions: dict[str, str]) -> None:
    state = core.empty_state("archibald", ["blue", "green"])
    state["active"] = active
    for color, version in versions.items():
        state["colors"][color].update(version=version, image_id=f"img-{version}", config="c1")
    (directory / "state.json").write_text(core.render_state(state))


def params(directory: Path, edge_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "dir": str(directory),
        "app": "archibald",
        "colors": ["blue", "green"],
        "services": ["backend", "frontend"],
        "upstreams_file": str(directory / "upstreams.conf"),
        "edge_url": edge_url,
        "edge_host": None,
        "edge_validate_certs": True,
        "health_path": "/healthy",
        "request_timeout": 1,
        "containers": [],
        "request": {"action": "none"},
        **extra,
    }


def test_a_consistent_host_plans_a_release(tmp_path: Path, base: str) -> None:
    # The test server answers green v2 on /healthy.
    write_state(tmp_path, "green", {"green": "v2"})
    (tmp_path / "upstreams.conf").write_text(core.render_marker("green", "v2", None) + "\n")
    containers = [inspect("green", s, "v2") for s in ("backend", "frontend")]
    request = {"action": "release", "version": "v3", "image_id": "img-v3", "config": "c1"}
    facts = bluegreen_facts.observe(
        params(tmp_path, base, containers=containers, request=request), NOW
    )
    assert facts["drift"] == []
    assert facts["edge"] == {"status": 200, "color": "green", "version": "v2", "error": None}
    assert facts["upstream"]["color"] == "green"
    assert facts["colors"]["green"]["running"] and not facts["colors"]["blue"]["any_running"]
    assert facts["plan"]["kind"] == "release" and facts["plan"]["to_color"] == "blue"
    assert facts["lock"] is None and facts["retire"] == {"blue": None, "green": None}


def test_an_interrupted_switch_is_drift_and_the_release_is_refused(
    tmp_path: Path, base: str
) -> None:
    write_state(tmp_path, "blue", {"blue": "v1", "green": "v2"})
    (tmp_path / "upstreams.conf").write_text(core.render_marker("green", "v2", None) + "\n")
    (tmp_path / "retire-blue.json").write_text(json.dumps({"deadline": 1700000000}))
    facts = bluegreen_facts.observe(
        params(tmp_path, base, request={"action": "release", "version": "v3"}), NOW
    )
    assert facts["drift"] == [
        "nginx serves green (v2) but state.json says blue is active: a run stopped between the "
        "switch and the record"
    ]
    assert facts["plan"]["kind"] == "refuse" and "repair.yml" in facts["plan"]["why"]
    assert facts["retire"]["blue"] == 1700000000.0


def test_nginx_not_answering_is_reported(tmp_path: Path, closed_port: int) -> None:
    facts = bluegreen_facts.observe(params(tmp_path, f"http://127.0.0.1:{closed_port}"), NOW)
    assert facts["edge"]["status"] is None and "no answer" in facts["edge"]["error"]
    assert facts["state_exists"] is False and facts["drift"] == []


def test_module_is_read_only_and_names_a_bad_record(
    run_module: Any, tmp_path: Path, base: str
) -> None:
    (tmp_path / "state.json").write_text("{oops")
    result = run_module(bluegreen_facts.main, params(tmp_path, base))
    assert result["failed"] and "not valid JSON" in result["msg"]
    assert (tmp_path / "state.json").read_text() == "{oops"


@pytest.mark.parametrize("check", [False, True])
def test_module_reports_without_change(
    run_module: Any, tmp_path: Path, base: str, check: bool
) -> None:
    result = run_module(bluegreen_facts.main, params(tmp_path, base), check=check)
    assert result["changed"] is False and result["plan"]["kind"] == "noop"


def test_without_containers_the_module_lists_them_from_dockers_socket(
    tmp_path: Path, base: str, docker: FakeDocker
) -> None:
    write_state(tmp_path, "green", {"green": "v2"})
    (tmp_path / "upstreams.conf").write_text(core.render_marker("green", "v2", None) + "\n")
    docker.containers = {
        f"archibald-{s}-green": docker_doc(f"archibald-{s}-green", "green", s)
        for s in ("backend", "frontend")
    }
    docker.containers["other-app"] = docker_doc("other-app", "green", "backend")
    docker.containers["other-app"]["Config"]["Labels"]["org.archibald.app"] = "other"
    extra = {"docker_socket": docker.path, "containers": None}
    facts = bluegreen_facts.observe(params(tmp_path, base, **extra), NOW)
    green = facts["colors"]["green"]
    assert green["running"] and sorted(green["services"]) == ["backend", "frontend"]
    assert len(docker.seen) == 1, "one request: the list"


def test_a_docker_that_does_not_answer_is_named(tmp_path: Path, base: str) -> None:
    write_state(tmp_path, "green", {"green": "v2"})
    extra = {"docker_socket": str(tmp_path / "no.sock"), "containers": None}
    with pytest.raises(core.BlueGreenError, match=r"through Docker's socket .*no\.sock.*rerun"):
        bluegreen_facts.observe(params(tmp_path, base, **extra), NOW)
