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

    let data = ctx.data();
    let end = ctx.data_end();
    let l3 = if tagged {
        ETH_HLEN + VLAN_HLEN
    } else {
        ETH_HLEN
    };
    let ethertype = if xmit.ip_version == 4 {
        if data + l3 + IPV4_HLEN > end {
            count(Counter::PassTruncated);
            return XDP_PASS;
        }
        unsafe {
            store_u8(data + l3 + 8, load_u8(data + l3 + 8) - 1);
            let check = *((data + l3 + 10) as *const u16);
            *((data + l3 + 10) as *mut u16) = checksum_after_ttl_decrement(check);
        }
        ETH_P_IP
    } else {
        if data + l3 + IPV6_HLEN > end {
            count(Counter::PassTruncated);
            return XDP_PASS;
        }
        unsafe { store_u8(data + l3 + 7, load_u8(data + l3 + 7) - 1) };
        ETH_P_IPV6
    };

    unsafe {
        store_mac(data, &xmit.dmac);
        store_mac(data + 6, &xmit.smac);
        if tagged {
            let tpid = if xmit.vlan_proto == 0 {
                ETH_P_8021Q
            } else {
                xmit.vlan_proto
            };
            store_be16(data + 12, tpid);
            store_be16(data + 14, xmit.vlan_id & 0x0fff);
            store_be16(data + 16, ethertype);
        } else {
            store_be16(data + 12, ethertype);
        }
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
