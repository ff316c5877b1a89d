#!/usr/bin/env bash
# Prepares a chroot with the FRR of a Debian suite, for the FRR matrix of
# `make test`: `prepare.sh trixie` (FRR 10.3) and `prepare.sh sid` (the
# newest FRR in Debian). The chroot lives in
# /var/cache/pf-sidecar/frr/SUITE and is built once; FRR_MATRIX_REFRESH=1
# builds it again (sid moves). Daemons run from it with `run.sh`.
#
# The chroot's frr user and groups get the host's ids, so the files a test
# chowns to frr:frr on the host belong to the chroot's frr too, and
# pf-sidecar's default fpm.allowed_users (frr, root) accepts its zebra.
set -euo pipefail

suite=${1:?usage: prepare.sh SUITE (trixie, sid)}
cache=${PF_CACHE_DIR:-/var/cache/pf-sidecar}
root=$cache/frr/$suite

die() { printf 'prepare.sh: error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root"

if [ -f "$root/.ready" ] && [ -z "${FRR_MATRIX_REFRESH:-}" ]; then
  printf '    already done: FRR %s from %s in %s\n' "$(cat "$root/.frr-version")" "$suite" "$root"
  exit 0
fi
getent passwd frr >/dev/null || die "the host has no frr user (install Debian's frr first)"

# The Debian mirror the host already uses, read from its own sources.
uri=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$uri" ] || uri=$(awk '$1 == "deb" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d}"

opts=(--variant=apt --include=frr,iproute2 --quiet)
# sid's Release file is often past its Valid-Until on mirrors and snapshots.
[ "$suite" = sid ] && opts+=(--aptopt='Acquire::Check-Valid-Until "false"')

work="$root.new"
rm -rf "$work"
mkdir -p "$(dirname "$root")"
log=$cache/frr/$suite.log
if ! mmdebstrap "${opts[@]}" "$suite" "$work" "${uri%/}" >"$log" 2>&1; then
  tail -20 "$log" >&2
  die "mmdebstrap $suite failed (log: $log)"
fi

# Give the chroot's frr, frrvty and frr group the host's ids.
host_uid=$(id -u frr)
for name in frr frrvty; do
  inner=$(awk -F: -v n="$name" '$1 == n {print $3}' "$work/etc/group")
  outer=$(getent group "$name" | cut -d: -f3)
  [ -n "$inner" ] && [ -n "$outer" ] || continue
  [ "$inner" = "$outer" ] && continue
  # Make room if another group of the chroot already has the host's id.
  if awk -F: -v g="$outer" '$3 == g {found=1} END {exit !found}' "$work/etc/group"; then
    die "group id $outer is taken inside the $suite chroot"
  fi
  sed -i "s/^$name:\([^:]*\):$inner:/$name:\1:$outer:/" "$work/etc/group"
  sed -i "s/^\([^:]*:[^:]*:[0-9]*\):$inner:/\1:$outer:/" "$work/etc/passwd"
  find "$work" -xdev -gid "$inner" -exec chgrp -h "$outer" {} +
done
inner_uid=$(awk -F: '$1 == "frr" {print $3}' "$work/etc/passwd")
if [ "$inner_uid" != "$host_uid" ]; then
  if awk -F: -v u="$host_uid" '$3 == u {found=1} END {exit !found}' "$work/etc/passwd"; then
    die "user id $host_uid is taken inside the $suite chroot"
  fi
  sed -i "s/^frr:\([^:]*\):$inner_uid:/frr:\1:$host_uid:/" "$work/etc/passwd"
  find "$work" -xdev -uid "$inner_uid" -exec chown -h "$host_uid" {} +
fi
mkdir -p "$work/run/frr"

chroot "$work" dpkg-query -W -f '${Version}' frr >"$work/.frr-version"
touch "$work/.ready"
rm -rf "$root"
mv "$work" "$root"
printf '    FRR %s from %s in %s\n' "$(cat "$root/.frr-version")" "$suite" "$root"
