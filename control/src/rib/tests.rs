use std::{net::Ipv4Addr, time::Instant};

use super::*;

#[derive(Default)]
struct Log {
    calls: Vec<String>,
    entries: PrefixHashMap<RibEntry>,
}

impl FibSink for Log {
    fn entries(&self) -> &PrefixHashMap<RibEntry> {
        &self.entries
    }
    fn entries_mut(&mut self) -> &mut PrefixHashMap<RibEntry> {
        &mut self.entries
    }
    fn upsert(&mut self, prefix: IpNet, target: &Target) {
        self.calls.push(format!("upsert {prefix} {target:?}"));
    }
    fn remove(&mut self, prefix: IpNet) {
        self.calls.push(format!("remove {prefix}"));
    }
    fn set_link(&mut self, ifindex: u32, link: Option<LinkInfo>) {
        self.calls
            .push(format!("link {ifindex} {}", link.is_some()));
    }
    fn set_neighbour(&mut self, ifindex: u32, ip: IpAddr, mac: Option<[u8; 6]>) {
        self.calls
            .push(format!("neighbour {ifindex} {ip} {}", mac.is_some()));
    }
}

fn key(prefix: &str) -> RouteKey {
    RouteKey {
        table: 254,
        prefix: prefix.parse().unwrap(),
        metric: 20,
    }
}

fn via(prefix: &str, gateway: &str) -> Change {
    Change::Route(
        Op::Upsert,
        Route {
            key: key(prefix),
            protocol: 196,
            kind: Kind::Unicast,
            next: NextHops::Inline(vec![Leg {
                ifindex: 2,
                gateway: Some(gateway.parse().unwrap()),
                weight: 1,
            }]),
        },
    )
}

fn via_object(prefix: &str, id: u32) -> Change {
    Change::Route(
        Op::Upsert,
        Route {
            key: key(prefix),
            protocol: 186,
            kind: Kind::Unicast,
            next: NextHops::Object(id),
        },
    )
}

fn delete(prefix: &str) -> Change {
    Change::Route(
        Op::Remove,
        Route {
            key: key(prefix),
            protocol: 196,
            kind: Kind::Unicast,
            next: NextHops::None,
        },
    )
}

fn gateway_object(id: u32, gateway: &str) -> Change {
    Change::Nexthop(
        Op::Upsert,
        id,
        Some(NexthopDef::Gateway {
            ifindex: 2,
            gateway: Some(gateway.parse().unwrap()),
        }),
    )
}

fn fpm_rib() -> Rib {
    Rib::new(Source::Fpm, vec![254])
}

#[test]
fn an_frr_84_delete_then_add_in_one_frame_is_one_update_and_no_gap() {
    let mut rib = fpm_rib();
    let mut log = Log::default();
    rib.apply_batch(Source::Fpm, [via("198.51.100.0/24", "192.0.2.1")], &mut log);
    log.calls.clear();
    rib.apply_batch(
        Source::Fpm,
        [
            delete("198.51.100.0/24"),
            via("198.51.100.0/24", "192.0.2.2"),
        ],
        &mut log,
    );
    assert_eq!(log.calls.len(), 1, "{:?}", log.calls);
    assert!(
        log.calls[0].starts_with("upsert 198.51.100.0/24") && log.calls[0].contains("192.0.2.2")
    );
}

#[test]
fn a_route_naming_an_unknown_object_waits_for_the_kernel_until_the_object_arrives() {
    let mut rib = fpm_rib();
    let mut log = Log::default();
    rib.apply_batch(Source::Fpm, [via_object("198.51.100.0/24", 7)], &mut log);
    assert_eq!(log.calls, vec!["upsert 198.51.100.0/24 Kernel".to_string()]);
    assert_eq!(rib.stats.unresolved_routes, 1);
    rib.apply_batch(Source::Fpm, [gateway_object(7, "192.0.2.1")], &mut log);
    assert!(log.calls[1].contains("192.0.2.1"), "{:?}", log.calls);
}

