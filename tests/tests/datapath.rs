//! fast_path + finalize on hand-built frames through BPF_PROG_TEST_RUN:
//! the action, the output bytes and the counters.

use std::net::{Ipv4Addr, Ipv6Addr};

use integration_tests::{
    fixture::{resolved, Fixture, LOOPBACK, XDP_DROP, XDP_PASS, XDP_REDIRECT},
    frames::{self, Tagging},
    netns::{veth_pair, NetNs},
    require_root,
};
use pf_common::{
    config::CFG_F_DRY_RUN,
    hash::{bucket_of, flow_hash_v4, TEST_VECTORS},
    layout::{ING_F_VRF, ING_F_VRF_KERNEL, NH_F_GATEWAY_V6, NH_F_RESOLVED},
    Config, Counter, Mode, Nexthop, RouteAction, RouteKind,
};
use pf_control::{
    ecmp::{build_group, Leg},
    programmer::MapWriter,
};

const NH_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x01];
const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 10);
const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 20);

fn nh(id: u32) -> RouteAction {
    RouteAction::new(RouteKind::Nexthop, id)
}

/// Runs `body` with a fresh datapath inside a fresh namespace.
fn with_datapath(tag: &str, body: impl FnOnce(&mut Fixture) + Send) {
    let ns = NetNs::new(tag);
    ns.enter(|| body(&mut Fixture::new()));
}

/// A frame forwarded by the cache: MACs rewritten, TTL one lower, the
/// IPv4 checksum valid, everything after the IP header untouched.
fn assert_forwarded_v4(
    input: &[u8],
    output: &[u8],
    in_l3: usize,
    out_l3: usize,
    nexthop: &Nexthop,
) {
    assert_eq!(&output[0..6], &nexthop.dmac, "destination MAC");
    assert_eq!(&output[6..12], &nexthop.smac, "source MAC");
    assert_eq!(&output[out_l3 - 2..out_l3], &[0x08, 0x00], "ethertype");
    assert_eq!(output[out_l3 + 8], input[in_l3 + 8] - 1, "TTL decremented");
    assert_eq!(
        frames::ones_complement_sum(&output[out_l3..out_l3 + 20]),
        0xffff,
        "IPv4 checksum"
    );
    assert_eq!(
        &output[out_l3 + 20..],
        &input[in_l3 + 20..],
        "payload unchanged"
    );
    let mut header_in = input[in_l3..in_l3 + 20].to_vec();
    let mut header_out = output[out_l3..out_l3 + 20].to_vec();
    for h in [&mut header_in, &mut header_out] {
        h[8] = 0;
        h[10] = 0;
        h[11] = 0;
    }
    assert_eq!(
        header_in, header_out,
        "only TTL and checksum change in the IP header"
    );
}

#[test]
fn an_ipv4_cache_hit_is_redirected_with_new_macs_and_a_lower_ttl() {
    require_root!();
    with_datapath("dp-v4hit", |fx| {
        let nexthop = resolved(LOOPBACK, NH_MAC);
        fx.nexthop(1, nexthop);
        fx.route4("198.51.100.0/24", nh(1));
        let input = frames::udp4(Tagging::Untagged, SRC, DST, 64, 1000, 53);
        let out = fx.run(&input);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(out.frame.len(), input.len());
        assert_forwarded_v4(&input, &out.frame, 14, 14, &nexthop);
        assert_eq!(fx.counter(Counter::RedirectCache), 1);
        assert_eq!(fx.counter(Counter::CacheHit), 1);
    });
}

#[test]
fn the_checksum_update_matches_a_full_recomputation_at_the_wrap_around() {
    require_root!();
    with_datapath("dp-csum", |fx| {
        fx.nexthop(1, resolved(LOOPBACK, NH_MAC));
        fx.route4("198.51.100.0/24", nh(1));
        // Choose identification values that put the checksum on the edges of
        // the incremental update: 0xfeff becomes 0xffff before folding, the
        // form a from-scratch checksum never takes.
        let base = frames::udp4(Tagging::Untagged, SRC, DST, 64, 1000, 53);
        for target in [0xfeffu16, 0xfefe, 0xff00, 0xfffe, 0x0000, 0x00ff, 0x1234] {
            let input = (0..=u16::MAX)
                .map(|id| {
                    let mut frame = base.clone();
                    frame[18..20].copy_from_slice(&id.to_be_bytes());
                    frames::fix_ipv4_checksum(&mut frame, 14);
                    frame
                })
                .find(|frame| u16::from_be_bytes([frame[24], frame[25]]) == target);
            let Some(input) = input else { continue };
            let out = fx.run(&input);
            assert_eq!(out.action, XDP_REDIRECT);
            let mut expected = out.frame.clone();
            frames::fix_ipv4_checksum(&mut expected, 14);
            assert_eq!(
                &out.frame[24..26],
                &expected[24..26],
                "checksum {target:#06x} before the decrement"
            );
        }
    });
}

