//! One decoder for kernel and FPM messages: rtnetlink bytes in,
//! source-neutral changes (`pf_control::change`) out.
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
        InfoData, InfoKind, InfoVlan, InfoVrf, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo,
        LinkMessage,
    },
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteLwEnCapType, RouteType,
        RouteVia,
    },
    AddressFamily, RouteNetlinkMessage,
};

use pf_control::{
    change::{Change, Kind, NextHops, NexthopDef, Op, Route, RouteKey},
    programmer::{Leg, LinkInfo},
};

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
    Change(Change),
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
            Decoded::Change(Change::Link(Op::Upsert, m.header.index, Some(link(&m))))
        }
        RouteNetlinkMessage::DelLink(m) => {
            Decoded::Change(Change::Link(Op::Remove, m.header.index, None))
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
    let Some(kind) = route_kind(op, h.kind) else {
        return Ok(Decoded::Skipped(Skip::RouteType));
    };
    let attrs = RouteAttributes::parse(&h, attributes)?;
    let unspecified = if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    let address = attrs.destination.unwrap_or(unspecified);
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
    Ok(Decoded::Change(Change::Route(
        op,
        Route {
            key: RouteKey {
                table: attrs.table,
                prefix,
                metric: attrs.metric,
            },
            protocol: u8::from(h.protocol),
            kind,
            next: attrs.next_hops(kind),
        },
    )))
}

/// The route types the fast path knows; `None` for the others.
fn route_kind(op: Op, kind: RouteType) -> Option<Kind> {
    Some(match kind {
        RouteType::Unicast => Kind::Unicast,
        RouteType::BlackHole => Kind::Blackhole,
        RouteType::Unreachable => Kind::Unreachable,
        RouteType::Prohibit => Kind::Prohibit,
        RouteType::Local => Kind::Local,
        // A delete names the route by table, prefix and metric; zebra does
        // not always repeat the type (RTN_UNSPEC), and the type of what is
        // deleted does not matter.
        RouteType::Unspec if op == Op::Remove => Kind::Unicast,
        _ => return None,
    })
}

/// The attributes of a route message that the RIB uses.
struct RouteAttributes {
    table: u32,
    destination: Option<IpAddr>,
    metric: u32,
    gateway: Option<IpAddr>,
    oif: u32,
    object: Option<u32>,
    multipath: Option<Vec<netlink_packet_route::route::RouteNextHop>>,
    encapsulated: bool,
}

impl RouteAttributes {
    /// Parses one attribute at a time (netlink-packet-route's parsers),
    /// keeping only what the RIB uses.
    fn parse(h: &RouteHeader, attributes: &[u8]) -> Result<Self, DecodeError> {
        let mut attrs = RouteAttributes {
            table: h.table as u32,
            destination: None,
            metric: 0,
            gateway: None,
            oif: 0,
            object: None,
            multipath: None,
            encapsulated: false,
        };
        for nla in NlasIterator::new(attributes) {
            let nla = nla.map_err(|e| DecodeError::new("bad_attribute", e.to_string()))?;
            if nla.kind() == RTA_ENCAP {
                // Its layout depends on RTA_ENCAP_TYPE; that it is there is enough.
                attrs.encapsulated = true;
                continue;
            }
            let attribute = RouteAttribute::parse_with_param(
                &nla,
                (h.address_family, h.kind, RouteLwEnCapType::None),
            )
            .map_err(|e| DecodeError::new("bad_attribute", e.to_string()))?;
            match attribute {
                RouteAttribute::Table(t) => attrs.table = t,
                RouteAttribute::Destination(d) => attrs.destination = ip_of(&d),
                RouteAttribute::Priority(p) => attrs.metric = p,
                RouteAttribute::Gateway(g) => attrs.gateway = ip_of(&g),
                RouteAttribute::Via(v) => attrs.gateway = via_of(&v),
                RouteAttribute::Oif(i) => attrs.oif = i,
                RouteAttribute::NhId(id) => attrs.object = Some(id),
                RouteAttribute::MultiPath(hops) => attrs.multipath = Some(hops),
                RouteAttribute::EncapType(t) => attrs.encapsulated |= t != RouteLwEnCapType::None,
                _ => {}
            }
        }
        Ok(attrs)
    }

    fn next_hops(self, kind: Kind) -> NextHops {
        let hop_encapsulated = |hop: &netlink_packet_route::route::RouteNextHop| {
            hop.attributes.iter().any(|a| {
                matches!(a, RouteAttribute::Encap(_))
                    || matches!(a, RouteAttribute::EncapType(t) if *t != RouteLwEnCapType::None)
            })
        };
        // An encapsulated route forwarded as plain IP would be wrong: the
        // kernel applies it (`NextHops::None` on a unicast route).
        if kind != Kind::Unicast
            || self.encapsulated
            || self
                .multipath
                .as_ref()
                .is_some_and(|hops| hops.iter().any(hop_encapsulated))
        {
            NextHops::None
        } else if let Some(id) = self.object {
            NextHops::Object(id)
        } else if let Some(hops) = self.multipath {
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
                ifindex: self.oif,
                gateway: self.gateway,
                weight: 1,
            }])
        }
    }
}

fn link(m: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        mac: [0; 6],
        mtu: 1500,
        up: m.header.flags.contains(LinkFlags::Up) && m.header.flags.contains(LinkFlags::Running),
        vlan: None,
        master: 0,
        vrf_table: None,
    };
    let mut parent = None;
    let mut vlan_id = None;
    let mut tpid = 0x8100;
    for attribute in &m.attributes {
        match attribute {
            LinkAttribute::Address(mac) if mac.len() == 6 => info.mac.copy_from_slice(mac),
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            LinkAttribute::Link(p) => parent = Some(*p),
            LinkAttribute::Controller(m) => info.master = *m,
            LinkAttribute::LinkInfo(infos) => {
                let is_vlan = infos
                    .iter()
                    .any(|i| matches!(i, NlLinkInfo::Kind(InfoKind::Vlan)));
                for i in infos {
                    if let NlLinkInfo::Data(InfoData::Vrf(vrf)) = i {
                        info.vrf_table = vrf.iter().find_map(|v| match v {
                            InfoVrf::TableId(table) => Some(*table),
                            _ => None,
                        });
                    }
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
    Decoded::Change(Change::Neighbour(
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
        Some(ip) => Decoded::Change(Change::Address(op, m.header.index, ip)),
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
        return Ok(Decoded::Change(Change::Nexthop(Op::Remove, id, None)));
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
    Ok(Decoded::Change(Change::Nexthop(Op::Upsert, id, Some(def))))
}

#[cfg(test)]
mod tests;
