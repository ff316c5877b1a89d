//! One decoder for kernel and FPM messages: rtnetlink bytes in,
//! source-neutral events out.
//!
//! Routes, links, neighbours and addresses are parsed by
//! `netlink-packet-route`; nexthop objects (RTM_NEWNEXTHOP), which that crate
//! does not model, are read with netlink-packet-core's attribute iterator.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NlaBuffer, NlasIterator, ParseableParametrized,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{
        InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
    },
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteLwEnCapType, RouteType,
        RouteVia,
    },
    AddressFamily, RouteNetlinkMessage,
};

use crate::programmer::{Leg, LinkInfo};

// Kernel ABI (linux/rtnetlink.h, linux/nexthop.h).
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
/// `sizeof(struct rtmsg)`: route attributes start after it.
const RTMSG_LEN: usize = 12;
const RTA_ENCAP: u16 = 22;
pub const RTM_NEWNEXTHOP: u16 = 104;
pub const RTM_DELNEXTHOP: u16 = 105;
const NHA_ENCAP_TYPE: u16 = 7;
const NHA_ENCAP: u16 = 8;
const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const NLMSG_HEADER_LEN: usize = 16;
const NHMSG_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Upsert,
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Unicast,
    Blackhole,
    Unreachable,
    Prohibit,
    Local,
}

/// Where a route's packets go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHops {
    /// No nexthop (blackhole, unreachable, prohibit, local).
    None,
    /// A nexthop object by id (RTA_NH_ID).
    Object(u32),
    /// Gateways inline (RTA_GATEWAY/RTA_VIA + RTA_OIF, or RTA_MULTIPATH).
    Inline(Vec<Leg>),
}

/// Identifies a route within its source: table, prefix and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    pub table: u32,
    pub prefix: IpNet,
    pub metric: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub key: RouteKey,
    /// `rtm_protocol`: 186 bgp, 196 static, 2 kernel, 12 bird, …
    pub protocol: u8,
    pub kind: Kind,
    pub next: NextHops,
}

/// A nexthop object's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NexthopDef {
    Gateway {
        ifindex: u32,
        gateway: Option<IpAddr>,
    },
    Blackhole,
    /// Member ids with weights (1-based, as `ip nexthop` shows them).
    Group(Vec<(u32, u32)>),
    /// A nexthop the datapath cannot apply (an MPLS, SRv6 or other
    /// encapsulation): routes naming it are left to the kernel.
    Encapsulated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Route(Op, Route),
    Nexthop(Op, u32, Option<NexthopDef>),
    /// `None` with `Remove`.
    Link(Op, u32, Option<LinkInfo>),
    /// The MAC when the neighbour is usable; `None` when it is not (or gone).
    Neighbour(u32, IpAddr, Option<[u8; 6]>),
    Address(Op, u32, IpAddr),
}

/// A message understood and deliberately not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Cloned/cache routes, multicast, broadcast and other route types.
    RouteType,
    /// Families other than IPv4 and IPv6 (MPLS, bridge FDB, …).
    Family,
    /// Messages of a type pf-sidecar does not follow (rules, qdiscs, done, …).
    MessageType,
}