#[test]
fn a_group_naming_an_unknown_member_leaves_its_routes_to_the_kernel_until_the_member_arrives() {
    let mut rib = fpm_rib();
    let mut log = Log::default();
    rib.apply_batch(
        Source::Fpm,
        [
            gateway_object(1, "192.0.2.1"),
            Change::Nexthop(
                Op::Upsert,
                10,
                Some(NexthopDef::Group(vec![(1, 1), (99, 1)])),
            ),
            via_object("203.0.113.0/24", 10),
        ],
        &mut log,
    );
    assert_eq!(log.calls, vec!["upsert 203.0.113.0/24 Kernel".to_string()]);
    rib.apply_batch(Source::Fpm, [gateway_object(99, "192.0.2.9")], &mut log);
    let Some((_, Target::Forward(legs))) = rib.desired(&log).into_iter().next() else {
        panic!("{:?}", rib.desired(&log))
    };
    assert_eq!(legs.len(), 2, "{legs:?}");
}

#[test]
fn a_group_object_becomes_weighted_legs_and_a_member_change_updates_its_routes() {
    let mut rib = fpm_rib();
    let mut log = Log::default();
    rib.apply_batch(
        Source::Fpm,
        [
            gateway_object(1, "192.0.2.1"),
            gateway_object(2, "192.0.2.2"),
            Change::Nexthop(
                Op::Upsert,
                10,
                Some(NexthopDef::Group(vec![(1, 3), (2, 1)])),
            ),
            via_object("203.0.113.0/24", 10),
        ],
        &mut log,
    );
    let Some((_, Target::Forward(legs))) = rib.desired(&log).into_iter().next() else {
        panic!()
    };
    assert_eq!(
        legs.iter().map(|l| l.weight).collect::<Vec<_>>(),
        vec![3, 1]
    );
    log.calls.clear();
    rib.apply_batch(Source::Fpm, [gateway_object(2, "192.0.2.9")], &mut log);
    assert!(
        log.calls
            .iter()
            .any(|c| c.starts_with("upsert 203.0.113.0/24") && c.contains("192.0.2.9")),
        "{:?}",
        log.calls
    );
}

#[test]
fn an_object_change_re_publishes_exactly_the_prefixes_naming_it_now() {
    let mut rib = fpm_rib();
    let mut log = Log::default();
    rib.apply_batch(
        Source::Fpm,
        [
            gateway_object(1, "192.0.2.1"),
            gateway_object(2, "192.0.2.2"),
        ],
        &mut log,
    );
    let prefixes: Vec<String> = (0..50).map(|i| format!("10.{i}.0.0/16")).collect();
    // Every prefix moves between the two objects many times; the even ones
    // end on object 2, and every tenth is removed.
    for round in 0..40u32 {
        let events: Vec<Change> = prefixes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                via_object(
                    p,
                    if (round + i as u32).is_multiple_of(2) {
                        1
                    } else {
                        2
                    },
                )
            })
            .collect();
        rib.apply_batch(Source::Fpm, events, &mut log);
    }
    let gone: Vec<Change> = prefixes.iter().step_by(10).map(|p| delete(p)).collect();
    rib.apply_batch(Source::Fpm, gone, &mut log);
    log.calls.clear();
    rib.apply_batch(Source::Fpm, [gateway_object(2, "192.0.2.9")], &mut log);
    let mut expected: Vec<String> = prefixes
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0 && i % 10 != 0)
        .map(|(_, p)| p.clone())
        .collect();
    expected.sort_by_key(|p| p.parse::<IpNet>().unwrap());
    let touched: Vec<String> = log
        .calls
        .iter()
        .map(|c| c.split(' ').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(touched, expected);
    assert!(
        log.calls.iter().all(|c| c.contains("192.0.2.9")),
        "{:?}",
        log.calls
    );
}

#[test]
fn a_replay_removes_exactly_the_routes_and_objects_it_did_not_repeat() {
    let mut rib = fpm_rib();
    let mut log = Log::default();
    rib.apply_batch(
        Source::Fpm,
        [
            via("198.51.100.0/24", "192.0.2.1"),
            via("203.0.113.0/24", "192.0.2.1"),
            gateway_object(5, "192.0.2.5"),
        ],
        &mut log,
    );
    rib.begin_resync(Source::Fpm, &mut log);
    rib.apply_batch(Source::Fpm, [via("198.51.100.0/24", "192.0.2.1")], &mut log);
    log.calls.clear();
    rib.finish_resync(Source::Fpm, &mut log);
    assert_eq!(log.calls, vec!["remove 203.0.113.0/24".to_string()]);
    assert_eq!((rib.route_count(), rib.object_count()), (1, 0));
}

