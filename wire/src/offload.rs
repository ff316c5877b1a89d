//! Offload replies on the wire: each [`OffloadReply`] as an `RTM_NEWROUTE`
//! with the flag its forwarder earns, each in an FPM frame of its own
//! (zebra's `fpm_read` reads only the first message of a frame), frames
//! grouped into writes. Why these flags: `pf_control::offload`.

use ipnet::IpNet;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NLM_F_REQUEST};
use netlink_packet_route::{
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
        RouteScope, RouteType,
    },
    AddressFamily, RouteNetlinkMessage,
};
use pf_control::{
    controller::ReplyCounts,
    fpm::frame,
    offload::{Forwarder, OffloadReply},
};

/// The flag zebra must see: installed unless nothing forwards it.
pub fn flags(forwarder: Forwarder) -> RouteFlags {
    if forwarder.offloaded() {
        RouteFlags::RtOffload
    } else {
        RouteFlags::OffloadFailed
    }
}

/// One route's reply: a netlink message, without the FPM header.
pub fn reply(reply: &OffloadReply) -> Vec<u8> {
    let OffloadReply {
        prefix,
        table,
        protocol,
        forwarder,
    } = *reply;
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
    route.header.flags = flags(forwarder);
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

/// Replies encoded and grouped into writes: each reply is a whole FPM
/// frame of its own, and a write holds whole frames up to
/// [`WRITE_BYTES`]. Returns each write with what its replies answered (for
/// the counts to take back if zebra's queue refuses it).
pub fn writes(replies: &[OffloadReply]) -> Vec<(Vec<u8>, ReplyCounts)> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut counts = ReplyCounts::default();
    for answer in replies {
        let framed = frame(&[&reply(answer)]);
        if !current.is_empty() && current.len() + framed.len() > WRITE_BYTES {
            out.push((std::mem::take(&mut current), std::mem::take(&mut counts)));
        }
        current.extend_from_slice(&framed);
        counts.add(answer.forwarder);
    }
    if counts.routes > 0 {
        out.push((current, counts));
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use netlink_packet_core::NetlinkPayload;

    use super::*;
    use pf_control::fpm::FpmCodec;

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
    fn as_zebra_reads(writes: &[(Vec<u8>, ReplyCounts)]) -> Vec<RouteMessage> {
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
        let (flags, route) = decoded(&reply(&OffloadReply {
            prefix: "198.51.100.0/24".parse().unwrap(),
            table: 254,
            protocol: 186,
            forwarder: Forwarder::FastPath,
        }));
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
        let (_, route) = decoded(&reply(&OffloadReply {
            prefix: "2001:db8::/32".parse().unwrap(),
            table: 1000,
            protocol: 196,
            forwarder: Forwarder::Nobody,
        }));
        assert!(route.header.flags.contains(RouteFlags::OffloadFailed));
        assert!(!route.header.flags.contains(RouteFlags::RtOffload));
        assert_eq!(route.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert!(route.attributes.contains(&RouteAttribute::Table(1000)));
    }

    #[test]
    fn the_kernel_and_the_fast_path_earn_offload_and_nobody_offload_failed() {
        // Neither TRAP alone (zebra never tells BGP) nor OFFLOAD_FAILED
        // (BGP withholds it) for a route the kernel forwards.
        assert_eq!(flags(Forwarder::Kernel), RouteFlags::RtOffload);
        assert_eq!(flags(Forwarder::FastPath), RouteFlags::RtOffload);
        assert_eq!(flags(Forwarder::Nobody), RouteFlags::OffloadFailed);
    }

    #[test]
    fn every_reply_travels_in_a_frame_of_its_own_and_writes_hold_whole_frames() {
        let prefixes: Vec<IpNet> = (0..2000u32)
            .map(|i| {
                IpNet::new(std::net::Ipv4Addr::from(0xc633_0000 | (i << 2)).into(), 30).unwrap()
            })
            .collect();
        let replies: Vec<OffloadReply> = prefixes
            .iter()
            .enumerate()
            .map(|(i, p)| OffloadReply {
                prefix: *p,
                table: 254,
                protocol: 186,
                forwarder: if i % 10 == 0 {
                    Forwarder::Nobody
                } else {
                    Forwarder::Kernel
                },
            })
            .collect();
        let writes = writes(&replies);
        assert!(writes.len() > 1, "2000 replies need more than one write");
        for (bytes, counts) in &writes {
            assert!(bytes.len() <= WRITE_BYTES);
            // Each write starts on a frame and holds `counts.routes` whole frames.
            let mut buffer = BytesMut::from(&bytes[..]);
            let mut frames = 0u64;
            while FpmCodec.decode(&mut buffer).unwrap().is_some() {
                frames += 1;
            }
            assert!(buffer.is_empty());
            assert_eq!(frames, counts.routes);
            assert_eq!(counts.kernel + counts.failed, counts.routes);
        }
        assert_eq!(writes.iter().map(|(_, c)| c.routes).sum::<u64>(), 2000);
        assert_eq!(writes.iter().map(|(_, c)| c.failed).sum::<u64>(), 200);
        let seen: Vec<IpNet> = as_zebra_reads(&writes).iter().map(prefix_of).collect();
        assert_eq!(seen, prefixes, "zebra reads every reply, in order");
        assert!(super::writes(&[]).is_empty());
    }
}
