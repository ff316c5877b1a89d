use netlink_packet_core::NetlinkHeader;
use netlink_packet_route::route::{RouteMessage, RouteNextHop, RouteProtocol};

use super::*;
use pf_control::fpm::FpmCodec;

fn emit(message: RouteNetlinkMessage) -> Vec<u8> {
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), message.into());
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

fn route_message(prefix: &str, kind: RouteType, attributes: Vec<RouteAttribute>) -> RouteMessage {
    let prefix: IpNet = prefix.parse().unwrap();
    let mut m = RouteMessage::default();
    m.header.address_family = if prefix.addr().is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.destination_prefix_length = prefix.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    m.header.kind = kind;
    m.attributes = attributes;
    if prefix.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(match prefix.addr() {
                IpAddr::V4(a) => RouteAddress::Inet(a),
                IpAddr::V6(a) => RouteAddress::Inet6(a),
            }));
    }
    m
}

fn route_event(bytes: &[u8]) -> (Op, Route) {
    match decode(bytes).unwrap() {
        Decoded::Change(Change::Route(op, route)) => (op, route),
        other => panic!("not a route: {other:?}"),
    }
}

fn gw4(s: &str) -> RouteAttribute {
    RouteAttribute::Gateway(RouteAddress::Inet(s.parse().unwrap()))
}

#[test]
fn a_real_frr_replay_decodes_to_nexthop_objects_then_routes() {
    let capture = include_bytes!("../../../tests/fixtures/fpm/frr-8.4-static-replay.bin");
    let mut buf = bytes::BytesMut::from(&capture[..]);
    let mut events = Vec::new();
    while let Some(frame) = FpmCodec.decode(&mut buf).unwrap() {
        for message in frame.messages() {
            if let Decoded::Change(e) = decode(message).unwrap() {
                events.push(e);
            }
        }
    }
    let static_route = events.iter().find_map(|e| match e {
        Change::Route(Op::Upsert, r)
            if r.key.prefix == "198.51.100.0/24".parse::<IpNet>().unwrap() =>
        {
            Some(r)
        }
        _ => None,
    });
    let route = static_route.expect("the static route is in the replay");
    assert_eq!(route.protocol, 196, "static");
    assert_eq!(route.key.metric, 20, "zebra's FPM metric");
    let NextHops::Object(id) = route.next else {
        panic!("FRR 8.4 names a nexthop group: {:?}", route.next)
    };
    let object = events.iter().find_map(|e| match e {
        Change::Nexthop(Op::Upsert, i, Some(def)) if *i == id => Some(def.clone()),
        _ => None,
    });
    assert!(
        matches!(object, Some(NexthopDef::Gateway { gateway: Some(IpAddr::V4(g)), .. }) if g == Ipv4Addr::new(192, 0, 2, 2)),
        "{object:?}"
    );
}

#[test]
fn a_real_frr_bgp_replay_decodes_ecmp_groups_blackholes_and_ipv4_over_ipv6() {
    let capture = include_bytes!("../../../tests/fixtures/fpm/frr-8.4-bgp-lab-replay.bin");
    let mut buf = bytes::BytesMut::from(&capture[..]);
    let mut events = Vec::new();
    while let Some(frame) = FpmCodec.decode(&mut buf).unwrap() {
        for message in frame.messages() {
            if let Decoded::Change(e) = decode(message).unwrap() {
                events.push(e);
            }
        }
    }
    let route = |prefix: &str| {
        let prefix: IpNet = prefix.parse().unwrap();
        events.iter().find_map(|e| match e {
            Change::Route(Op::Upsert, r) if r.key.prefix == prefix => Some(r.clone()),
            _ => None,
        })
    };
    let object = |id: u32| {
        events.iter().find_map(|e| match e {
            Change::Nexthop(Op::Upsert, i, Some(def)) if *i == id => Some(def.clone()),
            _ => None,
        })
    };
    let ecmp = route("203.0.113.0/24").expect("the BGP ECMP route");
    assert_eq!(ecmp.protocol, 186, "bgp");
    let NextHops::Object(group) = ecmp.next else {
        panic!("{ecmp:?}")
    };
    assert!(matches!(object(group), Some(NexthopDef::Group(m)) if m.len() == 2));
    let rfc5549 = route("203.0.113.192/26").expect("the IPv4 route over an IPv6 next hop");
    let NextHops::Object(id) = rfc5549.next else {
        panic!("{rfc5549:?}")
    };
    assert!(
        matches!(
            object(id),
            Some(NexthopDef::Gateway {
                gateway: Some(IpAddr::V6(_)),
                ..
            })
        ),
        "{:?}",
        object(id)
    );
    assert_eq!(route("192.0.2.128/26").unwrap().kind, Kind::Blackhole);
    assert_eq!(route("198.51.100.192/27").unwrap().kind, Kind::Unreachable);
    assert_eq!(route("2001:db8:ff:1::/64").unwrap().kind, Kind::Blackhole);
    assert!(route("2001:db8:ff::/48").is_some());
}