#[test]
fn a_kernel_resync_forgets_neighbours_and_links_that_are_gone() {
    let mut rib = fpm_rib();
    let mut log = Log::default();
    let ip: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
    let link = LinkInfo {
        mac: [2, 0, 0, 0, 0, 1],
        mtu: 1500,
        up: true,
        vlan: None,
        master: 0,
        vrf_table: None,
    };
    rib.apply_batch(
        Source::Kernel,
        [
            Change::Link(Op::Upsert, 2, Some(link)),
            Change::Link(Op::Upsert, 3, Some(link)),
            Change::Neighbour(2, ip, Some([2; 6])),
        ],
        &mut log,
    );
    rib.begin_resync(Source::Kernel, &mut log);
    rib.apply_batch(
        Source::Kernel,
        [Change::Link(Op::Upsert, 2, Some(link))],
        &mut log,
    );
    log.calls.clear();
    rib.finish_resync(Source::Kernel, &mut log);
    log.calls.sort();
    assert_eq!(
        log.calls,
        vec![
            "link 3 false".to_string(),
            format!("neighbour 2 {ip} false")
        ]
    );
}

#[test]
fn unchanged_links_and_neighbours_are_not_repeated_downstream() {
    let mut rib = fpm_rib();
    let mut log = Log::default();
    let ip: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
    rib.apply_batch(
        Source::Kernel,
        [
            Change::Neighbour(2, ip, Some([2; 6])),
            Change::Neighbour(2, ip, Some([2; 6])),
        ],
        &mut log,
    );
    assert_eq!(log.calls.len(), 1);
}

#[test]
fn routes_from_the_other_source_and_other_tables_are_ignored() {
    let mut rib = fpm_rib();
    let mut log = Log::default();
    rib.apply_batch(
        Source::Kernel,
        [via("198.51.100.0/24", "192.0.2.1")],
        &mut log,
    );
    let mut other_table = via("203.0.113.0/24", "192.0.2.1");
    if let Change::Route(_, r) = &mut other_table {
        r.key.table = 100;
    }
    rib.apply_batch(Source::Fpm, [other_table], &mut log);
    assert!(log.calls.is_empty());
    assert_eq!(
        (
            rib.stats.ignored_other_source,
            rib.stats.ignored_other_table
        ),
        (1, 1)
    );
}

#[test]
fn the_first_configured_table_then_the_lowest_metric_wins() {
    let mut rib = Rib::new(Source::Kernel, vec![100, 254]);
    let mut log = Log::default();
    let mut events = Vec::new();
    for (table, metric, gw) in [
        (254, 10, "192.0.2.1"),
        (100, 50, "192.0.2.2"),
        (100, 20, "192.0.2.3"),
    ] {
        let mut e = via("198.51.100.0/24", gw);
        if let Change::Route(_, r) = &mut e {
            r.key.table = table;
            r.key.metric = metric;
        }
        events.push(e);
    }
    rib.apply_batch(Source::Kernel, events, &mut log);
    assert!(
        log.calls.last().unwrap().contains("192.0.2.3"),
        "{:?}",
        log.calls
    );
}

#[test]
fn the_routers_own_addresses_are_local_and_win_over_routes() {
    let mut rib = Rib::new(Source::Kernel, vec![254]);
    let mut log = Log::default();
    let ip: IpAddr = Ipv4Addr::new(198, 51, 100, 1).into();
    rib.apply_batch(
        Source::Kernel,
        [
            via("198.51.100.1/32", "192.0.2.1"),
            Change::Address(Op::Upsert, 2, ip),
        ],
        &mut log,
    );
    assert!(
        log.calls.last().unwrap().ends_with("Local"),
        "{:?}",
        log.calls
    );
    rib.apply_batch(
        Source::Kernel,
        [Change::Address(Op::Remove, 2, ip)],
        &mut log,
    );
    assert!(
        log.calls.last().unwrap().contains("192.0.2.1"),
        "the route answers again: {:?}",
        log.calls
    );
}