#[test]
fn an_ipv6_cache_hit_is_redirected_with_a_lower_hop_limit() {
    require_root!();
    with_datapath("dp-v6hit", |fx| {
        let nexthop = resolved(LOOPBACK, NH_MAC);
        fx.nexthop(2, nexthop);
        fx.route6("2001:db8:2::/48", nh(2));
        let input = frames::udp6(Tagging::Untagged, SRC6, DST6, 64, 1000, 53);
        let out = fx.run(&input);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(&out.frame[0..6], &NH_MAC);
        assert_eq!(&out.frame[12..14], &[0x86, 0xdd]);
        assert_eq!(out.frame[14 + 7], 63);
        assert_eq!(
            &out.frame[14 + 8..],
            &input[14 + 8..],
            "addresses and payload unchanged"
        );
        assert_eq!(fx.counter(Counter::RedirectCache), 1);
    });
}

#[test]
fn an_ipv4_route_over_an_ipv6_nexthop_is_forwarded() {
    require_root!();
    with_datapath("dp-5549", |fx| {
        let nexthop = Nexthop {
            flags: NH_F_RESOLVED | NH_F_GATEWAY_V6,
            ..resolved(LOOPBACK, NH_MAC)
        };
        fx.nexthop(3, nexthop);
        fx.route4("198.51.100.0/24", nh(3));
        let input = frames::udp4(Tagging::Untagged, SRC, DST, 64, 1000, 53);
        let out = fx.run(&input);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_forwarded_v4(&input, &out.frame, 14, 14, &nexthop);
    });
}

#[test]
fn the_longest_prefix_wins() {
    require_root!();
    with_datapath("dp-lpm", |fx| {
        fx.nexthop(1, resolved(LOOPBACK, [2, 0, 0, 0, 0, 1]));
        fx.nexthop(2, resolved(LOOPBACK, [2, 0, 0, 0, 0, 2]));
        fx.nexthop(3, resolved(LOOPBACK, [2, 0, 0, 0, 0, 3]));
        fx.route4("198.51.0.0/16", nh(1));
        fx.route4("198.51.100.0/24", nh(2));
        fx.route4("198.51.100.20/32", nh(3));
        for (dst, mac_tail) in [
            ([198, 51, 7, 1], 1),
            ([198, 51, 100, 21], 2),
            ([198, 51, 100, 20], 3),
        ] {
            let out = fx.run(&frames::udp4(Tagging::Untagged, SRC, dst.into(), 64, 1, 2));
            assert_eq!(out.action, XDP_REDIRECT);
            assert_eq!(out.frame[5], mac_tail, "destination {dst:?}");
        }
    });
}

#[test]
fn blackhole_routes_drop_and_unreachable_prohibit_and_local_routes_pass() {
    require_root!();
    with_datapath("dp-kinds", |fx| {
        fx.route4("198.51.100.0/26", RouteAction::simple(RouteKind::Blackhole));
        fx.route4(
            "198.51.100.64/26",
            RouteAction::simple(RouteKind::Unreachable),
        );
        fx.route4(
            "198.51.100.128/26",
            RouteAction::simple(RouteKind::Prohibit),
        );
        fx.route4("198.51.100.192/26", RouteAction::simple(RouteKind::Local));
        let cases = [
            (1, XDP_DROP, Counter::DropBlackhole),
            (65, XDP_PASS, Counter::PassUnreachable),
            (129, XDP_PASS, Counter::PassProhibit),
            (193, XDP_PASS, Counter::PassLocal),
        ];
        for (last, action, counter) in cases {
            let input = frames::udp4(
                Tagging::Untagged,
                SRC,
                Ipv4Addr::new(198, 51, 100, last),
                64,
                1,
                2,
            );
            let out = fx.run(&input);
            assert_eq!(out.action, action, "{counter:?}");
            if action == XDP_PASS {
                assert_eq!(out.frame, input, "{counter:?} passes the frame unchanged");
            }
            assert_eq!(fx.counter(counter), 1, "{counter:?}");
        }
    });
}

