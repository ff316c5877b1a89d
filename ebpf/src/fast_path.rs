//! `fast_path`: parse, decide, hand over to `finalize`.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::{bpf_fib_lookup, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};
use pf_common::{
    config::CFG_F_DRY_RUN,
    hash::{bucket_of, flow_hash_v4, flow_hash_v6, proto_has_ports},
    layout::{Nexthop, ING_F_VRF, ING_F_VRF_KERNEL, PORT_F_VLAN, XMIT_FROM_CACHE, XMIT_FROM_FIB},
    maps::{ECMP_BUCKETS, FINALIZE_SLOT, TBL8_GROUP_SIZE, V6_MAX_DEPTH, V6_STRIDE, V6_TOP_BITS},
    route::{INDEX_MASK, KIND_SHIFT, V6_INHERIT},
    Counter, Mode, RouteKind,
};

use crate::{
    maps::{
        count, CONFIG, GROUPS, GRP_PTR, INGRESS, JUMP, NEXTHOPS, NH_PTR, PORTS, TX_PORTS, V4_TBL24,
        V4_TBL8, V6_LEAVES, V6_NODES, V6_TOP, XMIT,
    },
    packet::*,
};

/// What the parser learnt about an IP packet worth routing.
struct Flow {
    /// 4 or 6.
    ip_version: u8,
    l3_offset: usize,
    /// Length of the IP packet (header included).
    l3_len: u32,
    proto: u8,
    sport: u16,
    dport: u16,
    /// Host-order address words; IPv4 uses word 0 only.
    saddr: [u32; 4],
    daddr: [u32; 4],
    /// The destination exactly as in the packet, for `bpf_fib_lookup`.
    daddr_raw: [u32; 4],
    /// IPv4 TOS or the IPv6 flow-info word (network order), for fib lookups.
    tos_or_flowinfo: u32,
}

enum Decision {
    Pass(Counter),
    Drop(Counter),
    Forward(Nexthop, u8),
}

#[xdp]
pub fn fast_path(ctx: XdpContext) -> u32 {
    count(Counter::RxPackets);
    let flow = match parse(&ctx) {
        Ok(flow) => flow,
        Err(reason) => {
            count(reason);
            return XDP_PASS;
        }
    };
    let (mode, dry_run, seed, stale) = read_config();
    let decision = decide(&ctx, &flow, mode, seed, stale);
    match decision {
        Decision::Pass(reason) => {
            count(reason);
            XDP_PASS
        }
        Decision::Drop(reason) => {
            if dry_run {
                count(Counter::WouldDrop);
                count(Counter::PassDryRun);
                return XDP_PASS;
            }
            count(reason);
            XDP_DROP
        }
        Decision::Forward(nh, source) => forward(&ctx, &flow, &nh, source, dry_run),
    }
}

#[inline(always)]
fn read_config() -> (Mode, bool, u32, bool) {
    match CONFIG.get(0) {
        Some(cfg) => {
            let mode = Mode::from_u32(cfg.mode).unwrap_or(Mode::CacheAndFib);
            let stale = cfg.stale_after_ns != 0
                && unsafe { bpf_ktime_get_ns() }.wrapping_sub(cfg.heartbeat_ns)
                    > cfg.stale_after_ns;
            (mode, cfg.flags & CFG_F_DRY_RUN != 0, cfg.hash_seed, stale)
        }
        None => (Mode::CacheAndFib, false, 0, false),
    }
}

#[inline(always)]
fn parse(ctx: &XdpContext) -> Result<Flow, Counter> {
    let packet = Packet::new(ctx.data(), ctx.data_end());
    let eth = packet.bytes::<ETH_HLEN>(0).ok_or(Counter::PassTruncated)?;
    if eth.u8::<0>() & 1 != 0 {
        return Err(Counter::PassL2Multicast);
    }
    let mut ethertype = eth.be16::<12>();
    let mut l3_offset = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let tagged = packet
            .bytes::<{ ETH_HLEN + VLAN_HLEN }>(0)
            .ok_or(Counter::PassTruncated)?;
        let outer = ethertype;
        ethertype = tagged.be16::<16>();
        l3_offset = ETH_HLEN + VLAN_HLEN;
        if ethertype == ETH_P_8021Q && outer == ETH_P_8021AD {
            let double_tagged = packet
                .bytes::<{ ETH_HLEN + 2 * VLAN_HLEN }>(0)
                .ok_or(Counter::PassTruncated)?;
            ethertype = double_tagged.be16::<20>();
            l3_offset = ETH_HLEN + 2 * VLAN_HLEN;
        }
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            return Err(Counter::PassVlanUnsupported);
        }
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(packet, l3_offset),
        ETH_P_IPV6 => parse_ipv6(packet, l3_offset),
        ETH_P_ARP => Err(Counter::PassArp),
        _ => Err(Counter::PassNonIp),
    }
}