fn desired_of(rib: &Rib, log: &Log, prefix: &str) -> Option<Target> {
    let prefix: IpNet = prefix.parse().unwrap();
    rib.desired(log)
        .into_iter()
        .find(|(p, _)| *p == prefix)
        .map(|(_, t)| t)
}

fn forwards(target: Option<Target>) -> bool {
    matches!(target, Some(Target::Forward(_)))
}

/// Two zebra routes (one through an object, one inline) and one of the
/// router's addresses.
fn rib_with_two_routes(log: &mut Log) -> Rib {
    let mut rib = fpm_rib();
    rib.apply_batch(
        Source::Fpm,
        [
            gateway_object(7, "192.0.2.1"),
            via_object("198.51.100.0/24", 7),
            via("203.0.113.0/24", "192.0.2.2"),
            via("192.0.2.9/32", "192.0.2.2"),
        ],
        log,
    );
    rib.apply_batch(
        Source::Kernel,
        [Change::Address(Op::Upsert, 2, "192.0.2.9".parse().unwrap())],
        log,
    );
    log.calls.clear();
    rib
}

#[test]
fn a_stale_source_hands_its_routes_to_the_kernel_and_a_replay_takes_back_what_it_repeats() {
    let mut log = Log::default();
    let mut rib = rib_with_two_routes(&mut log);
    assert_eq!(
        rib.go_stale(&mut log),
        2,
        "both routes, not the local address"
    );
    assert!(rib.is_stale());
    assert!(
        log.calls
            .contains(&"upsert 198.51.100.0/24 Kernel".to_string()),
        "{:?}",
        log.calls
    );
    assert!(
        log.calls
            .contains(&"upsert 203.0.113.0/24 Kernel".to_string()),
        "{:?}",
        log.calls
    );
    assert!(
        !log.calls.iter().any(|c| c.contains("192.0.2.9")),
        "{:?}",
        log.calls
    );
    assert_eq!(
        desired_of(&rib, &log, "203.0.113.0/24"),
        Some(Target::Kernel)
    );
    assert_eq!(desired_of(&rib, &log, "192.0.2.9/32"), Some(Target::Local));
    assert_eq!(rib.route_count(), 3, "the routes stay in the RIB");

    // zebra is back: its replay repeats one route, which forwards again at
    // once; the other stays with the kernel until the sweep removes it.
    rib.begin_resync(Source::Fpm, &mut log);
    log.calls.clear();
    rib.apply_batch(
        Source::Fpm,
        [
            gateway_object(7, "192.0.2.1"),
            via_object("198.51.100.0/24", 7),
        ],
        &mut log,
    );
    assert!(
        forwards(desired_of(&rib, &log, "198.51.100.0/24")),
        "{:?}",
        log.calls
    );
    assert!(log
        .calls
        .iter()
        .any(|c| c.starts_with("upsert 198.51.100.0/24 Forward")));
    assert_eq!(
        desired_of(&rib, &log, "203.0.113.0/24"),
        Some(Target::Kernel)
    );
    rib.finish_resync(Source::Fpm, &mut log);
    assert!(!rib.is_stale());
    assert_eq!(desired_of(&rib, &log, "203.0.113.0/24"), None, "swept");
    assert!(
        log.calls.contains(&"remove 203.0.113.0/24".to_string()),
        "{:?}",
        log.calls
    );
    assert!(forwards(desired_of(&rib, &log, "198.51.100.0/24")));

    // A later loss starts over from a trusted state.
    rib.apply_batch(Source::Fpm, [via("203.0.113.0/24", "192.0.2.2")], &mut log);
    assert!(forwards(desired_of(&rib, &log, "203.0.113.0/24")));
}

#[test]
fn going_stale_during_a_replay_keeps_what_the_replay_already_repeated() {
    let mut log = Log::default();
    let mut rib = rib_with_two_routes(&mut log);
    rib.begin_resync(Source::Fpm, &mut log);
    rib.apply_batch(
        Source::Fpm,
        [
            gateway_object(7, "192.0.2.1"),
            via_object("198.51.100.0/24", 7),
        ],
        &mut log,
    );
    log.calls.clear();
    assert_eq!(rib.go_stale(&mut log), 1);
    assert_eq!(log.calls, vec!["upsert 203.0.113.0/24 Kernel".to_string()]);
    assert!(forwards(desired_of(&rib, &log, "198.51.100.0/24")));
    rib.finish_resync(Source::Fpm, &mut log);
    assert_eq!(desired_of(&rib, &log, "203.0.113.0/24"), None);
    assert!(!rib.is_stale());
}

