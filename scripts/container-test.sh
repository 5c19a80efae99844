#!/usr/bin/env bash
# Builds the container image with podman and runs it (issue 22); run by scripts/test.sh.
#
# 1. Installs podman, runc, debootstrap and podman-compose from Debian's packages when
#    missing (root only), and makes a Debian bookworm base image with debootstrap (public
#    image registries are unreachable here; the Debian mirror is not). The base image stays
#    in podman's store (localhost/orchestrator-test-base:bookworm) for the next run, with
#    the runtime stage's and PostgreSQL's images; CONTAINER_TEST_FRESH=1 makes them again.
# 2. Builds the image (--target runtime-prebuilt) around the newest of target/release and
#    target/debug/orchestrator, and checks: /health answers, the image's HEALTHCHECK
#    passes, a W10 run (10 http steps) succeeds against a server on the host's 127.0.0.1,
#    the server runs as uid 10001, SIGTERM with a step in flight lets the step finish and
#    exits 0, and a new container on the same volume still has the runs and finishes the
#    one that was stopped. The binary in the bare base image (no CA
#    certificates) stops with a line that says so.
# 3. Starts deploy/compose.yaml with podman-compose (PostgreSQL from a local image built
#    by scripts/container/postgres.Containerfile on the same base): both replicas get
#    ready, a run started on one is read on the other, and a third server with the
#    Kubernetes ConfigMap's config.yaml and the Deployment's constraints (read-only root,
#    uid 10001, no capabilities) serves with its tokens.
#
# It skips, with one line and exit 0, when it cannot install or run a container engine
# (not root, no network); CONTAINER_TEST=require makes that a failure, CONTAINER_TEST=skip
# skips. Anything that fails once the engine runs is a failure (exit 1), with logs.
set -euo pipefail
cd "$(dirname "$0")/.."

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE=localhost/orchestrator-test-base:bookworm
STARTED=$SECONDS

ct_log() { echo "container-test: $*" >&2; }
ct_skip() {
    if [[ "${CONTAINER_TEST:-auto}" == require ]]; then
        ct_log "FAILED (CONTAINER_TEST=require): $*"
        exit 1
    fi
    ct_log "skipped: $*"
    exit 0
}
ct_fail() {
    ct_log "FAILED: $*"
    ct_dump
    exit 1
}

[[ "${CONTAINER_TEST:-auto}" == skip ]] && ct_skip "CONTAINER_TEST=skip"

# --- 1. engine and base image ------------------------------------------------------------

ct_missing() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v podman-compose >/dev/null || missing+=(podman-compose)
    [[ -e /usr/lib/cni/dnsname ]] || missing+=(golang-github-containernetworking-plugin-dnsname)
    command -v curl >/dev/null || missing+=(curl)
    # Debian's Python (podman-compose's) with PyYAML, whatever else is first on the PATH.
    /usr/bin/python3 -c 'import yaml' 2>/dev/null || missing+=(python3 python3-yaml)
    echo "${missing[@]}"
}

ct_install() {
    local missing
    missing="$(ct_missing)"
    [[ -z "$missing" ]] && return 0
    [[ "$(id -u)" == 0 ]] || ct_skip "needs $missing, and installing them needs root"
    command -v apt-get >/dev/null || ct_skip "needs $missing, and there is no apt-get"
    ct_log "installing $missing from Debian's packages"
    local started=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null 2>&1 || ct_skip "apt-get update failed (no network?)"
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing </dev/null >/dev/null 2>&1 \
        || ct_skip "apt-get install $missing failed (no network?)"
    ct_log "installed in $(( SECONDS - started )) s"
}

ct_install
[[ "$(id -u)" == 0 ]] || ct_skip "podman here needs root (runc, cgroupfs, a CNI bridge)"

WORK="$(mktemp -d /tmp/orchestrator-container.XXXXXX)"
ID="octest-$(basename "$WORK" | cut -d. -f2 | tr '[:upper:]' '[:lower:]')"
IMAGE="localhost/orchestrator-test:$ID"
# Kept, like the base image, so that the next run reuses their layers.
RUNTIME_BASE=localhost/orchestrator-test-runtime-base:bookworm
PG_IMAGE=localhost/orchestrator-test-postgres:bookworm
# This machine's podman: runc with cgroupfs (no systemd), and no default ulimits (the
# container may not raise them above the host's).
cat >"$WORK/containers.conf" <<'EOF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$WORK/containers.conf"

