# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One GET for the modules, through Ansible's own HTTP client (ansible.module_utils.urls).

The modules (health_gate, bluegreen_facts, canary_gate, prometheus_gate) ask
URLs on the host: health paths, nginx, the edge's counters, Prometheus. They
all go through ``fetch``, which uses ``open_url`` as community modules do:
certificates are checked unless the caller says otherwise, proxies and
redirects as Ansible handles them. Only modules import this file; the host's
retirement script, which runs without Ansible, copies module_utils/bluegreen.py
alone and asks no URL.
"""

from __future__ import annotations

import http.client
import urllib.error
from collections.abc import Mapping

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url

# What a health answer needs; a caller that wants the whole body says limit=None.
BODY_LIMIT = 64 * 1024


def fetch(
    url: str,
    request_timeout: float,
    headers: Mapping[str, str] | None = None,
    validate_certs: bool = True,
    limit: int | None = BODY_LIMIT,
) -> tuple[int | None, str, str | None]:
    """GET a URL; return (status, body, transport error). HTTP errors are answers too."""
    size = -1 if limit is None else limit
    try:
        reply = open_url(
            url,
            method="GET",
            headers=dict(headers or {}),
            timeout=request_timeout,
            validate_certs=validate_certs,
        )
        with reply:
            return int(reply.status), reply.read(size).decode("utf-8", "replace"), None
    except urllib.error.HTTPError as exc:
        body = exc.read(size).decode("utf-8", "replace") if exc.fp else ""
        return exc.code, body, None
    except urllib.error.URLError as exc:
        return None, "", f"no answer: {exc.reason}"
    except UrlsConnectionError as exc:  # a certificate that failed its check, among others
        return None, "", f"no answer: {exc}"
    except (TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:
        return None, "", f"no answer: {exc or type(exc).__name__}"
