//! Real FRR zebra with dplane_fpm_nl talks to an FPM listener in its
//! namespace: the wire facts the control plane is built on.

use std::{io::Read, net::TcpListener, time::Duration};

use integration_tests::{
    frr::{Frr, FrrConfig},
    netns::NetNs,
    require_root,
};

const RTM_NEWROUTE: u16 = 24;
const RTM_NEWNEXTHOP: u16 = 104;

/// (netlink message types) per FPM frame.
fn frames(mut bytes: &[u8]) -> Vec<Vec<u16>> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        assert_eq!((bytes[0], bytes[1]), (1, 1), "FPM version 1, netlink type");
        let len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
        if len > bytes.len() {
            break;
        }
        let mut payload = &bytes[4..len];
        let mut types = Vec::new();
        while payload.len() >= 16 {
            let nl_len = u32::from_ne_bytes(payload[0..4].try_into().unwrap()) as usize;
            types.push(u16::from_ne_bytes([payload[4], payload[5]]));
            payload = &payload[((nl_len + 3) & !3).min(payload.len())..];
        }
        out.push(types);
        bytes = &bytes[len..];
    }
    out
}

#[test]
fn zebra_replays_nexthop_groups_then_routes_to_a_new_fpm_peer() {
    require_root!();
    let ns = NetNs::new("frrfpm");
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["link", "set", "v1", "up"]);
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "v0"]);
    let port = 26000 + (std::process::id() % 1000) as u16;
    let listener = ns.enter(|| TcpListener::bind(("127.0.0.1", port)).expect("bind the FPM port"));
    let _frr = Frr::start(
        &ns,
        &FrrConfig {
            fpm_port: Some(port),
            zebra: &[],
            staticd: Some(&[
                "ip route 198.51.100.0/24 192.0.2.2",
                "ip route 203.0.113.0/24 blackhole",
            ]),
            bgpd: None,
        },
    );
    listener.set_nonblocking(false).unwrap();
    let (mut stream, _) = listener.accept().expect("zebra connects");
    stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut captured = Vec::new();
    let mut chunk = [0u8; 65536];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Read until the replay has gone quiet and carries the static routes.
    while std::time::Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => captured.extend_from_slice(&chunk[..n]),
            Err(_)
                if frames(&captured)
                    .concat()
                    .iter()
                    .filter(|t| **t == RTM_NEWROUTE)
                    .count()
                    >= 3 =>
            {
                break
            }
            Err(_) => {}
        }
    }
    let types = frames(&captured).concat();
    let first_route = types
        .iter()
        .position(|t| *t == RTM_NEWROUTE)
        .expect("routes are sent");
    let last_nexthop = types
        .iter()
        .rposition(|t| *t == RTM_NEWNEXTHOP)
        .expect("nexthop groups are sent");
    assert!(
        last_nexthop < first_route,
        "nexthop groups come before routes: {types:?}"
    );
    assert!(
        types.iter().filter(|t| **t == RTM_NEWROUTE).count() >= 3,
        "connected + two statics: {types:?}"
    );
}
