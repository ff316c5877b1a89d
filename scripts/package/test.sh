#!/usr/bin/env bash
# Installs the amd64 package (scripts/package/build.sh) into a clean Debian
# 12 chroot and uses it there: --help, the manual pages, the conffile, the
# completions, and `pf-sidecar feasibility` (in mount and network
# namespaces of its own, so nothing on this host is touched). Then lintian.
# The chroot's base (mmdebstrap, minbase) is cached; a second run downloads
# nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
die() { printf 'package test: %s\n' "$*" >&2; exit 1; }
deb=$(ls target/package/pf-sidecar_*_amd64.deb 2>/dev/null | head -1)
[ -n "$deb" ] || die "no amd64 package: run scripts/package/build.sh"
cache=${PF_CACHE_DIR:-/var/cache/pf-sidecar}/package
base=$cache/bookworm-minbase.tar
if [ ! -f "$base" ]; then
  mkdir -p "$cache"
  mmdebstrap --quiet --variant=minbase --format=tar --include=man-db bookworm "$base.part" \
    || die "mmdebstrap failed"
  mv "$base.part" "$base"
fi
root=$(mktemp -d /tmp/pf-package-XXXXXX)
trap 'rm -rf "$root"' EXIT
tar -xf "$base" -C "$root"
cp "$deb" "$root/tmp/"
in_root() { chroot "$root" "$@"; }
in_root dpkg -i "/tmp/$(basename "$deb")" >/dev/null || die "dpkg -i failed"
in_root pf-sidecar --help >/dev/null || die "pf-sidecar --help failed in the chroot"
in_root sh -c 'pf-sidecar --version' | grep -q '^pf-sidecar ' || die "no --version"
for page in pf-sidecar pf-sidecar-run pf-sidecar-status pf-sidecar-diff; do
  [ -f "$root/usr/share/man/man1/$page.1.gz" ] || die "no manual page $page.1"
done
in_root man -P cat pf-sidecar-run >/dev/null 2>&1 || die "man pf-sidecar-run does not render"
in_root dpkg-query -W -f='${Conffiles}\n' pf-sidecar | grep -q '/etc/pf-sidecar/pf-sidecar.toml' \
  || die "the configuration is not a conffile"
for f in usr/share/bash-completion/completions/pf-sidecar usr/share/zsh/vendor-completions/_pf-sidecar \
    usr/share/fish/vendor_completions.d/pf-sidecar.fish lib/systemd/system/pf-sidecar.service \
    usr/share/doc/pf-sidecar/examples/frr.conf.snippet; do
  [ -f "$root/$f" ] || die "missing /$f"
done
grep -q '^ExecStart=/usr/sbin/pf-sidecar run' "$root/lib/systemd/system/pf-sidecar.service" \
  || die "the unit does not start the packaged binary"
# feasibility as the unit's ExecStartPre runs it, in namespaces of its own:
# a fresh network namespace has forwarding off, so it exits 1 with its
# table; what matters is that the packaged binary loads and judges.
report=$(unshare -m -n sh -c "mount --rbind /proc '$root/proc' && mount --rbind /sys '$root/sys' \
  && chroot '$root' pf-sidecar feasibility --config /etc/pf-sidecar/pf-sidecar.toml --json" || true)
printf '%s' "$report" | grep -q '"name": "datapath: program fast_path"' \
  || die "feasibility in the chroot did not load the datapath: $report"
printf '%s' "$report" | tr -d '\n' | grep -q '"name": "datapath: program fast_path",[^}]*"pass": true' \
  || die "feasibility in the chroot: fast_path was refused: $report"
if command -v lintian >/dev/null; then
  lintian --fail-on error,warning "$deb" \
    || die "lintian"
else
  die "lintian is not installed (scripts/setup.sh installs it)"
fi
echo "package test: $(basename "$deb") installs into a clean Debian 12 chroot; --help, manual, conffile, completions, unit and feasibility work; lintian is clean"
