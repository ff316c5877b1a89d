//! End to end through the lab of `scripts/lab` (the one `make demo` runs):
//! real FRR, BIRD and BGP, pf-sidecar fed over FPM, traffic from the client
//! namespace captured where it leaves and where it arrives.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use integration_tests::{
    capture::{Capture, Frame},
    differential::{self, Decision},
    netns::NetNs,
    require_root,
    script_lab::ScriptLab,
    synthetic::Rng,
};
use pf_sidecar::pinned_maps::PinnedMaps;

const PORT: u16 = 9000;

fn lab(tag: &str) -> ScriptLab {
    ScriptLab::up(tag, env!("CARGO_BIN_EXE_pf-sidecar"))
}

fn counter(lab: &ScriptLab, name: &str) -> u64 {
    let out = lab.sidecar(&["status", "--json", "--rate-interval-ms", "0"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    status["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == name)
        .filter_map(|c| c["value"].as_u64())
        .sum()
}

/// UDP to `PORT`, as a capture filter.
fn is_probe(frame: &[u8]) -> bool {
    let Ok(packet) = SlicedPacket::from_ethernet(frame) else {
        return false;
    };
    matches!(packet.transport, Some(TransportSlice::Udp(udp)) if udp.destination_port() == PORT)
}

/// Sends `per_flow` datagrams from each source port to `dst`; the payload
/// names the flow and the sequence number.
fn send_flows(
    client: &NetNs,
    src: IpAddr,
    dst: IpAddr,
    ports: std::ops::Range<u16>,
    per_flow: u32,
) {
    client.enter(|| {
        for port in ports {
            let socket = UdpSocket::bind(SocketAddr::new(src, port)).expect("bind a flow's port");
            for seq in 0..per_flow {
                let payload = format!("pf-e2e flow {port} seq {seq}");
                socket
                    .send_to(payload.as_bytes(), SocketAddr::new(dst, PORT))
                    .unwrap();
            }
        }
    })
}

struct Probe {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    ttl: u8,
    ip_payload: Vec<u8>,
    checksum_ok: bool,
    flow: String,
}

fn parse(frame: &Frame) -> Probe {
    let packet = SlicedPacket::from_ethernet(&frame.bytes).unwrap();
    let eth = packet.link.as_ref().unwrap().to_header().unwrap();
    let eth = match eth {
        etherparse::LinkHeader::Ethernet2(e) => e,
        other => panic!("not Ethernet: {other:?}"),
    };
    let (ttl, ip_payload, checksum_ok) = match packet.net.as_ref().unwrap() {
        NetSlice::Ipv4(ip) => {
            let header = ip.header().to_header();
            let ok = header.calc_header_checksum() == header.header_checksum;
            (header.time_to_live, ip.payload().payload.to_vec(), ok)
        }
        NetSlice::Ipv6(ip) => (ip.header().hop_limit(), ip.payload().payload.to_vec(), true),
        other => panic!("not IP: {other:?}"),
    };
    let udp_payload = match &packet.transport {
        Some(TransportSlice::Udp(udp)) => udp.payload().to_vec(),
        _ => Vec::new(),
    };
    let text = String::from_utf8_lossy(&udp_payload);
    let flow = text.split(" seq ").next().unwrap_or_default().to_owned();
    Probe {
        src_mac: eth.source,
        dst_mac: eth.destination,
        ttl,
        ip_payload,
        checksum_ok,
        flow,
    }
}

#[test]
fn forwarded_packets_arrive_one_hop_older_with_the_router_macs_and_the_same_payload() {
    require_root!();
    let lab = lab("e2ef");
    let client_v4: IpAddr = lab.var("LAB_CLIENT_V4").parse().unwrap();
    let client_v6: IpAddr = lab.var("LAB_CLIENT_V6").parse().unwrap();
    let server_v4: IpAddr = lab.var("LAB_SERVER_V4").parse().unwrap();
    let server_v6: IpAddr = lab.var("LAB_SERVER_V6").parse().unwrap();
    // The IPv6 routes name the upstreams' link-local addresses, which nothing
    // has resolved yet: a few flows resolve them (through the kernel) first,
    // so the counted traffic below is all fast path.
    send_flows(&lab.client, client_v6, server_v6, 19000..19016, 1);
    send_flows(&lab.client, client_v4, server_v4, 19000..19016, 1);
    wait_until_all_legs_resolved(&lab, &[server_v4, server_v6]);
    let (r1_mac, r2_mac) = (lab.router.mac("r1"), lab.router.mac("r2"));
    let (u1_mac, u2_mac) = (lab.up1.mac("u1"), lab.up2.mac("u2"));
    let limit = Duration::from_secs(20);
    let sent = Capture::start(&lab.client, "c0", limit, is_probe);
    let at_up1 = Capture::start(&lab.up1, "u1", limit, is_probe);
    let at_up2 = Capture::start(&lab.up2, "u2", limit, is_probe);
    let before = counter(&lab, "redirect_cache");

    send_flows(&lab.client, client_v4, server_v4, 20000..20020, 5);
    send_flows(&lab.client, client_v6, server_v6, 20000..20020, 5);

    let settle = Duration::from_millis(500);
    let sent: Vec<Probe> = sent
        .finish(settle)
        .iter()
        .filter(|f| f.outgoing)
        .map(parse)
        .collect();
    let arrived: Vec<(u8, Probe)> = at_up1
        .finish(Duration::ZERO)
        .iter()
        .filter(|f| !f.outgoing)
        .map(|f| (1, parse(f)))
        .chain(
            at_up2
                .finish(Duration::ZERO)
                .iter()
                .filter(|f| !f.outgoing)
                .map(|f| (2, parse(f))),
        )
        .collect();
    assert_eq!(
        sent.len(),
        200,
        "the client sent 100 IPv4 and 100 IPv6 datagrams"
    );
    assert_eq!(arrived.len(), 200, "every datagram arrived at an upstream");
    for probe in &sent {
        let (side, got) = arrived
            .iter()
            .find(|(_, a)| a.ip_payload == probe.ip_payload)
            .unwrap_or_else(|| panic!("{} never arrived unchanged", probe.flow));
        assert_eq!(got.ttl, probe.ttl - 1, "TTL / hop limit one lower");
        assert!(
            got.checksum_ok,
            "IPv4 header checksum valid after the decrement"
        );
        let (router_mac, upstream_mac) = if *side == 1 {
            (r1_mac, u1_mac)
        } else {
            (r2_mac, u2_mac)
        };
        assert_eq!(
            got.src_mac, router_mac,
            "source MAC is the router's egress port"
        );
        assert_eq!(
            got.dst_mac, upstream_mac,
            "destination MAC is the upstream's"
        );
        assert_ne!(got.src_mac, probe.src_mac);
    }
    let forwarded = counter(&lab, "redirect_cache") - before;
    assert!(
        forwarded >= 200,
        "redirect_cache grew by {forwarded}, fewer than the 200 datagrams forwarded"
    );
    lab.assert_diff_clean("after the traffic");
}

fn wait_until_all_legs_resolved(lab: &ScriptLab, addresses: &[IpAddr]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let maps = PinnedMaps::open(std::path::Path::new(lab.var("LAB_PIN_DIR"))).unwrap();
        let resolved = addresses.iter().all(|a| {
            let answer = maps.answer(*a).unwrap();
            !answer.legs.is_empty() && answer.legs.iter().all(|l| l.resolved)
        });
        if resolved {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server's legs never all resolved"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn leg_resolved(lab: &ScriptLab, address: &str) -> Option<bool> {
    let maps = PinnedMaps::open(std::path::Path::new(lab.var("LAB_PIN_DIR"))).ok()?;
    let answer = maps.answer(address.parse().ok()?).ok()?;
    answer.legs.first().map(|l| l.resolved)
}

fn wait_for_leg(lab: &ScriptLab, address: &str, resolved: bool, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while leg_resolved(lab, address) != Some(resolved) {
        assert!(
            Instant::now() < deadline,
            "{step}: the leg for {address} never became resolved={resolved}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_first_packet_to_a_new_neighbour_goes_through_the_kernel_and_the_rest_take_the_fast_path() {
    require_root!();
    let lab = lab("e2en");
    let client_v4: IpAddr = lab.var("LAB_CLIENT_V4").parse().unwrap();

    // 203.0.113.192/26 is announced by BIRD over IPv6 with an IPv6 next hop
    // (RFC 5549): an IPv4 route whose gateway is up1's link-local address,
    // which no one has resolved yet.
    let rfc5549 = "203.0.113.200";
    let answer = PinnedMaps::open(std::path::Path::new(lab.var("LAB_PIN_DIR")))
        .unwrap()
        .answer(rfc5549.parse().unwrap())
        .unwrap();
    assert_eq!(answer.kind, "Nexthop", "{answer:?}");
    let gateway = answer.legs[0].gateway.expect("a gateway");
    assert!(
        gateway.is_ipv6(),
        "an IPv4 route over an IPv6 next hop: {answer:?}"
    );
    // Make the neighbour unknown whatever happened before.
    let _ = lab.router.exec(
        "ip",
        &["-6", "neigh", "del", &gateway.to_string(), "dev", "r1"],
    );
    wait_for_leg(&lab, rfc5549, false, "after deleting the neighbour");

    let at_up1 = Capture::start(&lab.up1, "u1", Duration::from_secs(15), is_probe);
    let passed_before = counter(&lab, "pass_fib_no_neigh") + counter(&lab, "nexthop_unresolved");
    let cached_before = counter(&lab, "redirect_cache");
    send_flows(
        &lab.client,
        client_v4,
        rfc5549.parse().unwrap(),
        21000..21001,
        1,
    );
    wait_for_leg(
        &lab,
        rfc5549,
        true,
        "after the kernel resolved the first packet's neighbour",
    );
    let passed =
        counter(&lab, "pass_fib_no_neigh") + counter(&lab, "nexthop_unresolved") - passed_before;
    assert!(
        passed >= 1,
        "the first packet went to the kernel (unresolved)"
    );

    let cached_mid = counter(&lab, "redirect_cache");
    send_flows(
        &lab.client,
        client_v4,
        rfc5549.parse().unwrap(),
        21001..21006,
        1,
    );
    let frames: Vec<Probe> = at_up1
        .finish(Duration::from_millis(500))
        .iter()
        .filter(|f| !f.outgoing)
        .map(parse)
        .collect();
    assert_eq!(
        frames.len(),
        6,
        "the first packet (via the kernel) and the next five arrived at up1"
    );
    let fast = counter(&lab, "redirect_cache") - cached_mid;
    assert!(
        fast >= 5,
        "the later packets took the fast path (redirect_cache +{fast})"
    );
    assert!(cached_mid >= cached_before);
    let u1_mac = lab.up1.mac("u1");
    assert!(
        frames.iter().all(|f| f.dst_mac == u1_mac),
        "every frame went to up1's MAC"
    );
    lab.assert_diff_clean("after the neighbour was resolved");
}

/// Which upstream each flow's datagrams reached.
fn spread(
    lab: &ScriptLab,
    dst: IpAddr,
    src: IpAddr,
    ports: std::ops::Range<u16>,
    per_flow: u32,
) -> BTreeMap<String, Vec<u8>> {
    let limit = Duration::from_secs(30);
    let at_up1 = Capture::start(&lab.up1, "u1", limit, is_probe);
    let at_up2 = Capture::start(&lab.up2, "u2", limit, is_probe);
    send_flows(&lab.client, src, dst, ports, per_flow);
    let settle = Duration::from_millis(500);
    let mut sides: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (side, capture) in [(1u8, at_up1), (2u8, at_up2)] {
        for frame in capture.finish(settle).iter().filter(|f| !f.outgoing) {
            sides.entry(parse(frame).flow).or_default().push(side);
        }
    }
    sides
}

#[test]
fn ecmp_spreads_flows_over_both_upstreams_keeps_each_on_one_and_follows_a_withdrawal() {
    require_root!();
    let lab = lab("e2ee");
    let client: IpAddr = lab.var("LAB_CLIENT_V4").parse().unwrap();
    let server: IpAddr = lab.var("LAB_SERVER_V4").parse().unwrap();

    // 400 flows, 4 datagrams each.
    let flows = spread(&lab, server, client, 30000..30400, 4);
    assert_eq!(flows.len(), 400, "every flow arrived");
    let mut per_side: HashMap<u8, usize> = HashMap::new();
    for (flow, sides) in &flows {
        assert_eq!(sides.len(), 4, "{flow}: all four datagrams arrived");
        assert!(
            sides.iter().all(|s| *s == sides[0]),
            "{flow} stayed on one upstream: {sides:?}"
        );
        *per_side.entry(sides[0]).or_default() += 1;
    }
    let (up1, up2) = (
        per_side.get(&1).copied().unwrap_or(0),
        per_side.get(&2).copied().unwrap_or(0),
    );
    println!("ECMP over 400 flows: up1 {up1}, up2 {up2}");
    // Equal weights: each side within 50% ± 10% (a binomial 400-flow spread
    // leaves it by more than 4 standard deviations only by a broken hash).
    assert!(
        (160..=240).contains(&up1),
        "up1 took {up1} of 400 flows, up2 {up2}"
    );
    lab.assert_diff_clean("after the ECMP traffic");

    // Withdraw the prefix at up2: once FRR has converged nothing may reach up2.
    let withdrawn = Instant::now();
    lab.vtysh(
        true,
        &[
            "configure terminal",
            "router bgp 64502",
            "address-family ipv4 unicast",
            "no network 203.0.113.0/24",
        ],
    );
    let single_path = |lab: &ScriptLab| {
        let json = lab.vtysh(false, &["show ip route 203.0.113.0/24 json"]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["203.0.113.0/24"][0]["nexthops"]
            .as_array()
            .map(|n| n.iter().filter(|h| h["fib"] == true).count())
            == Some(1)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !single_path(&lab) {
        assert!(
            Instant::now() < deadline,
            "FRR did not converge on one path"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let frr_converged = withdrawn.elapsed();
    while PinnedMaps::open(std::path::Path::new(lab.var("LAB_PIN_DIR")))
        .unwrap()
        .answer(server)
        .unwrap()
        .legs
        .len()
        != 1
    {
        assert!(Instant::now() < deadline, "the maps kept both legs");
        std::thread::sleep(Duration::from_millis(1));
    }
    let maps_converged = withdrawn.elapsed();
    println!(
        "withdrawal: FRR's FIB changed after {:.1} ms, the maps after {:.1} ms: a gap of {:.1} ms",
        frr_converged.as_secs_f64() * 1e3,
        maps_converged.as_secs_f64() * 1e3,
        (maps_converged.saturating_sub(frr_converged)).as_secs_f64() * 1e3
    );
    lab.assert_diff_clean("after the withdrawal");
    let flows = spread(&lab, server, client, 31000..31200, 2);
    assert_eq!(flows.len(), 200);
    assert!(
        flows.values().flatten().all(|side| *side == 1),
        "after the withdrawal every datagram goes to up1"
    );

    // Announce it again: the fast path spreads over both once more.
    lab.vtysh(
        true,
        &[
            "configure terminal",
            "router bgp 64502",
            "address-family ipv4 unicast",
            "network 203.0.113.0/24",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while PinnedMaps::open(std::path::Path::new(lab.var("LAB_PIN_DIR")))
        .unwrap()
        .answer(server)
        .unwrap()
        .legs
        .len()
        != 2
    {
        assert!(
            Instant::now() < deadline,
            "the second leg did not come back"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    lab.assert_diff_clean("after the re-announcement");
    let cached = counter(&lab, "redirect_cache");
    let flows = spread(&lab, server, client, 32000..32200, 2);
    let to_up2 = flows.values().filter(|s| s[0] == 2).count();
    assert!(
        to_up2 > 40,
        "after the recovery up2 takes flows again ({to_up2} of 200)"
    );
    assert!(
        counter(&lab, "redirect_cache") - cached >= 400,
        "the fast path carried them"
    );
}

#[test]
fn for_ten_thousand_random_destinations_the_datapath_decides_as_the_kernel_does() {
    require_root!();
    let lab = lab("e2ed");
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    // More routes of every kind on top of BGP's, overlapping its prefixes.
    let mut lines = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for _ in 0..150 {
        let len = 25 + (rng.next_u64() % 8) as u8;
        let host = (rng.next_u64() % 256) as u8;
        let prefix = ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(203, 0, 113, host), len)
            .unwrap()
            .trunc();
        if !taken.insert(prefix.to_string()) {
            continue;
        }
        lines.push(match rng.next_u64() % 6 {
            0 => format!("ip route {prefix} blackhole"),
            1 => format!("ip route {prefix} reject"),
            2 => format!("ip route {prefix} 198.51.100.66"),
            3 => format!("ip route {prefix} 198.51.100.2\nip route {prefix} 198.51.100.66"),
            _ => format!("ip route {prefix} 198.51.100.2"),
        });
    }
    for _ in 0..80 {
        let subnet = rng.next_u64() % 0x1_0000;
        let len = [56u8, 64, 64, 80, 128][(rng.next_u64() % 5) as usize];
        let addr = std::net::Ipv6Addr::from(
            (0x2001_0db8_00ffu128 << 80) | ((subnet as u128) << 64) | rng.next_u64() as u128,
        );
        let prefix = ipnet::Ipv6Net::new(addr, len).unwrap().trunc();
        if !taken.insert(prefix.to_string()) {
            continue;
        }
        lines.push(match rng.next_u64() % 4 {
            0 => format!("ipv6 route {prefix} blackhole"),
            1 => format!("ipv6 route {prefix} 2001:db8:3::2"),
            _ => format!("ipv6 route {prefix} 2001:db8:2::2"),
        });
    }
    let lines: Vec<String> = lines
        .iter()
        .flat_map(|l| l.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    for chunk in lines.chunks(40) {
        let mut commands = vec!["configure terminal"];
        commands.extend(chunk.iter().map(String::as_str));
        lab.vtysh(false, &commands);
    }
    lab.assert_diff_clean("after adding the static routes");

    let mut destinations: Vec<IpAddr> = Vec::new();
    for own in [
        "192.0.2.1",
        "198.51.100.1",
        "198.51.100.65",
        "2001:db8:1::1",
        "2001:db8:2::1",
    ] {
        destinations.push(own.parse().unwrap());
    }
    while destinations.len() < 10_000 {
        let r = rng.next_u64();
        let address: IpAddr = match r % 20 {
            0..=7 => std::net::Ipv4Addr::new(203, 0, 113, (r >> 8) as u8).into(),
            8..=10 => std::net::Ipv4Addr::new(198, 51, 100, (r >> 8) as u8).into(),
            11 => std::net::Ipv4Addr::new(192, 0, 2, (r >> 8) as u8).into(),
            12..=16 => std::net::Ipv6Addr::from(
                (0x2001_0db8_00ffu128 << 80)
                    | (((r >> 8) as u128 & 0xffff) << 64)
                    | rng.next_u64() as u128 & 0xffff_ffff,
            )
            .into(),
            17 => {
                std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | ((rng.next_u64() as u128) << 32))
                    .into()
            }
            _ => std::net::Ipv4Addr::from(rng.next_u64() as u32).into(),
        };
        destinations.push(address);
    }
    let decisions = differential::decide(
        std::path::Path::new(lab.var("LAB_PIN_DIR")),
        &lab.router,
        &destinations,
    );
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut disagreements = Vec::new();
    for decision in &decisions {
        *by_kind.entry(decision.maps.kind.clone()).or_default() += 1;
        if !decision.agrees() {
            let Decision {
                destination,
                maps,
                kernel,
            } = decision;
            disagreements.push(format!("{destination}: maps {maps:?} kernel {kernel:?}"));
        }
    }
    println!(
        "differential test over {} destinations, maps' answers by kind: {by_kind:?}",
        destinations.len()
    );
    assert!(
        disagreements.is_empty(),
        "{} of {} destinations disagree, first: {:#?}",
        disagreements.len(),
        destinations.len(),
        &disagreements[..disagreements.len().min(5)]
    );
    for kind in ["Nexthop", "Group", "Blackhole", "Unreachable", "Local"] {
        assert!(
            by_kind.get(kind).copied().unwrap_or(0) > 0,
            "the sample reached no {kind} entry: {by_kind:?}"
        );
    }
}