#[inline(always)]
fn parse_ipv4(packet: Packet, l3_offset: usize) -> Result<Flow, Counter> {
    let ip = packet
        .bytes::<IPV4_HLEN>(l3_offset)
        .ok_or(Counter::PassTruncated)?;
    let version_ihl = ip.u8::<0>();
    if version_ihl >> 4 != 4 {
        return Err(Counter::PassBadHeader);
    }
    if version_ihl != 0x45 {
        return Err(if version_ihl < 0x45 {
            Counter::PassBadHeader
        } else {
            Counter::PassIpv4Options
        });
    }
    let total_len = ip.be16::<2>() as usize;
    if total_len < IPV4_HLEN {
        return Err(Counter::PassBadHeader);
    }
    if total_len > packet.len_from(ip) {
        return Err(Counter::PassTruncated);
    }
    // The kernel drops a header whose checksum is wrong (ip_rcv); so must we.
    if !ipv4_header_checksum_ok(ip) {
        return Err(Counter::PassBadHeader);
    }
    if ip.be16::<6>() & 0x3fff != 0 {
        return Err(Counter::PassFragment);
    }
    let daddr = ip.be32::<16>();
    let first_octet = daddr >> 24;
    if daddr >> 28 == 0xe || daddr == u32::MAX {
        return Err(Counter::PassL3Multicast);
    }
    if first_octet == 0 || first_octet == 127 || daddr >> 16 == 0xa9fe {
        return Err(Counter::PassSpecialAddress);
    }
    // Martian sources (zero network, loopback, multicast, broadcast): the
    // kernel drops them (ip_route_input_slow) and counts them.
    let saddr = ip.be32::<12>();
    if saddr >> 24 == 0 || saddr >> 24 == 127 || saddr >> 28 == 0xe || saddr == u32::MAX {
        return Err(Counter::PassSpecialAddress);
    }
    if ip.u8::<8>() <= 1 {
        return Err(Counter::PassTtlExpired);
    }
    let proto = ip.u8::<9>();
    let (sport, dport) = if proto_has_ports(proto) {
        let ports = packet
            .bytes::<{ IPV4_HLEN + 4 }>(l3_offset)
            .ok_or(Counter::PassTruncated)?;
        (ports.be16::<IPV4_HLEN>(), ports.be16::<{ IPV4_HLEN + 2 }>())
    } else {
        (0, 0)
    };
    Ok(Flow {
        ip_version: 4,
        l3_offset,
        l3_len: total_len as u32,
        proto,
        sport,
        dport,
        saddr: [saddr, 0, 0, 0],
        daddr: [daddr, 0, 0, 0],
        daddr_raw: [ip.raw32::<16>(), 0, 0, 0],
        tos_or_flowinfo: u32::from_ne_bytes([ip.u8::<1>(), 0, 0, 0]),
    })
}

/// RFC 1071 over the 20-byte header: a valid header sums to 0xffff. Five
/// 32-bit loads, folded; byte order does not change a ones' complement
/// sum's all-ones result.
#[inline(always)]
fn ipv4_header_checksum_ok(ip: Bytes<IPV4_HLEN>) -> bool {
    let sum = ip.raw32::<0>() as u64
        + ip.raw32::<4>() as u64
        + ip.raw32::<8>() as u64
        + ip.raw32::<12>() as u64
        + ip.raw32::<16>() as u64;
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum == 0xffff
}

/// Next-header values the kernel must see: hop-by-hop, routing, fragment,
/// destination options, AH, mobility, HIP, shim6.
#[inline(always)]
fn is_ipv6_extension(next_header: u8) -> bool {
    matches!(next_header, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140)
}

