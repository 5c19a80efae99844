#!/usr/bin/env bash
# Runs every test of the project: unit tests and the integration tests in tests/, against
# both stores, the console's browser tests, then scripts/container-test.sh. A throwaway
# PostgreSQL cluster is started for the run (installed from Debian's packages when missing)
# and stopped on exit; when it cannot start, this fails. Chromium and chromedriver are
# installed the same way.
# Usage: ./scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/pg-cluster.sh
source scripts/pg-cluster.sh
# shellcheck source=scripts/browser.sh
source scripts/browser.sh
browser_install
trap pg_cluster_stop EXIT
pg_cluster_start

cargo test --locked --all-targets "$@"

# The container image, the compose stack and the Kubernetes config, built and run with
# podman (installed when missing; skipped with one line when no engine can be installed or
# run). After a narrowed run (extra arguments) only when CONTAINER_TEST is set.
if [[ $# -eq 0 || -n "${CONTAINER_TEST:-}" ]]; then
    ./scripts/container-test.sh
fi
