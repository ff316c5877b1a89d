//! Packet access, bounds-checked once per header: [`Packet::bytes`] checks
//! that a header-sized run of bytes lies before `data_end` and returns a
//! [`Bytes`] view, whose loads and stores take constant offsets inside it.
//! No caller does pointer arithmetic or an unchecked load.

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

/// The packet between `data` and `data_end`: the only way to its bytes.
#[derive(Clone, Copy)]
pub struct Packet {
    data: usize,
    end: usize,
}

impl Packet {
    #[inline(always)]
    pub fn new(data: usize, end: usize) -> Self {
        Self { data, end }
    }

    /// The `N` bytes at `offset`, if the packet holds them. The check is
    /// `data + offset + N > data_end`, the form every verifier tracks; keep
    /// `offset` a constant or a value with known bounds.
    #[inline(always)]
    pub fn bytes<const N: usize>(&self, offset: usize) -> Option<Bytes<N>> {
        let addr = self.data + offset;
        if addr + N > self.end {
            None
        } else {
            Some(Bytes { addr })
        }
    }

    /// How many bytes the packet holds from the start of `bytes` on. For
    /// comparing a length field with: verifiers before 6.13 drop a
    /// byte-swapped value's bounds and refuse adding it to a packet
    /// pointer, so such a length is compared, never added.
    #[inline(always)]
    pub fn len_from<const N: usize>(&self, bytes: Bytes<N>) -> usize {
        self.end - bytes.addr
    }
}

/// `N` bytes checked to lie inside the packet. Each access names its
/// offset as a constant, checked against `N` when the program is built,
/// and is one load or store of its width, so LLVM has no aggregate copy to
/// turn into a `mem*` call.
#[derive(Clone, Copy)]
pub struct Bytes<const N: usize> {
    addr: usize,
}

impl<const N: usize> Bytes<N> {
    #[inline(always)]
    pub fn u8<const AT: usize>(self) -> u8 {
        const { assert!(AT < N, "a read past the checked bytes") };
        // SAFETY: `AT < N` and the `N` bytes are inside the packet.
        unsafe { *((self.addr + AT) as *const u8) }
    }

    /// Two bytes exactly as they sit in memory.
    #[inline(always)]
    pub fn raw16<const AT: usize>(self) -> u16 {
        const { assert!(AT + 2 <= N, "a read past the checked bytes") };
        // SAFETY: as for `u8`.
        unsafe { *((self.addr + AT) as *const u16) }
    }

    /// A big-endian field, returned in host order.
    #[inline(always)]
    pub fn be16<const AT: usize>(self) -> u16 {
        u16::from_be(self.raw16::<AT>())
    }

    /// Four bytes exactly as they sit in memory (for keys compared bytewise).
    #[inline(always)]
    pub fn raw32<const AT: usize>(self) -> u32 {
        const { assert!(AT + 4 <= N, "a read past the checked bytes") };
        // SAFETY: as for `u8`.
        unsafe { *((self.addr + AT) as *const u32) }
    }

    /// A big-endian field, returned in host order.
    #[inline(always)]
    pub fn be32<const AT: usize>(self) -> u32 {
        u32::from_be(self.raw32::<AT>())
    }

    #[inline(always)]
    pub fn set_u8<const AT: usize>(self, value: u8) {
        const { assert!(AT < N, "a write past the checked bytes") };
        // SAFETY: as for `u8`.
        unsafe { *((self.addr + AT) as *mut u8) = value }
    }

    /// Two bytes exactly as given.
    #[inline(always)]
    pub fn set_raw16<const AT: usize>(self, value: u16) {
        const { assert!(AT + 2 <= N, "a write past the checked bytes") };
        // SAFETY: as for `u8`.
        unsafe { *((self.addr + AT) as *mut u16) = value }
    }

    /// Stores a host-order value as a big-endian field.
    #[inline(always)]
    pub fn set_be16<const AT: usize>(self, value: u16) {
        self.set_raw16::<AT>(value.to_be())
    }

    /// A MAC address at `AT`, as three 16-bit stores.
    #[inline(always)]
    pub fn set_mac<const AT: usize>(self, mac: &[u8; 6]) {
        const { assert!(AT + 6 <= N, "a write past the checked bytes") };
        // SAFETY: as for `u8`, for the six bytes.
        unsafe {
            let at = (self.addr + AT) as *mut u16;
            *at = u16::from_ne_bytes([mac[0], mac[1]]);
            *at.add(1) = u16::from_ne_bytes([mac[2], mac[3]]);
            *at.add(2) = u16::from_ne_bytes([mac[4], mac[5]]);
        }
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