#[inline(always)]
fn parse_ipv6(packet: Packet, l3_offset: usize) -> Result<Flow, Counter> {
    let ip = packet
        .bytes::<IPV6_HLEN>(l3_offset)
        .ok_or(Counter::PassTruncated)?;
    if ip.be32::<0>() >> 28 != 6 {
        return Err(Counter::PassBadHeader);
    }
    let payload_len = ip.be16::<4>() as usize;
    // A length comparison, as in `parse_ipv4`.
    if payload_len > packet.len_from(ip) - IPV6_HLEN {
        return Err(Counter::PassTruncated);
    }
    let daddr = [
        ip.be32::<24>(),
        ip.be32::<28>(),
        ip.be32::<32>(),
        ip.be32::<36>(),
    ];
    if daddr[0] >> 24 == 0xff {
        return Err(Counter::PassL3Multicast);
    }
    let unspecified_or_loopback = daddr[0] == 0 && daddr[1] == 0 && daddr[2] == 0 && daddr[3] <= 1;
    if unspecified_or_loopback || daddr[0] >> 22 == 0xfe80 >> 6 {
        return Err(Counter::PassSpecialAddress);
    }
    // Sources the kernel does not forward from: multicast, unspecified,
    // loopback (ip6_rcv_core), link-local (ip6_forward).
    let saddr = [
        ip.be32::<8>(),
        ip.be32::<12>(),
        ip.be32::<16>(),
        ip.be32::<20>(),
    ];
    let source_unspecified_or_loopback =
        saddr[0] == 0 && saddr[1] == 0 && saddr[2] == 0 && saddr[3] <= 1;
    if saddr[0] >> 24 == 0xff || source_unspecified_or_loopback || saddr[0] >> 22 == 0xfe80 >> 6 {
        return Err(Counter::PassSpecialAddress);
    }
    let next_header = ip.u8::<6>();
    if is_ipv6_extension(next_header) {
        return Err(Counter::PassIpv6ExtHeader);
    }
    if next_header == IPPROTO_ICMPV6 {
        let icmp = packet
            .bytes::<{ IPV6_HLEN + 1 }>(l3_offset)
            .ok_or(Counter::PassTruncated)?;
        if (133..=137).contains(&icmp.u8::<IPV6_HLEN>()) {
            return Err(Counter::PassNdp);
        }
    }
    if ip.u8::<7>() <= 1 {
        return Err(Counter::PassTtlExpired);
    }
    let (sport, dport) = if proto_has_ports(next_header) {
        let ports = packet
            .bytes::<{ IPV6_HLEN + 4 }>(l3_offset)
            .ok_or(Counter::PassTruncated)?;
        (ports.be16::<IPV6_HLEN>(), ports.be16::<{ IPV6_HLEN + 2 }>())
    } else {
        (0, 0)
    };
    Ok(Flow {
        ip_version: 6,
        l3_offset,
        l3_len: (IPV6_HLEN + payload_len) as u32,
        proto: next_header,
        sport,
        dport,
        saddr,
        daddr,
        daddr_raw: [
            ip.raw32::<24>(),
            ip.raw32::<28>(),
            ip.raw32::<32>(),
            ip.raw32::<36>(),
        ],
        tos_or_flowinfo: ip.raw32::<0>() & 0x0fff_ffff_u32.to_be(),
    })
}

