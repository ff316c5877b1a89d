//! What a source reports, in the terms the RIB applies: routes, nexthop
//! objects, links, neighbours and addresses, each added or removed. The
//! wire decoder (`pf-wire`) produces these from rtnetlink bytes; nothing
//! here knows a byte of netlink.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::programmer::{Leg, LinkInfo};

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

/// One change a source reports: what the RIB applies. (What the daemon
/// publishes about its own work is [`crate::events::Event`].)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Route(Op, Route),
    Nexthop(Op, u32, Option<NexthopDef>),
    /// `None` with `Remove`.
    Link(Op, u32, Option<LinkInfo>),
    /// The MAC when the neighbour is usable; `None` when it is not (or gone).
    Neighbour(u32, IpAddr, Option<[u8; 6]>),
    Address(Op, u32, IpAddr),
}
