#!/usr/bin/env bash
# Installs everything pf-sidecar needs to build, test and run its demo on a
# fresh Debian 12 machine. Idempotent: each step says what it does and skips
# what is already there. Run as root.
set -euo pipefail

BPF_LINKER_VERSION=0.13.0
LLVM_MAJOR=22
NIGHTLY=nightly
APT_PACKAGES=(
  "llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" libzstd-dev zlib1g-dev libelf-dev
  frr frr-pythontools bird2 bpftool iproute2 xdp-tools tcpdump iputils-ping
  netcat-openbsd jq procps ethtool iperf3
  qemu-system-x86 qemu-system-arm cpio xz-utils zstd
  mmdebstrap lintian
)
# FRR releases besides the host's, each in a chroot for the FRR matrix:
# trixie has 10.3, sid the newest.
FRR_SUITES=(trixie sid)
# Static binaries for amd64 and arm64 routers (linked by rust-lld).
MUSL_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)

step() { printf '==> %s\n' "$*"; }
skip() { printf '    already done: %s\n' "$*"; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and mounts bpffs)"
export PATH="$HOME/.cargo/bin:$PATH"

step "Debian packages: ${APT_PACKAGES[*]}"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  skip "all installed"
else
  echo "    installing: ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/pf-setup-apt.log 2>&1; then
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
      >/tmp/pf-setup-apt.log 2>&1 || { tail -20 /tmp/pf-setup-apt.log >&2; die "apt-get install failed (log: /tmp/pf-setup-apt.log)"; }
  fi
fi
# The Debian packages must not start routing daemons in the root namespace;
# tests and the lab start their own inside namespaces.
for svc in frr bird; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    step "stopping the $svc service in the root namespace"
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done

step "Rust toolchains (stable for the sidecar, $NIGHTLY + rust-src for the XDP object)"
command -v rustup >/dev/null || die "rustup is not installed; install Rust with rustup first"
if rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1; then
  skip "$NIGHTLY toolchain"
else
  rustup toolchain install "$NIGHTLY" --profile minimal || die "could not install the $NIGHTLY toolchain"
fi
sysroot=$(rustup run "$NIGHTLY" rustc --print sysroot)
if [ -f "$sysroot/lib/rustlib/src/rust/library/core/Cargo.toml" ]; then
  skip "rust-src for $NIGHTLY"
else
  rustup component add rust-src --toolchain "$NIGHTLY" || die "could not add rust-src"
fi
for component in rustfmt clippy; do
  if rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    skip "$component"
  else
    rustup component add "$component" || die "could not add $component"
  fi
done

step "Rust targets for static binaries: ${MUSL_TARGETS[*]}"
for target in "${MUSL_TARGETS[@]}"; do
  if rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    skip "$target"
  else
    rustup target add "$target" || die "could not add the $target target"
  fi
done

step "bpf-linker $BPF_LINKER_VERSION (built against LLVM $LLVM_MAJOR, the nightly's LLVM)"
if command -v bpf-linker >/dev/null && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  skip "bpf-linker $BPF_LINKER_VERSION"
else
  [ -x "/usr/lib/llvm-${LLVM_MAJOR}/bin/llvm-config" ] || die "llvm-${LLVM_MAJOR}-dev did not install llvm-config"
  LLVM_PREFIX="/usr/lib/llvm-${LLVM_MAJOR}" cargo install --locked "bpf-linker@${BPF_LINKER_VERSION}" \
    --no-default-features --features "llvm-${LLVM_MAJOR}" || die "cargo install bpf-linker failed"
fi

CARGO_DEB_VERSION=3.8.0
step "cargo-deb $CARGO_DEB_VERSION (make deb)"
if command -v cargo-deb >/dev/null && cargo-deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  skip "cargo-deb $CARGO_DEB_VERSION"
else
  cargo install --locked "cargo-deb@${CARGO_DEB_VERSION}" || die "cargo install cargo-deb failed"
fi

step "bpffs on /sys/fs/bpf"
if mount | grep -q ' /sys/fs/bpf type bpf'; then
  skip "mounted"
else
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf || die "could not mount bpffs on /sys/fs/bpf"
fi

# promtool checks the alerting rules in observability/. It comes from
# Debian's prometheus package, unpacked into the cache rather than
# installed: installing would start a Prometheus server on this machine.
PROMTOOL_DIR=/var/cache/pf-sidecar/prometheus
step "promtool (from Debian's prometheus package, unpacked into $PROMTOOL_DIR)"
if [ -x "$PROMTOOL_DIR/usr/bin/promtool" ]; then
  skip "promtool"
else
  workdir=$(mktemp -d)
  ( cd "$workdir" && apt-get download prometheus >/tmp/pf-setup-promtool.log 2>&1 ) \
    || { apt-get update -qq && ( cd "$workdir" && apt-get download prometheus >>/tmp/pf-setup-promtool.log 2>&1 ); } \
    || die "could not download the prometheus package (log: /tmp/pf-setup-promtool.log)"
  mkdir -p "$PROMTOOL_DIR"
  dpkg-deb -x "$workdir"/prometheus_*.deb "$PROMTOOL_DIR/unpacked"
  mkdir -p "$PROMTOOL_DIR/usr/bin"
  mv "$PROMTOOL_DIR/unpacked/usr/bin/promtool" "$PROMTOOL_DIR/usr/bin/promtool"
  rm -rf "$PROMTOOL_DIR/unpacked" "$workdir"
  "$PROMTOOL_DIR/usr/bin/promtool" --version >/dev/null 2>&1 || die "the unpacked promtool does not run"
fi

step "FRR matrix chroots: ${FRR_SUITES[*]} (scripts/frr-matrix/prepare.sh)"
for suite in "${FRR_SUITES[@]}"; do
  bash "$(dirname "$0")/frr-matrix/prepare.sh" "$suite" || die "could not prepare the FRR chroot for $suite"
done

step "setup complete"
