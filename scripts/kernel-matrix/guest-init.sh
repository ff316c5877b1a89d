#!/bin/busybox sh
# /init of a kernel-matrix guest. Runs the real pf-sidecar (static, this
# arch) against the stock kernel it booted: feasibility, load and native
# attach through `run`, forwarding between two namespaces, a generic attach,
# and the datapath test cases. Every outcome goes to the console as
#   PFM|<step>|<exit code>|<detail>
# with command output framed by PFM-BEGIN|<step> / PFM-END|<step>; the host
# (tests/tests/kernel_matrix.rs) judges it. Nothing here decides pass/fail.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
# Real iproute2 (/bin/ip) before busybox's own applets (/sbin/ip).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mkdir -p /run/netns /var/run
ln -s /run/netns /var/run/netns 2>/dev/null
echo 1 > /proc/sys/kernel/printk 2>/dev/null

# busybox-static's shell prefers its own applets to PATH: name the real
# iproute2 binary by path.
ip() { /bin/ip "$@"; }

say() { echo "PFM|$1|$2|$3"; }
block() { # step command...: runs it, framing its output, then says its exit code
  step=$1; shift
  echo "PFM-BEGIN|$step"
  "$@" > /tmp/out.$$ 2>&1
  rc=$?
  cat /tmp/out.$$
  echo "PFM-END|$step"
  say "$step" "$rc" ""
  return $rc
}

say boot 0 "release=$(uname -r) machine=$(uname -m) jit=$(cat /proc/sys/net/core/bpf_jit_enable 2>/dev/null)"
for m in $(cat /modules.list); do
  insmod "/modules/$m" 2>/tmp/insmod.err || say insmod 1 "$m: $(cat /tmp/insmod.err)"
done
sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 >/dev/null

in_ns() { ns=$1; shift; ip netns exec "$ns" "$@"; }

# capture_start STEP NS IF [COUNT]: up to COUNT (20) IPv4 ICMP frames IF
# receives, within 5 s, as they were on the wire; capture_end STEP frames
# them as a block.
capture_start() {
  in_ns "$2" frame-capture "$3" "${4:-20}" 5000 icmp > "/tmp/cap.$1" 2>&1 &
  echo $! > "/tmp/cap.$1.pid"
  for _ in $(seq 1 30); do
    grep -q capturing "/tmp/cap.$1" && break
    sleep 0.1
  done
}
capture_end() {
  wait "$(cat "/tmp/cap.$1.pid")"
  echo "PFM-BEGIN|$1"
  cat "/tmp/cap.$1"
  echo "PFM-END|$1"
}

