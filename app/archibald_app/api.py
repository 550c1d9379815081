"""The backend's HTTP API: submit jobs, read one job, list jobs a page at a time.

Errors: 400 for a malformed request (body not JSON, see `bodies`; bad path or
query parameter), 415 for a body that is not JSON by its headers, 422 for a
well-formed body with an invalid field, 413 for a body over
APP_MAX_BODY_BYTES, 429 with Retry-After when APP_MAX_QUEUED_JOBS jobs wait
already (a client's back-off, not a server fault), 503 with Retry-After for
submissions while draining, 507 with Retry-After when the job database's disk
is full (the job was not accepted; nothing accepted before is touched).
Every error names the bad field in `field`.

Idempotent submission (`idempotency`, IETF draft-ietf-httpapi-idempotency-key-header):
a submission with an `Idempotency-Key` that an earlier one used with the same
job answers that job again, 202 with the same body and `Idempotent-Replayed:
true`, and creates nothing; with a different job it answers 422; a malformed
key answers 400. Only an accepted (202) submission stores its key, so a
request refused for any reason can be corrected and retried with the same key.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from . import bodies, idempotency, jobs
from .queue import STATUSES, AsyncJobQueue, IdempotencyKey, QueueFull, StorageFull, Submitted
from .runner import JobRunner
from .service import STATE, ServiceState, error
from .service import make_app as make_base_app

QUEUE = web.AppKey("queue", AsyncJobQueue)
RUNNER = web.AppKey("runner", JobRunner)

RETRY_AFTER_S = 5
MAX_PAGE = 500
ID_DIGITS = 18  # a job id (path or ?before=) has at most this many digits
MAX_JOB_ID = 10**ID_DIGITS - 1
_DIGITS = re.compile(r"[0-9]+")


async def submit_job(request: web.Request) -> web.Response:
    state = request.app[STATE]
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    if state.draining:
        return error(503, "draining: this instance takes no new jobs", field=None, headers=retry)
    try:
        key = idempotency.parse(request.headers.getall(idempotency.HEADER, []))
        body = await bodies.read_json(request, state.cfg.max_body_bytes)
        kind, params = jobs.validate(body, state.cfg.job_max_s)
    except idempotency.BadKey as exc:
        return error(400, str(exc), field=idempotency.HEADER)
    except bodies.BadBody as exc:
        return error(exc.status, exc.message, field=exc.field, headers=exc.headers)
    except jobs.ValidationError as exc:
        return error(422, f"{exc.field} {exc.message}", field=exc.field)
    try:
        done = await _store(request, kind, params, key)
    except QueueFull as exc:
        state.log.event("submit_rejected", level="warning", reason="queue_full", error=str(exc))
        return error(
            429,
            f"the job queue is full ({exc.max_queued} jobs wait to run): this job was not "
            f"accepted; retry after {RETRY_AFTER_S} s",
            field=None,
            headers=retry,
            retry_after_s=RETRY_AFTER_S,
        )
    except StorageFull as exc:
        state.log.event("submit_rejected", level="error", reason="storage_full", error=str(exc))
        return error(
            507,
            "the job store is full (no space left for the job database): "
            "this job was not accepted; retry later",
            field=None,
            headers=retry,
        )
    if done.outcome == "mismatch":
        return error(
            422,
            f"{idempotency.HEADER} was already used for a different job request:"
            " use a new key for a new request",
            field=idempotency.HEADER,
        )
    location = f"/api/jobs/{done.job_id}"
    headers = {"Location": location}
    if done.outcome == "replayed":
        headers[idempotency.REPLAYED_HEADER] = "true"
    else:
        state.metrics.jobs.labels(kind=kind, status="submitted").inc()
        request.app[RUNNER].wake()
    accepted = {"id": done.job_id, "status": "queued", "url": location}
    return web.json_response(accepted, status=202, headers=headers)


async def _store(
    request: web.Request, kind: str, params: dict[str, Any], key: str | None
) -> Submitted:
    """Queue the job; with a key, only if the key does not name a job already."""
    state, queue = request.app[STATE], request.app[QUEUE]
    if key is None:
        return Submitted(await queue.submit(kind, params), "created")
    stored = IdempotencyKey(key, idempotency.fingerprint(kind, params), state.cfg.idempotency_ttl_s)
    done = await queue.submit_once(kind, params, stored)
    state.metrics.idempotent_submissions.labels(outcome=done.outcome).inc()
    return done


async def get_job(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    if not _DIGITS.fullmatch(raw) or len(raw) > ID_DIGITS or int(raw) == 0:
        return error(
            400, f"id must be a positive integer of at most {ID_DIGITS} digits", field="id"
        )
    job = await request.app[QUEUE].get(int(raw))
    if job is None:
        return error(404, f"job {raw} not found", field="id")
    return web.json_response(job.to_dict())


def _query_one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise jobs.ValidationError(name, "is given more than once")
    return values[0] if values and values[0] != "" else None


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = _query_one(request, name)
    if raw is None:
        return default
    # ASCII digits only (str.isdigit() takes "٣" too), and few enough for int().
    if not _DIGITS.fullmatch(raw) or len(raw) > ID_DIGITS or not low <= int(raw) <= high:
        raise jobs.ValidationError(name, f"must be an integer from {low} to {high}")
    return int(raw)


async def list_jobs(request: web.Request) -> web.Response:
    """A page of jobs, newest first; the next page is `?before=<next_before>`."""
    try:
        status = _query_one(request, "status")
        if status is not None and status not in STATUSES:
            raise jobs.ValidationError("status", f"must be one of {', '.join(STATUSES)}")
        if _query_one(request, "offset") is not None:
            raise jobs.ValidationError(
                "offset", "is not taken: ask for the next page with before=<next_before>"
            )
        limit = _query_int(request, "limit", 50, 1, MAX_PAGE)
        before = _query_int(request, "before", 0, 1, MAX_JOB_ID) or None
    except jobs.ValidationError as exc:
        return error(400, f"{exc.field} {exc.message}", field=exc.field)
    page, more = await request.app[QUEUE].list(status, limit, before)
    return web.json_response(
        {
            "jobs": [job.to_dict() for job in page],
            "limit": limit,
            "next_before": page[-1].id if more else None,
        }
    )


def make_app(state: ServiceState, queue: AsyncJobQueue, runner: JobRunner) -> web.Application:
    """The backend application: shared routes plus the jobs API."""
    app = make_base_app(state)
    app[QUEUE] = queue
    app[RUNNER] = runner
    state.running_jobs = lambda: runner.running

    async def refresh_queue_size() -> None:
        counts = await queue.count_by_status()
        state.metrics.job_queue_size.set(counts["queued"])
        for status, count in counts.items():
            state.metrics.jobs_stored.labels(status=status).set(count)
        storage = await queue.storage()
        state.metrics.job_db_size.set(storage.db_bytes)
        state.metrics.job_db_fs_avail.set(storage.fs_avail_bytes)
        state.metrics.job_db_fs_size.set(storage.fs_size_bytes)

    state.before_scrape.append(refresh_queue_size)
    app.router.add_post("/api/jobs", submit_job)
    app.router.add_get("/api/jobs", list_jobs, allow_head=False)
    app.router.add_get("/api/jobs/{id}", get_job, allow_head=False)
    return app
