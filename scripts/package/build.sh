#!/usr/bin/env bash
# Builds the Debian package of pf-sidecar for ARCH (amd64, the default, or
# arm64) from the static binary `make static` built, with cargo-deb
# (sidecar/Cargo.toml, [package.metadata.deb]). The manual pages and
# completions come from the binary itself (`pf-sidecar generate`); the
# systemd unit is frr-integration's with the packaged binary's path.
# Output: target/package/pf-sidecar_VERSION-1_ARCH.deb
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
arch=${1:-amd64}
case $arch in
  amd64) triple=x86_64-unknown-linux-musl ;;
  arm64) triple=aarch64-unknown-linux-musl ;;
  *) echo "build.sh: ARCH is amd64 or arm64, not $arch" >&2; exit 2 ;;
esac
binary=target/$triple/static/pf-sidecar
[ -x "$binary" ] || { echo "build.sh: $binary is missing: run make static" >&2; exit 1; }
out=target/package
rm -rf "$out/man" "$out/completions"
mkdir -p "$out"
# The generator runs on this (amd64) host; its output is the same for both.
target/x86_64-unknown-linux-musl/static/pf-sidecar generate "$out"
gzip -9n "$out"/man/*.1
sed 's#/usr/local/sbin/pf-sidecar#/usr/sbin/pf-sidecar#g' frr-integration/pf-sidecar.service \
  > "$out/pf-sidecar.service"
cargo deb -p pf-sidecar --target "$triple" --profile static --no-build --no-strip \
  --deb-revision 1 --output "$out/"
ls "$out"/pf-sidecar_*_"$arch".deb
