#!/usr/bin/env bash
# Smoke-test one built app image before it is pushed anywhere:
#   scripts/smoke-image.sh <image reference> <expected version>
# The reference should be the exact image, by digest or image id. Checks that
#   1. it runs as the unprivileged user `app`;
#   2. the backend starts and GET /health answers 200, status ok, with the
#      expected version, within SMOKE_TIMEOUT_S (default 60);
#   3. a job submitted through the API runs to "done";
#   4. SIGTERM drains it: a job still running when the signal comes finishes,
#      the log shows drain_started and drain_finished, and the container exits 0
#      well inside Docker's stop grace.
# Runs the container on 127.0.0.1 only; removes it whatever happens.
set -euo pipefail
image="${1:?usage: smoke-image.sh <image reference> <expected version>}"
expected="${2:?usage: smoke-image.sh <image reference> <expected version>}"
timeout_s="${SMOKE_TIMEOUT_S:-60}"
name="archibald-smoke-$$"

fail() {
  printf '::error::smoke test of %s: %s\n' "$image" "$*" >&2
  docker logs --tail 40 "$name" >&2 2>&1 || true
  exit 1
}
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

user=$(docker image inspect --format '{{.Config.User}}' "$image") || fail "image not found"
[ "$user" = app ] || fail "runs as '${user:-root}', not as the user app"

docker run -d --name "$name" --publish 127.0.0.1::8000 -e APP_COLOR=smoke "$image" backend >/dev/null
port=$(docker port "$name" 8000/tcp | head -n 1 | sed 's/.*://')
base="http://127.0.0.1:$port"

json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"; }

started=$(date +%s)
version=""
until health=$(curl -fsS --max-time 3 "$base/health" 2>/dev/null) \
  && [ "$(json_field status <<<"$health")" = ok ]; do
  [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || fail "the container exited"
  (($(date +%s) - started < timeout_s)) || fail "/health did not answer ok within ${timeout_s} s"
  sleep 1
done
version=$(json_field version <<<"$health")
[ "$version" = "$expected" ] || fail "/health reports version '$version', expected '$expected'"
echo "smoke: /health 200 ok, version $version, after $(($(date +%s) - started)) s"

submit() {
  curl -fsS --max-time 5 -H 'Content-Type: application/json' \
    -d "{\"kind\": \"sleep\", \"params\": {\"seconds\": $1}}" "$base/api/jobs" | json_field id
}
job_status() { curl -fsS --max-time 5 "$base/api/jobs/$1" | json_field status; }

quick=$(submit 0.2) || fail "POST /api/jobs failed"
for _ in $(seq 1 50); do
  [ "$(job_status "$quick")" = "done" ] && break
  sleep 0.2
done
[ "$(job_status "$quick")" = "done" ] || fail "job $quick did not finish (status $(job_status "$quick"))"
echo "smoke: job $quick done"

slow=$(submit 3) || fail "POST /api/jobs failed"
for _ in $(seq 1 50); do
  [ "$(job_status "$slow")" = running ] && break
  sleep 0.1
done
[ "$(job_status "$slow")" = running ] || fail "job $slow never started running"
stop_started=$(date +%s)
docker kill --signal TERM "$name" >/dev/null
code=$(timeout 75 docker wait "$name") || fail "did not exit within 75 s of SIGTERM"
drain_s=$(($(date +%s) - stop_started))
[ "$code" = 0 ] || fail "exited $code after SIGTERM, expected 0"
logs=$(docker logs "$name" 2>&1)
grep -q '"event": *"drain_started"' <<<"$logs" || fail "no drain_started event in the log"
finished=$(grep '"event": *"drain_finished"' <<<"$logs") || fail "no drain_finished event in the log"
if ! grep -q '"jobs_completed": *1[,}]' <<<"$finished" \
  || ! grep -q '"jobs_requeued": *0[,}]' <<<"$finished"; then
  fail "the job running at SIGTERM ($slow) was not finished by the drain: $finished"
fi
echo "smoke: SIGTERM drained job $slow and exited 0 in ${drain_s} s"
echo "smoke: $image passed"