TARGET_PID=""
ct_cleanup() {
    [[ -n "$TARGET_PID" ]] && kill "$TARGET_PID" 2>/dev/null
    # Containers with their anonymous volumes, then named volumes and the compose network.
    podman ps -a --format '{{.Names}}' 2>/dev/null | grep "^$ID" | xargs -r podman rm -f -v -t 0 >/dev/null 2>&1 || true
    podman volume ls --format '{{.Name}}' 2>/dev/null | grep "^$ID" | xargs -r podman volume rm -f >/dev/null 2>&1 || true
    podman network ls --format '{{.Name}}' 2>/dev/null | grep "^$ID" | xargs -r podman network rm -f >/dev/null 2>&1 || true
    podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap ct_cleanup EXIT

# For failures: podman-compose's output, and every container's state, start error and last
# log lines (a container that never started has a state and an error but no log).
ct_dump() {
    local name
    if [[ -s "$WORK/compose.log" ]]; then
        echo "--- podman-compose (last 30 lines)" >&2
        tail -n 30 "$WORK/compose.log" >&2
    fi
    for name in $(podman ps -a --format '{{.Names}}' 2>/dev/null | grep "^$ID"); do
        echo "--- $name: $(podman inspect "$name" --format \
            'status={{.State.Status}} exit={{.State.ExitCode}} error={{.State.Error}}' 2>&1)" >&2
        echo "--- podman logs $name (last 30 lines)" >&2
        podman logs "$name" 2>&1 | grep -v 'systemd' | tail -n 30 >&2 || true
    done
}

podman info >"$WORK/info.log" 2>&1 || ct_skip "podman cannot run here: $(grep -m1 -i error "$WORK/info.log")"
curl -fsS -m 20 -o /dev/null "$MIRROR/dists/bookworm/Release" \
    || ct_skip "the Debian mirror $MIRROR is unreachable (no network?)"

FRESH_BUILD=""
[[ "${CONTAINER_TEST_FRESH:-}" == 1 ]] && FRESH_BUILD="--no-cache"
if [[ -n "$FRESH_BUILD" ]] || ! podman image exists "$BASE"; then
    ct_log "making the base image $BASE with debootstrap"
    phase=$SECONDS
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap.log" >&2; ct_fail "debootstrap failed"; }
    tar -C "$WORK/rootfs" -c . | podman import -q - "$BASE" >/dev/null \
        || ct_fail "podman import of the base image failed"
    rm -rf "$WORK/rootfs"
    ct_log "base image made in $(( SECONDS - phase )) s"
fi

# --- 2. the image on its own ---------------------------------------------------------------

BINARY=""
for candidate in target/release/orchestrator target/debug/orchestrator; do
    if [[ -x "$candidate" && ( -z "$BINARY" || "$candidate" -nt "$BINARY" ) ]]; then
        BINARY="$candidate"
    fi
done
if [[ -z "$BINARY" ]]; then
    cargo build --locked --bin orchestrator
    BINARY=target/debug/orchestrator
fi

ct_log "building $IMAGE from $BINARY"
phase=$SECONDS
podman build --format docker $FRESH_BUILD --target runtime-base --build-arg "RUNTIME_IMAGE=$BASE" \
    -t "$RUNTIME_BASE" -f Containerfile . >"$WORK/build.log" 2>&1 \
    || { tail -n 30 "$WORK/build.log" >&2; ct_fail "podman build --target runtime-base failed"; }
podman build --format docker --target runtime-prebuilt --build-arg "RUNTIME_IMAGE=$BASE" \
    --build-arg "BINARY=$BINARY" -t "$IMAGE" -f Containerfile . >"$WORK/build.log" 2>&1 \
    || { tail -n 30 "$WORK/build.log" >&2; ct_fail "podman build failed"; }
ct_log "image built in $(( SECONDS - phase )) s"

# A port nothing holds on 127.0.0.1, outside the kernel's ephemeral range (a port there may
# be an outgoing connection's at any moment, and podman then cannot publish it) and not one
# of the ports given as arguments (those already picked for this run).
ct_free_port() {
    local low high port taken
    read -r low high </proc/sys/net/ipv4/ip_local_port_range
    for _ in $(seq 1 200); do
        if (( low > 12000 )); then
            port=$(( 10000 + RANDOM % (low - 10000) ))
        else
            port=$(( high + 1 + RANDOM % (65535 - high) ))
        fi
        taken=""
        for picked in "$@"; do [[ "$port" == "$picked" ]] && taken=1; done
        [[ -n "$taken" ]] && continue
        if /usr/bin/python3 -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' \
            "$port" 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    ct_fail "no free port found"
}

# Waits up to $2 seconds for URL $1 to answer 2xx.
ct_wait_http() {
    local deadline=$(( SECONDS + $2 ))
    until curl -fsS -m 5 -o /dev/null "$1" 2>/dev/null; do
        (( SECONDS < deadline )) || ct_fail "$1 did not answer within $2 s"
        sleep 0.5
    done
}

# A Python expression over the JSON document r read from stdin: ct_json 'r["status"]'.
ct_json() { /usr/bin/python3 -c "import json,sys; r=json.load(sys.stdin); print($1)"; }

# POSTs JSON $2 to URL $1 (extra curl arguments after) and prints the answer; fails on non-2xx.
ct_post() {
    local url="$1" body="$2"
    shift 2
    curl -fsS -m 10 -H 'Content-Type: application/json' -d "$body" "$@" "$url" \
        || ct_fail "POST $url failed"
}

# Waits up to 60 s for run $2 on server $1 to be SUCCEEDED; prints the run.
ct_wait_run() {
    local deadline=$(( SECONDS + 60 )) run status
    while :; do
        run="$(curl -fsS -m 5 "${@:3}" "$1/v1/runs/$2")" || ct_fail "GET $1/v1/runs/$2 failed"
        status="$(ct_json 'r["status"]' <<<"$run")"
        [[ "$status" == SUCCEEDED ]] && { echo "$run"; return 0; }
        [[ "$status" == FAILED || "$status" == CANCELED ]] && ct_fail "run $2 ended $status: $run"
        (( SECONDS < deadline )) || ct_fail "run $2 still $status after 60 s"
        sleep 0.2
    done
}

# Without CA certificates, the binary stops at once and says what to do.
out="$(podman run --rm -v "$PWD/$BINARY:/orchestrator:ro" -v "$PWD/deploy/config.yaml:/config.yaml:ro" \
    "$BASE" /orchestrator --config /config.yaml 2>&1)" && ct_fail "the binary started without CA certificates"
grep -q "no CA certificates found.*install the ca-certificates package" <<<"$out" \
    || ct_fail "without CA certificates the binary said: $out"

# A data directory the server's user cannot write stops it with what to fix.
mkdir -m 755 "$WORK/rootdir"
out="$(podman run --rm -v "$WORK/rootdir:/var/lib/orchestrator" "$IMAGE" 2>&1)" \
    && ct_fail "the server started on a data directory it cannot write"
grep -q "database.path: cannot create /var/lib/orchestrator/.*Permission denied" <<<"$out" \
    || ct_fail "on a read-only data directory the server said: $out"

# The target on the host's 127.0.0.1: JSON at any path, after 3 s at /slow.
cat >"$WORK/target.py" <<'EOF'
import http.server, sys, time
class Target(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sys.stderr.write(f"GET {self.path}\n")
        if self.path == "/slow":
            time.sleep(3)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Target).serve_forever()
EOF
TARGET_PORT="$(ct_free_port)"
/usr/bin/python3 -u "$WORK/target.py" "$TARGET_PORT" 2>"$WORK/target.log" &
TARGET_PID=$!
ct_wait_http "http://127.0.0.1:$TARGET_PORT/ok.json" 20

# Host network, so that the server reaches the target on 127.0.0.1; it listens there only.
PORT="$(ct_free_port "$TARGET_PORT")"
API="http://127.0.0.1:$PORT"
ct_run_app() {
    podman run -d --name "$1" --network host -v "$ID-data:/var/lib/orchestrator" \
        -e ORCHESTRATOR_SERVER__HOST=127.0.0.1 -e "ORCHESTRATOR_SERVER__PORT=$PORT" \
        "$IMAGE" >/dev/null 2>"$WORK/run.log" || { cat "$WORK/run.log" >&2; ct_fail "podman run $1 failed"; }
}
ct_run_app "$ID-app"
ct_wait_http "$API/health" 30
podman healthcheck run "$ID-app" >/dev/null 2>&1 || ct_fail "the image's HEALTHCHECK failed"
[[ "$(podman exec "$ID-app" id -u)" == 10001 ]] || ct_fail "the server does not run as uid 10001"
users="$(podman top "$ID-app" user | tail -n +2 | sort -u)"
[[ "$users" == orchestrator ]] || ct_fail "processes run as: $users"

steps=""
for i in $(seq 1 10); do
    steps+="${steps:+,}{\"name\":\"s$i\",\"action\":\"http\",\"input\":{\"method\":\"GET\",\"url\":\"http://127.0.0.1:$TARGET_PORT/ok.json\"}}"
done
wf="$(ct_post "$API/v1/workflows" "{\"name\":\"w10\",\"steps\":[$steps]}" | ct_json 'r["id"]')"
run_id="$(ct_post "$API/v1/runs" "{\"workflow_id\":\"$wf\"}" | ct_json 'r["id"]')"
run="$(ct_wait_run "$API" "$run_id")"
[[ "$(ct_json 'sum([s["status"], s.get("http_code")] == ["SUCCEEDED", 200] for s in r["steps"])' <<<"$run")" == 10 ]] \
    || ct_fail "not every step of the W10 run SUCCEEDED with HTTP 200: $run"
calls="$(grep -c 'GET /ok.json' "$WORK/target.log" || true)"
[[ "$calls" == 11 ]] || ct_fail "the target saw $calls calls, expected 10 (and the readiness check)"

# SIGTERM while a step is in flight: the server waits for it, commits it and exits 0; the
# run goes on after the next start, on the same volume, without calling /slow again.
wf_slow="$(ct_post "$API/v1/workflows" '{"name":"drain","steps":[
    {"name":"slow","action":"http","input":{"method":"GET","url":"http://127.0.0.1:'"$TARGET_PORT"'/slow"}},
    {"name":"after","action":"transform","input":{"set":{"done":true}}}]}' | ct_json 'r["id"]')"
