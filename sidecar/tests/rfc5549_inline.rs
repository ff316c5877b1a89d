//! IPv4 routes over IPv6 next hops (RFC 5549) with FRR 8.4's zebra, with and
//! without `fpm use-next-hop-groups`: numbered (BIRD on up1 announces
//! 203.0.113.192/26 over its IPv6 session, extended next hop) and
//! unnumbered (up2's bgpd peers over the interface and announces
//! 203.0.113.224/27, which up2 also announces over IPv4: two legs on r2).
//! With inline next hops zebra sends `169.254.0.1` onlink on the interface;
//! the kernel (still given nexthop objects) forwards `via inet6 fe80::…`.
//! The maps must do what the kernel does: `diff` clean against FPM, FRR and
//! the kernel, and the legs resolved to the peers' MACs.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use integration_tests::{netns::NetNs, require_root, script_lab::ScriptLab};
use pf_sidecar::pinned_maps::PinnedMaps;

const NUMBERED: &str = "203.0.113.200";
const UNNUMBERED: &str = "203.0.113.230";

fn link_local(ns: &NetNs, ifname: &str) -> IpAddr {
    let out = ns.ip(&["-6", "-o", "addr", "show", "dev", ifname, "scope", "link"]);
    let address = out
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .unwrap_or_else(|| panic!("no link-local address on {ifname}: {out}"));
    address.split('/').next().unwrap().parse().unwrap()
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Waits until `address`'s legs in the maps are `expected` (ifindex,
/// gateway, resolved MAC), each resolved; pings each link-local peer from
/// the router so the kernel resolves it, as the first forwarded packet would.
fn assert_legs(lab: &ScriptLab, address: &str, expected: &[(u32, IpAddr, String)], step: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let maps = PinnedMaps::open(std::path::Path::new(lab.var("LAB_PIN_DIR"))).unwrap();
        let answer = maps.answer(address.parse().unwrap()).unwrap();
        let mut legs: Vec<(u32, IpAddr, String)> = answer
            .legs
            .iter()
            .filter(|l| l.resolved)
            .filter_map(|l| Some((l.ifindex, l.gateway?, l.dmac.clone())))
            .collect();
        legs.sort();
        if legs == expected && answer.legs.len() == expected.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{step}: {address} has legs {:?}, expected {expected:?} all resolved\n{}",
            answer.legs,
            lab.sidecar_log()
        );
        for (ifindex, gateway, _) in expected {
            if let IpAddr::V6(v6) = gateway {
                if v6.segments()[0] == 0xfe80 {
                    let ifname = if *ifindex == lab.router.ifindex("r1") {
                        "r1"
                    } else {
                        "r2"
                    };
                    let _ = lab.router.exec(
                        "ping",
                        &["-6", "-c1", "-W1", &format!("{gateway}%{ifname}")],
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn inline_rfc_5549_next_hops_resolve_like_the_kernel_numbered_and_unnumbered() {
    require_root!();
    let lab = ScriptLab::up("r5549", env!("CARGO_BIN_EXE_pf-sidecar"));
    // Unnumbered: BGP over the interface, extended next hop, RAs (zebra
    // installs the 169.254.0.1 neighbour on r2 for the kernel's old way).
    lab.vtysh(
        false,
        &[
            "configure terminal",
            "router bgp 64500",
            "neighbor r2 interface remote-as external",
            "neighbor r2 timers connect 1",
            "address-family ipv4 unicast",
            "neighbor r2 activate",
        ],
    );
    lab.vtysh(
        true,
        &[
            "configure terminal",
            "router bgp 64502",
            "neighbor u2 interface remote-as external",
            "neighbor u2 timers connect 1",
            "address-family ipv4 unicast",
            "network 203.0.113.224/27",
            "neighbor u2 activate",
        ],
    );
    let r1 = lab.router.ifindex("r1");
    let r2 = lab.router.ifindex("r2");
    let up1_ll = link_local(&lab.up1, "u1");
    let up2_ll = link_local(&lab.up2, "u2");
    let up1_mac = mac_string(lab.up1.mac("u1"));
    let up2_mac = mac_string(lab.up2.mac("u2"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let kernel = lab.router.ip(&["route", "show", "203.0.113.224/27"]);
        if kernel.contains(&format!("via inet6 {up2_ll}")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unnumbered route never reached the kernel: {kernel}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let numbered = vec![(r1, up1_ll, up1_mac.clone())];
    let mut unnumbered = vec![
        (r2, "198.51.100.66".parse().unwrap(), up2_mac.clone()),
        (r2, up2_ll, up2_mac.clone()),
    ];
    unnumbered.sort();

    for (step, command) in [
        ("with nexthop groups", None),
        ("with inline next hops", Some("no fpm use-next-hop-groups")),
        ("with nexthop groups again", Some("fpm use-next-hop-groups")),
    ] {
        if let Some(command) = command {
            lab.vtysh(false, &["configure terminal", command]);
            // zebra replays on the new encoding; the kernel's routes keep
            // their nexthop objects.
            std::thread::sleep(Duration::from_secs(2));
        }
        let kernel = lab.router.ip(&["route", "show", "203.0.113.192/26"]);
        assert!(
            kernel.contains(&format!("via inet6 {up1_ll}")),
            "{step}: the kernel's route is the reference: {kernel}"
        );
        lab.assert_diff_clean(step);
        assert_legs(&lab, NUMBERED, &numbered, step);
        assert_legs(&lab, UNNUMBERED, &unnumbered, step);
    }
}
