//! IPv6 route writes through the writer thread, against the real trie.

use ipnet::Ipv6Net;
use pf_common::{RouteAction, RouteKind};
use pf_sidecar::{
    datapath::{pipelined::PipelinedMaps, Capacities, Datapath},
    programmer::MapWriter,
};

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
    require_root!();
    let ns = NetNs::new("pipe");
    ns.enter(|| {
        let capacities = Capacities {
            v6_routes: 8,
            ..Capacities::default()
        };
        let mut datapath = Datapath::load(&capacities).expect("load the datapath");
        let action = |i: u32| RouteAction::new(RouteKind::Nexthop, i);
        let refused = {
            let mut maps = PipelinedMaps::new(&mut datapath.maps).unwrap();
            // Twelve prefixes into a trie with room for eight, then a change
            // and a removal of prefixes already queued, then a removal of a
            // prefix that was never there.
            for i in 0..12 {
                maps.insert_v6(prefix(i), action(i)).unwrap();
            }
            maps.insert_v6(prefix(0), action(100)).unwrap();
            maps.remove_v6(prefix(1)).unwrap();
            maps.remove_v6(prefix(50)).unwrap();
            maps.flush()
        };
        let mut expected: Vec<(Ipv6Net, u32)> = (2..8).map(|i| (prefix(i), action(i).0)).collect();
        expected.insert(0, (prefix(0), action(100).0));
        expected.sort();
        assert_eq!(trie_contents(&datapath), expected);

        let refused_inserts: Vec<(Ipv6Net, Option<RouteAction>)> =
            refused.iter().map(|r| (r.prefix, r.action)).collect();
        let mut wanted: Vec<(Ipv6Net, Option<RouteAction>)> =
            (8..12).map(|i| (prefix(i), Some(action(i)))).collect();
        wanted.push((prefix(50), None));
        assert_eq!(refused_inserts, wanted, "{refused:?}");
        assert!(refused.iter().all(|r| !r.error.is_empty()));
    });
}

#[test]
fn dropping_the_writer_writes_everything_still_queued() {
    require_root!();
    let ns = NetNs::new("pipe");
    ns.enter(|| {
        let mut datapath = Datapath::load(&Capacities::default()).expect("load the datapath");
        {
            let mut maps = PipelinedMaps::new(&mut datapath.maps).unwrap();
            for i in 0..10_000 {
                maps.insert_v6(prefix(i), RouteAction::simple(RouteKind::Blackhole))
                    .unwrap();
            }
        }
        assert_eq!(trie_contents(&datapath).len(), 10_000);
    });
}
