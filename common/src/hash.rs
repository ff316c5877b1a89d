//! The ECMP flow hash. The datapath and the sidecar (`lookup`, tests) call
//! the same functions, and [`TEST_VECTORS`] pins their output.
//!
//! Words go in as host-order values of the header fields, so the datapath
//! byte-swaps what it reads from the packet and userspace uses
//! `u32::from_be_bytes` on address octets. The mixing is MurmurHash3's 32-bit
//! block and finaliser: a handful of multiplies, no tables, no loops.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[derive(Clone, Copy)]
pub struct FlowHasher {
    h: u32,
    len: u32,
}

impl FlowHasher {
    #[inline(always)]
    pub const fn new(seed: u32) -> Self {
        Self { h: seed, len: 0 }
    }

    #[inline(always)]
    pub fn write_u32(&mut self, word: u32) {
        let mut k = word.wrapping_mul(C1);
        k = k.rotate_left(15);
        k = k.wrapping_mul(C2);
        self.h ^= k;
        self.h = self.h.rotate_left(13);
        self.h = self.h.wrapping_mul(5).wrapping_add(0xe654_6b64);
        self.len = self.len.wrapping_add(4);
    }

    #[inline(always)]
    pub fn finish(self) -> u32 {
        let mut h = self.h ^ self.len;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
        h
    }
}

/// Ports of a 5-tuple, or zero for the 3-tuple (non TCP/UDP) case.
#[inline(always)]
const fn ports_word(sport: u16, dport: u16) -> u32 {
    ((sport as u32) << 16) | dport as u32
}

/// IPv4 flow hash. For protocols other than TCP and UDP pass zero ports.
#[inline(always)]
pub fn flow_hash_v4(seed: u32, saddr: u32, daddr: u32, proto: u8, sport: u16, dport: u16) -> u32 {
    let mut h = FlowHasher::new(seed);
    h.write_u32(saddr);
    h.write_u32(daddr);
    h.write_u32(proto as u32);
    h.write_u32(ports_word(sport, dport));
    h.finish()
}

/// IPv6 flow hash; addresses as four host-order words each.
#[inline(always)]
pub fn flow_hash_v6(
    seed: u32,
    saddr: &[u32; 4],
    daddr: &[u32; 4],
    proto: u8,
    sport: u16,
    dport: u16,
) -> u32 {
    let mut h = FlowHasher::new(seed);
    h.write_u32(saddr[0]);
    h.write_u32(saddr[1]);
    h.write_u32(saddr[2]);
    h.write_u32(saddr[3]);
    h.write_u32(daddr[0]);
    h.write_u32(daddr[1]);
    h.write_u32(daddr[2]);
    h.write_u32(daddr[3]);
    h.write_u32(proto as u32);
    h.write_u32(ports_word(sport, dport));
    h.finish()
}

/// Maps a hash onto `0..bucket_count` without a division.
#[inline(always)]
pub const fn bucket_of(hash: u32, bucket_count: u32) -> u32 {
    ((hash as u64 * bucket_count as u64) >> 32) as u32
}

/// Whether the transport header carries ports that belong in the hash.
#[inline(always)]
pub const fn proto_has_ports(proto: u8) -> bool {
    proto == 6 || proto == 17
}

/// One pinned input/output pair of the IPv4 hash.
pub struct V4Vector {
    pub seed: u32,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub hash: u32,
}

/// Pinned outputs, equal to MurmurHash3_x86_32 (seed as given) of the four
/// words as little-endian bytes, computed with an independent implementation.
/// The datapath tests send these flows through an ECMP group
/// and check the leg the program picks against `bucket_of(hash, n)`.
pub const TEST_VECTORS: [V4Vector; 4] = [
    V4Vector {
        seed: 0,
        saddr: [192, 0, 2, 1],
        daddr: [198, 51, 100, 7],
        proto: 6,
        sport: 40000,
        dport: 443,
        hash: 0x398e_9c6a,
    },
    V4Vector {
        seed: 0,
        saddr: [192, 0, 2, 1],
        daddr: [198, 51, 100, 7],
        proto: 17,
        sport: 5353,
        dport: 53,
        hash: 0xf893_5aec,
    },
    V4Vector {
        seed: 0x1234_5678,
        saddr: [203, 0, 113, 9],
        daddr: [198, 51, 100, 200],
        proto: 1,
        sport: 0,
        dport: 0,
        hash: 0x800f_e570,
    },
    V4Vector {
        seed: 7,
        saddr: [192, 0, 2, 254],
        daddr: [203, 0, 113, 1],
        proto: 6,
        sport: 1,
        dport: 65535,
        hash: 0xa8c0_878c,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv4_hash_matches_its_pinned_vectors() {
        for v in &TEST_VECTORS {
            let h = flow_hash_v4(
                v.seed,
                u32::from_be_bytes(v.saddr),
                u32::from_be_bytes(v.daddr),
                v.proto,
                v.sport,
                v.dport,
            );
            assert_eq!(h, v.hash, "vector {:?} -> {:?}", v.saddr, v.daddr);
        }
    }

    #[test]
    fn bucket_of_stays_in_range() {
        for n in 1..=256u32 {
            assert_eq!(bucket_of(u32::MAX, n), n - 1);
            assert_eq!(bucket_of(0, n), 0);
        }
    }

    #[test]
    fn reversed_ports_hash_differently() {
        let a = flow_hash_v4(0, 1, 2, 6, 10, 20);
        let b = flow_hash_v4(0, 1, 2, 6, 20, 10);
        assert_ne!(a, b);
    }
}
