#!/usr/bin/env bash
# The test command: format and lint checks, the whole test suite, and the static build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --release 2>&1
# The fuzz targets (a separate crate, fuzz/) and their seed generator must follow the protocol:
# type-check them (libfuzzer-sys checks on stable; building and running them needs nightly and
# cargo-fuzz, see scripts/fuzz.sh). One target dir, so the main crate is checked once.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo fmt --manifest-path fuzz/seedgen/Cargo.toml -- --check
cargo check --quiet --manifest-path fuzz/Cargo.toml --bins
cargo check --quiet --manifest-path fuzz/seedgen/Cargo.toml --target-dir fuzz/target
