#!/usr/bin/env python3
"""Generate the Grafana dashboards of this repository as code.

The dashboards are built with Grafana's own Foundation SDK and written as JSON
into roles/grafana/files/dashboards/, where the grafana role provisions them
from. The JSON is committed; tests/unit/test_dashboards.py regenerates it and
fails when it differs (run `make dashboards`).

Usage:
  generate.py                   write the dashboards into roles/grafana/files/dashboards/
  generate.py --out DIR         write them somewhere else
  generate.py --list-queries    print every panel's PromQL as JSON (for live checks)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "roles" / "grafana" / "files" / "dashboards"

DATASOURCE_UID = "prometheus"
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
APP = 'job="archibald"'
NODE = 'job="node"'
REAL_FS = 'fstype!~"tmpfs|ramfs|overlay|squashfs|nsfs"'
NOT_LO = 'device!="lo"'
# Grafana macros and what they become when a query is run against Prometheus
# directly (the whole-stack test does that with --list-queries).
MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}

PANEL_WIDTH = 12
PANEL_HEIGHT = 8


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    description: str = ""
    width: int = PANEL_WIDTH


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    file: str
    description: str
    panels: tuple[Panel, ...]
    tags: tuple[str, ...] = field(default=("archibald",))


def _q(expr: str, legend: str = "") -> Query:
    return Query(expr=expr, legend=legend)


def _quantiles(metric: str, by: str, selector: str) -> tuple[Query, ...]:
    return tuple(
        _q(
            f"histogram_quantile({q}, sum by ({by}, le) "
            f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"p{int(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    )


SYSTEM = Dashboard(
    uid="archibald-system",
    title="System Overview",
    file="system-overview.json",
    description="The host: CPU, memory, disk and network from the node exporter.",
    panels=(
        Panel(
            "CPU busy",
            (
                _q(
                    f'1 - avg by (instance) (rate(node_cpu_seconds_total{{{NODE}, mode="idle"}}'
                    "[$__rate_interval]))",
                    "busy",
                ),
            ),
            unit="percentunit",
        ),
        Panel(
            "Load average",
            (
                _q(f"node_load1{{{NODE}}}", "1 min"),
                _q(f"node_load5{{{NODE}}}", "5 min"),
                _q(f"node_load15{{{NODE}}}", "15 min"),
            ),
        ),
        Panel(
            "Memory used",
            (
                _q(
                    f"1 - node_memory_MemAvailable_bytes{{{NODE}}} "
                    f"/ node_memory_MemTotal_bytes{{{NODE}}}",
                    "used",
                ),
            ),
            unit="percentunit",
        ),
        Panel(
            "Disk space used",
            (
                _q(
                    f"1 - node_filesystem_avail_bytes{{{NODE}, {REAL_FS}}} "
                    f"/ node_filesystem_size_bytes{{{NODE}, {REAL_FS}}}",
                    "{{mountpoint}}",
                ),
            ),
            unit="percentunit",
        ),
        Panel(
            "Disk I/O",
            (
                _q(
                    f"sum by (device) (rate(node_disk_read_bytes_total{{{NODE}}}"
                    "[$__rate_interval]))",
                    "read {{device}}",
                ),
                _q(
                    f"sum by (device) (rate(node_disk_written_bytes_total{{{NODE}}}"
                    "[$__rate_interval]))",
                    "written {{device}}",
                ),
            ),
            unit="Bps",
        ),
        Panel(
            "Network traffic",
            (
                _q(
                    f"sum by (device) (rate(node_network_receive_bytes_total{{{NODE}, {NOT_LO}}}"
                    "[$__rate_interval]))",
                    "in {{device}}",
                ),
                _q(
                    f"sum by (device) (rate(node_network_transmit_bytes_total{{{NODE}, {NOT_LO}}}"
                    "[$__rate_interval]))",
                    "out {{device}}",
                ),
            ),
            unit="Bps",
        ),
        Panel(
            "Scrape targets up",
            (_q("sum by (job) (up)", "{{job}}"),),
            kind="stat",
            description="Targets answering per scrape job.",
        ),
        Panel(
            "Docker engine containers",
            (
                _q(
                    'sum by (state) (engine_daemon_container_states_containers{job="docker"})',
                    "{{state}}",
                ),
            ),
            kind="stat",
            description="Containers per state, from the engine's metrics endpoint.",
        ),
    ),
)

APPLICATION = Dashboard(
    uid="archibald-app",
    title="Application Health",
    file="application-health.json",
    description="Requests, errors and latency of the app, split by colour.",
    panels=(
        Panel(
            "Request rate",
            (
                _q(
                    f"sum by (color) (rate(http_requests_total{{{APP}}}[$__rate_interval]))",
                    "{{color}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "API error rate (5xx share)",
            (
                # The recorded fact (archibald.rules.yml) the analysis reads too:
                # 0 % for a colour without 5xx, no data for one without requests.
                _q("archibald:api_error_ratio:rate1m", "{{color}}"),
            ),
            unit="percentunit",
            description=(
                "Over 1 minute, as the release analysis judges it. Alert AppHighErrorRate "
                "fires when the 5-minute share stays above 10 % for 5 minutes."
            ),
        ),
        Panel(
            "Latency p50 / p95 / p99",
            (
                *_quantiles("http_request_duration_seconds", "color", APP)[:2],
                # p99 is the recorded fact the analysis judges (archibald.rules.yml).
                _q("archibald:request_duration_seconds:p99_1m", "p99 {{color}}"),
            ),
            unit="s",
            width=24,
        ),
        Panel(
            "Traffic weight per colour",
            (_q("archibald_traffic_weight_percent", "{{color}}"),),
            unit="percent",
            description=(
                "Share of clients each colour gets: 100 and 0 outside a canary, the step's "
                "weight during one (bluegreen_canary_steps). Every step is a deploy annotation."
            ),
        ),
        Panel(
            "Edge 5xx share per colour (what users got)",
            # Recorded in edge.rules.yml; nginx's own 502/504 included.
            (_q("color:edge_http_server_errors:ratio_rate1m", "{{color}}"),),
            unit="percentunit",
            description="During a canary: the two colours side by side, as its judge sees them.",
        ),
        Panel(
            "Edge p99 per colour and service",
            (
                _q(
                    "color_service:edge_http_request_duration_seconds:p99_1m",
                    "{{service}} {{color}}",
                ),
            ),
            unit="s",
            width=24,
        ),
        Panel(
            "Active operations",
            (_q(f"sum by (color) (active_operations{{{APP}}})", "{{color}}"),),
        ),
        Panel(
            "Draining",
            (_q(f"max by (color, service) (app_draining{{{APP}}})", "{{service}} {{color}}"),),
            description="1 while a container drains after SIGTERM.",
        ),
        Panel(
            "Targets up",
            (_q(f"up{{{APP}}}", "{{service}} {{color}}"),),
            kind="stat",
        ),
        Panel(
            "Running versions",
            (_q(f"app_info{{{APP}}}", "{{service}} {{color}}: {{version}}"),),
            kind="stat",
        ),
    ),
)

JOBS = Dashboard(
    uid="archibald-jobs",
    title="Job Queue",
    file="job-queue.json",
    description="Depth of the shared job queue, processing time and outcome of jobs.",
    panels=(
        Panel(
            "Queue depth",
            (_q(f"max(job_queue_size{{{APP}}})", "queued"),),
            description="The SQLite queue is shared by both colours: the max of their reports.",
        ),
        Panel(
            "Jobs finished",
            (
                _q(
                    f"sum by (status) (rate(jobs_total{{{APP}}}[$__rate_interval]))",
                    "{{status}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Job processing time",
            _quantiles("job_processing_seconds", "kind", APP),
            unit="s",
        ),
        Panel(
            "Job success rate",
            (
                _q(
                    f'sum by (kind) (rate(jobs_total{{{APP}, status="done"}}[$__rate_interval])) '
                    f'/ sum by (kind) (rate(jobs_total{{{APP}, status=~"done|failed"}}'
                    "[$__rate_interval]))",
                    "{{kind}}",
                ),
            ),
            unit="percentunit",
        ),
        Panel(
            "Database queries",
            (
                _q(
                    f"sum by (operation) (rate(db_queries_total{{{APP}}}[$__rate_interval]))",
                    "{{operation}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Jobs put back (requeued)",
            (
                _q(
                    f'sum by (color) (increase(jobs_total{{{APP}, status="requeued"}}'
                    "[$__rate_interval]))",
                    "{{color}}",
                ),
            ),
        ),
    ),
)

WORKERS = Dashboard(
    uid="archibald-workers",
    title="Worker Pool",
    file="worker-pool.json",
    description=(
        "The bounded worker pool: busy workers, waits for a free worker, jobs waiting, "
        "restarts and launch failures."
    ),
    panels=(
        Panel(
            "Busy workers",
            (
                _q(f"sum by (color) (worker_pool_busy{{{APP}}})", "busy {{color}}"),
                _q(f"sum by (color) (worker_pool_size{{{APP}}})", "size {{color}}"),
            ),
        ),
        Panel(
            "Pool utilisation",
            (
                _q(
                    f"sum by (color) (worker_pool_busy{{{APP}}}) "
                    f"/ sum by (color) (worker_pool_size{{{APP}}})",
                    "{{color}}",
                ),
            ),
            unit="percentunit",
        ),
        Panel(
            "Waits for a free worker",
            (
                _q(
                    f"sum by (color) (rate(worker_pool_waits_total{{{APP}}}[$__rate_interval]))",
                    "{{color}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Worker restarts",
            (
                _q(
                    f"sum by (color) (increase(worker_pool_restarts_total{{{APP}}}"
                    "[$__rate_interval]))",
                    "{{color}}",
                ),
            ),
        ),
        Panel(
            "Jobs waiting for a worker",
            (_q(f"sum by (color) (worker_pool_waiting{{{APP}}})", "{{color}}"),),
            description=(
                "Jobs waiting for a free worker now (a browser of archibald-contract's pool; "
                "node/archibald-contract). A steady queue here means the pool is too small."
            ),
        ),
        Panel(
            "Worker launch failures",
            (
                _q(
                    f"sum by (color) (increase(worker_pool_launch_failures_total{{{APP}}}"
                    "[$__rate_interval]))",
                    "{{color}}",
                ),
            ),
            description=(
                "Launches of a worker (the pool factory's create: a browser) that failed. "
                "Any at all: the image or the host lacks what the browser needs."
            ),
        ),
        Panel(
            "Last drain duration",
            (
                _q(
                    f"max by (color, service) (app_drain_duration_seconds{{{APP}}})",
                    "{{service}} {{color}}",
                ),
            ),
            unit="s",
            description=(
                "How long the last drain after SIGTERM took, per container (0 before the "
                "first drain). The drain timeout is 60 s; DrainDidNotFinish fires after 90 s."
            ),
            width=24,
        ),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (SYSTEM, APPLICATION, JOBS, WORKERS)

# Deploy markers from the node exporter's textfile collector (written by the
# release): the sample value is the switch time, so the marker sits exactly there.
ANNOTATIONS: tuple[dict[str, Any], ...] = (
    {
        "name": "Deploys",
        "expr": "archibald_deploy_switch_timestamp_seconds * 1000",
        "iconColor": "blue",
        "titleFormat": "Traffic switched",
        "textFormat": "Blue/green switch by the release",
        "useValueForTime": True,
    },
    {
        "name": "Automatic rollbacks",
        "expr": "increase(archibald_deploy_auto_rollbacks_total[$__rate_interval]) > 0",
        "iconColor": "red",
        "titleFormat": "Automatic rollback",
        "textFormat": "The release rolled back by itself",
        "useValueForTime": False,
    },
)


def _panel(spec: Panel, panel_id: int, x: int, y: int) -> Any:
    builder: Any = stat.Panel() if spec.kind == "stat" else timeseries.Panel()
    builder = (
        builder.id(panel_id)
        .title(spec.title)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .grid_pos(dm.GridPos(h=PANEL_HEIGHT, w=spec.width, x=x, y=y))
    )
    if spec.description:
        builder = builder.description(spec.description)
    for index, query in enumerate(spec.queries):
        target = (
            prometheus.Dataquery()
            .datasource(DATASOURCE)
            .expr(query.expr)
            .ref_id(chr(ord("A") + index))
        )
        if query.legend:
            target = target.legend_format(query.legend)
        builder = builder.with_target(target)
    return builder


def _annotation(spec: dict[str, Any]) -> Any:
    return (
        dashboard.AnnotationQuery()
        .name(spec["name"])
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color(spec["iconColor"])
        .expr(spec["expr"])
    )


def build(spec: Dashboard) -> dict[str, Any]:
    """The dashboard as the dict Grafana's JSON model expects."""
    builder = (
        dashboard.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(list(spec.tags))
        .editable()
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
    )
    for annotation in ANNOTATIONS:
        builder = builder.annotation(_annotation(annotation))
    x, y = 0, 0
    for panel_id, panel in enumerate(spec.panels, start=1):
        if x + panel.width > 24:
            x, y = 0, y + PANEL_HEIGHT
        builder = builder.with_panel(_panel(panel, panel_id, x, y))
        x += panel.width
    model: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(builder.build()))
    # Fields of Prometheus annotations that the SDK's generic model does not carry.
    for entry, annotation in zip(model["annotations"]["list"], ANNOTATIONS, strict=True):
        entry.update(
            {
                "step": "15s",
                "titleFormat": annotation["titleFormat"],
                "textFormat": annotation["textFormat"],
                "useValueForTime": annotation["useValueForTime"],
            }
        )
    return model