#[test]
fn frames_the_kernel_must_see_pass_unchanged_each_with_its_reason() {
    require_root!();
    with_datapath("dp-pass", |fx| {
        fx.nexthop(1, resolved(LOOPBACK, NH_MAC));
        fx.route4("0.0.0.0/0", nh(1));
        fx.route6("::/0", nh(1));
        let udp = frames::udp4(Tagging::Untagged, SRC, DST, 64, 1, 2);
        let udp6 = frames::udp6(Tagging::Untagged, SRC6, DST6, 64, 1, 2);

        let ttl_one = frames::udp4(Tagging::Untagged, SRC, DST, 1, 1, 2);
        let hop_limit_one = frames::udp6(Tagging::Untagged, SRC6, DST6, 1, 1, 2);
        let mut fragment = udp.clone();
        fragment[20] = 0x20; // more fragments
        frames::fix_ipv4_checksum(&mut fragment, 14);
        let mut later_fragment = udp.clone();
        later_fragment[21] = 0x10; // offset 16 * 8
        frames::fix_ipv4_checksum(&mut later_fragment, 14);
        let options = frames::with_ipv4_options(&udp, 14);
        let extension = frames::with_ipv6_hop_by_hop(&udp6, 14);
        let mut broadcast = udp.clone();
        broadcast[0..6].copy_from_slice(&[0xff; 6]);
        let multicast_dst = frames::udp4(
            Tagging::Untagged,
            SRC,
            Ipv4Addr::new(224, 0, 0, 5),
            64,
            1,
            2,
        );
        let mut arp = udp.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut lldp = udp.clone();
        lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
        let mut ndp = Vec::new();
        etherparse::PacketBuilder::ethernet2(frames::CLIENT_MAC, frames::ROUTER_MAC)
            .ipv6(SRC6.octets(), DST6.octets(), 255)
            .icmpv6(etherparse::Icmpv6Type::Unknown {
                type_u8: 135,
                code_u8: 0,
                bytes5to8: [0; 4],
            })
            .write(&mut ndp, &[0; 16])
            .unwrap();
        let link_local = frames::udp6(
            Tagging::Untagged,
            SRC6,
            "fe80::1".parse().unwrap(),
            64,
            1,
            2,
        );

        let cases: [(&str, &[u8], Counter); 12] = [
            ("TTL 1", &ttl_one, Counter::PassTtlExpired),
            ("hop limit 1", &hop_limit_one, Counter::PassTtlExpired),
            ("first fragment", &fragment, Counter::PassFragment),
            ("later fragment", &later_fragment, Counter::PassFragment),
            ("IPv4 options", &options, Counter::PassIpv4Options),
            ("IPv6 hop-by-hop", &extension, Counter::PassIpv6ExtHeader),
            ("broadcast MAC", &broadcast, Counter::PassL2Multicast),
            (
                "multicast address",
                &multicast_dst,
                Counter::PassL3Multicast,
            ),
            ("ARP", &arp, Counter::PassArp),
            ("LLDP", &lldp, Counter::PassNonIp),
            ("neighbour solicitation", &ndp, Counter::PassNdp),
            (
                "link-local destination",
                &link_local,
                Counter::PassSpecialAddress,
            ),
        ];
        for (what, frame, counter) in cases {
            let before = fx.counter(counter);
            let out = fx.run(frame);
            assert_eq!(out.action, XDP_PASS, "{what}");
            assert_eq!(out.frame, frame, "{what} passes unchanged");
            assert_eq!(fx.counter(counter), before + 1, "{what} counts {counter:?}");
        }
        assert_eq!(fx.counter(Counter::RedirectCache), 0);
    });
}

#[test]
fn a_frame_truncated_at_any_byte_passes_unchanged() {
    require_root!();
    with_datapath("dp-trunc", |fx| {
        fx.nexthop(1, resolved(LOOPBACK, NH_MAC));
        fx.route4("0.0.0.0/0", nh(1));
        fx.route6("::/0", nh(1));
        let full_frames = [
            frames::udp4(Tagging::Untagged, SRC, DST, 64, 1, 2),
            frames::udp4(Tagging::QinQ(100, 200), SRC, DST, 64, 1, 2),
            frames::udp6(Tagging::Dot1q(7), SRC6, DST6, 64, 1, 2),
            frames::tcp4(SRC, DST, 40000, 443),
        ];
        for full in &full_frames {
            // The kernel refuses test runs shorter than an Ethernet header.
            for len in 14..full.len() {
                let cut = &full[..len];
                let out = fx.run(cut);
                assert_eq!(out.action, XDP_PASS, "length {len} of {}", full.len());
                assert_eq!(out.frame, cut, "length {len} unchanged");
            }
            assert_eq!(
                fx.run(full).action,
                XDP_REDIRECT,
                "the whole frame is forwarded"
            );
        }
        assert!(fx.counter(Counter::PassTruncated) > 0);
        assert_eq!(fx.counter(Counter::RedirectCache), full_frames.len() as u64);
    });
}

#[test]
fn vlan_tags_are_pushed_popped_and_rewritten_to_match_the_egress() {
    require_root!();
    with_datapath("dp-vlan", |fx| {
        let untagged_nh = resolved(LOOPBACK, NH_MAC);
        let tagged_nh = Nexthop {
            vlan_id: 200,
            vlan_proto: 0x8100,
            ..untagged_nh
        };
        let ad_nh = Nexthop {
            vlan_id: 300,
            vlan_proto: 0x88a8,
            ..untagged_nh
        };
        fx.nexthop(1, untagged_nh);
        fx.nexthop(2, tagged_nh);
        fx.nexthop(3, ad_nh);
        fx.route4("198.51.100.0/24", nh(1));
        fx.route4("203.0.113.0/24", nh(2));
        fx.route4("192.0.2.128/25", nh(3));
        let to_untagged = DST;
        let to_tagged = Ipv4Addr::new(203, 0, 113, 5);
        let to_ad = Ipv4Addr::new(192, 0, 2, 200);
        let cases = [
            ("push", Tagging::Untagged, to_tagged, Some((0x8100, 200))),
            ("pop", Tagging::Dot1q(10), to_untagged, None),
            (
                "rewrite",
                Tagging::Dot1q(10),
                to_tagged,
                Some((0x8100, 200)),
            ),
            (
                "802.1ad in, untagged out",
                Tagging::QinQ(100, 10),
                to_untagged,
                None,
            ),
            (
                "802.1ad in, tagged out",
                Tagging::QinQ(100, 10),
                to_tagged,
                Some((0x8100, 200)),
            ),
            ("802.1ad out", Tagging::Untagged, to_ad, Some((0x88a8, 300))),
        ];
        for (what, tagging, dst, expected_tag) in cases {
            let input = frames::udp4(tagging, SRC, dst, 64, 1, 2);
            let out = fx.run(&input);
            assert_eq!(out.action, XDP_REDIRECT, "{what}");
            assert_eq!(frames::egress_tag(&out.frame), expected_tag, "{what}");
            let in_l3 = frames::l3_offset(tagging);
            let out_l3 = if expected_tag.is_some() { 18 } else { 14 };
            assert_eq!(
                out.frame.len() as isize - input.len() as isize,
                out_l3 as isize - in_l3 as isize,
                "{what}"
            );
            let used = if dst == to_tagged {
                tagged_nh
            } else if dst == to_ad {
                ad_nh
            } else {
                untagged_nh
            };
            assert_forwarded_v4(&input, &out.frame, in_l3, out_l3, &used);
        }
    });
}

