#!/usr/bin/env bash
# Adds up cargo test's per-binary "test result:" lines into one closing line.
set -euo pipefail
log=${1:?usage: test-summary.sh LOG}
awk '
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i+1) ~ /^passed;?$/) passed += $i
      if ($(i+1) ~ /^failed;?$/) failed += $i
      if ($(i+1) ~ /^ignored;?$/) ignored += $i
    }
  }
  END { printf "%d passed, %d failed, %d skipped\n", passed, failed, ignored; exit (failed > 0) }
' "$log"
