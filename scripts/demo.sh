#!/usr/bin/env bash
# make demo: the lab (scripts/lab) with real FRR, BIRD and BGP, real traffic
# through pf-sidecar's fast path, a clean diff, and an upstream withdrawal
# with the convergence time measured. Everything is torn down at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

export PF_SIDECAR_BIN=${PF_SIDECAR_BIN:-target/release/pf-sidecar}
BIN=$PF_SIDECAR_BIN
NAME=demo$(($$ % 100000))
eval "$(scripts/lab env "$NAME")"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
sidecar() { "$BIN" --netns "$LAB_ROUTER" --pin-dir "$LAB_PIN_DIR" "$@"; }
counter() { sidecar status --json --rate-interval-ms 0 | jq "[.counters[] | select(.name == \"$1\") | .value] | add // 0"; }
rx_packets() { in_ns "$1" cat "/sys/class/net/$2/statistics/rx_packets"; }
now_ms() { date +%s%3N; }

cleanup() { scripts/lab down "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT

say "Starting the lab: client - router (FRR + pf-sidecar) - up1 (BIRD) / up2 (FRR) - server"
scripts/lab up "$NAME"
cat <<EOF

  client $LAB_CLIENT_V4 / $LAB_CLIENT_V6  ->  router  ->  up1 or up2  ->  server $LAB_SERVER_V4 / $LAB_SERVER_V6
  The router learns 203.0.113.0/24 and 2001:db8:ff::/48 from both upstreams over
  BGP (ECMP). zebra streams its FIB to pf-sidecar over FPM; pf-sidecar writes it
  into BPF maps, and fast_path on the router's ports forwards from those maps.
EOF

say "The router's FIB according to FRR"
in_ns "$LAB_ROUTER" vtysh --vty_socket "/var/run/frr/$LAB_ROUTER_FRR" \
  -c "show ip route bgp" -c "show ipv6 route bgp" | grep -E '^[A-Z]|^ +\*'

say "What the maps say for the server (pf-sidecar lookup)"
sidecar lookup "$LAB_SERVER_V4"

before=$(counter redirect_cache)
say "Traffic: ICMP over IPv4 and IPv6"
in_ns "$LAB_CLIENT" ping -c 5 -i 0.2 -W 2 "$LAB_SERVER_V4" | tail -2
in_ns "$LAB_CLIENT" ping -6 -c 5 -i 0.2 -W 2 "$LAB_SERVER_V6" | tail -2

say "Traffic: a TCP transfer (4 flows, 3 s, IPv4) and UDP (IPv6, 3 s)"
in_ns "$LAB_SERVER" iperf3 -s -D -p 5201 --pidfile "$LAB_DIR/iperf3.pid"
sleep 0.5
in_ns "$LAB_CLIENT" iperf3 -c "$LAB_SERVER_V4" -p 5201 -t 3 -P 4 -f m | grep -E 'SUM.*(sender|receiver)'
sleep 1
in_ns "$LAB_CLIENT" iperf3 -6 -c "$LAB_SERVER_V6" -p 5201 -t 3 -u -b 50M -f m | grep -A1 -E 'Jitter' | tail -1

after=$(counter redirect_cache)
say "pf-sidecar status: redirect_cache counts packets fast_path forwarded from the maps"
sidecar status
echo
echo "fast_path forwarded $((after - before)) packets of that traffic from the route cache."
[ $((after - before)) -gt 0 ] || { echo "demo: fast_path forwarded nothing" >&2; exit 1; }

say "pf-sidecar diff: the maps against FRR's RIB and against the kernel FIB"
sidecar diff --config "$LAB_SIDECAR_CONFIG" --against frr --frr-pathspace "$LAB_ROUTER_FRR" | tail -1
sidecar diff --config "$LAB_SIDECAR_CONFIG" --against kernel | tail -1

say "Withdrawing 203.0.113.0/24 at up2 while UDP flows run; traffic must move to up1"
sleep 1
in_ns "$LAB_CLIENT" iperf3 -c "$LAB_SERVER_V4" -p 5201 -t 8 -u -b 20M -P 8 >/dev/null &
flow=$!
sleep 2
u1=$(rx_packets "$LAB_UP1" u1) u2=$(rx_packets "$LAB_UP2" u2)
sleep 1
u1_rate=$(( $(rx_packets "$LAB_UP1" u1) - u1 )) u2_rate=$(( $(rx_packets "$LAB_UP2" u2) - u2 ))
echo "before: up1 receives $u1_rate packets/s, up2 receives $u2_rate packets/s (ECMP)"
t0=$(now_ms)
in_ns "$LAB_UP2" vtysh --vty_socket "/var/run/frr/$LAB_UP2_FRR" -c "configure terminal" \
  -c "router bgp 64502" -c "address-family ipv4 unicast" -c "no network 203.0.113.0/24" >/dev/null
until [ "$(in_ns "$LAB_ROUTER" vtysh --vty_socket "/var/run/frr/$LAB_ROUTER_FRR" -c 'show ip route 203.0.113.0/24 json' \
        | jq '[.[][] | select(.installed == true) | .nexthops[] | select(.fib == true)] | length')" = 1 ]; do
  [ $(( $(now_ms) - t0 )) -lt 15000 ] || { echo "demo: FRR did not converge" >&2; exit 1; }
  sleep 0.01
done
t_frr=$(now_ms)
until [ "$(sidecar lookup "$LAB_SERVER_V4" --json | jq '.maps.legs | length')" = 1 ]; do
  [ $(( $(now_ms) - t0 )) -lt 15000 ] || { echo "demo: the maps did not follow" >&2; exit 1; }
  sleep 0.01
done
t_maps=$(now_ms)
sleep 1
u1=$(rx_packets "$LAB_UP1" u1) u2=$(rx_packets "$LAB_UP2" u2)
sleep 1
u1_rate=$(( $(rx_packets "$LAB_UP1" u1) - u1 )) u2_rate=$(( $(rx_packets "$LAB_UP2" u2) - u2 ))
echo "after:  up1 receives $u1_rate packets/s, up2 receives $u2_rate packets/s"
echo "convergence: FRR's FIB changed $((t_frr - t0)) ms after the withdrawal; the maps $((t_maps - t0)) ms after it ($((t_maps - t_frr)) ms after FRR)"
wait $flow || true
[ "$u2_rate" -eq 0 ] || { echo "demo: traffic still reaches up2" >&2; exit 1; }

say "Announcing it again: back to two paths"
in_ns "$LAB_UP2" vtysh --vty_socket "/var/run/frr/$LAB_UP2_FRR" -c "configure terminal" \
  -c "router bgp 64502" -c "address-family ipv4 unicast" -c "network 203.0.113.0/24" >/dev/null
t0=$(now_ms)
until [ "$(sidecar lookup "$LAB_SERVER_V4" --json | jq '.maps.legs | length')" = 2 ]; do
  [ $(( $(now_ms) - t0 )) -lt 15000 ] || { echo "demo: the second path did not come back" >&2; exit 1; }
  sleep 0.05
done
sidecar lookup "$LAB_SERVER_V4"
sidecar diff --config "$LAB_SIDECAR_CONFIG" --against frr --frr-pathspace "$LAB_ROUTER_FRR" | tail -1

say "Tearing the lab down"
trap - EXIT
scripts/lab down "$NAME"
left=$(ip netns list | grep -c "pfl-$NAME-" || true)
echo "namespaces left: $left; pins left: $(ls /sys/fs/bpf | grep -c "pfl-$NAME" || true)"
say "Demo complete"