#[test]
fn a_gateway_route_decodes_with_table_metric_and_protocol() {
    let mut m = route_message(
        "198.51.100.0/24",
        RouteType::Unicast,
        vec![gw4("192.0.2.1"), RouteAttribute::Oif(3)],
    );
    m.attributes.push(RouteAttribute::Priority(20));
    m.attributes.push(RouteAttribute::Table(1000));
    let (op, route) = route_event(&emit(RouteNetlinkMessage::NewRoute(m)));
    assert_eq!(op, Op::Upsert);
    assert_eq!(
        route.key,
        RouteKey {
            table: 1000,
            prefix: "198.51.100.0/24".parse().unwrap(),
            metric: 20
        }
    );
    assert_eq!(
        route.next,
        NextHops::Inline(vec![Leg {
            ifindex: 3,
            gateway: Some("192.0.2.1".parse().unwrap()),
            weight: 1
        }])
    );
}

#[test]
fn multipath_routes_keep_each_legs_weight() {
    let hop = |ifindex, gw: &str, hops| {
        let mut hop = RouteNextHop::default();
        hop.hops = hops;
        hop.interface_index = ifindex;
        hop.attributes = vec![gw4(gw)];
        hop
    };
    let m = route_message(
        "203.0.113.0/24",
        RouteType::Unicast,
        vec![RouteAttribute::MultiPath(vec![
            hop(3, "192.0.2.1", 2),
            hop(4, "192.0.2.2", 0),
        ])],
    );
    let (_, route) = route_event(&emit(RouteNetlinkMessage::NewRoute(m)));
    let NextHops::Inline(legs) = route.next else {
        panic!()
    };
    assert_eq!(
        legs.iter()
            .map(|l| (l.ifindex, l.weight))
            .collect::<Vec<_>>(),
        vec![(3, 3), (4, 1)]
    );
}

#[test]
fn encapsulated_routes_are_left_to_the_kernel_whole_or_in_one_leg() {
    use netlink_packet_route::route::{
        MplsLabel, RouteLwTunnelEncap, RouteMplsIpTunnel, RouteNextHop,
    };
    let label = || {
        vec![
            RouteAttribute::EncapType(RouteLwEnCapType::Mpls),
            RouteAttribute::Encap(vec![RouteLwTunnelEncap::Mpls(
                RouteMplsIpTunnel::Destination(vec![MplsLabel {
                    label: 100,
                    traffic_class: 0,
                    bottom_of_stack: true,
                    ttl: 0,
                }]),
            )]),
        ]
    };
    let mut attributes = label();
    attributes.extend([gw4("192.0.2.1"), RouteAttribute::Oif(3)]);
    let m = route_message("203.0.113.0/24", RouteType::Unicast, attributes);
    let (_, route) = route_event(&emit(RouteNetlinkMessage::NewRoute(m)));
    assert_eq!(route.next, NextHops::None, "an MPLS push is not plain IP");

    let hop = |labelled: bool| {
        let mut hop = RouteNextHop::default();
        hop.interface_index = 3;
        hop.attributes = vec![gw4("192.0.2.1")];
        if labelled {
            hop.attributes.extend(label());
        }
        hop
    };
    let m = route_message(
        "203.0.113.0/24",
        RouteType::Unicast,
        vec![RouteAttribute::MultiPath(vec![hop(false), hop(true)])],
    );
    let (_, route) = route_event(&emit(RouteNetlinkMessage::NewRoute(m)));
    assert_eq!(route.next, NextHops::None);

    let m = nexthop_message(
        RTM_NEWNEXTHOP,
        &[
            (NHA_ID, &9u32.to_ne_bytes()),
            (NHA_OIF, &3u32.to_ne_bytes()),
            (NHA_GATEWAY, &[192, 0, 2, 1]),
            (NHA_ENCAP_TYPE, &1u16.to_ne_bytes()),
        ],
    );
    assert_eq!(
        decode(&m).unwrap(),
        Decoded::Change(Change::Nexthop(
            Op::Upsert,
            9,
            Some(NexthopDef::Encapsulated)
        ))
    );
}