#[test]
fn an_abandoned_replay_vouches_for_nothing_once_the_source_is_stale() {
    let mut log = Log::default();
    let mut rib = rib_with_two_routes(&mut log);
    rib.begin_resync(Source::Fpm, &mut log);
    rib.apply_batch(Source::Fpm, [via_object("198.51.100.0/24", 7)], &mut log);
    // The session closed mid-replay and nobody came back.
    rib.abandon_resync(Source::Fpm);
    assert_eq!(rib.go_stale(&mut log), 2);
    assert_eq!(
        desired_of(&rib, &log, "198.51.100.0/24"),
        Some(Target::Kernel)
    );
    // An object change while stale publishes, and still to the kernel.
    log.calls.clear();
    rib.apply_batch(Source::Fpm, [gateway_object(7, "192.0.2.3")], &mut log);
    assert_eq!(log.calls, vec!["upsert 198.51.100.0/24 Kernel".to_string()]);
}

#[test]
fn a_stale_kernel_source_is_trusted_again_after_its_next_dump() {
    let mut log = Log::default();
    let mut rib = Rib::new(Source::Kernel, vec![254]);
    rib.apply_batch(
        Source::Kernel,
        [via("203.0.113.0/24", "192.0.2.2")],
        &mut log,
    );
    rib.begin_resync(Source::Kernel, &mut log);
    // The dump failed half-way; the source retries and keeps failing.
    rib.abandon_resync(Source::Kernel);
    assert_eq!(rib.go_stale(&mut log), 1);
    assert_eq!(
        desired_of(&rib, &log, "203.0.113.0/24"),
        Some(Target::Kernel)
    );
    rib.begin_resync(Source::Kernel, &mut log);
    rib.apply_batch(
        Source::Kernel,
        [via("203.0.113.0/24", "192.0.2.2")],
        &mut log,
    );
    rib.finish_resync(Source::Kernel, &mut log);
    assert!(!rib.is_stale());
    assert!(forwards(desired_of(&rib, &log, "203.0.113.0/24")));
}

#[test]
fn loading_two_hundred_thousand_routes_reports_its_time() {
    let mut rib = fpm_rib();
    let mut sink = Log::default();
    let mut count = 0;
    let started = Instant::now();
    for batch in 0..200u32 {
        let events: Vec<Change> = (0..1000u32)
            .map(|i| {
                let n = batch * 1000 + i;
                let prefix = format!("{}.{}.{}.0/24", 10 + (n >> 16), (n >> 8) & 0xff, n & 0xff);
                via_object(&prefix, 1 + n % 2000)
            })
            .collect();
        rib.apply_batch(Source::Fpm, events, &mut sink);
        count += 1000;
        sink.calls.clear();
    }
    println!("{count} routes into the RIB in {:?}", started.elapsed());
    assert_eq!(rib.route_count(), count);
}

#[test]
fn routes_with_the_same_inline_gateways_share_one_leg_set_until_the_last_goes() {
    let mut rib = Rib::new(Source::Kernel, vec![254]);
    let mut log = Log::default();
    let routes: Vec<Change> = (0..100)
        .map(|i| via(&format!("10.0.{i}.0/24"), "192.0.2.1"))
        .chain([via("10.1.0.0/16", "192.0.2.2")])
        .collect();
    rib.apply_batch(Source::Kernel, routes.clone(), &mut log);
    assert_eq!(rib.leg_sets.len(), 2);
    // A dump that repeats them (a resync) and a move to another gateway.
    rib.begin_resync(Source::Kernel, &mut log);
    rib.apply_batch(Source::Kernel, routes, &mut log);
    rib.finish_resync(Source::Kernel, &mut log);
    assert_eq!(rib.leg_sets.len(), 2);
    rib.apply_batch(Source::Kernel, [via("10.1.0.0/16", "192.0.2.1")], &mut log);
    assert_eq!(rib.leg_sets.len(), 1, "nothing goes via 192.0.2.2 any more");
    let gone: Vec<Change> = (0..100)
        .map(|i| delete(&format!("10.0.{i}.0/24")))
        .collect();
    rib.apply_batch(Source::Kernel, gone, &mut log);
    assert_eq!(rib.leg_sets.len(), 1);
    log.calls.clear();
    rib.apply_batch(Source::Kernel, [delete("10.1.0.0/16")], &mut log);
    assert!(rib.leg_sets.is_empty());
    assert_eq!(log.calls, ["remove 10.1.0.0/16"]);
    assert_eq!(rib.desired(&log), [], "every route went with its leg set");
}