# Names differ from the datapath cases' (r0, c0, ...): 5.10 to 6.12 refuse to
# create those in a test namespace while this namespace holds the same names.
# client cl0 192.0.2.2 -- rt0 [guest: pf-sidecar] rt1 -- sv0 198.51.100.2 (server)
# The server also holds 203.0.113.10 and 2001:db8:ff::10, which the router
# reaches through static routes: the fast path's cache entries.
ip netns add c
ip netns add s
ip link add rt0 type veth peer name cl0 netns c
ip link add rt1 type veth peer name sv0 netns s
ip addr add 192.0.2.1/24 dev rt0
ip addr add 2001:db8:1::1/64 dev rt0 nodad
ip addr add 198.51.100.1/24 dev rt1
ip addr add 2001:db8:2::1/64 dev rt1 nodad
ip link set rt0 up
ip link set rt1 up
in_ns c ip link set lo up
in_ns c ip addr add 192.0.2.2/24 dev cl0
in_ns c ip addr add 2001:db8:1::2/64 dev cl0 nodad
in_ns c ip link set cl0 up
in_ns c ip route add default via 192.0.2.1
in_ns c ip -6 route add default via 2001:db8:1::1
in_ns s ip link set lo up
in_ns s ip addr add 198.51.100.2/24 dev sv0
in_ns s ip addr add 2001:db8:2::2/64 dev sv0 nodad
in_ns s ip addr add 203.0.113.10/32 dev lo
in_ns s ip addr add 2001:db8:ff::10/128 dev lo
in_ns s ip link set sv0 up
in_ns s ip route add default via 198.51.100.1
in_ns s ip -6 route add default via 2001:db8:2::1
ip route add 203.0.113.0/24 via 198.51.100.2 proto static
ip -6 route add 2001:db8:ff::/64 via 2001:db8:2::2 proto static
# 802.1Q: VLAN 100 on the same wire (rt1.100 -- sv0.100). The server's
# 203.0.113.200 and 2001:db8:fe::10 are reached over the VLAN, and it
# answers the client's second addresses (192.0.2.3, 2001:db8:1::3) over the
# VLAN too: requests leave rt1 tagged, replies arrive tagged.
ip link add link rt1 name rt1.100 type vlan id 100
ip addr add 203.0.113.129/26 dev rt1.100
ip addr add 2001:db8:100::1/64 dev rt1.100 nodad
ip link set rt1.100 up
in_ns c ip addr add 192.0.2.3/24 dev cl0
in_ns c ip addr add 2001:db8:1::3/64 dev cl0 nodad
in_ns s ip link add link sv0 name sv0.100 type vlan id 100
in_ns s ip addr add 203.0.113.130/26 dev sv0.100
in_ns s ip addr add 2001:db8:100::2/64 dev sv0.100 nodad
in_ns s ip link set sv0.100 up
in_ns s ip addr add 203.0.113.200/32 dev lo
in_ns s ip addr add 2001:db8:fe::10/128 dev lo
in_ns s ip route add 192.0.2.3/32 via 203.0.113.129
in_ns s ip -6 route add 2001:db8:1::3/128 via 2001:db8:100::1
ip route add 203.0.113.192/26 via 203.0.113.130 proto static
ip -6 route add 2001:db8:fe::/64 via 2001:db8:100::2 proto static
# 802.1ad: outer tag 200 (TPID 0x88a8), inner 300 (0x8100), on the same
# wire: 203.0.113.250 and 2001:db8:fd::10 behind it, for the client's
# third addresses (192.0.2.4, 2001:db8:1::4).
ip link add link rt1 name rt1.200 type vlan proto 802.1ad id 200
ip link add link rt1.200 name rt1.200.300 type vlan id 300
ip addr add 203.0.113.65/27 dev rt1.200.300
ip addr add 2001:db8:300::1/64 dev rt1.200.300 nodad
ip link set rt1.200 up
ip link set rt1.200.300 up
in_ns c ip addr add 192.0.2.4/24 dev cl0
in_ns c ip addr add 2001:db8:1::4/64 dev cl0 nodad
in_ns s ip link add link sv0 name sv0.200 type vlan proto 802.1ad id 200
in_ns s ip link add link sv0.200 name sv0.200.300 type vlan id 300
in_ns s ip addr add 203.0.113.66/27 dev sv0.200.300
in_ns s ip addr add 2001:db8:300::2/64 dev sv0.200.300 nodad
in_ns s ip link set sv0.200 up
in_ns s ip link set sv0.200.300 up
in_ns s ip addr add 203.0.113.250/32 dev lo
in_ns s ip addr add 2001:db8:fd::10/128 dev lo
in_ns s ip route add 192.0.2.4/32 via 203.0.113.65
in_ns s ip -6 route add 2001:db8:1::4/128 via 2001:db8:300::1
ip route add 203.0.113.248/29 via 203.0.113.66 proto static
ip -6 route add 2001:db8:fd::/64 via 2001:db8:300::2 proto static
# Tag rewrite on one parent: a second client behind VLAN 400 of the same
# wire (its VLAN device moved to namespace c2) reaches the server's
# 203.0.113.200 behind VLAN 100: in tagged 400, out tagged 100, both on rt1.
ip link add link rt1 name rt1.400 type vlan id 400
ip addr add 203.0.113.33/28 dev rt1.400
ip link set rt1.400 up
ip netns add c2
in_ns s ip link add link sv0 name sv0.400 type vlan id 400
in_ns s ip link set sv0.400 netns c2
in_ns c2 ip link set lo up
in_ns c2 ip addr add 203.0.113.34/28 dev sv0.400
in_ns c2 ip link set sv0.400 up
in_ns c2 ip route add default via 203.0.113.33
in_ns s ip route add 203.0.113.32/28 via 203.0.113.129
# VRF blue (table 10): a client (c3, behind rt2) and a server (s2, behind
# rt3), both ports enslaved. s2 holds the same 203.0.113.10 and
# 2001:db8:ff::10 as the main table's server, and table 10 routes them to
# s2: a frame from rt2 answered from the route cache (the main table) would
# go to s, whose replies to 198.51.100.130 go nowhere. A second client (c4)
# sits behind VLAN 500 of rt4: rt4 is in the main table, its VLAN in blue.
ip link add blue type vrf table 10
ip link set blue up
ip netns add c3
ip netns add s2
ip netns add c4
ip link add rt2 type veth peer name cl3 netns c3
ip link add rt3 type veth peer name sv3 netns s2
ip link set rt2 master blue
ip link set rt3 master blue
ip addr add 198.51.100.129/27 dev rt2
ip addr add 2001:db8:3::1/64 dev rt2 nodad
ip addr add 198.51.100.193/27 dev rt3
ip addr add 2001:db8:4::1/64 dev rt3 nodad
ip link set rt2 up
ip link set rt3 up
ip route add 203.0.113.0/24 via 198.51.100.194 table 10
ip -6 route add 2001:db8:ff::/64 via 2001:db8:4::2 table 10
in_ns c3 ip link set lo up
in_ns c3 ip addr add 198.51.100.130/27 dev cl3
in_ns c3 ip addr add 2001:db8:3::2/64 dev cl3 nodad
in_ns c3 ip link set cl3 up
in_ns c3 ip route add default via 198.51.100.129
in_ns c3 ip -6 route add default via 2001:db8:3::1
in_ns s2 ip link set lo up
in_ns s2 ip addr add 198.51.100.194/27 dev sv3
in_ns s2 ip addr add 2001:db8:4::2/64 dev sv3 nodad
in_ns s2 ip addr add 203.0.113.10/32 dev lo
in_ns s2 ip addr add 2001:db8:ff::10/128 dev lo
in_ns s2 ip link set sv3 up
in_ns s2 ip route add default via 198.51.100.193
in_ns s2 ip -6 route add default via 2001:db8:4::1
ip link add rt4 type veth peer name cl4 netns c4
ip link add link rt4 name rt4.500 type vlan id 500
ip link set rt4.500 master blue
ip addr add 198.51.100.161/27 dev rt4.500
ip link set rt4 up
ip link set rt4.500 up
in_ns c4 ip link set lo up
in_ns c4 ip link set cl4 up
in_ns c4 ip link add link cl4 name cl4.500 type vlan id 500
in_ns c4 ip addr add 198.51.100.162/27 dev cl4.500
in_ns c4 ip link set cl4.500 up
in_ns c4 ip route add default via 198.51.100.161
# A bond: rtbond (active-backup, members bda and bdb) to a server (s3)
# bonded the same way, which holds 203.0.113.241 behind it. Native XDP on a
# bond takes Linux 5.15: older kernels only show what feasibility says.
# (Not bond0: loading the bonding module creates a balance-rr bond0.)
release=$(uname -r)
major=${release%%.*}
minor=${release#*.}
minor=${minor%%.*}
bond_native=0
if [ "$major" -gt 5 ] || { [ "$major" -eq 5 ] && [ "$minor" -ge 15 ]; }; then
  bond_native=1
fi
ip netns add s3
ip link add bda type veth peer name sva netns s3
ip link add bdb type veth peer name svb netns s3
# The members' peers take redirected frames by GRO (set before the bond
# counts its members' XDP features).
in_ns s3 ethtool -K sva gro on >/dev/null 2>&1
in_ns s3 ethtool -K svb gro on >/dev/null 2>&1
ip link add rtbond type bond mode active-backup miimon 100
ip link set bda master rtbond
ip link set bdb master rtbond
ip addr add 203.0.113.225/28 dev rtbond
ip link set rtbond up
in_ns s3 ip link add sbond type bond mode active-backup miimon 100
in_ns s3 ip link set sva master sbond
in_ns s3 ip link set svb master sbond
in_ns s3 ip link set lo up
in_ns s3 ip addr add 203.0.113.226/28 dev sbond
in_ns s3 ip addr add 203.0.113.241/32 dev lo
in_ns s3 ip link set sbond up
in_ns s3 ip route add default via 203.0.113.225
ip route add 203.0.113.240/29 via 203.0.113.226 proto static
# The veth ends that receive redirected frames need an XDP program (any
# kernel) or GRO (5.13 and later) to take them.
in_ns c ip link set dev cl0 xdp obj /xdp_pass.o sec xdp
in_ns s ip link set dev sv0 xdp obj /xdp_pass.o sec xdp
in_ns c3 ip link set dev cl3 xdp obj /xdp_pass.o sec xdp
in_ns s2 ip link set dev sv3 xdp obj /xdp_pass.o sec xdp
in_ns c4 ip link set dev cl4 xdp obj /xdp_pass.o sec xdp
# A pair for the generic-mode attach.
ip link add ge0 type veth peer name ge1
ip link set ge0 up
ip link set ge1 up

block version pf-sidecar --version
block mac-rt0 ip -o link show rt0
block mac-rt1 ip -o link show rt1
block mac-cl0 in_ns c ip -o link show cl0
block mac-sv0 in_ns s ip -o link show sv0
block mac-rt3 ip -o link show rt3
block mac-sv3 in_ns s2 ip -o link show sv3
block feasibility pf-sidecar feasibility --json rt0 rt1

mkdir -p /etc/pf-sidecar
bond_interface=""
attached_list='"rt0","rt1","rt2","rt3","rt4"'
if [ "$bond_native" = 1 ]; then
  bond_interface=', "rtbond"'
  attached_list="$attached_list,\"rtbond\""
fi
cat > /etc/pf-sidecar/pf-sidecar.toml <<TOML
[general]
pin_dir = "/sys/fs/bpf/pf-sidecar"
interfaces = ["rt0", "rt1", "rt2", "rt3", "rt4"$bond_interface]
xdp_mode = "native"
[routes]
from = "kernel"
[metrics]
listen = ""
TOML
pf-sidecar run --config /etc/pf-sidecar/pf-sidecar.toml > /tmp/run.log 2>&1 &
daemon=$!
attached=1
for _ in $(seq 1 120); do
  kill -0 $daemon 2>/dev/null || break
  if pf-sidecar status --json --rate-interval-ms 0 2>/dev/null | tr -d " \n" | grep -qF "\"attached\":[$attached_list]"; then
    attached=0
    break
  fi
  sleep 0.5
done
say run "$attached" "daemon pid $daemon"
# Prime the neighbours, so the counted pings take the cache.
in_ns c ping -c 2 -i 0.2 -W 2 203.0.113.10 >/dev/null 2>&1
in_ns c ping -c 2 -i 0.2 -W 2 2001:db8:ff::10 >/dev/null 2>&1
block status-before pf-sidecar status --json --rate-interval-ms 0
block ping4 in_ns c ping -c 20 -i 0.1 -W 2 203.0.113.10
block ping6 in_ns c ping -c 20 -i 0.1 -W 2 2001:db8:ff::10
block status-after pf-sidecar status --json --rate-interval-ms 0
# 802.1Q: the same, over VLAN 100, with the server's VLAN counters.
in_ns c ping -c 2 -i 0.2 -W 2 -I 192.0.2.3 203.0.113.200 >/dev/null 2>&1
in_ns c ping -c 2 -i 0.2 -W 2 -I 2001:db8:1::3 2001:db8:fe::10 >/dev/null 2>&1
block vlan-before pf-sidecar status --json --rate-interval-ms 0
block vlan-link-before in_ns s ip -s -s link show sv0.100
capture_start vlan-wire s sv0
capture_start vlan-wire-back c cl0
block vlan-ping4 in_ns c ping -c 20 -i 0.1 -W 2 -I 192.0.2.3 203.0.113.200
capture_end vlan-wire
capture_end vlan-wire-back
block vlan-ping6 in_ns c ping -c 20 -i 0.1 -W 2 -I 2001:db8:1::3 2001:db8:fe::10
block vlan-after pf-sidecar status --json --rate-interval-ms 0
block vlan-link-after in_ns s ip -s -s link show sv0.100
# 802.1ad (QinQ): the same over outer 200 / inner 300.
in_ns c ping -c 2 -i 0.2 -W 2 -I 192.0.2.4 203.0.113.250 >/dev/null 2>&1
in_ns c ping -c 2 -i 0.2 -W 2 -I 2001:db8:1::4 2001:db8:fd::10 >/dev/null 2>&1
block qinq-before pf-sidecar status --json --rate-interval-ms 0
block qinq-link-before in_ns s ip -s -s link show sv0.200.300
capture_start qinq-wire s sv0
block qinq-ping4 in_ns c ping -c 20 -i 0.1 -W 2 -I 192.0.2.4 203.0.113.250
capture_end qinq-wire
block qinq-ping6 in_ns c ping -c 20 -i 0.1 -W 2 -I 2001:db8:1::4 2001:db8:fd::10
block qinq-after pf-sidecar status --json --rate-interval-ms 0
block qinq-link-after in_ns s ip -s -s link show sv0.200.300
# Tag rewrite: VLAN 400 in, VLAN 100 out, on rt1 both ways.
in_ns c2 ping -c 2 -i 0.2 -W 2 203.0.113.200 >/dev/null 2>&1
block rewrite-before pf-sidecar status --json --rate-interval-ms 0
capture_start rewrite-wire s sv0 40
block rewrite-ping4 in_ns c2 ping -c 20 -i 0.1 -W 2 203.0.113.200
capture_end rewrite-wire
block rewrite-after pf-sidecar status --json --rate-interval-ms 0
# MTU of a sub-interface: rt1.100 at 1400 under a 1500 parent. A
# 1428-byte IPv4 packet fits the parent but not the VLAN: the fast path
# passes it and the kernel fragments it.
ip link set rt1.100 mtu 1400
sleep 1
block mtu-before pf-sidecar status --json --rate-interval-ms 0
block mtu-ping4 in_ns c ping -c 5 -i 0.2 -W 2 -s 1400 -I 192.0.2.3 203.0.113.200
block mtu-after pf-sidecar status --json --rate-interval-ms 0
# VRF: the pings from c3 and c4 must be routed by table 10 (to s2).
in_ns c3 ping -c 2 -i 0.2 -W 2 203.0.113.10 >/dev/null 2>&1
in_ns c3 ping -c 2 -i 0.2 -W 2 2001:db8:ff::10 >/dev/null 2>&1
in_ns c4 ping -c 2 -i 0.2 -W 2 203.0.113.10 >/dev/null 2>&1
block vrf-before pf-sidecar status --json --rate-interval-ms 0
block vrf-link-before in_ns s2 ip -s -s link show sv3
capture_start vrf-wire s2 sv3
block vrf-ping4 in_ns c3 ping -c 20 -i 0.1 -W 2 203.0.113.10
capture_end vrf-wire
block vrf-ping6 in_ns c3 ping -c 20 -i 0.1 -W 2 2001:db8:ff::10
block vrf-after pf-sidecar status --json --rate-interval-ms 0
block vrf-link-after in_ns s2 ip -s -s link show sv3
block vrf-vlan-ping4 in_ns c4 ping -c 20 -i 0.1 -W 2 203.0.113.10
block vrf-vlan-after pf-sidecar status --json --rate-interval-ms 0
block vrf-lookup pf-sidecar lookup --vrf blue 203.0.113.10
block vrf-diff pf-sidecar diff
# The bond: pings through it, then with its active member down.
if [ "$bond_native" = 1 ]; then
  in_ns c ping -c 2 -i 0.2 -W 2 203.0.113.241 >/dev/null 2>&1
  block bond-before pf-sidecar status --json --rate-interval-ms 0
  capture_start bond-wire s3 sbond
  block bond-ping4 in_ns c ping -c 20 -i 0.1 -W 2 203.0.113.241
  capture_end bond-wire
  block bond-after pf-sidecar status --json --rate-interval-ms 0
  ip link set bda down
  sleep 0.5
  block bond-failover-ping4 in_ns c ping -c 20 -i 0.1 -W 2 203.0.113.241
  block bond-failover-after pf-sidecar status --json --rate-interval-ms 0
  block bond-state cat /proc/net/bonding/rtbond
  block mac-rtbond ip -o link show rtbond
  block mac-sbond in_ns s3 ip -o link show sbond
else
  block bond-feasibility pf-sidecar feasibility --json rtbond
fi
kill $daemon 2>/dev/null
wait $daemon
echo "PFM-BEGIN|run-log"
tail -n 40 /tmp/run.log
echo "PFM-END|run-log"
pf-sidecar detach --all >/dev/null 2>&1

block attach-generic pf-sidecar --pin-dir /sys/fs/bpf/pf-generic attach --xdp-mode generic ge0
pf-sidecar --pin-dir /sys/fs/bpf/pf-generic detach --all >/dev/null 2>&1

block datapath env PF_REQUIRE_ROOT=1 /bin/datapath-cases --test-threads=1

echo "PFM-DONE"
sync
poweroff -f