#[test]
fn a_packet_larger_than_the_egress_mtu_passes() {
    require_root!();
    with_datapath("dp-mtu", |fx| {
        fx.nexthop(
            1,
            Nexthop {
                mtu: 48,
                ..resolved(LOOPBACK, NH_MAC)
            },
        );
        fx.route4("198.51.100.0/24", nh(1));
        let input = frames::udp4(Tagging::Untagged, SRC, DST, 64, 1, 2);
        assert!(input.len() - 14 > 48);
        let out = fx.run(&input);
        assert_eq!(out.action, XDP_PASS);
        assert_eq!(out.frame, input);
        assert_eq!(fx.counter(Counter::PassMtu), 1);
    });
}

#[test]
fn an_egress_missing_from_the_devmap_leaves_the_packet_byte_identical() {
    require_root!();
    with_datapath("dp-devmap", |fx| {
        fx.nexthop(
            1,
            Nexthop {
                vlan_id: 5,
                vlan_proto: 0x8100,
                ..resolved(4242, NH_MAC)
            },
        );
        fx.route4("198.51.100.0/24", nh(1));
        for tagging in [Tagging::Untagged, Tagging::Dot1q(9), Tagging::QinQ(1, 2)] {
            let input = frames::udp4(tagging, SRC, DST, 64, 1, 2);
            let out = fx.run(&input);
            assert_eq!(out.action, XDP_PASS);
            assert_eq!(out.frame, input, "{tagging:?}");
        }
        assert_eq!(fx.counter(Counter::PassDevmapMiss), 3);
    });
}

#[test]
fn dry_run_counts_what_would_happen_and_passes_everything() {
    require_root!();
    with_datapath("dp-dry", |fx| {
        fx.config(Config {
            flags: CFG_F_DRY_RUN,
            ..Default::default()
        });
        fx.nexthop(1, resolved(LOOPBACK, NH_MAC));
        fx.route4("198.51.100.0/24", nh(1));
        fx.route4("203.0.113.0/24", RouteAction::simple(RouteKind::Blackhole));
        let forward = frames::udp4(Tagging::Untagged, SRC, DST, 64, 1, 2);
        let drop = frames::udp4(
            Tagging::Untagged,
            SRC,
            Ipv4Addr::new(203, 0, 113, 1),
            64,
            1,
            2,
        );
        for input in [&forward, &drop] {
            let out = fx.run(input);
            assert_eq!(out.action, XDP_PASS);
            assert_eq!(&out.frame, input);
        }
        assert_eq!(fx.counter(Counter::WouldRedirect), 1);
        assert_eq!(fx.counter(Counter::WouldDrop), 1);
        assert_eq!(fx.counter(Counter::PassDryRun), 2);
        assert_eq!(fx.counter(Counter::RedirectCache), 0);
        assert_eq!(fx.counter(Counter::DropBlackhole), 0);
    });
}

#[test]
fn cache_only_mode_passes_a_miss_and_fib_only_mode_skips_the_cache() {
    require_root!();
    with_datapath("dp-modes", |fx| {
        fx.nexthop(1, resolved(LOOPBACK, NH_MAC));
        fx.route4("198.51.100.0/24", nh(1));
        let miss = frames::udp4(
            Tagging::Untagged,
            SRC,
            Ipv4Addr::new(203, 0, 113, 1),
            64,
            1,
            2,
        );
        let hit = frames::udp4(Tagging::Untagged, SRC, DST, 64, 1, 2);

        fx.config(Config {
            mode: Mode::CacheOnly as u32,
            ..Default::default()
        });
        assert_eq!(fx.run(&miss).action, XDP_PASS);
        assert_eq!(fx.counter(Counter::PassCacheOnlyMiss), 1);
        assert_eq!(fx.counter(Counter::FibLookups), 0);

        fx.config(Config {
            mode: Mode::FibOnly as u32,
            ..Default::default()
        });
        // This namespace's kernel has no route: the fib lookup declines.
        assert_eq!(fx.run(&hit).action, XDP_PASS);
        assert_eq!(fx.counter(Counter::FibLookups), 1);
        assert_eq!(fx.counter(Counter::CacheHit), 0);
    });
}