#[test]
fn an_ipv4_route_over_an_ipv6_gateway_keeps_the_ipv6_gateway() {
    let via = RouteAttribute::Via(RouteVia::Inet6("2001:db8::1".parse().unwrap()));
    let m = route_message(
        "198.51.100.0/24",
        RouteType::Unicast,
        vec![via, RouteAttribute::Oif(5)],
    );
    let (_, route) = route_event(&emit(RouteNetlinkMessage::NewRoute(m)));
    assert_eq!(
        route.next,
        NextHops::Inline(vec![Leg {
            ifindex: 5,
            gateway: Some("2001:db8::1".parse().unwrap()),
            weight: 1
        }])
    );
}

#[test]
fn blackhole_unreachable_and_prohibit_routes_have_no_nexthop() {
    for (kind, expected) in [
        (RouteType::BlackHole, Kind::Blackhole),
        (RouteType::Unreachable, Kind::Unreachable),
        (RouteType::Prohibit, Kind::Prohibit),
    ] {
        let (_, route) = route_event(&emit(RouteNetlinkMessage::NewRoute(route_message(
            "2001:db8:9::/48",
            kind,
            vec![],
        ))));
        assert_eq!((route.kind, route.next), (expected, NextHops::None));
    }
}

#[test]
fn a_route_naming_a_nexthop_object_keeps_its_id() {
    let m = route_message(
        "0.0.0.0/0",
        RouteType::Unicast,
        vec![RouteAttribute::NhId(42)],
    );
    let (op, route) = route_event(&emit(RouteNetlinkMessage::DelRoute(m)));
    assert_eq!(op, Op::Remove);
    assert_eq!(route.key.prefix, "0.0.0.0/0".parse::<IpNet>().unwrap());
    assert_eq!(route.next, NextHops::Object(42));
}

#[test]
fn a_delete_without_a_route_type_still_removes_the_route() {
    // zebra sends RTM_DELROUTE with RTN_UNSPEC, e.g. for a blackhole.
    let m = route_message("203.0.113.128/25", RouteType::Unspec, vec![]);
    let (op, route) = route_event(&emit(RouteNetlinkMessage::DelRoute(m)));
    assert_eq!(
        (op, route.key.prefix),
        (Op::Remove, "203.0.113.128/25".parse().unwrap())
    );
}

#[test]
fn cloned_and_multicast_routes_are_skipped() {
    let mut cloned = route_message(
        "198.51.100.7/32",
        RouteType::Unicast,
        vec![gw4("192.0.2.1")],
    );
    cloned.header.flags = RouteFlags::Cloned;
    assert_eq!(
        decode(&emit(RouteNetlinkMessage::NewRoute(cloned))).unwrap(),
        Decoded::Skipped(Skip::RouteType)
    );
    let multicast = route_message("224.0.0.0/4", RouteType::Multicast, vec![]);
    assert_eq!(
        decode(&emit(RouteNetlinkMessage::NewRoute(multicast))).unwrap(),
        Decoded::Skipped(Skip::RouteType)
    );
}

fn nexthop_message(message_type: u16, attributes: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = vec![2, 0, 0, 0, 0, 0, 0, 0]; // nhmsg: AF_INET
    for (kind, value) in attributes {
        let len = 4 + value.len();
        body.extend_from_slice(&(len as u16).to_ne_bytes());
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(value);
        body.resize((body.len() + 3) & !3, 0);
    }
    let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
    m.extend_from_slice(&message_type.to_ne_bytes());
    m.extend_from_slice(&[0; 10]);
    m.extend_from_slice(&body);
    m
}

