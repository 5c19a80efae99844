#!/usr/bin/env bash
# Fuzzes the API from its own OpenAPI document with schemathesis (from PyPI): builds the
# server, starts it on 127.0.0.1 on a free port with a fresh embedded store and auth on,
# runs schemathesis against /v1/openapi.json with an admin token, and stops the server.
# Fails when schemathesis finds a 5xx or an answer that contradicts the document.
# Usage: ./scripts/schemathesis.sh [extra `schemathesis run` options, e.g. -n 200]
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
venv=target/schemathesis-venv
if [[ ! -x "$venv/bin/schemathesis" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --release --locked --bin orchestrator

work="$(mktemp -d /tmp/orchestrator-schemathesis.XXXXXX)"
server_pid=""
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
token="schemathesis-admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
cat >"$work/config.yaml" <<EOF
server:
  host: 127.0.0.1
  port: $port
database:
  path: $work/orchestrator.db
auth:
  tokens:
    - name: schemathesis
      token: $token
      role: admin
log:
  level: warn
EOF

./target/release/orchestrator -config "$work/config.yaml" >"$work/server.log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 300); do
    curl -fsS "$base/ready" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "server exited" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "$base/ready" >/dev/null || { cat "$work/server.log" >&2; echo "server not ready" >&2; exit 1; }

# Checks: no 5xx, and status codes, content types, headers and bodies as documented.
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance
run() {
    "$venv/bin/schemathesis" run "$base/v1/openapi.json" \
        --header "Authorization: Bearer $token" --checks "$checks" \
        --max-examples 50 --seed 1 "$@"
}
status=0
# Every operation, from the document's boundaries (coverage phase).
run --phases examples,coverage "$@" || status=$?
# Random and stateful sequences. The three operations whose body is a workflow definition
# are left out here: schemathesis cannot generate data from the definition's JSON Schema
# (it says "Schema Error"); the coverage phase above and tests/api/workflows.rs cover them.
run --phases fuzzing,stateful \
    --exclude-operation-id-regex '^(create|replace|validate)_workflow$' "$@" || status=$?
if grep -q "panicked" "$work/server.log"; then
    grep -B2 -A10 "panicked" "$work/server.log" >&2
    status=1
fi
exit "$status"