#[inline(always)]
fn decide(ctx: &XdpContext, flow: &Flow, mode: Mode, seed: u32, stale: bool) -> Decision {
    // The route cache holds the main table: a frame that arrived in a VRF
    // must not meet it. The kernel's lookup in the port's VRF answers for a
    // port whose sub-interfaces share its VRF; a port whose sub-interfaces
    // differ is the kernel's, as a tag stripped by offload is invisible here.
    let ingress_ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let Some(ingress) = INGRESS.get(ingress_ifindex) else {
        return Decision::Pass(Counter::PassIngressUnknown);
    };
    if *ingress & ING_F_VRF_KERNEL != 0 {
        return Decision::Pass(Counter::PassVrfKernel);
    }
    if *ingress & ING_F_VRF != 0 {
        count(Counter::FibVrf);
        return fib_decision(ctx, flow, BPF_FIB_LOOKUP_DIRECT);
    }
    if stale {
        count(Counter::FailSafe);
        return fib_decision(ctx, flow, 0);
    }
    if mode == Mode::FibOnly {
        return fib_decision(ctx, flow, 0);
    }
    let action = if flow.ip_version == 4 {
        lookup_v4(flow.daddr[0])
    } else {
        lookup_v6(&flow.daddr)
    };
    let index = action & INDEX_MASK;
    let nexthop_id = match RouteKind::from_u32(action >> KIND_SHIFT) {
        Some(RouteKind::Nexthop) => index,
        Some(RouteKind::Group) => match pick_leg(index, flow, seed) {
            Some(id) => id,
            None => return Decision::Pass(Counter::PassCorruptEntry),
        },
        Some(RouteKind::Blackhole) => return Decision::Drop(Counter::DropBlackhole),
        Some(RouteKind::Unreachable) => return Decision::Pass(Counter::PassUnreachable),
        Some(RouteKind::Prohibit) => return Decision::Pass(Counter::PassProhibit),
        Some(RouteKind::Local) => return Decision::Pass(Counter::PassLocal),
        Some(RouteKind::Miss) | Some(RouteKind::Fib) => {
            count(Counter::CacheMiss);
            return miss(ctx, flow, mode);
        }
        Some(RouteKind::Tbl8) | None => return Decision::Pass(Counter::PassCorruptEntry),
    };
    let nh = match nexthop(nexthop_id) {
        Some(nh) => nh,
        None => return Decision::Pass(Counter::PassCorruptEntry),
    };
    count(Counter::CacheHit);
    if !nh.is_resolved() {
        count(Counter::NexthopUnresolved);
        return miss(ctx, flow, mode);
    }
    if flow.l3_len > nh.mtu as u32 {
        return Decision::Pass(Counter::PassMtu);
    }
    Decision::Forward(nh, XMIT_FROM_CACHE)
}

#[inline(always)]
fn miss(ctx: &XdpContext, flow: &Flow, mode: Mode) -> Decision {
    if mode == Mode::CacheOnly {
        Decision::Pass(Counter::PassCacheOnlyMiss)
    } else {
        fib_decision(ctx, flow, 0)
    }
}

/// DIR-24-8: one array read for prefixes up to /24, a second for longer ones.
#[inline(always)]
fn lookup_v4(daddr: u32) -> u32 {
    let block = daddr >> 8;
    let Some(element) = V4_TBL24.get_ptr(block >> 1) else {
        return 0;
    };
    let action = unsafe { *(element as *const u32).add((block & 1) as usize) };
    if action >> KIND_SHIFT != RouteKind::Tbl8 as u32 {
        return action;
    }
    match V4_TBL8.get_ptr(action & INDEX_MASK) {
        Some(group) => unsafe {
            *(group as *const u32).add((daddr as usize) & (TBL8_GROUP_SIZE - 1))
        },
        None => RouteKind::Fib as u32,
    }
}

/// The IPv6 trie (see `pf_control::v6trie`): the /22's entry, then one
/// node per six bits until a slot without a child names its leaf (or its
/// action, in a node that holds them); a compressed node first checks the
/// steps of the chain it replaced. A /48
/// takes the top entry and at most five nodes, a /64 seven, and fewer
/// where the table branches less.
#[inline(always)]
fn lookup_v6(daddr: &[u32; 4]) -> u32 {
    const FIB: u32 = (RouteKind::Fib as u32) << KIND_SHIFT;
    let slot = daddr[0] >> (32 - V6_TOP_BITS);
    let Some(top) = V6_TOP.get_ptr(slot) else {
        return FIB;
    };
    let head = unsafe { (*top)[0] };
    if head >> KIND_SHIFT != RouteKind::Tbl8 as u32 {
        return head;
    }
    // The address not yet consumed, left-aligned: every step shifts it, so
    // the verifier meets one path per level whatever the nodes skip.
    let mut hi = (daddr[0] as u64) << 32 | daddr[1] as u64;
    let mut lo = (daddr[2] as u64) << 32 | daddr[3] as u64;
    hi = hi << V6_TOP_BITS | lo >> (64 - V6_TOP_BITS);
    lo <<= V6_TOP_BITS;
    let mut index = head & INDEX_MASK;
    for _ in 0..V6_MAX_DEPTH {
        let Some(node) = V6_NODES.get_ptr(index) else {
            return FIB;
        };
        let node = unsafe { &*node };
        // The steps a compressed chain left out must match its key (an
        // uncompressed node: no steps, key 0). `>> x >> 1` shifts by x + 1
        // without ever shifting by 64.
        let width = node.skip_width();
        if (hi >> (63 - width) >> 1) as u32 != node.skip_key() {
            return resolve_v6(node.miss, top);
        }
        hi = hi << width | lo >> (63 - width) >> 1;
        lo <<= width;
        let v = (hi >> (64 - V6_STRIDE)) as u32;
        // Shifted left so slot `v` is the top bit: the set bits up to it.
        let upto = 63 - v;
        let (children, runs, first_child, first_leaf) =
            (node.children, node.runs, node.first_child, node.first_leaf);
        if children >> v & 1 != 0 {
            index = first_child + (children << upto).count_ones() - 1;
            hi = hi << V6_STRIDE | lo >> (64 - V6_STRIDE);
            lo <<= V6_STRIDE;
            continue;
        }
        // A childless node with at most two actions holds them itself
        // (bit 0 of `runs` clear): no leaf to read.
        if runs & 1 == 0 {
            let action = if runs >> v & 1 != 0 {
                first_child
            } else {
                first_leaf
            };
            return resolve_v6(action, top);
        }
        let leaf = first_leaf + (runs << upto).count_ones() - 1;
        let Some(pair) = V6_LEAVES.get_ptr(leaf >> 1) else {
            return FIB;
        };
        let action = unsafe { *(pair as *const u32).add((leaf & 1) as usize) };
        return resolve_v6(action, top);
    }
    FIB
}

