#!/usr/bin/env bash
# Instructions the server spends per step of ten-step `http` runs against nginx, counted by
# callgrind: repeatable on a noisy host where timings are not (BENCHMARKS.md).
#
#   scripts/steps-callgrind.sh [ORCHESTRATOR_BINARY] [RUNS] [ANNOTATE_OUT]
#
# nginx (Debian's package) answers `GET /ok` on a free port; the binary (default
# target/release/orchestrator; the template sandbox needs it to be named `orchestrator`)
# serves config.yaml on another with a fresh store in a temporary directory. Ten warm-up
# runs of W10 (the bench's ten sequential GETs; STEPS of them when set) are started and
# awaited, the counters are zeroed, RUNS (default 100) runs are started by `POST /v1/runs`
# one after the other and awaited (two `GET /v1/runs?status=…&limit=1&view=summary` a
# second), and the instructions counted over them are printed in all and per step. With
# ANNOTATE_OUT, callgrind_annotate's inclusive listing is written there and callgrind's own
# file beside it (ANNOTATE_OUT.callgrind, for `callgrind_annotate --tree=both`).
# CALLGRIND_ARGS passes more options to valgrind, e.g. `--toggle-collect='*put_step*'` to
# count one function alone. WAIT says how each counted run is awaited: `list` (the default:
# started one after the other, awaited together by the list polls above), `stream` (started
# and followed on its log stream to `end`) or `poll` (started and read by `GET
# /v1/runs/{id}` every 5 ms until it ends; the reads per run are printed), these two by
# CLIENTS (default 10) clients at once, each starting its next run when one ended. DSN, when
# set, is a PostgreSQL DSN the server stores in instead of the embedded store (use a fresh
# database: `source scripts/pg-cluster.sh; pg_cluster_start` and create one); only the
# server's instructions are counted, not PostgreSQL's. SYSCALLS=1 runs the server natively
# and counts its system calls, context switches and CPU time (`perf stat`, task-clock in
# ms) over the same runs instead of instructions. Work the server does by the clock
# (key passes, checkpoints, the polls) grows when the host is busy: count with nothing else
# running.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$repo/target/release/orchestrator}")
runs=${2:-100}
steps=${STEPS:-10}
annotate=${3:-}
dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
nport=$(free_port)
mkdir -p "$dir/nginx"
cat >"$dir/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log crit;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path $dir/nginx/body; proxy_temp_path $dir/nginx/proxy;
  fastcgi_temp_path $dir/nginx/fastcgi; uwsgi_temp_path $dir/nginx/uwsgi; scgi_temp_path $dir/nginx/scgi;
  server {
    listen 127.0.0.1:$nport;
    location /ok { default_type application/json; return 200 '{"ok":true,"n":1}'; }
  }
}
CONF
/usr/sbin/nginx -p "$dir/nginx" -e "$dir/nginx/error.log" -c "$dir/nginx/nginx.conf" &
nginx=$!
port=$(free_port)
cd "$dir"
if [ -n "${SYSCALLS:-}" ]; then
  under=()
else
  under=(valgrind --tool=callgrind ${CALLGRIND_ARGS:-} --callgrind-out-file="$dir/cg.out")
fi
ORCHESTRATOR_SERVER__PORT=$port ORCHESTRATOR_DATABASE__PATH=$dir/o.db ORCHESTRATOR_DATABASE__DSN=${DSN:-} \
  "${under[@]}" "$bin" -config "$repo/config.yaml" >"$dir/log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; kill -QUIT "$nginx" 2>/dev/null || true; rm -rf "$dir"' EXIT
url=http://127.0.0.1:$port
for _ in $(seq 1 240); do curl -sf "$url/ready" >/dev/null 2>&1 && break; sleep 0.5; done
workflow=$(python3 -c "import json; t='http://127.0.0.1:$nport'; print(json.dumps({'name': 'w10', 'steps': [
    {'name': f's{i}', 'action': 'http', 'input': {'method': 'GET', 'url': f'{t}/ok'}} for i in range(1, $steps + 1)]}))")
