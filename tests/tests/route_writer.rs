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

fn trie_contents(datapath: &Datapath) -> Vec<(Ipv6Net, u32)> {
    let mut found: Vec<(Ipv6Net, u32)> = datapath
        .maps
        .v6_routes
        .iter()
        .map(|entry| {
            let (key, value) = entry.unwrap();
            let net = Ipv6Net::new(key.data().into(), key.prefix_len() as u8).unwrap();
            (net, value)
        })
        .collect();
    found.sort();
    found
}

#[test]
fn queued_writes_land_in_order_and_refusals_come_back_with_what_was_refused() {
    ipv6_writes_and_refusals(200);
}

#[test]
fn a_small_batch_written_at_once_lands_and_is_refused_the_same_way() {
    ipv6_writes_and_refusals(8);
}

/// `room` prefixes fit; `room + 4` are written (more than a small batch
/// when `room` is large, so they go through the writer thread), then a
/// change and a removal of prefixes already queued, and a removal of a
/// prefix that was never there.
fn ipv6_writes_and_refusals(room: u32) {
    require_root!();
    let ns = NetNs::new("pipe");
    ns.enter(|| {
        let capacities = Capacities {
            v6_routes: room,
            ..Capacities::default()
        };
        let mut datapath = Datapath::load(&capacities).expect("load the datapath");
        let action = |i: u32| RouteAction::new(RouteKind::Nexthop, i);
        let never = prefix(100_000);
        let refused = {
            let mut maps = RouteWriter::new(&mut datapath.maps).unwrap();
            for i in 0..room + 4 {
                maps.insert_v6(prefix(i), action(i)).unwrap();
            }
            maps.insert_v6(prefix(0), action(100)).unwrap();
            maps.remove_v6(prefix(1)).unwrap();
            maps.remove_v6(never).unwrap();
            maps.flush()
        };
        let mut expected: Vec<(Ipv6Net, u32)> =
            (2..room).map(|i| (prefix(i), action(i).0)).collect();
        expected.push((prefix(0), action(100).0));
        expected.sort();
        assert_eq!(trie_contents(&datapath), expected);

        let refused_inserts: Vec<(Ipv6Net, Option<RouteAction>)> =
            refused.v6.iter().map(|r| (r.prefix, r.action)).collect();
        let mut wanted: Vec<(Ipv6Net, Option<RouteAction>)> = (room..room + 4)
            .map(|i| (prefix(i), Some(action(i))))
            .collect();
        wanted.push((never, None));
        assert_eq!(refused_inserts, wanted, "{refused:?}");
        assert!(refused.v6.iter().all(|r| !r.error.is_empty()));
        assert!(refused.v4_blocks.is_empty());
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
        assert_eq!(trie_contents(&datapath).len(), 10_000);
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
        assert!(refused.v6.is_empty());
    });
}
