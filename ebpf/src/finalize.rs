//! `finalize`: reached by tail call from `fast_path` with the egress in
//! `XMIT`. Checks the egress first, so a packet it cannot send goes to the
//! kernel byte-identical; then fixes the tag count, decrements TTL, writes the
//! L2 header and redirects.

use aya_ebpf::{
    bindings::xdp_action::XDP_PASS, helpers::bpf_xdp_adjust_head, macros::xdp, programs::XdpContext,
};
use pf_common::{layout::XMIT_FROM_CACHE, Counter};

use crate::{
    maps::{count, TX_PORTS, XMIT},
    packet::*,
};

#[xdp]
pub fn finalize(ctx: XdpContext) -> u32 {
    let Some(xmit) = XMIT.get(0) else {
        count(Counter::PassCorruptEntry);
        return XDP_PASS;
    };
    if TX_PORTS.get_ifindex(xmit.tx_ifindex).is_none() {
        count(Counter::PassDevmapMiss);
        return XDP_PASS;
    }
    // Never a frame to 00:00:00:00:00:00: a neighbour replaced while it was
    // read (bpf_fib_lookup copies the kernel's without its lock) can show
    // a MAC not yet written. The kernel resolves and forwards it instead.
    let d = xmit.dmac;
    if d[0] | d[1] | d[2] | d[3] | d[4] | d[5] == 0 {
        count(Counter::PassFibNoNeigh);
        return XDP_PASS;
    }
    let ingress_tag_bytes = xmit.l3_offset as i32 - ETH_HLEN as i32;
    if !(0..=2 * VLAN_HLEN as i32).contains(&ingress_tag_bytes) {
        count(Counter::PassCorruptEntry);
        return XDP_PASS;
    }
    let tagged = xmit.vlan_id != 0;
    let egress_tag_bytes = if tagged { VLAN_HLEN as i32 } else { 0 };
    let delta = ingress_tag_bytes - egress_tag_bytes;
    if delta != 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        count(Counter::PassAdjustFailed);
        return XDP_PASS;
    }

    let packet = Packet::new(ctx.data(), ctx.data_end());
    let l3 = if tagged {
        ETH_HLEN + VLAN_HLEN
    } else {
        ETH_HLEN
    };
    let ethertype = if xmit.ip_version == 4 {
        let Some(ip) = packet.bytes::<IPV4_HLEN>(l3) else {
            count(Counter::PassTruncated);
            return XDP_PASS;
        };
        ip.set_u8::<8>(ip.u8::<8>() - 1);
        ip.set_raw16::<10>(checksum_after_ttl_decrement(ip.raw16::<10>()));
        ETH_P_IP
    } else {
        let Some(ip) = packet.bytes::<IPV6_HLEN>(l3) else {
            count(Counter::PassTruncated);
            return XDP_PASS;
        };
        ip.set_u8::<7>(ip.u8::<7>() - 1);
        ETH_P_IPV6
    };

    // Holds after the IP header's check; made explicit for the accessors.
    let Some(l2) = packet.bytes::<{ ETH_HLEN + VLAN_HLEN }>(0) else {
        count(Counter::PassTruncated);
        return XDP_PASS;
    };
    l2.set_mac::<0>(&xmit.dmac);
    l2.set_mac::<6>(&xmit.smac);
    if tagged {
        let tpid = if xmit.vlan_proto == 0 {
            ETH_P_8021Q
        } else {
            xmit.vlan_proto
        };
        l2.set_be16::<12>(tpid);
        l2.set_be16::<14>(xmit.vlan_id & 0x0fff);
        l2.set_be16::<16>(ethertype);
    } else {
        l2.set_be16::<12>(ethertype);
    }

    match TX_PORTS.redirect(xmit.tx_ifindex, XDP_PASS as u64) {
        Ok(action) => {
            count(if xmit.source == XMIT_FROM_CACHE {
                Counter::RedirectCache
            } else {
                Counter::RedirectFib
            });
            action
        }
        Err(action) => {
            count(Counter::PassDevmapMiss);
            action
        }
    }
}
