use std::net::{IpAddr, Ipv4Addr};

use super::fake::FakeMaps;
use super::*;
use pf_common::layout::{ING_F_VRF, ING_F_VRF_KERNEL};

const ETH0: u32 = 2;
const ETH1: u32 = 3;
const GW_A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const GW_B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

fn programmer(nexthops: u32) -> Programmer<FakeMaps> {
    let mut p = Programmer::new(
        FakeMaps::new(),
        Limits {
            nexthops,
            ecmp_groups: 8,
        },
    );
    for ifindex in [ETH0, ETH1] {
        p.set_link(ifindex, plain(ifindex));
    }
    p
}

fn via(gateway: IpAddr) -> Target {
    Target::Forward(vec![Leg {
        ifindex: ETH0,
        gateway: Some(gateway),
        weight: 1,
    }])
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn a_route_via_a_resolved_gateway_forwards_with_the_neighbours_mac() {
    let mut p = programmer(16);
    p.set_neighbour(ETH0, GW_A, Some(MAC_A));
    p.upsert(net("198.51.100.0/24"), &via(GW_A));
    let (action, nexthop) = p.writer().lookup_v4(v4("198.51.100.7"));
    assert_eq!(action.kind(), Some(RouteKind::Nexthop));
    let nexthop = nexthop.unwrap();
    assert!(nexthop.is_resolved());
    assert_eq!(nexthop.dmac, MAC_A);
    assert_eq!(nexthop.smac, [2, 0, 0, 0, 1, ETH0 as u8]);
    assert_eq!((nexthop.tx_ifindex, nexthop.mtu), (ETH0, 1500));
}

#[test]
fn a_gateway_without_a_neighbour_is_programmed_unresolved_and_resolves_later() {
    let mut p = programmer(16);
    p.upsert(net("198.51.100.0/24"), &via(GW_A));
    assert!(!p
        .writer()
        .lookup_v4(v4("198.51.100.7"))
        .1
        .unwrap()
        .is_resolved());
    p.set_neighbour(ETH0, GW_A, Some(MAC_A));
    assert_eq!(
        p.writer().lookup_v4(v4("198.51.100.7")).1.unwrap().dmac,
        MAC_A
    );
}

#[test]
fn routes_sharing_a_gateway_share_one_nexthop_entry() {
    let mut p = programmer(16);
    for i in 0..200u32 {
        let prefix = Ipv4Net::new(Ipv4Addr::from(0xcb00_0000 | (i << 8)), 24).unwrap();
        p.upsert(IpNet::V4(prefix), &via(GW_A));
    }
    assert_eq!(p.nexthops_in_use(), 1);
    assert_eq!(
        p.writer()
            .log
            .iter()
            .filter(|l| l.starts_with("nexthop"))
            .count(),
        1
    );
}

#[test]
fn a_neighbour_change_rewrites_the_nexthop_alone_and_touches_no_route() {
    let mut p = programmer(16);
    p.set_neighbour(ETH0, GW_A, Some(MAC_A));
    p.upsert(net("198.51.100.0/24"), &via(GW_A));
    p.upsert(net("203.0.113.0/24"), &via(GW_A));
    p.writer_mut().log.clear();
    p.set_neighbour(ETH0, GW_A, Some(MAC_B));
    assert_eq!(p.writer().log.len(), 1, "{:?}", p.writer().log);
    assert!(p.writer().log[0].starts_with("nexthop"));
    assert_eq!(
        p.writer().lookup_v4(v4("203.0.113.1")).1.unwrap().dmac,
        MAC_B
    );
    p.set_neighbour(ETH0, GW_A, None);
    assert!(!p
        .writer()
        .lookup_v4(v4("203.0.113.1"))
        .1
        .unwrap()
        .is_resolved());
}

#[test]
fn a_changed_nexthop_is_written_to_a_fresh_slot_and_the_old_slot_waits_for_reclaim() {
    let mut p = programmer(2); // one usable id, so two slots
    p.set_neighbour(ETH0, GW_A, Some(MAC_A));
    p.upsert(net("198.51.100.0/24"), &via(GW_A));
    let first_slot = p.writer().nh_ptr[&1];
    p.set_neighbour(ETH0, GW_A, Some(MAC_B));
    let second_slot = p.writer().nh_ptr[&1];
    assert_ne!(
        first_slot, second_slot,
        "the old slot is still readable while the pointer flips"
    );
    assert_eq!(
        p.writer().nexthops[&first_slot].dmac,
        MAC_A,
        "the old slot is left as it was"
    );
    p.reclaim();
    p.reclaim();
    p.set_neighbour(ETH0, GW_A, Some(MAC_A));
    assert_eq!(
        p.writer().nh_ptr[&1],
        first_slot,
        "reused after a full grace period"
    );
}

#[test]
fn a_neighbour_flapping_faster_than_grace_periods_parks_its_nexthop_and_never_rewrites_a_live_slot()
{
    let mut p = programmer(2); // one usable id, so two slots
    p.set_neighbour(ETH0, GW_A, Some(MAC_A));
    p.upsert(net("198.51.100.0/24"), &via(GW_A));
    let mut live = p.writer().nh_ptr[&1];
    p.writer_mut().log.clear();
    for flap in 0..6 {
        let mac = if flap % 2 == 0 { MAC_B } else { MAC_A };
        p.set_neighbour(ETH0, GW_A, Some(mac));
        for write in p.writer_mut().log.drain(..) {
            assert_ne!(
                write,
                format!("nexthop 1 slot {live}"),
                "the slot the datapath reads was rewritten in place"
            );
        }
        live = p.writer().nh_ptr[&1];
    }
    assert_eq!(live, PARKED_SLOT, "no slot is free before a reclaim");
    assert!(!p.writer().nexthops[&PARKED_SLOT].is_resolved());
    assert_eq!(p.stats.nexthops_parked, 1);
    p.reclaim();
    p.reclaim();
    let slot = p.writer().nh_ptr[&1];
    assert_ne!(slot, PARKED_SLOT, "a reclaim gives the id a slot again");
    assert_eq!(
        p.writer().nexthops[&slot].dmac,
        MAC_A,
        "with the latest MAC"
    );
}

#[test]
fn a_route_change_writes_the_new_nexthop_before_the_route_points_at_it() {
    let mut p = programmer(16);
    p.upsert(net("198.51.100.0/24"), &via(GW_A));
    p.writer_mut().log.clear();
    p.upsert(net("198.51.100.0/24"), &via(GW_B));
    assert_eq!(
        p.writer().log,
        vec![
            "nexthop 2 slot 3".to_string(),
            "route 198.51.100.0/24".to_string()
        ]
    );
    assert_eq!(p.nexthops_in_use(), 1, "the old gateway is released");
}

#[test]
fn multipath_routes_become_weighted_groups_and_equal_leg_sets_share_a_group() {
    let mut p = programmer(16);
    let legs = Target::Forward(vec![
        Leg {
            ifindex: ETH0,
            gateway: Some(GW_A),
            weight: 3,
        },
        Leg {
            ifindex: ETH1,
            gateway: Some(GW_B),
            weight: 1,
        },
    ]);
    p.upsert(net("198.51.100.0/24"), &legs.clone());
    p.upsert(net("203.0.113.0/24"), &legs);
    assert_eq!(p.groups_in_use(), 1);
    assert_eq!(p.nexthops_in_use(), 2);
    let action = p.writer().lookup_v4(v4("203.0.113.1")).0;
    assert_eq!(action.kind(), Some(RouteKind::Group));
    let slot = p.writer().grp_ptr[&action.index()];
    let group = p.writer().groups[&slot];
    let heavy = p
        .nexthop_id(&NexthopKey {
            ifindex: ETH0,
            gateway: GW_A,
        })
        .unwrap();
    assert_eq!(group.buckets.iter().filter(|&&b| b == heavy).count(), 192);
    p.remove(net("198.51.100.0/24"));
    p.remove(net("203.0.113.0/24"));
    assert_eq!((p.groups_in_use(), p.nexthops_in_use()), (0, 0));
}

#[test]
fn when_nexthop_ids_run_out_the_route_defers_to_the_kernel_and_is_counted() {
    let mut p = programmer(2); // ids 1..2: one nexthop
    p.upsert(net("198.51.100.0/24"), &via(GW_A));
    p.upsert(net("203.0.113.0/24"), &via(GW_B));
    assert_eq!(
        p.writer().lookup_v4(v4("203.0.113.1")).0.kind(),
        Some(RouteKind::Fib)
    );
    assert_eq!(p.stats.overflow_nexthops, 1);
    assert_eq!(
        p.writer().lookup_v4(v4("198.51.100.1")).0.kind(),
        Some(RouteKind::Nexthop)
    );
}

#[test]
fn an_on_link_route_is_left_to_the_kernels_neighbour_lookup() {
    let mut p = programmer(16);
    p.upsert(
        net("198.51.100.0/24"),
        &Target::Forward(vec![Leg {
            ifindex: ETH0,
            gateway: None,
            weight: 1,
        }]),
    );
    assert_eq!(
        p.writer().lookup_v4(v4("198.51.100.9")).0.kind(),
        Some(RouteKind::Fib)
    );
    assert_eq!(p.nexthops_in_use(), 0);
}

#[test]
fn removing_a_route_hands_its_addresses_back_to_the_covering_route() {
    let mut p = programmer(16);
    p.upsert(net("198.51.0.0/16"), &via(GW_A));
    p.upsert(net("198.51.100.0/24"), &Target::Blackhole);
    p.upsert(net("198.51.100.128/25"), &Target::Unreachable);
    assert_eq!(
        p.writer().lookup_v4(v4("198.51.100.200")).0.kind(),
        Some(RouteKind::Unreachable)
    );
    p.remove(net("198.51.100.128/25"));
    assert_eq!(
        p.writer().lookup_v4(v4("198.51.100.200")).0.kind(),
        Some(RouteKind::Blackhole)
    );
    p.remove(net("198.51.100.0/24"));
    assert_eq!(
        p.writer().lookup_v4(v4("198.51.100.200")).0.kind(),
        Some(RouteKind::Nexthop)
    );
    p.remove(net("198.51.0.0/16"));
    assert_eq!(
        p.writer().lookup_v4(v4("198.51.100.200")),
        (RouteAction::MISS, None)
    );
    assert_eq!(p.nexthops_in_use(), 0);
}

#[test]
fn a_vlan_egress_sends_out_of_the_parent_with_the_tag() {
    let mut p = programmer(16);
    p.set_link(
        10,
        Some(LinkInfo {
            mac: [2, 0, 0, 0, 0, 10],
            mtu: 1496,
            up: true,
            vlan: Some((100, 0x8100, ETH0)),
            master: 0,
            vrf_table: None,
        }),
    );
    p.set_neighbour(10, GW_A, Some(MAC_A));
    p.upsert(
        net("198.51.100.0/24"),
        &Target::Forward(vec![Leg {
            ifindex: 10,
            gateway: Some(GW_A),
            weight: 1,
        }]),
    );
    let nexthop = p.writer().lookup_v4(v4("198.51.100.1")).1.unwrap();
    assert_eq!(
        (
            nexthop.tx_ifindex,
            nexthop.vlan_id,
            nexthop.vlan_proto,
            nexthop.mtu
        ),
        (ETH0, 100, 0x8100, 1496)
    );
}

fn vlan(id: u16, tpid: u16, parent: u32) -> Option<LinkInfo> {
    Some(LinkInfo {
        mac: [2, 0, 0, 0, 0, id as u8],
        mtu: 1500,
        up: true,
        vlan: Some((id, tpid, parent)),
        master: 0,
        vrf_table: None,
    })
}

#[test]
fn a_vlan_device_is_a_port_for_the_fib_path_until_it_goes() {
    let mut p = programmer(16);
    p.set_link(10, vlan(100, 0x8100, ETH0));
    let port = p.writer().ports[&10];
    assert_eq!(
        (port.tx_ifindex, port.vlan_id, port.vlan_proto, port.flags),
        (ETH0, 100, 0x8100, PORT_F_VLAN)
    );
    // Renumbered: the port follows.
    p.set_link(10, vlan(101, 0x88a8, ETH1));
    let port = p.writer().ports[&10];
    assert_eq!(
        (port.tx_ifindex, port.vlan_id, port.vlan_proto),
        (ETH1, 101, 0x88a8)
    );
    // No longer a VLAN, then gone.
    p.set_link(
        10,
        Some(LinkInfo {
            vlan: None,
            master: 0,
            vrf_table: None,
            ..vlan(101, 0x88a8, ETH1).unwrap()
        }),
    );
    assert!(!p.writer().ports.contains_key(&10));
    p.set_link(10, vlan(100, 0x8100, ETH0));
    p.set_link(10, None);
    assert!(!p.writer().ports.contains_key(&10));
    // A plain link is no port of this kind.
    assert!(!p.writer().ports.contains_key(&ETH0));
}

#[test]
fn a_vlan_on_a_vlan_needs_two_tags_and_stays_out_of_the_ports() {
    let mut p = programmer(16);
    p.set_link(20, vlan(200, 0x88a8, ETH0));
    p.set_link(21, vlan(300, 0x8100, 20));
    assert!(p.writer().ports.contains_key(&20));
    assert!(
        !p.writer().ports.contains_key(&21),
        "one tag cannot carry 802.1ad + 802.1Q: the kernel sends it"
    );
}

const VRF_BLUE: u32 = 40;

fn vrf_device(table: u32) -> Option<LinkInfo> {
    Some(LinkInfo {
        mac: [2, 0, 0, 0, 0, 40],
        mtu: 65575,
        up: true,
        vlan: None,
        master: 0,
        vrf_table: Some(table),
    })
}

fn enslaved(link: Option<LinkInfo>, master: u32) -> Option<LinkInfo> {
    link.map(|l| LinkInfo { master, ..l })
}

fn plain(ifindex: u32) -> Option<LinkInfo> {
    Some(LinkInfo {
        mac: [2, 0, 0, 0, 1, ifindex as u8],
        mtu: 1500,
        up: true,
        vlan: None,
        master: 0,
        vrf_table: None,
    })
}

#[test]
fn a_port_enslaved_to_a_vrf_is_marked_for_the_datapath_until_it_is_released() {
    let mut p = programmer(16);
    p.set_link(VRF_BLUE, vrf_device(10));
    assert!(
        p.writer().ingress.is_empty(),
        "a VRF with no ports marks nothing"
    );
    p.set_link(ETH1, enslaved(plain(ETH1), VRF_BLUE));
    assert_eq!(p.writer().ingress.get(&ETH1), Some(&ING_F_VRF));
    assert_eq!(
        p.writer().ingress.get(&ETH0),
        None,
        "ETH0 stays in the main table"
    );
    // Released: back to the route cache.
    p.set_link(ETH1, plain(ETH1));
    assert!(p.writer().ingress.is_empty());
    // Enslaved again, then the VRF device goes: the port is in no VRF.
    p.set_link(ETH1, enslaved(plain(ETH1), VRF_BLUE));
    p.set_link(VRF_BLUE, None);
    assert!(p.writer().ingress.is_empty());
}

#[test]
fn a_master_that_is_not_a_vrf_leaves_the_port_on_the_route_cache() {
    let mut p = programmer(16);
    p.set_link(41, plain(41)); // a bridge or a bond: no table of its own
    p.set_link(ETH1, enslaved(plain(ETH1), 41));
    assert!(p.writer().ingress.is_empty());
}

#[test]
fn a_vlan_in_another_vrf_than_its_port_sends_the_port_to_the_kernel() {
    let mut p = programmer(16);
    p.set_link(VRF_BLUE, vrf_device(10));
    p.set_link(10, vlan(100, 0x8100, ETH0));
    p.set_link(20, vlan(200, 0x88a8, ETH1));
    p.set_link(21, enslaved(vlan(300, 0x8100, 20), VRF_BLUE));
    assert_eq!(
        p.writer().ingress.get(&ETH1),
        Some(&ING_F_VRF_KERNEL),
        "the inner VLAN of a QinQ stack marks the physical port"
    );
    assert_eq!(p.writer().ingress.get(&ETH0), None);
    // Port and VLAN in the same VRF: the VRF's table answers for both.
    p.set_link(10, enslaved(vlan(100, 0x8100, ETH0), VRF_BLUE));
    p.set_link(ETH0, enslaved(plain(ETH0), VRF_BLUE));
    assert_eq!(p.writer().ingress.get(&ETH0), Some(&ING_F_VRF));
    // The VLAN leaves the VRF, the port stays: they differ.
    p.set_link(10, vlan(100, 0x8100, ETH0));
    assert_eq!(
        p.writer().ingress.get(&ETH0),
        Some(&(ING_F_VRF | ING_F_VRF_KERNEL))
    );
    p.set_link(10, None);
    assert_eq!(p.writer().ingress.get(&ETH0), Some(&ING_F_VRF));
    p.set_link(21, None);
    assert_eq!(p.writer().ingress.get(&ETH1), None);
}

#[test]
fn a_vlan_loop_in_bad_input_ends_the_walk() {
    let mut p = programmer(16);
    p.set_link(VRF_BLUE, vrf_device(10));
    p.set_link(30, vlan(1, 0x8100, 31));
    p.set_link(31, enslaved(vlan(2, 0x8100, 30), VRF_BLUE));
    // Whichever end the walk stops at, nothing but the loop is marked, and
    // only to go to the kernel.
    assert!(p.writer().ingress.len() <= 2);
    assert!(p
        .writer()
        .ingress
        .iter()
        .all(|(i, f)| [30, 31].contains(i) && *f == ING_F_VRF_KERNEL));
}

#[test]
fn a_link_going_down_unresolves_its_nexthops() {
    let mut p = programmer(16);
    p.set_neighbour(ETH0, GW_A, Some(MAC_A));
    p.upsert(net("198.51.100.0/24"), &via(GW_A));
    p.set_link(
        ETH0,
        Some(LinkInfo {
            mac: [2, 0, 0, 0, 1, ETH0 as u8],
            mtu: 1500,
            up: false,
            vlan: None,
            master: 0,
            vrf_table: None,
        }),
    );
    assert!(!p
        .writer()
        .lookup_v4(v4("198.51.100.1"))
        .1
        .unwrap()
        .is_resolved());
}

fn gw6() -> Target {
    Target::Forward(vec![Leg {
        ifindex: ETH0,
        gateway: Some("2001:db8::1".parse().unwrap()),
        weight: 1,
    }])
}

fn a48(i: u32) -> IpNet {
    net(&format!("2001:db8:{i:x}::/48"))
}

/// Fills the slot of 2001:db8::/32 with /48s until one is deferred;
/// returns how many were written.
fn fill_v6_slot(p: &mut Programmer<FakeMaps>) -> u32 {
    for i in 1..200 {
        p.upsert(a48(i), &Target::Blackhole);
        p.end_batch();
        if p.programmed(&a48(i)).is_some_and(|(_, deferred)| deferred) {
            return i;
        }
    }
    panic!("the trie never filled up");
}

#[test]
fn when_the_ipv6_trie_is_full_its_slot_defers_to_the_kernel_until_room_returns() {
    let mut p = programmer(16);
    *p.writer_mut() = FakeMaps::with_v6_room(24, 24);
    p.upsert(net("2001:db8::/32"), &gw6());
    p.upsert(net("2001:db8:4000::/34"), &Target::Unreachable);
    let full_at = fill_v6_slot(&mut p);
    let at = |p: &Programmer<FakeMaps>, s: &str| p.writer().lookup_v6(s.parse().unwrap());
    assert_eq!(
        at(&p, &format!("2001:db8:{full_at:x}::9")).kind(),
        Some(RouteKind::Fib)
    );
    assert_eq!(
        at(&p, "2001:db8:ffff::9").kind(),
        Some(RouteKind::Fib),
        "the /32 must not answer while a longer prefix under it is missing"
    );
    assert_eq!(
        at(&p, "2001:4db8::1"),
        RouteAction::MISS,
        "other slots answer"
    );
    // Every prefix of the slot is the kernel's now, and says so.
    let in_slot = full_at + 2;
    assert_eq!(p.stats.deferred_v6, u64::from(in_slot));
    assert_eq!(p.stats.overflow_v6_routes, u64::from(in_slot));
    assert_eq!(
        p.programmed(&net("2001:db8::/32")).map(|(_, d)| d),
        Some(true)
    );
    // An update inside the deferred slot stays deferred, counted once.
    p.upsert(a48(1), &Target::Prohibit);
    assert_eq!(p.stats.deferred_v6, u64::from(in_slot));
    // Room comes back once enough is removed and a grace period passed.
    for i in 2..=full_at {
        p.remove(a48(i));
    }
    p.reclaim();
    p.reclaim();
    assert_eq!(p.stats.deferred_v6, 0);
    assert_eq!(at(&p, "2001:db8:1::9").kind(), Some(RouteKind::Prohibit));
    assert_eq!(at(&p, "2001:db8:ffff::9").kind(), Some(RouteKind::Nexthop));
    assert_eq!(
        at(&p, "2001:db8:4000::1").kind(),
        Some(RouteKind::Unreachable)
    );
    assert_eq!(
        p.programmed(&net("2001:db8::/32")).map(|(_, d)| d),
        Some(false)
    );
}

#[test]
fn a_slot_deferred_by_the_writer_thread_defers_every_prefix_in_it_at_the_batch_end() {
    let mut p = programmer(16);
    *p.writer_mut() = FakeMaps::with_v6_room(24, 24);
    p.writer_mut().queue_v6 = true;
    p.upsert(net("2001:db8::/32"), &gw6());
    let full_at = fill_v6_slot(&mut p);
    for i in 1..=full_at {
        assert_eq!(p.programmed(&a48(i)).map(|(_, d)| d), Some(true), "/48 {i}");
    }
    assert_eq!(p.stats.deferred_v6, u64::from(full_at + 1));
    for i in 1..=full_at {
        p.remove(a48(i));
    }
    p.reclaim();
    p.reclaim();
    assert_eq!(p.stats.deferred_v6, 0);
    assert_eq!(
        p.writer()
            .lookup_v6("2001:db8:1::1".parse().unwrap())
            .kind(),
        Some(RouteKind::Nexthop)
    );
}

#[test]
fn every_nexthop_id_records_the_gateway_it_stands_for() {
    let mut p = programmer(16);
    let gw6: IpAddr = "2001:db8::1".parse().unwrap();
    p.upsert(net("198.51.100.0/24"), &via(GW_A));
    p.upsert(
        net("2001:db8:5::/48"),
        &Target::Forward(vec![Leg {
            ifindex: ETH1,
            gateway: Some(gw6),
            weight: 1,
        }]),
    );
    for key in [
        NexthopKey {
            ifindex: ETH0,
            gateway: GW_A,
        },
        NexthopKey {
            ifindex: ETH1,
            gateway: gw6,
        },
    ] {
        let id = p.nexthop_id(&key).unwrap();
        assert_eq!(nexthop_key(&p.writer().info[&id]), Some(key));
    }
}

#[test]
fn a_deferred_ipv4_block_gets_its_group_back_once_one_is_reclaimed() {
    deferred_block_gets_its_group_back(false);
}

#[test]
fn a_block_the_writer_thread_defers_is_counted_at_the_batch_end_and_gets_its_group_back() {
    deferred_block_gets_its_group_back(true);
}

#[test]
fn a_longer_prefix_removed_before_its_refusal_arrives_leaves_nothing_deferred() {
    let mut p = programmer(16);
    p.writer_mut().queue_v4 = true;
    for block in 1..=5 {
        p.upsert(net(&format!("10.0.{block}.1/32")), &via(GW_B));
    }
    p.remove(net("10.0.5.1/32"));
    p.end_batch();
    assert_eq!(p.stats.deferred_v4, 0);
    assert_eq!(
        p.writer().v4.deferred_blocks(),
        0,
        "the block answers again"
    );
    assert_eq!(p.writer().lookup_v4(v4("10.0.5.1")).0, RouteAction::MISS);
}

/// Five /24 blocks want a second-level group and the fake's table has four;
/// `queued`: the writer reports the refusal at the end of the batch, as
/// the daemon's writer thread does.
fn deferred_block_gets_its_group_back(queued: bool) {
    let mut p = programmer(16);
    p.writer_mut().queue_v4 = queued;
    p.upsert(net("10.0.0.0/8"), &via(GW_A));
    for block in 1..=5 {
        p.upsert(net(&format!("10.0.{block}.1/32")), &via(GW_B));
    }
    p.upsert(net("10.0.5.128/25"), &Target::Blackhole);
    p.end_batch();
    let action_at = |p: &Programmer<FakeMaps>, addr: &str| p.writer().lookup_v4(v4(addr)).0;
    assert_eq!(action_at(&p, "10.0.5.1").kind(), Some(RouteKind::Fib));
    assert_eq!(
        action_at(&p, "10.0.5.2").kind(),
        Some(RouteKind::Fib),
        "the /8 must not answer inside the deferred block"
    );
    assert_eq!(p.stats.deferred_v4, 2);

    p.remove(net("10.0.1.1/32"));
    p.reclaim();
    assert_eq!(
        action_at(&p, "10.0.5.1").kind(),
        Some(RouteKind::Fib),
        "the freed group is still in quarantine"
    );
    p.reclaim();
    let (gw_b, deferred) = p.programmed(&net("10.0.5.1/32")).unwrap();
    assert!(!deferred);
    assert_eq!(action_at(&p, "10.0.5.1"), gw_b);
    assert_eq!(
        action_at(&p, "10.0.5.2"),
        p.programmed(&net("10.0.0.0/8")).unwrap().0
    );
    assert_eq!(
        action_at(&p, "10.0.5.200").kind(),
        Some(RouteKind::Blackhole)
    );
    assert_eq!(p.stats.deferred_v4, 0);
    assert_eq!(p.writer().v4.deferred_blocks(), 0);
}

#[test]
fn the_ports_of_one_vrf_are_its_slaves_and_the_parents_of_its_vlans() {
    let mut p = programmer(16);
    p.set_link(VRF_BLUE, vrf_device(10));
    p.set_link(41, vrf_device(11));
    p.set_link(ETH0, enslaved(plain(ETH0), VRF_BLUE));
    p.set_link(20, vlan(200, 0x88a8, ETH0));
    p.set_link(21, enslaved(vlan(300, 0x8100, 20), VRF_BLUE));
    p.set_link(22, enslaved(vlan(500, 0x8100, ETH1), VRF_BLUE));
    p.set_link(5, enslaved(plain(5), 41));
    let mut blue: Vec<(u32, u32)> = vrf_ports(&p.links, VRF_BLUE).into_iter().collect();
    blue.sort_unstable();
    assert_eq!(
        blue,
        vec![
            (ETH0, ING_F_VRF | ING_F_VRF_KERNEL),
            (ETH1, ING_F_VRF_KERNEL)
        ],
        "ETH0's outer VLAN 200 is in no VRF"
    );
    assert_eq!(
        vrf_ports(&p.links, 41).into_iter().collect::<Vec<_>>(),
        vec![(5, ING_F_VRF)]
    );
    assert!(vrf_ports(&p.links, 0).is_empty());
}

#[test]
fn the_members_of_a_bond_in_a_vrf_go_to_the_kernel() {
    let mut p = programmer(16);
    p.set_link(VRF_BLUE, vrf_device(10));
    p.set_link(50, plain(50)); // bond0
    p.set_link(ETH0, enslaved(plain(ETH0), 50));
    p.set_link(ETH1, enslaved(plain(ETH1), 50));
    assert!(p.writer().ingress.is_empty(), "a bond in the main table");
    p.set_link(50, enslaved(plain(50), VRF_BLUE));
    assert_eq!(p.writer().ingress.get(&50), Some(&ING_F_VRF));
    assert_eq!(p.writer().ingress.get(&ETH0), Some(&ING_F_VRF_KERNEL));
    assert_eq!(p.writer().ingress.get(&ETH1), Some(&ING_F_VRF_KERNEL));
    let mut blue: Vec<(u32, u32)> = vrf_ports(&p.links, VRF_BLUE).into_iter().collect();
    blue.sort_unstable();
    assert_eq!(
        blue,
        vec![
            (ETH0, ING_F_VRF_KERNEL),
            (ETH1, ING_F_VRF_KERNEL),
            (50, ING_F_VRF)
        ]
    );
    p.set_link(50, plain(50));
    assert!(p.writer().ingress.is_empty());
    // A VLAN of the bond in a VRF marks the bond, and so its members.
    p.set_link(51, enslaved(vlan(700, 0x8100, 50), VRF_BLUE));
    assert_eq!(p.writer().ingress.get(&50), Some(&ING_F_VRF_KERNEL));
    assert_eq!(p.writer().ingress.get(&ETH0), Some(&ING_F_VRF_KERNEL));
}