#[test]
fn a_stale_heartbeat_skips_the_cache() {
    require_root!();
    with_datapath("dp-failsafe", |fx| {
        fx.nexthop(1, resolved(LOOPBACK, NH_MAC));
        fx.route4("198.51.100.0/24", nh(1));
        fx.config(Config {
            heartbeat_ns: 0,
            stale_after_ns: 1,
            ..Default::default()
        });
        let out = fx.run(&frames::udp4(Tagging::Untagged, SRC, DST, 64, 1, 2));
        assert_eq!(out.action, XDP_PASS, "no kernel route in this namespace");
        assert_eq!(fx.counter(Counter::FailSafe), 1);
        assert_eq!(fx.counter(Counter::FibLookups), 1);
        assert_eq!(fx.counter(Counter::CacheHit), 0);
    });
}

#[test]
fn an_unresolved_nexthop_falls_back_to_the_kernel() {
    require_root!();
    with_datapath("dp-unres", |fx| {
        fx.nexthop(
            1,
            Nexthop {
                flags: 0,
                ..resolved(LOOPBACK, NH_MAC)
            },
        );
        fx.route4("198.51.100.0/24", nh(1));
        assert_eq!(
            fx.run(&frames::udp4(Tagging::Untagged, SRC, DST, 64, 1, 2))
                .action,
            XDP_PASS
        );
        assert_eq!(fx.counter(Counter::NexthopUnresolved), 1);
        assert_eq!(fx.counter(Counter::FibLookups), 1);
    });
}

#[test]
fn a_failed_tail_call_passes_the_packet_and_is_counted() {
    require_root!();
    with_datapath("dp-tail", |fx| {
        fx.nexthop(1, resolved(LOOPBACK, NH_MAC));
        fx.route4("198.51.100.0/24", nh(1));
        fx.datapath
            .maps
            .jump
            .clear_index(&pf_common::maps::FINALIZE_SLOT)
            .unwrap();
        let input = frames::udp4(Tagging::Untagged, SRC, DST, 64, 1, 2);
        let out = fx.run(&input);
        assert_eq!(out.action, XDP_PASS);
        assert_eq!(out.frame, input);
        assert_eq!(fx.counter(Counter::PassTailCallFailed), 1);
    });
}

fn ecmp_fixture(fx: &mut Fixture, weights: &[u32]) {
    let mut legs = Vec::new();
    for (i, &weight) in weights.iter().enumerate() {
        let id = i as u32 + 1;
        fx.nexthop(id, resolved(LOOPBACK, [2, 0, 0, 0, 0, id as u8]));
        legs.push(Leg {
            nexthop_id: id,
            weight,
        });
    }
    let group = build_group(&legs).unwrap();
    fx.datapath.maps.write_group(1, 1, &group).unwrap();
    fx.route4("198.51.100.0/24", RouteAction::new(RouteKind::Group, 1));
}

fn leg_of(fx: &Fixture, frame: &[u8]) -> u8 {
    let out = fx.run(frame);
    assert_eq!(out.action, XDP_REDIRECT);
    out.frame[5]
}

#[test]
fn ecmp_spreads_flows_evenly_over_equal_legs_within_ten_percent() {
    require_root!();
    with_datapath("dp-ecmp", |fx| {
        ecmp_fixture(fx, &[1, 1, 1, 1]);
        let flows = 4000;
        let mut per_leg = [0u32; 5];
        for i in 0..flows {
            let frame = frames::udp4(Tagging::Untagged, SRC, DST, 64, 10_000 + i as u16, 53);
            per_leg[leg_of(fx, &frame) as usize] += 1;
        }
        for (leg, &count) in per_leg.iter().enumerate().skip(1) {
            let share = count as f64 / flows as f64;
            assert!(
                (share - 0.25).abs() < 0.025,
                "leg {leg} got {count} of {flows} flows"
            );
        }
    });
}

#[test]
fn ecmp_weights_set_each_legs_share_of_flows() {
    require_root!();
    with_datapath("dp-ecmpw", |fx| {
        ecmp_fixture(fx, &[3, 1]);
        let flows = 4000;
        let heavy = (0..flows)
            .filter(|i| {
                leg_of(
                    fx,
                    &frames::udp4(Tagging::Untagged, SRC, DST, 64, 20_000 + *i as u16, 53),
                ) == 1
            })
            .count();
        let share = heavy as f64 / flows as f64;
        assert!(
            (share - 0.75).abs() < 0.03,
            "the weight-3 leg got {share:.3} of flows"
        );
    });
}

