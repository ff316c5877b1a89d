//! Offload replies: a client speaking zebra's side of FPM sends routes and
//! reads back one RTM_NEWROUTE per route, each in a frame of its own (zebra's
//! `fpm_read` reads only a frame's first message), flagged offloaded when
//! the router forwards it: by the fast path, or by the kernel after
//! `XDP_PASS` (so `bgp suppress-fib-pending` advertises it).

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
use pf_control::fpm::frame;
use support::{Daemon, SIDECAR};

/// Reads FPM frames until `want` replies arrived, as zebra does: the first
/// netlink message of each frame only, and frames holding more are
/// counted. Returns prefix → offloaded?, and that count.
fn read_replies(stream: &mut TcpStream, want: usize) -> (HashMap<IpNet, bool>, usize) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buffer = Vec::new();
    let mut replies = HashMap::new();
    let mut packed = 0;
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
            let messages: Vec<&[u8]> =
                pf_control::netlink::split_netlink_messages(&payload).collect();
            if messages.len() > 1 {
                packed += 1;
            }
            if let Some(message) = messages.first() {
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
    (replies, packed)
}

#[test]
fn each_route_from_zebra_is_answered_in_a_frame_of_its_own_and_kernel_routes_are_offloaded() {
    require_root!();
    let lab = Lab::new("offl");
    let port = 26000 + (std::process::id() % 1000) as u16;
    let daemon = Daemon::start_with(
        SIDECAR,
        &lab,
        &format!(
            "[fpm]\nlisten = \"127.0.0.1:{port}\"\nreplay_quiet_ms = 300\noffload_replies = true\n"
        ),
        "offl",
    );
    let r1 = lab.router.ifindex("r1");
    let mut stream = daemon.connect_fpm(&lab.router, port);
    let forwarded: Vec<IpNet> = (0..6)
        .map(|i| format!("203.0.113.{}/29", i * 8).parse().unwrap())
        .collect();
    let unresolved: IpNet = "198.51.100.128/26".parse().unwrap();
    let blackhole: IpNet = "192.0.2.128/25".parse().unwrap();
    let mut messages = vec![nexthop_message(
        1,
        r1,
        Some("198.51.100.2".parse().unwrap()),
        &[],
    )];
    messages.extend(forwarded.iter().map(|p| route_message(*p, 1)));
    // Object 99 was never sent: the fast path passes it and the kernel
    // forwards it (zebra installed it there before the FPM provider ran).
    messages.push(route_message(unresolved, 99));
    messages.push(typed_route_message(blackhole, 0, RouteType::BlackHole));
    // One zebra frame changes all eight prefixes.
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    stream.write_all(&frame(&refs)).unwrap();
    let (replies, packed) = read_replies(&mut stream, 8);
    let mut expected: HashMap<IpNet, bool> = forwarded.iter().map(|p| (*p, true)).collect();
    expected.insert(unresolved, true);
    expected.insert(blackhole, true);
    assert_eq!(
        packed, 0,
        "frames holding several replies: zebra reads only the first of each"
    );
    assert_eq!(replies, expected, "{}", daemon.log());

    // The counters reach status (the state file is written every heartbeat).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
            .args(["--netns", &lab.router.name, "--pin-dir"])
            .arg(&daemon.pin_dir)
            .args(["status", "--json", "--rate-interval-ms", "0"])
            .output()
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        let counts = [
            "offload_replies_sent",
            "offload_replies_kernel",
            "offload_replies_failed",
            "offload_replies_dropped",
        ]
        .map(|key| status["daemon"][key].as_u64());
        if counts == [Some(8), Some(1), Some(0), Some(0)] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status counts {counts:?}: {status}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