slow_run="$(ct_post "$API/v1/runs" "{\"workflow_id\":\"$wf_slow\"}" | ct_json 'r["id"]')"
deadline=$(( SECONDS + 20 ))
until grep -q 'GET /slow' "$WORK/target.log"; do
    (( SECONDS < deadline )) || ct_fail "the slow step did not start"
    sleep 0.1
done
stop_started=$(date +%s%N)
podman stop -t 60 "$ID-app" >/dev/null 2>&1 || ct_fail "podman stop failed"
stop_ms=$(( ($(date +%s%N) - stop_started) / 1000000 ))
code="$(podman inspect "$ID-app" --format '{{.State.ExitCode}}')"
[[ "$code" == 0 ]] || ct_fail "SIGTERM: exit code $code, expected 0"
(( stop_ms < 20000 )) || ct_fail "SIGTERM: stopping took $stop_ms ms (shutdown_grace is 20 s)"
(( stop_ms >= 1000 )) || ct_fail "SIGTERM: stopped in $stop_ms ms, without waiting for the slow step"
podman logs "$ID-app" 2>&1 | grep -q 'orchestrator::app: stopped' || ct_fail "no 'stopped' line after SIGTERM"
podman rm "$ID-app" >/dev/null 2>&1

ct_run_app "$ID-app2"
ct_wait_http "$API/ready" 30
again="$(curl -fsS -m 5 "$API/v1/runs/$run_id")" || ct_fail "the run is gone after a restart on the same volume"
[[ "$(ct_json 'r["status"]' <<<"$again")" == SUCCEEDED ]] || ct_fail "after a restart: $again"
curl -fsS -m 5 -o /dev/null "$API/v1/workflows/$wf" || ct_fail "the workflow is gone after a restart"
run="$(ct_wait_run "$API" "$slow_run")"
[[ "$(ct_json 'r["context"].get("done")' <<<"$run")" == True ]] || ct_fail "the drained run: $run"
slow_calls="$(grep -c 'GET /slow' "$WORK/target.log" || true)"
[[ "$slow_calls" == 1 ]] || ct_fail "/slow was called $slow_calls times: the step finished during the drain"
podman stop -t 60 "$ID-app2" >/dev/null 2>&1
ct_log "image: ok ($(( SECONDS - STARTED )) s so far; podman stop with a 3 s step in flight took $stop_ms ms)"

