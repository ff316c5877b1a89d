//! Offload replies to zebra: an `RTM_NEWROUTE` sent back over the FPM
//! session, flagged `RTM_F_OFFLOAD` when the fast path forwards the route
//! itself or `RTM_F_OFFLOAD_FAILED` when it leaves it to the kernel. FRR 9
//! and later match the reply to its route by prefix, table and protocol and
//! show the route as offloaded; with `bgp suppress-fib-pending` BGP then
//! advertises only what is installed. FRR 8.4 reads and discards them.

use ipnet::IpNet;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NLM_F_REQUEST};
use netlink_packet_route::{
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
        RouteScope, RouteType,
    },
    AddressFamily, RouteNetlinkMessage,
};

/// One route's reply.
pub fn reply(prefix: IpNet, table: u32, protocol: u8, offloaded: bool) -> Vec<u8> {
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
    route.header.flags = if offloaded {
        RouteFlags::RtOffload
    } else {
        RouteFlags::OffloadFailed
    };
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

#[cfg(test)]
mod tests {
    use netlink_packet_core::NetlinkPayload;

    use super::*;

    fn decoded(bytes: &[u8]) -> (u16, RouteMessage) {
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).unwrap();
        match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => {
                (message.header.flags, route)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reply_names_the_route_by_prefix_table_and_protocol_with_the_offload_flag() {
        let (flags, route) = decoded(&reply("198.51.100.0/24".parse().unwrap(), 254, 186, true));
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
    fn a_route_left_to_the_kernel_is_reported_as_failed_and_big_tables_go_in_an_attribute() {
        let (_, route) = decoded(&reply("2001:db8::/32".parse().unwrap(), 1000, 196, false));
        assert!(route.header.flags.contains(RouteFlags::OffloadFailed));
        assert!(!route.header.flags.contains(RouteFlags::RtOffload));
        assert_eq!(route.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert!(route.attributes.contains(&RouteAttribute::Table(1000)));
    }
}
