use std::net::{IpAddr, Ipv4Addr};

use pf_common::EcmpGroup;

use super::*;
use crate::programmer::{
    fake::FakeMaps, nexthop_key, resolve_nexthop, Leg, Limits, LinkInfo, Programmer,
};

impl MapsView for FakeMaps {
    fn tbl24(&self, block: u32) -> u32 {
        use crate::dir24::Dir24Store;
        self.v4.store().tbl24(block)
    }
    fn tbl8(&self, group: u32, offset: u32) -> u32 {
        use crate::dir24::Dir24Store;
        self.v4.store().tbl8(group, offset)
    }
    fn v6(&self) -> &dyn crate::v6trie::V6Read {
        self.v6.store()
    }
    fn nexthop(&self, id: u32) -> Option<(NexthopKey, Nexthop)> {
        let key = nexthop_key(self.info.get(&id)?)?;
        Some((key, *self.nexthops.get(self.nh_ptr.get(&id)?)?))
    }
    fn group_buckets(&self, id: u32) -> Option<Vec<u32>> {
        let group: &EcmpGroup = self.groups.get(self.grp_ptr.get(&id)?)?;
        Some(group.buckets[..group.bucket_count as usize].to_vec())
    }
}

const ETH0: u32 = 2;
const ETH1: u32 = 3;
const GW_A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const GW_B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const LINK: LinkInfo = LinkInfo {
    mac: [2, 0, 0, 0, 0, 1],
    mtu: 1500,
    up: true,
    vlan: None,
    master: 0,
    vrf_table: None,
};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn leg(ifindex: u32, gateway: IpAddr, weight: u32) -> Leg {
    Leg {
        ifindex,
        gateway: Some(gateway),
        weight,
    }
}

/// What the router says, and the neighbours it knows.
fn router() -> Vec<(IpNet, Target)> {
    vec![
        (net("0.0.0.0/0"), Target::Forward(vec![leg(ETH0, GW_A, 1)])),
        (
            net("198.51.100.0/24"),
            Target::Forward(vec![leg(ETH0, GW_A, 1), leg(ETH1, GW_B, 3)]),
        ),
        (
            net("198.51.100.64/26"),
            Target::Forward(vec![leg(ETH1, GW_B, 1)]),
        ),
        (net("203.0.113.0/24"), Target::Blackhole),
        (net("203.0.113.128/25"), Target::Unreachable),
        (net("192.0.2.0/24"), Target::Kernel),
        (net("192.0.2.10/32"), Target::Local),
        (
            net("2001:db8:1::/48"),
            Target::Forward(vec![leg(ETH0, GW_A, 1)]),
        ),
        (net("2001:db8:2::/48"), Target::Prohibit),
    ]
}

fn programmed(routes: &[(IpNet, Target)]) -> Programmer<FakeMaps> {
    let mut p = Programmer::new(
        FakeMaps::new(),
        Limits {
            nexthops: 64,
            ecmp_groups: 8,
        },
    );
    p.set_link(ETH0, Some(LINK));
    p.set_link(ETH1, Some(LINK));
    p.set_neighbour(ETH0, GW_A, Some(MAC_A));
    for (prefix, target) in routes {
        p.upsert(*prefix, &target.clone());
    }
    p
}

fn resolve(key: &NexthopKey) -> Nexthop {
    let neighbour = (key.ifindex == ETH0 && key.gateway == GW_A).then_some(&MAC_A);
    resolve_nexthop(key, Some(&LINK), neighbour)
}

fn diff(maps: &FakeMaps, routes: &[(IpNet, Target)]) -> Report {
    compare(maps, routes, &resolve, &mut |_, _| {}).unwrap()
}

#[test]
fn maps_programmed_from_the_routes_are_in_sync_with_them() {
    let p = programmed(&router());
    let report = diff(p.writer(), &router());
    assert!(report.in_sync(), "{report:#?}");
    assert_eq!(report.compared_prefixes, router().len());
    assert_eq!(report.compared_nexthops, 2);
}

#[test]
fn an_entry_written_straight_into_the_table_is_reported_as_extra() {
    let mut routes = router();
    routes.retain(|(p, _)| *p != net("0.0.0.0/0"));
    let mut p = programmed(&routes);
    p.writer_mut()
        .v4
        .insert(
            "100.64.0.0/10".parse().unwrap(),
            RouteAction::simple(RouteKind::Blackhole),
        )
        .unwrap();
    let report = diff(p.writer(), &routes);
    assert_eq!(
        report.drift,
        vec![Drift {
            kind: DriftKind::Extra,
            prefix: net("100.64.0.0/10"),
            expected: Behaviour::Kernel,
            actual: Behaviour::Blackhole,
        }]
    );
}

#[test]
fn a_missing_route_and_a_wrong_nexthop_are_named_by_their_prefixes() {
    let p = programmed(&router());
    let mut routes = router();
    routes.push((
        net("198.51.100.128/25"),
        Target::Forward(vec![leg(ETH0, GW_A, 1)]),
    ));
    for (prefix, target) in routes.iter_mut() {
        if *prefix == net("198.51.100.64/26") {
            *target = Target::Forward(vec![leg(ETH0, GW_A, 1)]);
        }
    }
    let report = diff(p.writer(), &routes);
    let found: Vec<(DriftKind, IpNet)> = report.drift.iter().map(|d| (d.kind, d.prefix)).collect();
    assert_eq!(
        found,
        vec![
            (DriftKind::Different, net("198.51.100.64/26")),
            (DriftKind::Different, net("198.51.100.128/25")),
        ],
        "{report:#?}"
    );
    assert_eq!(
        report.drift[0].actual.to_string(),
        "via 192.0.2.2 ifindex 3"
    );
}

