//! Offload replies to zebra: an `RTM_NEWROUTE` sent back over the FPM
//! session for each route zebra sent, flagged `RTM_F_OFFLOAD` when the
//! router forwards the route (the fast path itself, or the kernel after
//! `XDP_PASS`) and `RTM_F_OFFLOAD_FAILED` when nothing does. FRR 9 and later
//! match the reply to its route by prefix, table and protocol.
//!
//! Why these flags (FRR's zebra, `--asic-offload=notify_on_offload`):
//! `fpm_read` (dplane_fpm_nl.c) hands each reply to
//! `netlink_route_notify_read_ctx`, which maps `RTM_F_OFFLOAD`,
//! `RTM_F_TRAP` and `RTM_F_OFFLOAD_FAILED` to `ZEBRA_FLAG_OFFLOADED`,
//! `_TRAPPED` and `_OFFLOAD_FAILED`; `rib_process_dplane_notify`
//! (zebra_rib.c) then tells the route's owner `ZAPI_ROUTE_INSTALLED` for
//! OFFLOADED and `ZAPI_ROUTE_FAIL_INSTALL` for OFFLOAD_FAILED, and nothing
//! for TRAPPED alone (which it also never clears). bgpd advertises under
//! `bgp suppress-fib-pending` on INSTALLED only. So a route the kernel
//! forwards is answered OFFLOAD, never TRAP (held back for ever) nor
//! OFFLOAD_FAILED (withdrawn from the peers).
//!
//! `fpm_read` reads only the first netlink message of each FPM frame, so
//! every reply travels in its own frame; several frames share one write.

use ipnet::IpNet;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NLM_F_REQUEST};
use netlink_packet_route::{
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
        RouteScope, RouteType,
    },
    AddressFamily, RouteNetlinkMessage,
};
use pf_common::{RouteAction, RouteKind};

use super::fpm::frame;

/// What forwards a route zebra sent, as far as the router goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarder {
    /// The maps answer it: a nexthop, an ECMP group or a blackhole.
    FastPath,
    /// The datapath passes it (`XDP_PASS` or `bpf_fib_lookup`) and the
    /// kernel, where zebra installed it before the FPM provider ran,
    /// forwards it, answers it (unreachable, prohibit, local) or holds it
    /// in a covering route's place: on-link, an object not (yet) known, a
    /// full table, more legs than a group holds, a deferred block.
    Kernel,
    /// No entry for it in the maps: nothing the sidecar wrote forwards it.
    Nobody,
}

impl Forwarder {
    /// From what the programmer holds for the prefix: its action and
    /// whether the action is deferred (left to `bpf_fib_lookup`).
    pub fn of(programmed: Option<(RouteAction, bool)>) -> Self {
        let Some((action, deferred)) = programmed else {
            return Self::Nobody;
        };
        match action.kind() {
            Some(RouteKind::Nexthop | RouteKind::Group | RouteKind::Blackhole) if !deferred => {
                Self::FastPath
            }
            _ => Self::Kernel,
        }
    }

    /// The flag zebra must see: installed unless nothing forwards it.
    pub fn flags(self) -> RouteFlags {
        match self {
            Self::FastPath | Self::Kernel => RouteFlags::RtOffload,
            Self::Nobody => RouteFlags::OffloadFailed,
        }
    }
}

