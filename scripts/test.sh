#!/usr/bin/env bash
# The test command: format and lint checks, the whole test suite, and the static build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --release 2>&1
