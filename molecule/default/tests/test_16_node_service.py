"""A Node service released blue/green on the whole stack, and rolled back (issue 30).

The image is the example Node service (node/example-service, on the
archibald-contract package), the one tests/cd/test_contract.py holds to the
app contract; harness/testbed.py pushes it as archibald/app:node1 beside the
reference app's versions. The engine releases it with the same playbook and
inventory as the Python app: what APP_CONTRACT.md asks of a Node team is all
the engine needs. Probes through nginx count every answer during the release
and the rollback; a render job runs on the Node backend through the edge, and
Prometheus scrapes the Node colour under the contract's metric names.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from conftest import Prober, edge, other, run_playbook, serving, wait_for

from harness.testbed import NODE_VERSION


def scraped(host: Any, promql: str) -> list[dict[str, Any]]:
    """Prometheus' answer to an instant query, on the host."""
    query = urllib.parse.urlencode({"query": promql})
    out = host.check_output(f"curl -fsS 'http://127.0.0.1:9090/api/v1/query?{query}'")
    return list(json.loads(out)["data"]["result"])


def test_a_node_service_is_released_blue_green_and_rolled_back(host: Any) -> None:
    before = serving()  # the known state: v1 live
    node = other(before[0])
    with Prober() as prober:
        rc, out, released_s = run_playbook("release.yml", "-e", f"app_version={NODE_VERSION}")
        assert rc == 0, out[-3000:]
        assert serving() == (node, NODE_VERSION)
        status, job = edge("/api/render", 10, {"seconds": 1})
        assert status == 202, (status, job)
        wait_for(
            "the Node backend's render job to finish",
            lambda: edge(f"/api/jobs/{job['id']}", 10)[1].get("state") == "done",
            30,
            0.5,
        )
        # The contract's names, scraped from the Node colour like any colour's.
        info = wait_for(
            f"Prometheus to scrape app_info of {NODE_VERSION}",
            lambda: scraped(host, f'app_info{{version="{NODE_VERSION}", color="{node}"}}'),
            30,
            1,
        )
        rc, out, rolled_back_s = run_playbook("rollback.yml")
        assert rc == 0, out[-3000:]
    assert serving() == before
    services = sorted({series["metric"].get("service", "?") for series in info})
    print(
        f"\n[node] {NODE_VERSION} released on {node} in {released_s:.0f} s, a render job done, "
        f"app_info scraped from {services}; rolled back to {before} in {rolled_back_s:.0f} s; "
        f"{prober.summary()}"
    )
    assert not prober.failed(), prober.failed()[:5]