# --- 3. the compose stack and the Kubernetes configuration ----------------------------------

phase=$SECONDS
podman build -q $FRESH_BUILD -f scripts/container/postgres.Containerfile --build-arg "BASE_IMAGE=$BASE" \
    -t "$PG_IMAGE" scripts/container >"$WORK/pg-build.log" 2>&1 \
    || { tail -n 30 "$WORK/pg-build.log" >&2; ct_fail "building the PostgreSQL image failed"; }
ct_log "PostgreSQL image built in $(( SECONDS - phase )) s"
PORT_1="$(ct_free_port "$TARGET_PORT" "$PORT")"
PORT_2="$(ct_free_port "$TARGET_PORT" "$PORT" "$PORT_1")"
cat >"$WORK/compose.env" <<EOF
ORCHESTRATOR_IMAGE=$IMAGE
POSTGRES_IMAGE=$PG_IMAGE
POSTGRES_PASSWORD=pw-$ID
ORCHESTRATOR_PORT_1=$PORT_1
ORCHESTRATOR_PORT_2=$PORT_2
EOF
# shellcheck source=/dev/null
(set -a; source "$WORK/compose.env"; podman-compose -p "$ID" -f deploy/compose.yaml up -d --no-build) \
    >"$WORK/compose.log" 2>&1 || { tail -n 30 "$WORK/compose.log" >&2; ct_fail "podman-compose up failed"; }
