#!/usr/bin/env bash
# Store comparison benchmark (BENCHMARKS.md, "Store comparison"): starts a throwaway
# PostgreSQL cluster with durable settings (fsync and synchronous_commit on, the
# defaults), runs `cargo bench --bench store`, and stops the cluster.
# Usage: ./scripts/bench-store.sh [--runs N] [--in-flight N] [--repeat N]
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/pg-cluster.sh
source scripts/pg-cluster.sh
trap pg_cluster_stop EXIT
PG_CLUSTER_DURABLE=1 pg_cluster_start
BENCH_POSTGRES_DSN="$TEST_POSTGRES_DSN" cargo bench --locked --bench store -- "$@"
