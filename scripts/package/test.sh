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
unit=$root/lib/systemd/system/pf-sidecar.service
grep -q '^ExecStart=/usr/sbin/pf-sidecar run' "$unit" \
  || die "the unit does not start the packaged binary"
grep -q '^ExecStartPre=/usr/sbin/pf-sidecar feasibility --config' "$unit" \
  || die "the unit does not check feasibility with the packaged binary and its configuration"
# A configuration error (exit 2) is not restarted into a loop.
grep -q '^RestartPreventExitStatus=2$' "$unit" || die "the unit restarts on a configuration error"
grep -q '^After=.*frr\.service' "$unit" || die "the unit is not ordered after frr.service"
# Ambient capabilities do nothing for root: only with a User=.
if grep -q '^AmbientCapabilities=' "$unit" && ! grep -q '^User=' "$unit"; then
  die "the unit has AmbientCapabilities without a User="
fi
# feasibility as the unit's ExecStartPre runs it, in namespaces of its own:
# a fresh network namespace has forwarding off, so it exits 1 with its
# table; what matters is that the packaged binary loads and judges.
report=$(unshare -m -n sh -c "mount --rbind /proc '$root/proc' && mount --rbind /sys '$root/sys' \
  && chroot '$root' pf-sidecar feasibility --config /etc/pf-sidecar/pf-sidecar.toml --json" || true)
printf '%s' "$report" | grep -q '"name": "datapath: program fast_path"' \
  || die "feasibility in the chroot did not load the datapath: $report"
printf '%s' "$report" | tr -d '\n' | grep -q '"name": "datapath: program fast_path",[^}]*"pass": true' \
  || die "feasibility in the chroot: fast_path was refused: $report"
# The arm64 package cannot run here; its binary must be the one the kernel
# matrix's arm64 guests ran (Debian's 5.10, 6.1 and 6.12 arm64 kernels).
deb_arm64=$(ls target/package/pf-sidecar_*_arm64.deb 2>/dev/null | head -1)
[ -n "$deb_arm64" ] || die "no arm64 package: run scripts/package/build.sh arm64"
arm64_root=$(mktemp -d /tmp/pf-package-arm64-XXXXXX)
trap 'rm -rf "$root" "$arm64_root"' EXIT
dpkg-deb -x "$deb_arm64" "$arm64_root"
# ELF, 64-bit, e_machine 183 (EM_AARCH64).
[ "$(od -An -tx1 -j0 -N5 "$arm64_root/usr/sbin/pf-sidecar" | tr -d ' ')" = 7f454c4602 ] \
  && [ "$(od -An -tu2 -j18 -N2 "$arm64_root/usr/sbin/pf-sidecar" | tr -d ' ')" = 183 ] \
  || die "the arm64 package's /usr/sbin/pf-sidecar is not an aarch64 ELF"
matrix_arm64=target/kernel-matrix/bin/pf-sidecar-arm64
[ -f "$matrix_arm64" ] || die "$matrix_arm64 is missing: run scripts/kernel-matrix/build.sh"
cmp -s "$arm64_root/usr/sbin/pf-sidecar" "$matrix_arm64" \
  || die "the arm64 package's binary is not the one the kernel matrix runs on arm64 (rebuild both)"
if command -v lintian >/dev/null; then
  for package in "$deb" "$deb_arm64"; do
    lintian --fail-on error,warning "$package" || die "lintian: $package"
  done
else
  die "lintian is not installed (scripts/setup.sh installs it)"
fi
echo "package test: $(basename "$deb") installs into a clean Debian 12 chroot; --help, manual, conffile, completions, unit and feasibility work; $(basename "$deb_arm64") carries the binary the arm64 guests ran; lintian is clean on both"