ct_wait_http "http://127.0.0.1:$PORT_1/ready" 120
ct_wait_http "http://127.0.0.1:$PORT_2/ready" 120
podman volume exists "${ID}_postgres-data" || ct_fail "no named volume ${ID}_postgres-data"

# A run created through replica 2, calling replica 1 by its service name, read on replica 1.
wf="$(ct_post "http://127.0.0.1:$PORT_2/v1/workflows" '{"name":"pair","steps":[
    {"name":"call","action":"http","input":{"method":"GET","url":"http://orchestrator-1:8100/health"}},
    {"name":"note","action":"transform","input":{"set":{"seen":"{{ steps.call.output.body.status }}"}}}]}' \
    | ct_json 'r["id"]')"
run_id="$(ct_post "http://127.0.0.1:$PORT_2/v1/runs" "{\"workflow_id\":\"$wf\"}" | ct_json 'r["id"]')"
run="$(ct_wait_run "http://127.0.0.1:$PORT_1" "$run_id")"
[[ "$(ct_json 'r["context"]["seen"]' <<<"$run")" == ok ]] || ct_fail "the pair run's context: $run"

# The Kubernetes ConfigMap's config.yaml, under the Deployment's constraints, on the same
# PostgreSQL: it serves, /ready answers, and the API wants the Secret's tokens.
/usr/bin/python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["data"]["config.yaml"], end="")' \
    deploy/kubernetes/configmap.yaml >"$WORK/k8s-config.yaml"
chmod 644 "$WORK/k8s-config.yaml"
K8S_PORT="$(ct_free_port "$TARGET_PORT" "$PORT" "$PORT_1" "$PORT_2")"
podman run -d --name "$ID-k8s" --network "${ID}_default" -p "127.0.0.1:$K8S_PORT:8100" \
    --read-only --tmpfs /tmp -v "$ID-k8s-data:/var/lib/orchestrator" \
    --user 10001:10001 --cap-drop ALL --security-opt no-new-privileges \
    -v "$WORK/k8s-config.yaml:/etc/orchestrator/config.yaml:ro" \
    -e "ORCHESTRATOR_DATABASE__DSN=postgres://orchestrator:pw-$ID@postgres:5432/orchestrator" \
    -e ORCH_ADMIN_TOKEN=admin-token-0123456789 -e ORCH_READER_TOKEN=reader-token-0123456789 \
    "$IMAGE" serve >/dev/null 2>"$WORK/run.log" || { cat "$WORK/run.log" >&2; ct_fail "podman run (k8s config) failed"; }
ct_wait_http "http://127.0.0.1:$K8S_PORT/ready" 60
code="$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$K8S_PORT/v1/runs/$run_id")"
[[ "$code" == 401 ]] || ct_fail "the k8s config without a token: HTTP $code, expected 401"
curl -fsS -m 5 -o /dev/null -H 'Authorization: Bearer reader-token-0123456789' \
    "http://127.0.0.1:$K8S_PORT/v1/runs/$run_id" || ct_fail "the k8s config's reader token is refused"
curl -fsS -m 5 -o /dev/null -H 'Authorization: Bearer reader-token-0123456789' \
    "http://127.0.0.1:$K8S_PORT/metrics" || ct_fail "the k8s config's reader token cannot scrape /metrics"

ct_log "ok: image, compose stack and Kubernetes config checked in $(( SECONDS - STARTED )) s"