impl Skip {
    pub const fn name(self) -> &'static str {
        match self {
            Skip::RouteType => "route_type",
            Skip::Family => "family",
            Skip::MessageType => "message_type",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Event(Event),
    Skipped(Skip),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct DecodeError {
    pub kind: &'static str,
    pub detail: String,
}

impl DecodeError {
    fn new(kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

/// Decodes one netlink message (header included).
pub fn decode(message: &[u8]) -> Result<Decoded, DecodeError> {
    if message.len() < NLMSG_HEADER_LEN {
        return Err(DecodeError::new(
            "truncated_message",
            format!("{} bytes", message.len()),
        ));
    }
    let message_type = u16::from_ne_bytes([message[4], message[5]]);
    match message_type {
        RTM_NEWNEXTHOP | RTM_DELNEXTHOP => return decode_nexthop(message_type, message),
        RTM_NEWROUTE => return decode_route(Op::Upsert, message),
        RTM_DELROUTE => return decode_route(Op::Remove, message),
        _ => {}
    }
    let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(message)
        .map_err(|e| DecodeError::new("bad_message", format!("type {message_type}: {e}")))?;
    let NetlinkPayload::InnerMessage(inner) = parsed.payload else {
        return Ok(Decoded::Skipped(Skip::MessageType));
    };
    Ok(match inner {
        RouteNetlinkMessage::NewLink(m) => {
            Decoded::Event(Event::Link(Op::Upsert, m.header.index, Some(link(&m))))
        }
        RouteNetlinkMessage::DelLink(m) => {
            Decoded::Event(Event::Link(Op::Remove, m.header.index, None))
        }
        RouteNetlinkMessage::NewNeighbour(m) => neighbour(&m, true),
        RouteNetlinkMessage::DelNeighbour(m) => neighbour(&m, false),
        RouteNetlinkMessage::NewAddress(m) => address(Op::Upsert, &m),
        RouteNetlinkMessage::DelAddress(m) => address(Op::Remove, &m),
        _ => Decoded::Skipped(Skip::MessageType),
    })
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn via_of(via: &RouteVia) -> Option<IpAddr> {
    match via {
        RouteVia::Inet(a) => Some(IpAddr::V4(*a)),
        RouteVia::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// The attributes of a message after its fixed header, checked against the
/// netlink length.
fn attributes_of(message: &[u8], fixed: usize) -> Result<(&[u8], &[u8]), DecodeError> {
    let declared = u32::from_ne_bytes([message[0], message[1], message[2], message[3]]) as usize;
    if declared < NLMSG_HEADER_LEN + fixed || declared > message.len() {
        return Err(DecodeError::new(
            "truncated_message",
            format!("message of {declared} bytes"),
        ));
    }
    Ok((
        &message[NLMSG_HEADER_LEN..NLMSG_HEADER_LEN + fixed],
        &message[NLMSG_HEADER_LEN + fixed..declared],
    ))
}

/// RTM_NEWROUTE / RTM_DELROUTE, one attribute at a time with
/// netlink-packet-route's parsers: a full table is a million of these, so
/// nothing is collected that the route does not need.
fn decode_route(op: Op, message: &[u8]) -> Result<Decoded, DecodeError> {
    let (header, attributes) = attributes_of(message, RTMSG_LEN)?;
    let h = RouteHeader::parse(header)
        .map_err(|e| DecodeError::new("bad_message", format!("route header: {e}")))?;
    let v4 = match h.address_family {
        AddressFamily::Inet => true,
        AddressFamily::Inet6 => false,
        _ => return Ok(Decoded::Skipped(Skip::Family)),
    };
    if h.flags.contains(RouteFlags::Cloned) {
        return Ok(Decoded::Skipped(Skip::RouteType));
    }
    let kind = match h.kind {
        RouteType::Unicast => Kind::Unicast,
        RouteType::BlackHole => Kind::Blackhole,
        RouteType::Unreachable => Kind::Unreachable,
        RouteType::Prohibit => Kind::Prohibit,
        RouteType::Local => Kind::Local,
        // A delete names the route by table, prefix and metric; zebra does
        // not always repeat the type (RTN_UNSPEC), and the type of what is
        // deleted does not matter.
        RouteType::Unspec if op == Op::Remove => Kind::Unicast,
        _ => return Ok(Decoded::Skipped(Skip::RouteType)),
    };
    let mut table = h.table as u32;
    let mut destination = None;
    let mut metric = 0;
    let mut gateway = None;
    let mut oif = 0;
    let mut object = None;
    let mut multipath = None;
    let mut encapsulated = false;
    for nla in NlasIterator::new(attributes) {
        let nla = nla.map_err(|e| DecodeError::new("bad_attribute", e.to_string()))?;
        if nla.kind() == RTA_ENCAP {
            // Its layout depends on RTA_ENCAP_TYPE; that it is there is enough.
            encapsulated = true;
            continue;
        }
        let attribute = RouteAttribute::parse_with_param(
            &nla,
            (h.address_family, h.kind, RouteLwEnCapType::None),
        )
        .map_err(|e| DecodeError::new("bad_attribute", e.to_string()))?;
        match attribute {
            RouteAttribute::Table(t) => table = t,
            RouteAttribute::Destination(d) => destination = ip_of(&d),
            RouteAttribute::Priority(p) => metric = p,
            RouteAttribute::Gateway(g) => gateway = ip_of(&g),
            RouteAttribute::Via(v) => gateway = via_of(&v),
            RouteAttribute::Oif(i) => oif = i,
            RouteAttribute::NhId(id) => object = Some(id),
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            RouteAttribute::EncapType(t) => encapsulated |= t != RouteLwEnCapType::None,
            _ => {}
        }
    }
    let unspecified = if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    let address = destination.unwrap_or(unspecified);
    if address.is_ipv4() != v4 {
        return Err(DecodeError::new(
            "bad_attribute",
            "RTA_DST family differs from the route's",
        ));
    }
    let prefix = IpNet::new(address, h.destination_prefix_length)
        .map_err(|_| {
            DecodeError::new(
                "bad_prefix_length",
                format!("/{}", h.destination_prefix_length),
            )
        })?
        .trunc();
    let hop_encapsulated = |hop: &netlink_packet_route::route::RouteNextHop| {
        hop.attributes.iter().any(|a| {
            matches!(a, RouteAttribute::Encap(_))
                || matches!(a, RouteAttribute::EncapType(t) if *t != RouteLwEnCapType::None)
        })
    };
    // An encapsulated route forwarded as plain IP would be wrong: the
    // kernel applies it (`NextHops::None` on a unicast route).
    let next = if kind != Kind::Unicast
        || encapsulated
        || multipath
            .as_ref()
            .is_some_and(|hops| hops.iter().any(hop_encapsulated))
    {
        NextHops::None
    } else if let Some(id) = object {
        NextHops::Object(id)
    } else if let Some(hops) = multipath {
        NextHops::Inline(
            hops.iter()
                .map(|hop| {
                    let gateway = hop.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(g) => ip_of(g),
                        RouteAttribute::Via(v) => via_of(v),
                        _ => None,
                    });
                    Leg {
                        ifindex: hop.interface_index,
                        gateway,
                        weight: hop.hops as u32 + 1,
                    }
                })
                .collect(),
        )
    } else {
        NextHops::Inline(vec![Leg {
            ifindex: oif,
            gateway,
            weight: 1,
        }])
    };
    Ok(Decoded::Event(Event::Route(
        op,
        Route {
            key: RouteKey {
                table,
                prefix,
                metric,
            },
            protocol: u8::from(h.protocol),
            kind,
            next,
        },
    )))
}

fn link(m: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        mac: [0; 6],
        mtu: 1500,
        up: m.header.flags.contains(LinkFlags::Up) && m.header.flags.contains(LinkFlags::Running),
        vlan: None,
    };
    let mut parent = None;
    let mut vlan_id = None;
    let mut tpid = 0x8100;
    for attribute in &m.attributes {
        match attribute {
            LinkAttribute::Address(mac) if mac.len() == 6 => info.mac.copy_from_slice(mac),
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            LinkAttribute::Link(p) => parent = Some(*p),
            LinkAttribute::LinkInfo(infos) => {
                let is_vlan = infos
                    .iter()
                    .any(|i| matches!(i, NlLinkInfo::Kind(InfoKind::Vlan)));
                for i in infos {
                    if let (true, NlLinkInfo::Data(InfoData::Vlan(vlan))) = (is_vlan, i) {
                        for v in vlan {
                            match v {
                                InfoVlan::Id(id) => vlan_id = Some(*id),
                                InfoVlan::Protocol(p) => tpid = u16::from(*p),
                                _ => {}
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let (Some(id), Some(parent)) = (vlan_id, parent) {
        info.vlan = Some((id, tpid, parent));
    }
    info
}

fn neighbour(m: &NeighbourMessage, new: bool) -> Decoded {
    if !matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6) {
        return Decoded::Skipped(Skip::Family);
    }
    let mut ip = None;
    let mut mac = None;
    for attribute in &m.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                mac = Some(<[u8; 6]>::try_from(&l[..]).expect("six bytes"))
            }
            _ => {}
        }
    }
    let Some(ip) = ip else {
        return Decoded::Skipped(Skip::Family);
    };
    let usable = new
        && matches!(
            m.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::Noarp
        );
    Decoded::Event(Event::Neighbour(
        m.header.ifindex,
        ip,
        // An all-zero address is never a neighbour's MAC (the kernel can
        // report one on an entry it is still probing).
        mac.filter(|m| usable && *m != [0; 6]),
    ))
}

fn address(op: Op, m: &AddressMessage) -> Decoded {
    // IFA_LOCAL is the interface's own address on point-to-point links;
    // elsewhere it equals IFA_ADDRESS.
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    });
    match address {
        Some(ip) => Decoded::Event(Event::Address(op, m.header.index, ip)),
        None => Decoded::Skipped(Skip::Family),
    }
}

fn decode_nexthop(message_type: u16, message: &[u8]) -> Result<Decoded, DecodeError> {
    let (header, attributes) = attributes_of(message, NHMSG_LEN)?;
    let family = header[0];
    let mut id = None;
    let mut ifindex = 0;
    let mut gateway = None;
    let mut blackhole = false;
    let mut group = None;
    let mut encapsulated = false;
    for nla in NlasIterator::new(attributes) {
        let nla: NlaBuffer<&[u8]> =
            nla.map_err(|e| DecodeError::new("bad_attribute", e.to_string()))?;
        let value = nla.value();
        let u32_of = |value: &[u8]| {
            <[u8; 4]>::try_from(value)
                .map(u32::from_ne_bytes)
                .map_err(|_| {
                    DecodeError::new(
                        "bad_attribute",
                        format!("attribute {} is not 4 bytes", nla.kind()),
                    )
                })
        };
        match nla.kind() {
            NHA_ID => id = Some(u32_of(value)?),
            NHA_OIF => ifindex = u32_of(value)?,
            NHA_BLACKHOLE => blackhole = true,
            NHA_ENCAP_TYPE | NHA_ENCAP => encapsulated = true,
            NHA_GATEWAY => {
                gateway = Some(match value.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(value).expect("4 bytes")),
                    16 => IpAddr::from(<[u8; 16]>::try_from(value).expect("16 bytes")),
                    n => {
                        return Err(DecodeError::new(
                            "bad_attribute",
                            format!("NHA_GATEWAY of {n} bytes"),
                        ))
                    }
                })
            }
            NHA_GROUP => {
                if !value.len().is_multiple_of(8) || value.is_empty() {
                    return Err(DecodeError::new(
                        "bad_attribute",
                        format!("NHA_GROUP of {} bytes", value.len()),
                    ));
                }
                // struct nexthop_grp { u32 id; u8 weight; u8 weight_high; u16 resvd2 }:
                // the weight on the wire is one less than the configured weight.
                group = Some(
                    value
                        .chunks_exact(8)
                        .map(|c| {
                            let weight = (c[4] as u32 | (c[5] as u32) << 8) + 1;
                            (u32::from_ne_bytes([c[0], c[1], c[2], c[3]]), weight)
                        })
                        .collect(),
                );
            }
            _ => {}
        }
    }
    let id = id.ok_or_else(|| DecodeError::new("missing_attribute", "nexthop without NHA_ID"))?;
    if message_type == RTM_DELNEXTHOP {
        return Ok(Decoded::Event(Event::Nexthop(Op::Remove, id, None)));
    }
    let def = if let Some(members) = group {
        NexthopDef::Group(members)
    } else if blackhole {
        NexthopDef::Blackhole
    } else if encapsulated {
        NexthopDef::Encapsulated
    } else {
        if let Some(gw) = gateway {
            let family_matches = (family == 2 && gw.is_ipv4()) || (family == 10 && gw.is_ipv6());
            if !family_matches && family != 0 {
                return Err(DecodeError::new(
                    "bad_attribute",
                    "NHA_GATEWAY family differs from the nexthop's",
                ));
            }
        }
        NexthopDef::Gateway { ifindex, gateway }
    };
    Ok(Decoded::Event(Event::Nexthop(Op::Upsert, id, Some(def))))
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_route::route::{RouteMessage, RouteNextHop, RouteProtocol};

    use super::*;
    use crate::fpm::FpmCodec;

    fn emit(message: RouteNetlinkMessage) -> Vec<u8> {
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), message.into());
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        bytes
    }

    fn route_message(
        prefix: &str,
        kind: RouteType,
        attributes: Vec<RouteAttribute>,
    ) -> RouteMessage {
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
            Decoded::Event(Event::Route(op, route)) => (op, route),
            other => panic!("not a route: {other:?}"),
        }
    }

