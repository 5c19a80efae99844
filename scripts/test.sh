#!/usr/bin/env bash
# Runs every test of the project: unit tests and the integration tests in tests/.
# Usage: ./scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --all-targets "$@"
