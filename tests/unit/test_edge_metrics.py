"""The edge log as nginx.conf.j2 renders it, read by the real mtail program of the nginx role.

nginx.conf.j2 is rendered with the role's defaults and the port table that
group_vars/all.yml derives from bluegreen_ports. Sample lines are written in
the rendered log format, with the colour and service that the rendered maps
give for each address nginx tried, then `mtail --one_shot` runs the shipped
program on them and the exported series are checked: names, labels, counts
and histogram buckets, including a 502 and a 504 from a colour that is down
and requests that no colour answered ("none").
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "nginx"
PROGRAM = ROLE / "files" / "archibald_edge.mtail"
MTAIL = shutil.which("mtail")
BUCKETS = ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1"]
BUCKETS += ["2.5", "5", "10", "+Inf"]

needs_mtail = pytest.mark.skipif(
    MTAIL is None, reason="mtail is not installed: apt-get install mtail (.ci/run does)"
)


def _port_table() -> list[dict[str, Any]]:
    """prometheus_app_targets (and so nginx_upstream_ports) as group_vars/all.yml computes it."""
    group_vars = yaml.safe_load((ROOT / "group_vars" / "all.yml").read_text())
    assert group_vars["nginx_upstream_ports"] == "{{ prometheus_app_targets }}"
    text = jinja2.Environment().from_string(group_vars["prometheus_app_targets"])
    return ast.literal_eval(text.render(bluegreen_ports=group_vars["bluegreen_ports"]))


def _rendered_nginx_conf() -> str:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["comment"] = lambda text: f"# {text}"
    template = env.from_string((ROLE / "templates" / "nginx.conf.j2").read_text())
    return template.render(
        defaults, ansible_managed="Ansible managed", nginx_upstream_ports=_port_table()
    )


CONF = _rendered_nginx_conf()


def _log_format() -> str:
    match = re.search(r"log_format archibald_edge((?:\s+'[^']*')+);", CONF)
    assert match, "nginx.conf.j2 renders no log_format archibald_edge"
    return "".join(re.findall(r"'([^']*)'", match.group(1)))


def _maps() -> dict[str, list[tuple[str, str]]]:
    """Variable name -> [(regex or 'default', value)] of each map on $upstream_addr."""
    maps = {}
    for name, body in re.findall(r"map \$upstream_addr \$(\w+) \{(.*?)\}", CONF, re.S):
        entries = re.findall(r'^\s*(default|"~[^"]+")\s+(\S+);$', body, re.M)
        maps[name] = [(key.strip('"')[1:] if key != "default" else key, v) for key, v in entries]
    return maps


def _map(name: str, upstream_addr: str) -> str:
    """What nginx's map gives: the first matching regex, else the default."""
    entries = _maps()[name]
    for regex, value in entries:
        if regex != "default" and re.search(regex, upstream_addr):
            return value
    return dict(entries)["default"]


def _log_line(status: int, request_time: str, upstream_addr: str, upstream_time: str) -> str:
    """One line as nginx writes it in the rendered format ('-' for an empty variable)."""
    values = {
        "time_iso8601": "2025-06-01T12:00:00+00:00",
        "archibald_edge_color": _map("archibald_edge_color", upstream_addr),
        "archibald_edge_service": _map("archibald_edge_service", upstream_addr),
        "status": str(status),
        "request_time": request_time,
        "upstream_response_time": upstream_time,
        "upstream_addr": upstream_addr,
    }

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"the edge log format uses ${name}, which this test does not know"
        return values[name] or "-"

    return re.sub(r"\$(\w+)", value, _log_format())