    fn gw4(s: &str) -> RouteAttribute {
        RouteAttribute::Gateway(RouteAddress::Inet(s.parse().unwrap()))
    }

    #[test]
    fn a_real_frr_replay_decodes_to_nexthop_objects_then_routes() {
        let capture = include_bytes!("../../tests/fixtures/fpm/frr-8.4-static-replay.bin");
        let mut buf = bytes::BytesMut::from(&capture[..]);
        let mut events = Vec::new();
        while let Some(frame) = FpmCodec.decode(&mut buf).unwrap() {
            for message in frame.messages() {
                if let Decoded::Event(e) = decode(message).unwrap() {
                    events.push(e);
                }
            }
        }
        let static_route = events.iter().find_map(|e| match e {
            Event::Route(Op::Upsert, r)
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
            Event::Nexthop(Op::Upsert, i, Some(def)) if *i == id => Some(def.clone()),
            _ => None,
        });
        assert!(
            matches!(object, Some(NexthopDef::Gateway { gateway: Some(IpAddr::V4(g)), .. }) if g == Ipv4Addr::new(192, 0, 2, 2)),
            "{object:?}"
        );
    }

    #[test]
    fn a_real_frr_bgp_replay_decodes_ecmp_groups_blackholes_and_ipv4_over_ipv6() {
        let capture = include_bytes!("../../tests/fixtures/fpm/frr-8.4-bgp-lab-replay.bin");
        let mut buf = bytes::BytesMut::from(&capture[..]);
        let mut events = Vec::new();
        while let Some(frame) = FpmCodec.decode(&mut buf).unwrap() {
            for message in frame.messages() {
                if let Decoded::Event(e) = decode(message).unwrap() {
                    events.push(e);
                }
            }
        }
        let route = |prefix: &str| {
            let prefix: IpNet = prefix.parse().unwrap();
            events.iter().find_map(|e| match e {
                Event::Route(Op::Upsert, r) if r.key.prefix == prefix => Some(r.clone()),
                _ => None,
            })
        };
        let object = |id: u32| {
            events.iter().find_map(|e| match e {
                Event::Nexthop(Op::Upsert, i, Some(def)) if *i == id => Some(def.clone()),
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
            Decoded::Event(Event::Nexthop(
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
            Decoded::Event(Event::Nexthop(
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
            Decoded::Event(Event::Nexthop(
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
}
