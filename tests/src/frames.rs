//! Hand-built frames for test runs, and checks on what comes back.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{PacketBuilder, SingleVlanHeader, VlanId};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
pub const PAYLOAD: &[u8] = b"pf-sidecar test payload";

/// How the frame is tagged on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tagging {
    Untagged,
    Dot1q(u16),
    /// 802.1ad outer, 802.1Q inner.
    QinQ(u16, u16),
}

fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(CLIENT_MAC, ROUTER_MAC)
}

/// A UDP/IPv4 frame.
pub fn udp4(
    tagging: Tagging,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut frame = Vec::new();
    let builder = eth();
    let builder = match tagging {
        Tagging::Untagged => builder.ipv4(src.octets(), dst.octets(), ttl),
        Tagging::Dot1q(vid) => {
            builder
                .single_vlan(VlanId::try_new(vid).unwrap())
                .ipv4(src.octets(), dst.octets(), ttl)
        }
        Tagging::QinQ(outer, inner) => builder
            .double_vlan(
                VlanId::try_new(outer).unwrap(),
                VlanId::try_new(inner).unwrap(),
            )
            .ipv4(src.octets(), dst.octets(), ttl),
    };
    builder
        .udp(sport, dport)
        .write(&mut frame, PAYLOAD)
        .unwrap();
    frame
}

/// A UDP/IPv6 frame.
pub fn udp6(
    tagging: Tagging,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut frame = Vec::new();
    let builder = eth();
    let builder = match tagging {
        Tagging::Untagged => builder.ipv6(src.octets(), dst.octets(), hop_limit),
        Tagging::Dot1q(vid) => builder.single_vlan(VlanId::try_new(vid).unwrap()).ipv6(
            src.octets(),
            dst.octets(),
            hop_limit,
        ),
        Tagging::QinQ(outer, inner) => builder
            .double_vlan(
                VlanId::try_new(outer).unwrap(),
                VlanId::try_new(inner).unwrap(),
            )
            .ipv6(src.octets(), dst.octets(), hop_limit),
    };
    builder
        .udp(sport, dport)
        .write(&mut frame, PAYLOAD)
        .unwrap();
    frame
}

/// A TCP/IPv4 frame (for 5-tuple hashing checks).
pub fn tcp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    eth()
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1, 65535)
        .write(&mut frame, PAYLOAD)
        .unwrap();
    frame
}

/// An ICMPv4 echo request (3-tuple hashing).
pub fn icmp4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    eth()
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut frame, PAYLOAD)
        .unwrap();
    frame
}

/// Offset of the IP header given the tagging.
pub fn l3_offset(tagging: Tagging) -> usize {
    match tagging {
        Tagging::Untagged => 14,
        Tagging::Dot1q(_) => 18,
        Tagging::QinQ(..) => 22,
    }
}

/// RFC 1071 sum over a header; a valid IPv4 header sums to 0xffff.
pub fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Recomputes the IPv4 header checksum in place.
pub fn fix_ipv4_checksum(frame: &mut [u8], l3: usize) {
    let ihl = (frame[l3] & 0x0f) as usize * 4;
    frame[l3 + 10] = 0;
    frame[l3 + 11] = 0;
    let check = !ones_complement_sum(&frame[l3..l3 + ihl]);
    frame[l3 + 10..l3 + 12].copy_from_slice(&check.to_be_bytes());
}

/// Inserts 4 bytes of IPv4 options (NOP, NOP, NOP, EOL) after the header.
pub fn with_ipv4_options(frame: &[u8], l3: usize) -> Vec<u8> {
    let mut out = frame[..l3 + 20].to_vec();
    out.extend_from_slice(&[1, 1, 1, 0]);
    out.extend_from_slice(&frame[l3 + 20..]);
    out[l3] = 0x46;
    let total = u16::from_be_bytes([out[l3 + 2], out[l3 + 3]]) + 4;
    out[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut out, l3);
    out
}

/// Inserts an 8-byte hop-by-hop header (PadN) in front of the IPv6 payload.
pub fn with_ipv6_hop_by_hop(frame: &[u8], l3: usize) -> Vec<u8> {
    let next = frame[l3 + 6];
    let mut out = frame[..l3 + 40].to_vec();
    out.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    out.extend_from_slice(&frame[l3 + 40..]);
    out[l3 + 6] = 0;
    let payload = u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]) + 8;
    out[l3 + 4..l3 + 6].copy_from_slice(&payload.to_be_bytes());
    out
}

/// The egress tag of an output frame, if any: (TPID, VLAN id).
pub fn egress_tag(frame: &[u8]) -> Option<(u16, u16)> {
    let tpid = u16::from_be_bytes([frame[12], frame[13]]);
    if tpid == 0x8100 || tpid == 0x88a8 {
        let tci = SingleVlanHeader::from_slice(&frame[14..18]).unwrap().0;
        Some((tpid, tci.vlan_id.value()))
    } else {
        None
    }
}
