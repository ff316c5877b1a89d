#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS, default 60)
# from the seed corpus in fuzz/corpus (real FRR 8.4 frames and the example
# configuration), prints each target's executions and whether it crashed,
# and exits non-zero if any did. Crashing inputs land in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
TARGETS=(fpm_framer rtnetlink_decode rib_apply config_loader)

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
failed=0
printf '%-18s %12s  %s\n' target executions result
for target in "${TARGETS[@]}"; do
  log=$(mktemp)
  # The corpus grows as the fuzzer finds new paths; work on a copy so the
  # checked-in seeds stay small.
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$target/." "$work/"
  if cargo +nightly fuzz run "$target" "$work" -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (see $log and fuzz/artifacts/$target)"
    failed=1
  fi
  execs=$(grep -Eo '^Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' | tail -1 || true)
  printf '%-18s %12s  %s\n' "$target" "${execs:-?}" "$result"
  rm -rf "$work"
done
exit $failed
