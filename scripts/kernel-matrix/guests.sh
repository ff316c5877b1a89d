# The kernel matrix: Debian's stock kernels, as SUITE/ARCH. bullseye is 5.10,
# bookworm 6.1, trixie 6.12, sid the newest Debian carries.
# shellcheck disable=SC2034
GUESTS=(
  bullseye/amd64 bullseye/arm64
  bookworm/amd64 bookworm/arm64
  trixie/amd64 trixie/arm64
  sid/amd64
)
# Guest userland (bookworm, per arch): a shell, iproute2 for namespaces and
# veth, ethtool for GRO, and the libraries they link.
GUEST_PACKAGES="busybox-static iproute2 ethtool libc6 libbpf1 libelf1 libmnl0 libbsd0 libmd0 libcap2 zlib1g"