field() { python3 -c "import sys, json; print(json.load(sys.stdin)['$1'])"; }
wf=$(curl -sf -H 'content-type: application/json' -d "$workflow" "$url/v1/workflows" | field id)
start() { for _ in $(seq 1 "$1"); do
  curl -sf -o /dev/null -H 'content-type: application/json' -d "{\"workflow_id\":\"$wf\"}" "$url/v1/runs"
done; }
settle() {
  for _ in $(seq 1 600); do
    n=$(curl -sf "$url/v1/runs?status=RUNNING&limit=1&view=summary" | python3 -c 'import sys, json; print(len(json.load(sys.stdin)["items"]))')
    p=$(curl -sf "$url/v1/runs?status=PENDING&limit=1&view=summary" | python3 -c 'import sys, json; print(len(json.load(sys.stdin)["items"]))')
    [ "$n" = 0 ] && [ "$p" = 0 ] && return 0
    sleep 1
  done
  echo "runs did not finish" >&2; exit 1
}
start 10; settle
if [ -n "${SYSCALLS:-}" ]; then
  perf stat -e raw_syscalls:sys_enter,context-switches,task-clock -p "$server" -o "$dir/stat" &
  counting=$!
  sleep 1
else
  callgrind_control -z "$server" >/dev/null 2>&1
fi
case "${WAIT:-list}" in
  list) start "$runs"; settle ;;
  stream | poll) python3 - "$port" "$wf" "$runs" "$WAIT" "${CLIENTS:-10}" <<'PY'
import http.client, json, sys, threading, time
port, wf, runs, wait, clients = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
reads, lock = [0], threading.Lock()
def client(n):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    def call(method, path, body=None):
        conn.request(method, path, body=body, headers={"content-type": "application/json"})
        return json.loads(conn.getresponse().read())
    for _ in range(n):
        run = call("POST", "/v1/runs", json.dumps({"workflow_id": wf}))["id"]
        if wait == "stream":
            stream = http.client.HTTPConnection("127.0.0.1", port)
            stream.request("GET", f"/v1/runs/{run}/logs/stream")
            body = stream.getresponse()
            while not body.readline().startswith(b"event: end"):
                pass
            stream.close()
            continue
        while True:
            with lock:
                reads[0] += 1
            if call("GET", f"/v1/runs/{run}")["status"] in ("SUCCEEDED", "FAILED", "CANCELED"):
                break
            time.sleep(0.005)
threads = [threading.Thread(target=client, args=(runs // clients + (i < runs % clients),)) for i in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
if wait == "poll":
    print(f"reads per run: {reads[0] / runs:.1f}")
PY
    settle ;;
  *) echo "WAIT is list, stream or poll" >&2; exit 2 ;;
esac
if [ -n "${SYSCALLS:-}" ]; then
  kill -INT "$counting"
  wait "$counting" || true
else
  callgrind_control -d "$server" >/dev/null 2>&1
fi
done_runs=$(curl -sf "$url/v1/runs?status=SUCCEEDED&limit=500" | python3 -c 'import sys, json; print(len(json.load(sys.stdin)["items"]))')
kill "$server"
wait "$server" || true
total_steps=$((runs * steps))
echo "succeeded runs: $done_runs (of $((runs + 10)))"
if [ -n "${SYSCALLS:-}" ]; then
  awk -v n="$total_steps" '
    /sys_enter|context-switches/ { gsub(",", "", $1); printf "%s: %s (%.1f per step)\n", $2, $1, $1 / n }
    /task-clock/ { gsub(",", "", $1); printf "task-clock: %s ms (%.0f us per step)\n", $1, $1 * 1000 / n }' "$dir/stat"
  exit 0
fi
total=$(callgrind_annotate "$dir/cg.out.1" 2>/dev/null | grep -m1 'PROGRAM TOTALS' | awk '{print $1}' | tr -d ,)
echo "instructions over $runs runs of $steps steps: $total ($((total / total_steps)) per step)"
if [ -n "$annotate" ]; then
  callgrind_annotate --inclusive=yes --threshold=99.5 "$dir/cg.out.1" >"$annotate" 2>/dev/null
  cp "$dir/cg.out.1" "$annotate.callgrind"
fi