def render(spec: Dashboard) -> str:
    return json.dumps(build(spec), indent=2, sort_keys=True) + "\n"


def write(out: Path, dashboards: Iterable[Dashboard] = DASHBOARDS) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in dashboards:
        path = out / spec.file
        path.write_text(render(spec))
        written.append(path)
    return written


def promql(expr: str) -> str:
    """The expression with Grafana's macros replaced, ready for Prometheus' API."""
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    return expr


def list_queries(dashboards: Iterable[Dashboard] = DASHBOARDS) -> list[dict[str, Any]]:
    """Every panel and annotation query, as written and as Prometheus can run it."""
    rows: list[dict[str, Any]] = []
    for spec in dashboards:
        for panel in spec.panels:
            for query in panel.queries:
                rows.append(
                    {
                        "dashboard": spec.title,
                        "panel": panel.title,
                        "expr": query.expr,
                        "promql": promql(query.expr),
                    }
                )
        for annotation in ANNOTATIONS:
            rows.append(
                {
                    "dashboard": spec.title,
                    "annotation": annotation["name"],
                    "expr": annotation["expr"],
                    "promql": promql(annotation["expr"]),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument(
        "--list-queries", action="store_true", help="print every query as JSON and exit"
    )
    args = parser.parse_args(argv)
    if args.list_queries:
        json.dump(list_queries(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for path in write(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
