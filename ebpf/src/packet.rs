//! Fixed-width packet loads and stores.
//!
//! Callers bounds-check against `data_end` first. Each access is one load or
//! store of the stated width, so LLVM has no aggregate copy to turn into a
//! `mem*` call.

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_ICMPV6: u8 = 58;

#[inline(always)]
pub unsafe fn load_u8(addr: usize) -> u8 {
    unsafe { *(addr as *const u8) }
}

/// A big-endian field, returned in host order.
#[inline(always)]
pub unsafe fn load_be16(addr: usize) -> u16 {
    u16::from_be(unsafe { *(addr as *const u16) })
}

/// A big-endian field, returned in host order.
#[inline(always)]
pub unsafe fn load_be32(addr: usize) -> u32 {
    u32::from_be(unsafe { *(addr as *const u32) })
}

/// Four bytes exactly as they sit in memory (for keys compared bytewise).
#[inline(always)]
pub unsafe fn load_raw32(addr: usize) -> u32 {
    unsafe { *(addr as *const u32) }
}

#[inline(always)]
pub unsafe fn store_u8(addr: usize, value: u8) {
    unsafe { *(addr as *mut u8) = value }
}

/// Stores a host-order value as a big-endian field.
#[inline(always)]
pub unsafe fn store_be16(addr: usize, value: u16) {
    unsafe { *(addr as *mut u16) = value.to_be() }
}

/// Two bytes exactly as given (for MAC addresses).
#[inline(always)]
pub unsafe fn store_pair(addr: usize, a: u8, b: u8) {
    unsafe { *(addr as *mut u16) = u16::from_ne_bytes([a, b]) }
}

/// Writes a MAC address as three 16-bit stores.
#[inline(always)]
pub unsafe fn store_mac(addr: usize, mac: &[u8; 6]) {
    unsafe {
        store_pair(addr, mac[0], mac[1]);
        store_pair(addr + 2, mac[2], mac[3]);
        store_pair(addr + 4, mac[4], mac[5]);
    }
}

/// RFC 1624 incremental update for a TTL decrement: the 16-bit word holding
/// TTL drops by 0x0100, so the checksum rises by the same amount with the
/// end-around carry added back. A sum of exactly 0xffff becomes 0, the form a
/// freshly computed checksum takes (as the kernel's `ip_decrease_ttl` does).
#[inline(always)]
pub fn checksum_after_ttl_decrement(check_be: u16) -> u16 {
    let check = u16::from_be(check_be) as u32 + 0x0100;
    let adjusted = check + (check >= 0xffff) as u32;
    (adjusted as u16).to_be()
}
