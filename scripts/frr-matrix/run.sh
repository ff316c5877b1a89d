#!/usr/bin/env bash
# Runs a program of a chroot made by prepare.sh: `run.sh SUITE PROGRAM ARGS`,
# typically under `ip netns exec`. The program sees the host's /tmp,
# /run/frr, /proc, /sys (of the caller's network namespace) and /dev, so
# the paths a test passes (configs in /tmp, vty sockets in /run/frr) mean
# the same inside and out. The mounts live in a private mount namespace
# and go away with the last process in it.
set -euo pipefail
suite=${1:?usage: run.sh SUITE PROGRAM [ARGS]}
shift
root=${PF_CACHE_DIR:-/var/cache/pf-sidecar}/frr/$suite
if [ ! -f "$root/.ready" ]; then
  printf 'run.sh: error: no FRR chroot for %s in %s (scripts/frr-matrix/prepare.sh %s)\n' "$suite" "$root" "$suite" >&2
  exit 1
fi
if [ "${PF_FRR_INSIDE:-}" != "$root" ]; then
  PF_FRR_INSIDE=$root exec unshare --mount --propagation private -- "$0" "$suite" "$@"
fi
mkdir -p /run/frr
mount --bind /tmp "$root/tmp"
mount --bind /run/frr "$root/run/frr"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
unset PF_FRR_INSIDE
exec chroot "$root" "$@"
