#!/usr/bin/env bash
# The engine's benchmarks on PostgreSQL (BENCHMARKS.md, "W10 on PostgreSQL"): starts a
# throwaway cluster with its durable defaults (fsync and synchronous_commit on) on
# 127.0.0.1, runs `bench --dsn` against it with the given arguments, and stops it.
# Usage: ./scripts/bench-postgres.sh --scenarios throughput,clients --repeat 3
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/pg-cluster.sh
source scripts/pg-cluster.sh
trap pg_cluster_stop EXIT
PG_CLUSTER_DURABLE=1 pg_cluster_start
cargo run --release --locked --bin bench -- --dsn "$TEST_POSTGRES_DSN" "$@"
