#!/usr/bin/env bash
# Builds what the kernel-matrix guests run, for amd64 and arm64: the static
# pf-sidecar (musl, the XDP object embedded), the datapath test binary (the
# same BPF_PROG_TEST_RUN cases `make test` runs on this host), a packet
# capture that checks frames on the far side of a link, and the
# xdp_pass object for veth ends on kernels before 5.13. Profile `static`
# (Cargo.toml): release, stripped.
# Output: target/kernel-matrix/bin/{pf-sidecar,datapath-cases,frame-capture}-{amd64,arm64}
#         target/kernel-matrix/bin/xdp_pass.o
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo=${CARGO:-cargo}
out=target/kernel-matrix/bin
mkdir -p "$out"
for pair in amd64:x86_64-unknown-linux-musl arm64:aarch64-unknown-linux-musl; do
  arch=${pair%%:*}
  triple=${pair#*:}
  echo "==> static pf-sidecar and datapath cases for $arch ($triple)"
  "$cargo" build --profile static --locked -p pf-sidecar --bin pf-sidecar --target "$triple"
  cp "target/$triple/static/pf-sidecar" "$out/pf-sidecar-$arch"
  exe=$("$cargo" test --profile static --no-run --locked --target "$triple" -p integration-tests \
      --test datapath --message-format=json \
    | sed -n 's/.*"executable":"\([^"]*\/deps\/datapath-[^"]*\)".*/\1/p' | tail -1)
  [ -n "$exe" ] || { echo "build.sh: no datapath test binary for $triple" >&2; exit 1; }
  cp "$exe" "$out/datapath-cases-$arch"
  "$cargo" build --profile static --locked -p integration-tests --bin frame-capture --target "$triple"
  cp "target/$triple/static/frame-capture" "$out/frame-capture-$arch"
done
llvm-mc-22 -triple bpfel -filetype=obj -o "$out/xdp_pass.o" scripts/kernel-matrix/xdp_pass.s
