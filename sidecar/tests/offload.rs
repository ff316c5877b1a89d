//! Offload replies: a client speaking zebra's side of FPM sends routes and
//! reads back one RTM_NEWROUTE per route, flagged offloaded when the fast
//! path forwards it and offload-failed when it leaves it to the kernel.

mod support;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use integration_tests::{
    fpm_messages::{nexthop_message, route_message, typed_route_message},
    lab::Lab,
    require_root,
};
use ipnet::IpNet;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    route::{RouteAttribute, RouteFlags, RouteType},
    RouteNetlinkMessage,
};
use pf_sidecar::control::fpm::frame;
use support::Daemon;

/// Reads FPM frames until `want` replies arrived; prefix → offloaded?
fn read_replies(stream: &mut TcpStream, want: usize) -> HashMap<IpNet, bool> {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buffer = Vec::new();
    let mut replies = HashMap::new();
    while replies.len() < want && Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        while buffer.len() >= 4 {
            let len = u16::from_be_bytes([buffer[2], buffer[3]]) as usize;
            assert_eq!((buffer[0], buffer[1]), (1, 1), "an FPM v1 netlink frame");
            if buffer.len() < len {
                break;
            }
            let payload: Vec<u8> = buffer.drain(..len).skip(4).collect();
            for message in pf_sidecar::source::split_netlink_messages(&payload) {
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(message).unwrap();
                let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) =
                    parsed.payload
                else {
                    panic!("not a route reply: {parsed:?}");
                };
                let prefix = route
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Destination(d) => Some(d.clone()),
                        _ => None,
                    })
                    .unwrap();
                let addr: std::net::IpAddr = match prefix {
                    netlink_packet_route::route::RouteAddress::Inet(a) => a.into(),
                    netlink_packet_route::route::RouteAddress::Inet6(a) => a.into(),
                    other => panic!("{other:?}"),
                };
                let prefix = IpNet::new(addr, route.header.destination_prefix_length).unwrap();
                let offloaded = route.header.flags.contains(RouteFlags::RtOffload);
                assert_ne!(
                    offloaded,
                    route.header.flags.contains(RouteFlags::OffloadFailed)
                );
                replies.insert(prefix, offloaded);
            }
        }
    }
    replies
}

#[test]
fn each_route_from_zebra_is_answered_offloaded_or_offload_failed() {
    require_root!();
    let lab = Lab::new("offl");
    let port = 26000 + (std::process::id() % 1000) as u16;
    let daemon = Daemon::start_with(
        &lab,
        &format!(
            "[fpm]\nlisten = \"127.0.0.1:{port}\"\nreplay_quiet_ms = 300\noffload_replies = true\n"
        ),
        "offl",
    );
    let r1 = lab.router.ifindex("r1");
    let mut stream = daemon.connect_fpm(&lab.router, port);
    let forwarded: IpNet = "203.0.113.0/24".parse().unwrap();
    let unresolved: IpNet = "198.51.100.128/26".parse().unwrap();
    let blackhole: IpNet = "192.0.2.128/25".parse().unwrap();
    let messages = [
        nexthop_message(1, r1, Some("198.51.100.2".parse().unwrap()), &[]),
        route_message(forwarded, 1),
        // Object 99 was never sent: the route is left to the kernel.
        route_message(unresolved, 99),
        typed_route_message(blackhole, 0, RouteType::BlackHole),
    ];
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    stream.write_all(&frame(&refs)).unwrap();
    let replies = read_replies(&mut stream, 3);
    assert_eq!(
        replies,
        HashMap::from([(forwarded, true), (unresolved, false), (blackhole, true)]),
        "{}",
        daemon.log()
    );
}
