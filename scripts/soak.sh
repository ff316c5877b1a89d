#!/usr/bin/env bash
# The differential soak for longer than the test suite runs it: random
# churn through real FRR on the lab, with diff and a differential packet
# check at every quiet point. Usage: scripts/soak.sh [SECONDS] (default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PF_SOAK_SECONDS=${1:-600} PF_SOAK_SEED=${PF_SOAK_SEED:-$RANDOM} PF_REQUIRE_ROOT=1 \
  cargo test --release --locked -p pf-sidecar --test e2e_soak -- --nocapture