#[test]
fn a_flow_always_takes_the_same_leg_and_the_leg_is_the_one_the_shared_hash_predicts() {
    require_root!();
    with_datapath("dp-sticky", |fx| {
        ecmp_fixture(fx, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let group = *fx.datapath.maps.groups.get(&1, 0).as_ref().unwrap();
        for v in &TEST_VECTORS {
            fx.config(Config {
                hash_seed: v.seed,
                ..Default::default()
            });
            let dst = Ipv4Addr::new(198, 51, 100, v.daddr[3]);
            let frame = match v.proto {
                6 => frames::tcp4(v.saddr.into(), dst, v.sport, v.dport),
                17 => frames::udp4(Tagging::Untagged, v.saddr.into(), dst, 64, v.sport, v.dport),
                _ => frames::icmp4(v.saddr.into(), dst),
            };
            let hash = flow_hash_v4(
                v.seed,
                u32::from_be_bytes(v.saddr),
                u32::from(dst),
                v.proto,
                v.sport,
                v.dport,
            );
            let predicted = group.buckets[bucket_of(hash, group.bucket_count) as usize];
            let first = leg_of(fx, &frame);
            assert_eq!(
                first as u32, predicted,
                "datapath and sidecar disagree on {:?}",
                v.saddr
            );
            for _ in 0..20 {
                assert_eq!(leg_of(fx, &frame), first, "the flow moved");
            }
        }
    });
}

/// A router namespace with a kernel route to 203.0.113.0/24 via
/// 198.51.100.2 on `r1`, entered by `body` with the ifindexes of r0 and r1.
fn with_kernel_route(
    tag: &str,
    resolve_neighbour: bool,
    body: impl FnOnce(&mut Fixture, u32, u32) + Send,
) {
    let router = NetNs::new(tag);
    let peer_in = NetNs::new(&format!("{tag}-in"));
    let peer_out = NetNs::new(&format!("{tag}-out"));
    veth_pair(&router, "r0", &peer_in, "c0");
    veth_pair(&router, "r1", &peer_out, "s0");
    router.ip(&["addr", "add", "192.0.2.1/24", "dev", "r0"]);
    router.ip(&["addr", "add", "198.51.100.1/24", "dev", "r1"]);
    router.ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        "198.51.100.2",
        "dev",
        "r1",
    ]);
    router.exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    if resolve_neighbour {
        router.ip(&[
            "neigh",
            "add",
            "198.51.100.2",
            "lladdr",
            "02:bb:00:00:00:02",
            "dev",
            "r1",
            "nud",
            "permanent",
        ]);
    }
    let (r0, r1) = (router.ifindex("r0"), router.ifindex("r1"));
    router.enter(|| {
        let mut fx = Fixture::new();
        fx.datapath.maps.add_tx_port(r1).unwrap();
        body(&mut fx, r0, r1)
    });
}

#[test]
fn a_cache_miss_is_forwarded_with_the_kernels_fib_answer() {
    require_root!();
    with_kernel_route("dp-fib", true, |fx, r0, _r1| {
        let input = frames::udp4(
            Tagging::Untagged,
            SRC,
            Ipv4Addr::new(203, 0, 113, 9),
            64,
            1,
            2,
        );
        let out = fx.run_on(&input, r0);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(
            &out.frame[0..6],
            &[0x02, 0xbb, 0, 0, 0, 0x02],
            "the kernel neighbour's MAC"
        );
        assert_eq!(out.frame[14 + 8], 63);
        assert_eq!(frames::ones_complement_sum(&out.frame[14..34]), 0xffff);
        assert_eq!(fx.counter(Counter::RedirectFib), 1);
        assert_eq!(fx.counter(Counter::CacheMiss), 1);
    });
}

#[test]
fn a_cache_miss_with_an_unresolved_kernel_neighbour_passes() {
    require_root!();
    with_kernel_route("dp-noneigh", false, |fx, r0, _r1| {
        let input = frames::udp4(
            Tagging::Untagged,
            SRC,
            Ipv4Addr::new(203, 0, 113, 9),
            64,
            1,
            2,
        );
        let out = fx.run_on(&input, r0);
        assert_eq!(out.action, XDP_PASS);
        assert_eq!(out.frame, input);
        assert_eq!(fx.counter(Counter::PassFibNoNeigh), 1);
    });
}

#[test]
fn a_fib_answer_larger_than_the_egress_mtu_passes() {
    require_root!();
    with_kernel_route("dp-fibmtu", true, |fx, r0, _r1| {
        let mut input = frames::udp4(
            Tagging::Untagged,
            SRC,
            Ipv4Addr::new(203, 0, 113, 9),
            64,
            1,
            2,
        );
        input.resize(14 + 1600, 0);
        input[16..18].copy_from_slice(&1600u16.to_be_bytes());
        frames::fix_ipv4_checksum(&mut input, 14);
        let out = fx.run_on(&input, r0);
        assert_eq!(out.action, XDP_PASS);
        assert_eq!(fx.counter(Counter::PassFibFragNeeded), 1);
    });
}