#[test]
fn a_nexthop_group_decodes_with_weights() {
    let mut group = Vec::new();
    for (id, weight_minus_one) in [(10u32, 0u8), (11, 2)] {
        group.extend_from_slice(&id.to_ne_bytes());
        group.extend_from_slice(&[weight_minus_one, 0, 0, 0]);
    }
    let m = nexthop_message(
        RTM_NEWNEXTHOP,
        &[(NHA_ID, &7u32.to_ne_bytes()), (NHA_GROUP, &group)],
    );
    assert_eq!(
        decode(&m).unwrap(),
        Decoded::Change(Change::Nexthop(
            Op::Upsert,
            7,
            Some(NexthopDef::Group(vec![(10, 1), (11, 3)]))
        ))
    );
}

#[test]
fn bad_attribute_lengths_are_errors_and_unknown_attributes_are_ignored() {
    let short_id = nexthop_message(RTM_NEWNEXTHOP, &[(NHA_ID, &[1, 2])]);
    assert_eq!(decode(&short_id).unwrap_err().kind, "bad_attribute");
    let odd_group = nexthop_message(
        RTM_NEWNEXTHOP,
        &[(NHA_ID, &1u32.to_ne_bytes()), (NHA_GROUP, &[0; 6])],
    );
    assert_eq!(decode(&odd_group).unwrap_err().kind, "bad_attribute");
    let unknown = nexthop_message(
        RTM_NEWNEXTHOP,
        &[
            (NHA_ID, &1u32.to_ne_bytes()),
            (99, &[1, 2, 3]),
            (NHA_OIF, &4u32.to_ne_bytes()),
        ],
    );
    assert_eq!(
        decode(&unknown).unwrap(),
        Decoded::Change(Change::Nexthop(
            Op::Upsert,
            1,
            Some(NexthopDef::Gateway {
                ifindex: 4,
                gateway: None
            })
        ))
    );
    let mut overlong = nexthop_message(RTM_NEWNEXTHOP, &[(NHA_ID, &1u32.to_ne_bytes())]);
    overlong[24..26].copy_from_slice(&200u16.to_ne_bytes());
    assert!(
        decode(&overlong).is_err(),
        "an attribute longer than the message"
    );
}

#[test]
fn truncated_and_garbage_messages_are_errors_not_panics() {
    let valid = emit(RouteNetlinkMessage::NewRoute(route_message(
        "198.51.100.0/24",
        RouteType::Unicast,
        vec![gw4("192.0.2.1")],
    )));
    for len in 0..valid.len() {
        let mut cut = valid[..len].to_vec();
        if cut.len() >= 4 {
            cut[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        }
        let _ = decode(&cut);
    }
    let mut seed = 0x1234_5678u32;
    for _ in 0..2000 {
        let mut junk = valid.clone();
        for _ in 0..4 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let i = 16 + (seed as usize >> 8) % (junk.len() - 16);
            junk[i] = (seed >> 16) as u8;
        }
        let _ = decode(&junk);
    }
}

fn link_info(bytes: &[u8]) -> LinkInfo {
    match decode(bytes).unwrap() {
        Decoded::Change(Change::Link(Op::Upsert, _, Some(link))) => link,
        other => panic!("not a link: {other:?}"),
    }
}

#[test]
fn a_vrf_device_decodes_with_its_table_and_a_port_with_its_master() {
    let mut vrf = LinkMessage::default();
    vrf.header.index = 40;
    vrf.attributes = vec![LinkAttribute::LinkInfo(vec![
        NlLinkInfo::Kind(InfoKind::Vrf),
        NlLinkInfo::Data(InfoData::Vrf(vec![InfoVrf::TableId(10)])),
    ])];
    let vrf = link_info(&emit(RouteNetlinkMessage::NewLink(vrf)));
    assert_eq!((vrf.vrf_table, vrf.master), (Some(10), 0));

    let mut port = LinkMessage::default();
    port.header.index = 3;
    port.attributes = vec![LinkAttribute::Controller(40)];
    let port = link_info(&emit(RouteNetlinkMessage::NewLink(port)));
    assert_eq!((port.vrf_table, port.master), (None, 40));
}
