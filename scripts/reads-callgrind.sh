#!/usr/bin/env bash
# Instructions the server spends on reads of one finished ten-step run, counted by
# callgrind: repeatable on a noisy host where timings are not (BENCHMARKS.md).
#
#   scripts/reads-callgrind.sh [ORCHESTRATOR_BINARY] [READS]
#
# The binary (default target/release/orchestrator; the template sandbox needs it to be
# named `orchestrator`) serves config.yaml on a free port with a fresh store in a temporary
# directory; one run of ten `transform` steps is started and awaited, the counters are
# zeroed, READS (default 200) `GET /v1/runs/{id}` are made one after the other with curl,
# and the instructions counted over them are printed in all and per read.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$repo/target/release/orchestrator}")
reads=${2:-200}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cd "$dir"
ORCHESTRATOR_SERVER__PORT=$port ORCHESTRATOR_DATABASE__PATH=$dir/o.db \
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" -config "$repo/config.yaml" \
  >"$dir/log" 2>&1 &
server=$!
url=http://127.0.0.1:$port
for _ in $(seq 1 240); do curl -sf "$url/ready" >/dev/null 2>&1 && break; sleep 0.5; done
workflow=$(python3 -c 'import json; print(json.dumps({"name": "t10", "steps": [
    {"name": f"s{i}", "action": "transform", "input": {"set": {f"k{i}": i}}} for i in range(10)]}))')
field() { python3 -c "import sys, json; print(json.load(sys.stdin)['$1'])"; }
wf=$(curl -sf -H 'content-type: application/json' -d "$workflow" "$url/v1/workflows" | field id)
run=$(curl -sf -H 'content-type: application/json' -d "{\"workflow_id\":\"$wf\"}" "$url/v1/runs" | field id)
for _ in $(seq 1 240); do
  curl -sf "$url/v1/runs/$run" | grep -q '"status":"SUCCEEDED"' && break
  sleep 0.5
done
sleep 2
callgrind_control -z "$server" >/dev/null 2>&1
for _ in $(seq 1 "$reads"); do curl -sf -o /dev/null "$url/v1/runs/$run"; done
callgrind_control -d "$server" >/dev/null 2>&1
kill "$server"
wait "$server" || true
total=$(callgrind_annotate "$dir/cg.out.1" 2>/dev/null | grep -m1 'PROGRAM TOTALS' | awk '{print $1}' | tr -d ,)
echo "instructions over $reads reads: $total ($((total / reads)) per read)"