/// One route's reply: a netlink message, without the FPM header.
pub fn reply(prefix: IpNet, table: u32, protocol: u8, forwarder: Forwarder) -> Vec<u8> {
    let mut route = RouteMessage::default();
    route.header.address_family = match prefix {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    route.header.destination_prefix_length = prefix.prefix_len();
    route.header.table = if table < 256 {
        table as u8
    } else {
        RouteHeader::RT_TABLE_UNSPEC
    };
    route.header.protocol = RouteProtocol::from(protocol);
    route.header.scope = RouteScope::Universe;
    route.header.kind = RouteType::Unicast;
    route.header.flags = forwarder.flags();
    route
        .attributes
        .push(RouteAttribute::Destination(match prefix {
            IpNet::V4(p) => RouteAddress::Inet(p.network()),
            IpNet::V6(p) => RouteAddress::Inet6(p.network()),
        }));
    route.attributes.push(RouteAttribute::Table(table));
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut message = NetlinkMessage::new(header, RouteNetlinkMessage::NewRoute(route).into());
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// The most bytes one write to the session carries.
pub const WRITE_BYTES: usize = 60_000;

/// Replies grouped into writes: each reply is a whole FPM frame of its own
/// (zebra reads one message per frame), and a write holds whole frames up
/// to [`WRITE_BYTES`]. Returns each write with the number of replies in it.
pub fn writes(replies: &[Vec<u8>]) -> Vec<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut count = 0;
    for message in replies {
        let framed = frame(&[message]);
        if !current.is_empty() && current.len() + framed.len() > WRITE_BYTES {
            out.push((std::mem::take(&mut current), count));
            count = 0;
        }
        current.extend_from_slice(&framed);
        count += 1;
    }
    if count > 0 {
        out.push((current, count));
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use netlink_packet_core::NetlinkPayload;

    use super::*;
    use crate::fpm::FpmCodec;

    fn decoded(bytes: &[u8]) -> (u16, RouteMessage) {
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).unwrap();
        match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => {
                (message.header.flags, route)
            }
            other => panic!("{other:?}"),
        }
    }

    /// What zebra's `fpm_read` sees: the first netlink message of each
    /// frame, in order.
    fn as_zebra_reads(writes: &[(Vec<u8>, usize)]) -> Vec<RouteMessage> {
        let mut stream = BytesMut::new();
        for (bytes, _) in writes {
            stream.extend_from_slice(bytes);
        }
        let mut seen = Vec::new();
        while let Some(frame) = FpmCodec.decode(&mut stream).unwrap() {
            let messages: Vec<&[u8]> = frame.messages().collect();
            assert_eq!(messages.len(), 1, "one reply per frame");
            seen.push(decoded(messages[0]).1);
        }
        assert!(stream.is_empty(), "nothing left over");
        seen
    }

    fn prefix_of(route: &RouteMessage) -> IpNet {
        let address = route
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                    Some(std::net::IpAddr::from(*a))
                }
                RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                    Some(std::net::IpAddr::from(*a))
                }
                _ => None,
            })
            .unwrap();
        IpNet::new(address, route.header.destination_prefix_length).unwrap()
    }

    #[test]
    fn a_reply_names_the_route_by_prefix_table_and_protocol_with_the_offload_flag() {
        let (flags, route) = decoded(&reply(
            "198.51.100.0/24".parse().unwrap(),
            254,
            186,
            Forwarder::FastPath,
        ));
        assert_eq!(flags & NLM_F_REQUEST, NLM_F_REQUEST);
        assert_eq!(route.header.destination_prefix_length, 24);
        assert_eq!(route.header.table, 254);
        assert_eq!(u8::from(route.header.protocol), 186);
        assert!(route.header.flags.contains(RouteFlags::RtOffload));
        assert!(route
            .attributes
            .contains(&RouteAttribute::Destination(RouteAddress::Inet(
                "198.51.100.0".parse().unwrap()
            ))));
    }

    #[test]
    fn a_route_nothing_forwards_is_reported_failed_and_big_tables_go_in_an_attribute() {
        let (_, route) = decoded(&reply(
            "2001:db8::/32".parse().unwrap(),
            1000,
            196,
            Forwarder::Nobody,
        ));
        assert!(route.header.flags.contains(RouteFlags::OffloadFailed));
        assert!(!route.header.flags.contains(RouteFlags::RtOffload));
        assert_eq!(route.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert!(route.attributes.contains(&RouteAttribute::Table(1000)));
    }

    #[test]
    fn routes_the_kernel_forwards_are_offloaded_so_bgp_advertises_them() {
        let fast = [RouteKind::Nexthop, RouteKind::Group, RouteKind::Blackhole];
        for kind in fast {
            let action = RouteAction::new(kind, 3);
            assert_eq!(Forwarder::of(Some((action, false))), Forwarder::FastPath);
            // A deferred entry answers bpf_fib_lookup: the kernel forwards.
            assert_eq!(Forwarder::of(Some((action, true))), Forwarder::Kernel);
        }
        let passed = [
            RouteKind::Fib,
            RouteKind::Miss,
            RouteKind::Unreachable,
            RouteKind::Prohibit,
            RouteKind::Local,
        ];
        for kind in passed {
            let action = RouteAction::simple(kind);
            assert_eq!(Forwarder::of(Some((action, false))), Forwarder::Kernel);
        }
        assert_eq!(Forwarder::of(None), Forwarder::Nobody);
        // Neither TRAP alone (zebra never tells BGP) nor OFFLOAD_FAILED
        // (BGP withholds it) for a route the kernel forwards.
        assert_eq!(Forwarder::Kernel.flags(), RouteFlags::RtOffload);
        assert_eq!(Forwarder::FastPath.flags(), RouteFlags::RtOffload);
        assert_eq!(Forwarder::Nobody.flags(), RouteFlags::OffloadFailed);
    }

    #[test]
    fn every_reply_travels_in_a_frame_of_its_own_and_writes_hold_whole_frames() {
        let prefixes: Vec<IpNet> = (0..2000u32)
            .map(|i| {
                IpNet::new(std::net::Ipv4Addr::from(0xc633_0000 | (i << 2)).into(), 30).unwrap()
            })
            .collect();
        let replies: Vec<Vec<u8>> = prefixes
            .iter()
            .map(|p| reply(*p, 254, 186, Forwarder::Kernel))
            .collect();
        let writes = writes(&replies);
        assert!(writes.len() > 1, "2000 replies need more than one write");
        for (bytes, count) in &writes {
            assert!(bytes.len() <= WRITE_BYTES);
            // Each write starts on a frame and holds `count` whole frames.
            let mut buffer = BytesMut::from(&bytes[..]);
            let mut frames = 0;
            while FpmCodec.decode(&mut buffer).unwrap().is_some() {
                frames += 1;
            }
            assert!(buffer.is_empty());
            assert_eq!(frames, *count);
        }
        assert_eq!(writes.iter().map(|(_, n)| n).sum::<usize>(), 2000);
        let seen: Vec<IpNet> = as_zebra_reads(&writes).iter().map(prefix_of).collect();
        assert_eq!(seen, prefixes, "zebra reads every reply, in order");
        assert!(super::writes(&[]).is_empty());
    }
}
