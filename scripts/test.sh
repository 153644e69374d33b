#!/usr/bin/env bash
# The whole test suite, on a fresh machine: starts the local services the tests use,
# installs the third-party clients they drive, then runs every crate's tests.
#   scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
scripts/test-deps.sh
cargo test --workspace "$@"
