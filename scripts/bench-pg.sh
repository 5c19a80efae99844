#!/usr/bin/env bash
# Engine benchmark on PostgreSQL (BENCHMARKS.md, "W10 on PostgreSQL"): starts a throwaway
# PostgreSQL cluster with its durable defaults (fsync and synchronous_commit on), runs the
# engine benchmark against it, and stops the cluster.
# Usage: ./scripts/bench-pg.sh [bench options; default --scenarios latency,throughput]
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/pg-cluster.sh
source scripts/pg-cluster.sh
trap pg_cluster_stop EXIT
PG_CLUSTER_DURABLE=1 pg_cluster_start
args=("$@")
[[ ${#args[@]} -eq 0 ]] && args=(--scenarios latency,throughput)
cargo run --locked --release --bin bench -- --dsn "$TEST_POSTGRES_DSN" \
    --out bench-results-postgres.json "${args[@]}"
