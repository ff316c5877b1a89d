//! rtnetlink messages as zebra sends them over FPM, for tests and benchmarks.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage};
use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType},
    AddressFamily, RouteNetlinkMessage,
};
use std::net::IpAddr;

/// RTM_NEWROUTE for `prefix` through nexthop object `nexthop_id`, protocol bgp.
pub fn route_message(prefix: ipnet::IpNet, nexthop_id: u32) -> Vec<u8> {
    typed_route_message(prefix, nexthop_id, RouteType::Unicast)
}

/// RTM_NEWROUTE of `kind` (a nexthop object is named only for unicast).
pub fn typed_route_message(prefix: ipnet::IpNet, nexthop_id: u32, kind: RouteType) -> Vec<u8> {
    let mut m = RouteMessage::default();
    m.header.address_family = if prefix.addr().is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.destination_prefix_length = prefix.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Bgp;
    m.header.kind = kind;
    m.attributes = vec![
        RouteAttribute::Destination(match prefix.addr() {
            std::net::IpAddr::V4(a) => RouteAddress::Inet(a),
            std::net::IpAddr::V6(a) => RouteAddress::Inet6(a),
        }),
        RouteAttribute::Priority(20),
    ];
    if kind == RouteType::Unicast {
        m.attributes.push(RouteAttribute::NhId(nexthop_id));
    }
    let mut packet = NetlinkMessage::new(
        NetlinkHeader::default(),
        RouteNetlinkMessage::NewRoute(m).into(),
    );
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// RTM_NEWNEXTHOP: a gateway, or a group of member ids (equal weights).
pub fn nexthop_message(id: u32, ifindex: u32, gateway: Option<IpAddr>, group: &[u32]) -> Vec<u8> {
    let family = match gateway {
        Some(IpAddr::V4(_)) => 2u8,
        _ => 10,
    };
    let mut body = vec![family, 0, 0, 0, 0, 0, 0, 0];
    let mut attr = |kind: u16, value: &[u8]| {
        body.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(value);
        body.resize((body.len() + 3) & !3, 0);
    };
    attr(1, &id.to_ne_bytes());
    if group.is_empty() {
        attr(5, &ifindex.to_ne_bytes());
        match gateway.expect("a gateway for a non-group object") {
            IpAddr::V4(a) => attr(6, &a.octets()),
            IpAddr::V6(a) => attr(6, &a.octets()),
        }
    } else {
        let entries: Vec<u8> = group
            .iter()
            .flat_map(|m| [m.to_ne_bytes().as_slice(), &[0, 0, 0, 0]].concat())
            .collect();
        attr(2, &entries);
    }
    let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
    m.extend_from_slice(&104u16.to_ne_bytes());
    m.extend_from_slice(&[0; 10]);
    m.extend_from_slice(&body);
    m
}
