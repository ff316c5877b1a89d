//! Route writes through the writer thread, against the real maps.

use ipnet::{Ipv4Net, Ipv6Net};
use pf_common::{RouteAction, RouteKind};
use pf_control::programmer::MapWriter;
use pf_sidecar::datapath::{route_writer::RouteWriter, Capacities, Datapath};

use integration_tests::{netns::NetNs, require_root};

fn prefix(i: u32) -> Ipv6Net {
    Ipv6Net::new(
        std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | ((i as u128) << 64)),
        64,
    )
    .unwrap()
}

/// What the trie answers at each prefix's first address.
fn answers(datapath: &Datapath, prefixes: impl Iterator<Item = Ipv6Net>) -> Vec<RouteAction> {
    let table = datapath.maps.v6.lock();
    prefixes
        .map(|p| table.lookup(u128::from(p.network())))
        .collect()
}

#[test]
fn queued_ipv6_writes_land_in_order() {
    ipv6_writes_in_order(200);
}

#[test]
fn a_small_ipv6_batch_written_at_once_lands_the_same_way() {
    ipv6_writes_in_order(8);
}

/// `count` prefixes (more than a small batch when `count` is large, so
/// they go through the writer thread), then a change and a removal of
/// prefixes already queued, and a removal of a prefix never there.
fn ipv6_writes_in_order(count: u32) {
    require_root!();
    let ns = NetNs::new("pipe");
    ns.enter(|| {
        let mut datapath = Datapath::load(&Capacities::default()).expect("load the datapath");
        let action = |i: u32| RouteAction::new(RouteKind::Nexthop, i);
        let refused = {
            let mut maps = RouteWriter::new(&mut datapath.maps).unwrap();
            for i in 0..count {
                maps.insert_v6(prefix(i), action(i)).unwrap();
            }
            maps.insert_v6(prefix(0), action(100)).unwrap();
            maps.remove_v6(prefix(1));
            maps.remove_v6(prefix(100_000));
            maps.flush()
        };
        let mut expected: Vec<RouteAction> = (0..count).map(action).collect();
        expected[0] = action(100);
        expected[1] = RouteAction::MISS;
        assert_eq!(answers(&datapath, (0..count).map(prefix)), expected);
        assert_eq!(refused, Default::default());
    });
}

#[test]
fn a_slot_the_writer_thread_found_no_room_for_comes_back_and_asks_the_kernel() {
    ipv6_slot_deferred(200);
}

#[test]
fn a_slot_a_small_batch_found_no_room_for_comes_back_the_same_way() {
    ipv6_slot_deferred(40);
}

fn ipv6_slot_deferred(count: u32) {
    require_root!();
    let ns = NetNs::new("pipe");
    ns.enter(|| {
        // Room for a few prefixes only.
        let capacities = Capacities {
            v6_routes: 4,
            ..Capacities::default()
        };
        let mut datapath = Datapath::load(&capacities).expect("load the datapath");
        let refused = {
            let mut maps = RouteWriter::new(&mut datapath.maps).unwrap();
            for i in 0..count {
                maps.insert_v6(prefix(i), RouteAction::new(RouteKind::Nexthop, i))
                    .unwrap();
            }
            maps.flush()
        };
        let slot = pf_control::v6trie::slot_of(u128::from(prefix(0).network()));
        assert_eq!(refused.v6_slots, vec![slot], "{refused:?}");
        assert!(answers(&datapath, (0..count).map(prefix))
            .iter()
            .all(|a| a.kind() == Some(RouteKind::Fib)));
    });
}

#[test]
fn dropping_the_writer_writes_everything_still_queued() {
    require_root!();
    let ns = NetNs::new("pipe");
    ns.enter(|| {
        let mut datapath = Datapath::load(&Capacities::default()).expect("load the datapath");
        {
            let mut maps = RouteWriter::new(&mut datapath.maps).unwrap();
            for i in 0..10_000 {
                maps.insert_v6(prefix(i), RouteAction::simple(RouteKind::Blackhole))
                    .unwrap();
            }
        }
        assert!(answers(&datapath, (0..10_000).map(prefix))
            .iter()
            .all(|a| a.kind() == Some(RouteKind::Blackhole)));
        assert_eq!(datapath.maps.v6.lock().len(), 10_000);
    });
}

#[test]
fn queued_ipv4_writes_land_in_order_and_a_block_without_a_group_comes_back() {
    ipv4_writes_and_a_deferred_block(100);
}

#[test]
fn a_small_ipv4_batch_written_at_once_defers_a_block_the_same_way() {
    ipv4_writes_and_a_deferred_block(0);
}

/// `padding` /24s in 10.0.0.0/8 go first, so that a large `padding` sends
/// the batch through the writer thread.
fn ipv4_writes_and_a_deferred_block(padding: u32) {
    require_root!();
    let ns = NetNs::new("pipe");
    ns.enter(|| {
        let capacities = Capacities {
            tbl8_groups: 1,
            ..Capacities::default()
        };
        let mut datapath = Datapath::load(&capacities).expect("load the datapath");
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let action = |i: u32| RouteAction::new(RouteKind::Nexthop, i);
        let refused = {
            let mut maps = RouteWriter::new(&mut datapath.maps).unwrap();
            for i in 0..padding {
                let block = Ipv4Net::new(std::net::Ipv4Addr::from(0x0a00_0000 | i << 8), 24);
                maps.insert_v4(block.unwrap(), action(9)).unwrap();
            }
            maps.insert_v4(net("198.51.100.0/24"), action(1)).unwrap();
            // The only second-level group goes to 198.51.100.0/24; the
            // /32 in 203.0.113.0/24 finds none.
            maps.insert_v4(net("198.51.100.7/32"), action(2)).unwrap();
            maps.insert_v4(net("203.0.113.0/24"), action(3)).unwrap();
            maps.insert_v4(net("203.0.113.9/32"), action(4)).unwrap();
            maps.insert_v4(net("192.0.2.0/24"), action(5)).unwrap();
            maps.remove_v4(net("192.0.2.0/24"), None, true);
            maps.flush()
        };
        let table = datapath.maps.v4.lock();
        let at = |a: &str| table.lookup(u32::from(a.parse::<std::net::Ipv4Addr>().unwrap()));
        assert_eq!(at("198.51.100.1"), action(1));
        assert_eq!(at("198.51.100.7"), action(2));
        assert_eq!(
            at("203.0.113.1"),
            RouteAction::simple(RouteKind::Fib),
            "the block that got no group asks the kernel, never the /24 alone"
        );
        assert_eq!(at("192.0.2.1"), RouteAction::MISS);
        if padding > 0 {
            assert_eq!(at(&format!("10.0.{}.1", padding - 1)), action(9));
        }
        assert_eq!(refused.v4_blocks, vec![0xcb0071], "{refused:?}");
        assert!(refused.v6_slots.is_empty());
    });
}