#[test]
fn a_port_in_a_vrf_never_meets_the_route_cache() {
    require_root!();
    with_kernel_route("dp-vrf", true, |fx, r0, _r1| {
        // The cache answers 203.0.113.0/24 through another nexthop than
        // the kernel's: which of the two forwarded shows in the MAC.
        fx.nexthop(1, resolved(LOOPBACK, NH_MAC));
        fx.route4("203.0.113.0/24", nh(1));
        let untagged = frames::udp4(
            Tagging::Untagged,
            SRC,
            Ipv4Addr::new(203, 0, 113, 9),
            64,
            1,
            2,
        );
        let out = fx.run_on(&untagged, r0);
        assert_eq!((out.action, &out.frame[0..6]), (XDP_REDIRECT, &NH_MAC[..]));
        assert_eq!(fx.counter(Counter::CacheHit), 1);

        // r0 enslaved to a VRF: the lookup in its table (r0 is in none
        // here, so main's: the kernel's route) answers, never the cache.
        // Before 5.15 a test run arrives on loopback whatever `run_on`
        // asks (see `Fixture::run_on`): loopback is marked too.
        let mark = |fx: &mut Fixture, flags: u32| {
            for ifindex in [r0, LOOPBACK] {
                MapWriter::write_ingress(&mut fx.datapath.maps, ifindex, flags).unwrap();
            }
        };
        mark(fx, ING_F_VRF);
        let tagged = frames::udp4(
            Tagging::Dot1q(100),
            SRC,
            Ipv4Addr::new(203, 0, 113, 9),
            64,
            1,
            2,
        );
        for (frame, l3) in [(&untagged, 14), (&tagged, 18)] {
            let out = fx.run_on(frame, r0);
            assert_eq!(
                (out.action, &out.frame[0..6]),
                (XDP_REDIRECT, &[0x02, 0xbb, 0, 0, 0, 0x02][..]),
                "the kernel's neighbour, not the cache's nexthop"
            );
            assert_eq!(out.frame[14 + 8], frame[l3 + 8] - 1, "TTL decremented");
        }
        assert_eq!(fx.counter(Counter::CacheHit), 1);
        assert_eq!(fx.counter(Counter::FibVrf), 2);
        assert_eq!(fx.counter(Counter::RedirectFib), 2);

        // A VLAN of r0 in another VRF than r0: no frame of r0 can be
        // placed (an offloaded tag never reaches XDP), all go to the
        // kernel untouched.
        mark(fx, ING_F_VRF_KERNEL | ING_F_VRF);
        for frame in [&untagged, &tagged] {
            let out = fx.run_on(frame, r0);
            assert_eq!((out.action, &out.frame), (XDP_PASS, frame));
        }
        assert_eq!(fx.counter(Counter::PassVrfKernel), 2);

        // Out of every VRF: the cache again.
        mark(fx, 0);
        let out = fx.run_on(&untagged, r0);
        assert_eq!((out.action, &out.frame[0..6]), (XDP_REDIRECT, &NH_MAC[..]));
        assert_eq!(fx.counter(Counter::CacheHit), 2);
    });
}

/// What the kernel itself would forward: a well-formed unicast IP packet
/// with a routable destination, a sane source, a valid IPv4 header checksum
/// and hop limit above 1. Returns the IP header's offset and version.
/// Anything else the kernel drops or answers itself, so the fast path must
/// hand it over untouched.
fn kernel_would_forward(frame: &[u8]) -> Option<(usize, u8)> {
    let be16 = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    if frame.len() < 14 || frame[0] & 1 != 0 {
        return None;
    }
    let (mut ethertype, mut l3) = (be16(12), 14);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        if frame.len() < 18 {
            return None;
        }
        let outer = ethertype;
        (ethertype, l3) = (be16(16), 18);
        if outer == 0x88a8 && ethertype == 0x8100 {
            if frame.len() < 22 {
                return None;
            }
            (ethertype, l3) = (be16(20), 22);
        }
    }
    let ip = frame.get(l3..)?;
    match ethertype {
        0x0800 => {
            if ip.len() < 20 || ip[0] != 0x45 {
                return None;
            }
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
            let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
            let martian =
                |a: u32| a >> 24 == 0 || a >> 24 == 127 || a >> 28 == 0xe || a == u32::MAX;
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            let ok = (20..=ip.len()).contains(&total)
                && frames::ones_complement_sum(&ip[..20]) == 0xffff
                && !fragment
                && ip[8] > 1
                && !martian(src)
                && !martian(dst)
                && dst >> 16 != 0xa9fe;
            ok.then_some((l3, 4))
        }
        0x86dd => {
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return None;
            }
            let payload = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            let addr = |at: usize| u128::from_be_bytes(ip[at..at + 16].try_into().unwrap());
            let (src, dst) = (addr(8), addr(24));
            let special = |a: u128| a >> 120 == 0xff || a <= 1 || a >> 118 == 0xfe80 >> 6;
            let ok = 40 + payload <= ip.len()
                && ![0, 43, 44, 51, 60, 135, 139, 140].contains(&ip[6])
                && ip[7] > 1
                && !special(src)
                && !special(dst);
            ok.then_some((l3, 6))
        }
        _ => None,
    }
}