/// A leaf's action; [`V6_INHERIT`] stands for the slot's cover.
#[inline(always)]
fn resolve_v6(action: u32, top: *const [u32; 2]) -> u32 {
    if action == V6_INHERIT {
        unsafe { (*top)[1] }
    } else {
        action
    }
}

#[inline(always)]
fn nexthop(id: u32) -> Option<Nexthop> {
    let slot = *NH_PTR.get(id)?;
    if slot == 0 {
        return None;
    }
    NEXTHOPS.get(slot).copied()
}

#[inline(always)]
fn pick_leg(group_id: u32, flow: &Flow, seed: u32) -> Option<u32> {
    let slot = *GRP_PTR.get(group_id)?;
    if slot == 0 {
        return None;
    }
    let group = GROUPS.get_ptr(slot)?;
    let bucket_count = unsafe { (*group).bucket_count };
    if bucket_count == 0 || bucket_count > ECMP_BUCKETS as u32 {
        return None;
    }
    let hash = if flow.ip_version == 4 {
        flow_hash_v4(
            seed,
            flow.saddr[0],
            flow.daddr[0],
            flow.proto,
            flow.sport,
            flow.dport,
        )
    } else {
        flow_hash_v6(
            seed,
            &flow.saddr,
            &flow.daddr,
            flow.proto,
            flow.sport,
            flow.dport,
        )
    };
    let bucket = (bucket_of(hash, bucket_count) as usize) & (ECMP_BUCKETS - 1);
    let buckets = unsafe { core::ptr::addr_of!((*group).buckets) } as *const u32;
    Some(unsafe { *buckets.add(bucket) })
}

/// `struct bpf_fib_lookup` from the kernel UAPI, with the unions flattened to
/// the members this program uses. Every member is a scalar: zeroing an array
/// member is exactly what LLVM turns into a `memset` call.
#[repr(C)]
struct FibParams {
    family: u8,
    l4_protocol: u8,
    sport: u16,
    dport: u16,
    /// In: IP packet length (for the MTU check). Out: MTU when FRAG_NEEDED.
    tot_len: u16,
    ifindex: u32,
    /// IPv4 TOS or IPv6 flow info (network order).
    tos_or_flowinfo: u32,
    src0: u32,
    src1: u32,
    src2: u32,
    src3: u32,
    dst0: u32,
    dst1: u32,
    dst2: u32,
    dst3: u32,
    vlan_proto: u16,
    vlan_tci: u16,
    /// smac[0..4], smac[4..6], dmac[0..2], dmac[2..6].
    smac_head: u32,
    smac_tail: u16,
    dmac_head: u16,
    dmac_tail: u32,
}
const _: () = assert!(core::mem::size_of::<FibParams>() == 64);

impl FibParams {
    #[inline(always)]
    fn smac(&self) -> [u8; 6] {
        let [a, b, c, d] = self.smac_head.to_ne_bytes();
        let [e, f] = self.smac_tail.to_ne_bytes();
        [a, b, c, d, e, f]
    }

