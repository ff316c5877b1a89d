//! Datapath counters: one per-CPU `u64` per reason, named once here.
//!
//! The enum's discriminant is the index in the `COUNTERS` map; the sidecar
//! prints [`Counter::name`] and documents [`Counter::help`].

macro_rules! counters {
    ($( $variant:ident = $name:literal : $help:literal, )*) => {
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Counter { $( $variant, )* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[ $( Counter::$variant, )* ];

            pub const fn name(self) -> &'static str {
                match self { $( Counter::$variant => $name, )* }
            }

            pub const fn help(self) -> &'static str {
                match self { $( Counter::$variant => $help, )* }
            }
        }
    };
}

counters! {
    RxPackets = "rx_packets": "Frames seen by fast_path.",
    RedirectCache = "redirect_cache": "Forwarded by finalize using a route-cache nexthop.",
    RedirectFib = "redirect_fib": "Forwarded by finalize using a bpf_fib_lookup result.",
    DropBlackhole = "drop_blackhole": "Dropped: the route is a blackhole.",
    PassNonIp = "pass_non_ip": "Passed: neither IPv4 nor IPv6 (and not ARP).",
    PassArp = "pass_arp": "Passed: ARP.",
    PassNdp = "pass_ndp": "Passed: IPv6 neighbour discovery or router solicitation/advertisement.",
    PassL2Multicast = "pass_l2_multicast": "Passed: multicast or broadcast destination MAC.",
    PassL3Multicast = "pass_l3_multicast": "Passed: multicast or limited-broadcast destination address.",
    PassSpecialAddress = "pass_special_address": "Passed: unspecified, loopback or link-local destination (IPv4 0/8, 127/8, 169.254/16; IPv6 ::, ::1, fe80::/10).",
    PassTruncated = "pass_truncated": "Passed: the frame ends inside a header it claims to have.",
    PassVlanUnsupported = "pass_vlan_unsupported": "Passed: more VLAN tags than fast_path parses, or a tag order it does not accept.",
    PassTtlExpired = "pass_ttl_expired": "Passed: TTL or hop limit is 1 or 0, so the kernel sends ICMP time exceeded.",
    PassFragment = "pass_fragment": "Passed: IPv4 fragment.",
    PassBadHeader = "pass_bad_header": "Passed: the IP version does not match the ethertype, or a length field is impossible.",
    PassIpv4Options = "pass_ipv4_options": "Passed: IPv4 header with options (IHL greater than 5).",
    PassIpv6ExtHeader = "pass_ipv6_ext_header": "Passed: IPv6 extension header (hop-by-hop, routing, fragment, destination options, AH, ESP, mobility, HIP, shim6).",
    PassLocal = "pass_local": "Passed: the destination is one of the router's own addresses.",
    PassUnreachable = "pass_unreachable": "Passed: the route is unreachable, so the kernel answers with ICMP.",
    PassProhibit = "pass_prohibit": "Passed: the route is prohibit, so the kernel answers with ICMP.",
    PassMtu = "pass_mtu": "Passed: the packet is larger than the cached egress MTU.",
    PassCacheOnlyMiss = "pass_cache_only_miss": "Passed: cache-only mode and the route cache has no usable entry.",
    PassCorruptEntry = "pass_corrupt_entry": "Passed: a route action, nexthop or group points at nothing valid.",
    PassFibNoNeigh = "pass_fib_no_neigh": "Passed: bpf_fib_lookup found the route but the neighbour is unresolved.",
    PassFibFragNeeded = "pass_fib_frag_needed": "Passed: bpf_fib_lookup says the packet exceeds the egress MTU.",
    PassFibNotForwarded = "pass_fib_not_forwarded": "Passed: bpf_fib_lookup found no route, a local, blackhole, unreachable or prohibit route, or forwarding is off.",
    PassFibUnsupported = "pass_fib_unsupported": "Passed: bpf_fib_lookup returned another result (unsupported route type, LWT encap, bad input).",
    PassDevmapMiss = "pass_devmap_miss": "Passed by finalize before any byte changed: the egress port is not in TX_PORTS.",
    PassTailCallFailed = "pass_tail_call_failed": "Passed: the tail call into finalize failed (slot empty).",
    PassAdjustFailed = "pass_adjust_failed": "Passed: bpf_xdp_adjust_head refused to move the frame start.",
    PassDryRun = "pass_dry_run": "Passed because dry-run is on (the would_* counters say what would have happened).",
    CacheHit = "cache_hit": "Route-cache lookups that found a forwarding entry.",
    CacheMiss = "cache_miss": "Route-cache lookups that found no entry or a Fib entry.",
    NexthopUnresolved = "nexthop_unresolved": "Cache hits whose nexthop is unresolved (handed to bpf_fib_lookup).",
    FibLookups = "fib_lookups": "Calls to bpf_fib_lookup.",
    FailSafe = "fail_safe": "Packets that skipped the cache because the sidecar heartbeat is stale.",
    WouldRedirect = "would_redirect": "Dry-run: packets that would have been forwarded.",
    WouldDrop = "would_drop": "Dry-run: packets that would have been dropped.",
    FibVrf = "fib_vrf": "Frames from a port in a VRF: routed by bpf_fib_lookup in that VRF's table, never from the route cache.",
    PassVrfKernel = "pass_vrf_kernel": "Passed: the port carries a VRF the datapath cannot place its frames in (a VLAN in another VRF than the port's, or the port is a member of a bond or bridge in a VRF).",
    PassIngressUnknown = "pass_ingress_unknown": "Passed: the ingress ifindex is beyond the INGRESS table, so whether it is in a VRF is unknown.",
}

/// Number of counters (size of the `COUNTERS` map).
pub const COUNTER_COUNT: u32 = Counter::ALL.len() as u32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_indices_follow_the_list_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }

    #[test]
    fn counter_names_are_unique_and_snake_case() {
        for (i, a) in Counter::ALL.iter().enumerate() {
            assert!(a
                .name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
            for b in &Counter::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
