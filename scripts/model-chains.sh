#!/usr/bin/env bash
# What the flow model and the simulator predict for pipelined chains (issue 16), one line a
# cell, ratio to the ideal S/R:
#   cell=NAME model=R [model_catch_up=R] sim=R theory=R chain_tar=LAB target=T
# then how K, the forwarding unit, the hop latency and a stall's detection move them (sweep=),
# and what the N=16 gap to 1.0 is made of (gap=). model: the closed form (src/proto/fluid/chain.rs);
# model_catch_up: after a death, the bound where a stopped po makes up time at its downlink's full
# rate; sim: unit by unit (src/proto/sim/chain); theory: T = S/R + N*c/R. Deterministic; the
# debug test build, seconds once built. Then issue 17's sites (sites cell=...): bytes into each
# remote site ÷ S (site_in=) and time ÷ ideal, with labels and without. Usage: scripts/model-chains.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --quiet --lib --no-run 2>/dev/null
cargo test --quiet --lib chain_cells -- --ignored --nocapture --test-threads=1 2>/dev/null |
    grep -E '^(cell=|sweep |gap |sites )'