# (status, $request_time, $upstream_addr, $upstream_response_time, times)
REQUESTS = [
    (200, "0.004", "127.0.0.1:8101", "0.004", 3),  # blue backend answers
    (200, "12.500", "127.0.0.1:8101", "12.499", 1),  # slower than the last bucket
    (200, "0.012", "127.0.0.1:8102", "0.011", 1),  # blue frontend
    (502, "0.000", "127.0.0.1:8201", "0.000", 2),  # green is down: connection refused
    (502, "0.001", "127.0.0.1:8101, 127.0.0.1:8201", "0.000, 0.000", 1),  # the last try counts
    (504, "5.002", "127.0.0.1:8202", "5.001", 1),  # green frontend hangs: timeout
    (301, "0.000", "", "", 1),  # HTTP -> HTTPS redirect, nginx itself
    (404, "0.000", "", "", 1),  # /metrics, nginx itself
    (200, "0.030", "127.0.0.1:3000", "0.030", 1),  # Grafana: not an app colour
]
EXPECTED_COUNTS = {
    ("blue", "backend", "200"): 4,
    ("blue", "frontend", "200"): 1,
    ("green", "backend", "502"): 3,
    ("green", "frontend", "504"): 1,
    ("none", "none", "301"): 1,
    ("none", "none", "404"): 1,
    ("none", "none", "200"): 1,
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The metric families mtail --one_shot exports for the sample log."""
    assert MTAIL is not None
    work = tmp_path_factory.mktemp("edge")
    progs = work / "progs"
    progs.mkdir()
    shutil.copy(PROGRAM, progs / PROGRAM.name)
    lines = [_log_line(*request[:4]) for request in REQUESTS for _ in range(request[4])]
    log = work / "edge.log"
    log.write_text("\n".join(lines) + "\n")
    command = [MTAIL, "--one_shot", "--one_shot_format", "prometheus", "--emit_prog_label=false"]
    command += ["--progs", str(progs), "--logs", str(log)]
    # One-shot mode still opens its HTTP listener: any free loopback port.
    command += ["--address", "127.0.0.1", "--port", "0"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"mtail failed:\n{result.stderr}"
    return {f.name: f for f in text_string_to_metric_families(result.stdout)}


def test_log_format_has_no_client_controlled_field() -> None:
    fields = set(re.findall(r"\$(\w+)", _log_format()))
    assert fields == {
        "time_iso8601",
        "archibald_edge_color",
        "archibald_edge_service",
        "status",
        "request_time",
        "upstream_response_time",
        "upstream_addr",
    }
    assert "access_log /var/log/nginx/edge.log archibald_edge;" in CONF
    # The log for people keeps its format.
    assert "access_log /var/log/nginx/access.log archibald;" in CONF


@pytest.mark.parametrize("target", _port_table(), ids=lambda t: f"{t['color']}-{t['service']}")
def test_maps_name_every_port_of_the_table(target: dict[str, Any]) -> None:
    for tried in (f"127.0.0.1:{target['port']}", f"127.0.0.1:1, 127.0.0.1:{target['port']}"):
        assert _map("archibald_edge_color", tried) == target["color"]
        assert _map("archibald_edge_service", tried) == target["service"]


@pytest.mark.parametrize("upstream_addr", ["", "127.0.0.1:3000", "127.0.0.1:18101"])
def test_maps_say_none_without_an_app_port(upstream_addr: str) -> None:
    assert _map("archibald_edge_color", upstream_addr) == "none"
    assert _map("archibald_edge_service", upstream_addr) == "none"


@needs_mtail
def test_requests_counted_per_color_service_and_status(exported: dict[str, Any]) -> None:
    family = exported["edge_http_requests"]  # the parser drops the _total suffix
    assert family.type == "counter"
    counts = {}
    for sample in family.samples:
        assert sample.name == "edge_http_requests_total"
        assert set(sample.labels) == {"color", "service", "status"}, sample
        counts[(sample.labels["color"], sample.labels["service"], sample.labels["status"])] = (
            sample.value
        )
    assert counts == EXPECTED_COUNTS
    # Every line matched the program's pattern: none was dropped.
    assert sum(counts.values()) == sum(request[4] for request in REQUESTS)


@needs_mtail
def test_request_duration_histogram(exported: dict[str, Any]) -> None:
    family = exported["edge_http_request_duration_seconds"]
    assert family.type == "histogram"
    buckets: dict[tuple[str, str], dict[str, float]] = {}
    totals: dict[tuple[str, str, str], float] = {}
    for sample in family.samples:
        key = (sample.labels["color"], sample.labels["service"])
        if sample.name.endswith("_bucket"):
            assert set(sample.labels) == {"color", "service", "le"}, sample
            buckets.setdefault(key, {})[sample.labels["le"]] = sample.value
        else:
            assert set(sample.labels) == {"color", "service"}, sample
            totals[(*key, sample.name.rsplit("_", 1)[1])] = sample.value
    per_pair: dict[tuple[str, str], int] = {}
    for (color, service, _), count in EXPECTED_COUNTS.items():
        per_pair[(color, service)] = per_pair.get((color, service), 0) + count
    assert set(buckets) == set(per_pair)
    for key, count in per_pair.items():
        assert [float(le) for le in buckets[key]] == [float(le) for le in BUCKETS], key
        assert buckets[key]["+Inf"] == count == totals[(*key, "count")], key
    # 0.000 s (a refused connection) and 0.001 s land in the first bucket, not nowhere.
    assert buckets[("green", "backend")]["0.001"] == 3
    assert buckets[("none", "none")]["0.001"] == 2
    # 12.5 s is above the last bound: only +Inf holds it.
    assert buckets[("blue", "backend")]["0.005"] == 3
    assert buckets[("blue", "backend")]["10"] == 3
    assert buckets[("green", "frontend")]["5"] == 0
    assert buckets[("green", "frontend")]["10"] == 1
    assert totals[("blue", "backend", "sum")] == pytest.approx(3 * 0.004 + 12.5)