#[test]
fn a_prefix_whose_addresses_go_to_the_kernel_instead_is_missing() {
    let mut routes = router();
    routes.retain(|(p, _)| *p != net("0.0.0.0/0"));
    let p = programmed(&routes);
    routes.push((net("10.0.0.0/8"), Target::Blackhole));
    routes.push((
        net("2001:db8:3::/48"),
        Target::Forward(vec![leg(ETH0, GW_A, 1)]),
    ));
    let report = diff(p.writer(), &routes);
    let found: Vec<(DriftKind, IpNet)> = report.drift.iter().map(|d| (d.kind, d.prefix)).collect();
    assert_eq!(
        found,
        vec![
            (DriftKind::Missing, net("10.0.0.0/8")),
            (DriftKind::Missing, net("2001:db8:3::/48")),
        ]
    );
}

#[test]
fn ecmp_weights_are_compared_by_bucket_share() {
    let p = programmed(&router());
    let mut routes = router();
    for (prefix, target) in routes.iter_mut() {
        if *prefix == net("198.51.100.0/24") {
            *target = Target::Forward(vec![leg(ETH0, GW_A, 1), leg(ETH1, GW_B, 1)]);
        }
    }
    let report = diff(p.writer(), &routes);
    assert_eq!(report.drift.len(), 1, "{report:#?}");
    assert_eq!(report.drift[0].prefix, net("198.51.100.0/24"));
    assert_eq!(
        report.drift[0].expected.to_string(),
        "via 192.0.2.1 ifindex 2 (128/256), via 192.0.2.2 ifindex 3 (128/256)"
    );
}

#[test]
fn a_nexthop_with_a_stale_mac_is_reported_per_nexthop() {
    let mut p = programmed(&router());
    // The maps say unresolved; the neighbour table says resolved.
    p.set_neighbour(ETH0, GW_A, None);
    let report = diff(p.writer(), &router());
    assert!(report.drift.is_empty(), "{report:#?}");
    assert_eq!(report.nexthops.len(), 1);
    assert_eq!(report.nexthops[0].gateway, GW_A);
    assert!(report.nexthops[0]
        .expected
        .starts_with("resolved 02:00:00:00:00:0a"));
    assert!(report.nexthops[0].actual.starts_with("unresolved"));
}

#[test]
fn an_on_link_ipv6_route_matches_an_absent_entry_only_when_nothing_covers_it() {
    let mut routes = router();
    routes.push((net("2001:db8:9::/64"), Target::Kernel));
    let mut p = programmed(&routes);
    p.writer_mut().v6.remove("2001:db8:9::/64".parse().unwrap());
    assert!(diff(p.writer(), &routes).in_sync());
    routes.push((
        net("2001:db8::/32"),
        Target::Forward(vec![leg(ETH0, GW_A, 1)]),
    ));
    let mut p = programmed(&routes);
    p.writer_mut().v6.remove("2001:db8:9::/64".parse().unwrap());
    let report = diff(p.writer(), &routes);
    assert_eq!(report.drift.len(), 1, "{report:#?}");
    assert_eq!(report.drift[0].kind, DriftKind::Different);
    assert_eq!(
        report.drift[0].actual.to_string(),
        "via 192.0.2.1 ifindex 2"
    );
}

#[test]
fn ipv6_drift_is_found_address_by_address_in_the_trie() {
    let routes = router();
    let mut p = programmed(&routes);
    let v6 = |s: &str| s.parse::<ipnet::Ipv6Net>().unwrap();
    // A prefix the maps hold and nothing expected covers: an extra range.
    p.writer_mut()
        .v6
        .insert(v6("3fff::/20"), RouteAction::simple(RouteKind::Blackhole))
        .unwrap();
    // A longer prefix inside an expected one, answering differently: the
    // expected prefix is reported, once.
    p.writer_mut()
        .v6
        .insert(
            v6("2001:db8:2:5::/64"),
            RouteAction::simple(RouteKind::Blackhole),
        )
        .unwrap();
    p.writer_mut()
        .v6
        .insert(
            v6("2001:db8:2:6::/64"),
            RouteAction::simple(RouteKind::Blackhole),
        )
        .unwrap();
    let report = diff(p.writer(), &routes);
    let mut found: Vec<(DriftKind, String)> = report
        .drift
        .iter()
        .map(|d| (d.kind, d.prefix.to_string()))
        .collect();
    found.sort();
    let mut wanted = [
        (DriftKind::Different, "2001:db8:2::/48".to_string()),
        (DriftKind::Extra, "3fff::/20".to_string()),
    ];
    wanted.sort();
    assert_eq!(found, wanted, "{report:#?}");
    // And a prefix the maps lost is missing.
    p.writer_mut().v6.remove(v6("2001:db8:2:5::/64"));
    p.writer_mut().v6.remove(v6("2001:db8:2:6::/64"));
    p.writer_mut().v6.remove(v6("3fff::/20"));
    p.writer_mut().v6.remove(v6("2001:db8:1::/48"));
    let report = diff(p.writer(), &routes);
    assert_eq!(report.drift.len(), 1, "{report:#?}");
    assert_eq!(report.drift[0].kind, DriftKind::Missing);
    assert_eq!(report.drift[0].prefix.to_string(), "2001:db8:1::/48");
}