#[test]
fn routes_through_an_encapsulated_object_or_group_member_are_left_to_the_kernel() {
    let mut rib = fpm_rib();
    let mut log = Log::default();
    rib.apply_batch(
        Source::Fpm,
        [
            Change::Nexthop(Op::Upsert, 1, Some(NexthopDef::Encapsulated)),
            gateway_object(2, "192.0.2.2"),
            Change::Nexthop(Op::Upsert, 3, Some(NexthopDef::Group(vec![(1, 1), (2, 1)]))),
            via_object("198.51.100.0/24", 1),
            via_object("203.0.113.0/24", 3),
        ],
        &mut log,
    );
    assert_eq!(
        log.calls,
        [
            "upsert 198.51.100.0/24 Kernel",
            "upsert 203.0.113.0/24 Kernel"
        ]
    );
    assert_eq!(
        rib.stats.unresolved_routes, 0,
        "known, only not offloadable"
    );
}

#[test]
fn the_table_shared_with_the_programmer_keeps_each_prefix_once_and_nothing_after_it_goes() {
    use crate::programmer::{fake::FakeMaps, Limits};
    let mut rib = fpm_rib();
    let mut programmer: Programmer<FakeMaps, RibEntry> = Programmer::sharing_table(
        FakeMaps::new(),
        Limits {
            nexthops: 16,
            ecmp_groups: 4,
        },
    );
    let own: IpAddr = Ipv4Addr::new(198, 51, 100, 1).into();
    let routed: Vec<String> = (0..20).map(|i| format!("203.0.113.{}/32", i * 4)).collect();
    let mut batch = vec![
        gateway_object(1, "192.0.2.1"),
        Change::Address(Op::Upsert, 2, own),
    ];
    batch.extend(routed.iter().map(|p| via_object(p, 1)));
    // The router's own address also has a route: one entry for both.
    batch.push(via_object("198.51.100.1/32", 1));
    rib.apply_batch(Source::Fpm, batch.clone(), &mut programmer);
    rib.apply_batch(Source::Kernel, batch, &mut programmer);
    assert_eq!(programmer.entries().len(), 21);
    assert_eq!(programmer.route_count(), 21);
    assert_eq!(
        programmer
            .programmed(&"198.51.100.1/32".parse().unwrap())
            .map(|(a, _)| a.kind()),
        Some(Some(pf_common::RouteKind::Local))
    );
    assert!(routed.iter().all(|p| programmer
        .programmed(&p.parse().unwrap())
        .is_some_and(|(a, _)| a.kind() == Some(pf_common::RouteKind::Nexthop))));

    // A replay that repeats half the routes sweeps the rest.
    rib.begin_resync(Source::Fpm, &mut programmer);
    let half: Vec<Change> = std::iter::once(gateway_object(1, "192.0.2.1"))
        .chain(routed[..10].iter().map(|p| via_object(p, 1)))
        .collect();
    rib.apply_batch(Source::Fpm, half, &mut programmer);
    rib.finish_resync(Source::Fpm, &mut programmer);
    assert_eq!(programmer.entries().len(), 11, "10 routes and the address");
    assert_eq!(rib.route_count(), 10);

    let gone: Vec<Change> = routed[..10].iter().map(|p| delete(p)).collect();
    rib.apply_batch(Source::Fpm, gone, &mut programmer);
    rib.apply_batch(
        Source::Kernel,
        [Change::Address(Op::Remove, 2, own)],
        &mut programmer,
    );
    assert!(programmer.entries().is_empty());
    assert_eq!(programmer.route_count(), 0);
    assert_eq!(rib.route_count(), 0);
    assert!(rib.desired(&programmer).is_empty());
}