    #[inline(always)]
    fn dmac(&self) -> [u8; 6] {
        let [a, b] = self.dmac_head.to_ne_bytes();
        let [c, d, e, f] = self.dmac_tail.to_ne_bytes();
        [a, b, c, d, e, f]
    }
}

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const FIB_SUCCESS: i64 = 0;
const FIB_BLACKHOLE: i64 = 1;
const FIB_UNREACHABLE: i64 = 2;
const FIB_PROHIBIT: i64 = 3;
const FIB_NOT_FWDED: i64 = 4;
const FIB_FWD_DISABLED: i64 = 5;
const FIB_NO_NEIGH: i64 = 7;
const FIB_FRAG_NEEDED: i64 = 8;
/// Skip the FIB rules and look up the table of the ingress device's VRF
/// (`l3mdev_fib_table`), or main outside one.
const BPF_FIB_LOOKUP_DIRECT: u32 = 1 << 0;

#[inline(always)]
fn fib_decision(ctx: &XdpContext, flow: &Flow, flags: u32) -> Decision {
    count(Counter::FibLookups);
    let v4 = flow.ip_version == 4;
    let mut params = FibParams {
        family: if v4 { AF_INET } else { AF_INET6 },
        l4_protocol: flow.proto,
        sport: flow.sport.to_be(),
        dport: flow.dport.to_be(),
        tot_len: flow.l3_len as u16,
        ifindex: unsafe { (*ctx.ctx).ingress_ifindex },
        tos_or_flowinfo: flow.tos_or_flowinfo,
        src0: flow.saddr[0].to_be(),
        src1: flow.saddr[1].to_be(),
        src2: flow.saddr[2].to_be(),
        src3: flow.saddr[3].to_be(),
        dst0: flow.daddr_raw[0],
        dst1: flow.daddr_raw[1],
        dst2: flow.daddr_raw[2],
        dst3: flow.daddr_raw[3],
        vlan_proto: 0,
        vlan_tci: 0,
        smac_head: 0,
        smac_tail: 0,
        dmac_head: 0,
        dmac_tail: 0,
    };
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            &mut params as *mut FibParams as *mut _,
            core::mem::size_of::<FibParams>() as i32,
            flags,
        )
    };
    match rc {
        FIB_SUCCESS => {}
        FIB_NO_NEIGH => return Decision::Pass(Counter::PassFibNoNeigh),
        FIB_FRAG_NEEDED => return Decision::Pass(Counter::PassFibFragNeeded),
        FIB_BLACKHOLE | FIB_UNREACHABLE | FIB_PROHIBIT | FIB_NOT_FWDED | FIB_FWD_DISABLED => {
            return Decision::Pass(Counter::PassFibNotForwarded)
        }
        _ => return Decision::Pass(Counter::PassFibUnsupported),
    }
    let mut nh = Nexthop {
        tx_ifindex: params.ifindex,
        mtu: u16::MAX,
        vlan_id: 0,
        dmac: params.dmac(),
        smac: params.smac(),
        vlan_proto: 0,
        flags: 0,
    };
    if let Some(port) = unsafe { PORTS.get(params.ifindex) } {
        if port.flags & PORT_F_VLAN != 0 {
            nh.tx_ifindex = port.tx_ifindex;
            nh.vlan_id = port.vlan_id;
            nh.vlan_proto = port.vlan_proto;
        }
    }
    Decision::Forward(nh, XMIT_FROM_FIB)
}

#[inline(always)]
fn forward(ctx: &XdpContext, flow: &Flow, nh: &Nexthop, source: u8, dry_run: bool) -> u32 {
    if dry_run {
        if TX_PORTS.get_ifindex(nh.tx_ifindex).is_none() {
            count(Counter::PassDevmapMiss);
        } else {
            count(Counter::WouldRedirect);
        }
        count(Counter::PassDryRun);
        return XDP_PASS;
    }
    let Some(xmit) = XMIT.get_ptr_mut(0) else {
        count(Counter::PassCorruptEntry);
        return XDP_PASS;
    };
    unsafe {
        (*xmit).tx_ifindex = nh.tx_ifindex;
        (*xmit).dmac = nh.dmac;
        (*xmit).smac = nh.smac;
        (*xmit).vlan_id = nh.vlan_id;
        (*xmit).vlan_proto = nh.vlan_proto;
        (*xmit).l3_offset = flow.l3_offset as u16;
        (*xmit).ip_version = flow.ip_version;
        (*xmit).source = source;
        JUMP.tail_call(ctx, FINALIZE_SLOT);
    }
    count(Counter::PassTailCallFailed);
    XDP_PASS
}