/// A valid frame of either family, any tagging, to a routed, blackholed or
/// unrouted destination, then zero to three random mutations: a byte
/// changed anywhere, a header field set to an edge value, the frame cut or
/// extended, sometimes with the IPv4 checksum recomputed so the mutation
/// reaches the deeper checks.
fn fuzzed_frame(rng: &mut integration_tests::synthetic::Rng) -> Vec<u8> {
    let tagging = *rng.pick(&[
        Tagging::Untagged,
        Tagging::Untagged,
        Tagging::Dot1q(100),
        Tagging::QinQ(300, 400),
    ]);
    let l3 = frames::l3_offset(tagging);
    let v4 = rng.next_u64().is_multiple_of(2);
    let mut frame = if v4 {
        let dst = *rng.pick(&[[198, 51, 100, 20], [203, 0, 113, 5], [192, 0, 2, 99]]);
        frames::udp4(tagging, SRC, dst.into(), 64, 1000, 53)
    } else {
        let dst = *rng.pick(&[DST6, "2001:db8:9::1".parse().unwrap()]);
        frames::udp6(tagging, SRC6, dst, 64, 1000, 53)
    };
    for _ in 0..rng.next_u64() % 4 {
        let len = frame.len();
        match rng.next_u64() % 8 {
            0 => {
                let at = (rng.next_u64() as usize) % len;
                frame[at] = rng.next_u64() as u8;
            }
            1 if len > l3 => {
                // A header byte of the IP header, where the checks are.
                let at = l3 + (rng.next_u64() as usize) % 40.min(len - l3);
                frame[at] = *rng.pick(&[0, 1, 2, 0x45, 0x46, 0x60, 0x7f, 0x80, 0xfe, 0xff]);
            }
            // No shorter than an Ethernet header: test runs refuse those,
            // and no device hands one to XDP.
            2 => frame.truncate(14 + (rng.next_u64() as usize) % (len - 13)),
            3 => frame.extend((0..rng.next_u64() % 64).map(|i| i as u8)),
            4 => frame[0] |= 1,
            5 if v4 && len >= l3 + 20 => frame[l3 + 8] = (rng.next_u64() % 3) as u8,
            6 if v4 && len >= l3 + 20 => {
                let total = (rng.next_u64() % 200) as u16;
                frame[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
            }
            7 if !v4 && len >= l3 + 40 => {
                let payload = (rng.next_u64() % 200) as u16;
                frame[l3 + 4..l3 + 6].copy_from_slice(&payload.to_be_bytes());
            }
            _ => {}
        }
        if v4 && frame.len() >= l3 + 20 && frame[l3] & 0x0f == 5 && rng.next_u64().is_multiple_of(2)
        {
            frames::fix_ipv4_checksum(&mut frame, l3);
        }
    }
    frame
}

#[test]
fn random_and_malformed_frames_are_passed_untouched_or_forwarded_well_formed() {
    require_root!();
    with_datapath("dp-fuzz", |fx| {
        let v4_hop = resolved(LOOPBACK, NH_MAC);
        let v6_hop = resolved(LOOPBACK, [0x02, 0xbb, 0, 0, 0, 0x06]);
        fx.nexthop(1, v4_hop);
        fx.nexthop(2, v6_hop);
        fx.route4("198.51.100.0/24", nh(1));
        fx.route4("203.0.113.0/24", RouteAction::simple(RouteKind::Blackhole));
        fx.route6("2001:db8:2::/48", nh(2));
        let mut rng = integration_tests::synthetic::Rng(0x5eed_f00d);
        let (mut redirected, mut dropped, mut passed) = (0, 0, 0);
        for case in 0..20_000 {
            let input = fuzzed_frame(&mut rng);
            let out = fx.run(&input);
            let verdict = kernel_would_forward(&input);
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            match out.action {
                XDP_PASS => {
                    passed += 1;
                    assert_eq!(
                        out.frame, input,
                        "case {case}: a passed frame changed: {hex}"
                    );
                }
                XDP_DROP => {
                    dropped += 1;
                    let (l3, version) = verdict.unwrap_or_else(|| {
                        panic!("case {case}: dropped a frame the kernel must see: {hex}")
                    });
                    assert!(
                        version == 4 && input[l3 + 16..l3 + 19] == [203, 0, 113],
                        "case {case}: dropped outside the blackhole: {hex}"
                    );
                }
                XDP_REDIRECT => {
                    redirected += 1;
                    let (l3, version) = verdict.unwrap_or_else(|| {
                        panic!(
                            "case {case}: redirected a frame the kernel would not forward: {hex}"
                        )
                    });
                    let hop = if version == 4 { &v4_hop } else { &v6_hop };
                    let o = &out.frame;
                    assert_eq!(
                        o.len() + l3 - 14,
                        input.len(),
                        "case {case}: the tags come off: {hex}"
                    );
                    assert_eq!(&o[0..6], &hop.dmac, "case {case}");
                    assert_eq!(&o[6..12], &hop.smac, "case {case}");
                    if version == 4 {
                        assert_eq!(&o[12..14], &[0x08, 0x00], "case {case}");
                        assert_eq!(o[14 + 8], input[l3 + 8] - 1, "case {case}: TTL");
                        assert_eq!(
                            frames::ones_complement_sum(&o[14..34]),
                            0xffff,
                            "case {case}: checksum: {hex}"
                        );
                    } else {
                        assert_eq!(&o[12..14], &[0x86, 0xdd], "case {case}");
                        assert_eq!(o[14 + 7], input[l3 + 7] - 1, "case {case}: hop limit");
                    }
                    let skip = if version == 4 {
                        [8usize, 10, 11]
                    } else {
                        [7, 7, 7]
                    };
                    for (i, (a, b)) in input[l3..].iter().zip(&o[14..]).enumerate() {
                        if !skip.contains(&i) {
                            assert_eq!(
                                a, b,
                                "case {case}: byte {i} of the IP packet changed: {hex}"
                            );
                        }
                    }
                }
                other => panic!("case {case}: action {other}"),
            }
        }
        println!("redirected {redirected}, dropped {dropped}, passed {passed}");
        // The generator must reach every outcome, or the test proves little.
        assert!(
            redirected > 2_000 && dropped > 500 && passed > 2_000,
            "redirected {redirected}, dropped {dropped}, passed {passed}"
        );
    });
}
