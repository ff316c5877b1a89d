#!/usr/bin/env bash
# A small real run of the datapath: three namespaces (client, router,
# server) joined by veth, fast_path attached to both router ports, a few
# pings through it, the counters, and a clean tear-down.
set -euo pipefail

BIN=${PF_SIDECAR_BIN:-target/release/pf-sidecar}
RUN="pfdemo-$$"
PIN_DIR="/sys/fs/bpf/$RUN"
CLIENT="$RUN-client" ROUTER="$RUN-router" SERVER="$RUN-server"

say() { printf '\n== %s\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

cleanup() {
  "$BIN" --netns "$ROUTER" --pin-dir "$PIN_DIR" detach --all >/dev/null 2>&1 || true
  rm -rf "$PIN_DIR" 2>/dev/null || true
  for ns in "$CLIENT" "$ROUTER" "$SERVER"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT

[ -x "$BIN" ] || { echo "demo: $BIN not built (run make demo)" >&2; exit 1; }

say "Building a three-namespace lab ($RUN)"
for ns in "$CLIENT" "$ROUTER" "$SERVER"; do ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
ip link add c0 netns "$CLIENT" type veth peer name r0 netns "$ROUTER"
ip link add s0 netns "$SERVER" type veth peer name r1 netns "$ROUTER"
in_ns "$CLIENT" ip addr add 192.0.2.2/24 dev c0
in_ns "$CLIENT" ip addr add 2001:db8:1::2/64 dev c0 nodad
in_ns "$ROUTER" ip addr add 192.0.2.1/24 dev r0
in_ns "$ROUTER" ip addr add 2001:db8:1::1/64 dev r0 nodad
in_ns "$ROUTER" ip addr add 198.51.100.1/24 dev r1
in_ns "$ROUTER" ip addr add 2001:db8:2::1/64 dev r1 nodad
in_ns "$SERVER" ip addr add 198.51.100.2/24 dev s0
in_ns "$SERVER" ip addr add 2001:db8:2::2/64 dev s0 nodad
for pair in "$CLIENT c0" "$ROUTER r0" "$ROUTER r1" "$SERVER s0"; do
  set -- $pair; in_ns "$1" ip link set "$2" up
done
in_ns "$CLIENT" ip route add default via 192.0.2.1
in_ns "$CLIENT" ip -6 route add default via 2001:db8:1::1
in_ns "$SERVER" ip route add default via 198.51.100.1
in_ns "$SERVER" ip -6 route add default via 2001:db8:2::1
in_ns "$ROUTER" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
# A veth end receives redirected frames only with XDP or GRO enabled on it.
in_ns "$CLIENT" ethtool -K c0 gro on >/dev/null
in_ns "$SERVER" ethtool -K s0 gro on >/dev/null

say "Attaching fast_path to the router's ports (maps pinned in $PIN_DIR)"
"$BIN" --netns "$ROUTER" --pin-dir "$PIN_DIR" attach r0 r1

say "Sending traffic client -> server (the first packet of each family resolves the neighbour in the kernel)"
in_ns "$CLIENT" ping -c 5 -i 0.2 -W 2 198.51.100.2
in_ns "$CLIENT" ping -6 -c 5 -i 0.2 -W 2 2001:db8:2::2

say "pf-sidecar status: redirect_fib counts packets fast_path forwarded with bpf_fib_lookup"
"$BIN" --netns "$ROUTER" --pin-dir "$PIN_DIR" status
redirected=$("$BIN" --netns "$ROUTER" --pin-dir "$PIN_DIR" status --json | jq '[.counters[] | select(.name == "redirect_fib" or .name == "redirect_cache") | .value] | add')
say "fast_path forwarded $redirected packets; tearing down"
[ "$redirected" -gt 0 ] || { echo "demo: fast_path forwarded nothing" >&2; exit 1; }
