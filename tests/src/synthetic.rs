//! Synthetic routing tables for benchmarks and tests: deterministic, so
//! every run measures the same table.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// Xorshift: deterministic and fast; not for anything secret.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// A full-table-like IPv4 prefix: 60% /24, 15% /22–/23, 20% /16–/21, 5%
/// /25–/32, all within 1.0.0.0–126.255.255.255 (so 203.0.113.0/24 and the
/// other documentation prefixes stay free for the test's own routes).
pub fn v4_prefix(rng: &mut Rng) -> Ipv4Net {
    let len = match rng.next_u64() % 100 {
        0..=59 => 24,
        60..=74 => 22 + (rng.next_u64() % 2) as u8,
        75..=94 => 16 + (rng.next_u64() % 6) as u8,
        _ => 25 + (rng.next_u64() % 8) as u8,
    };
    let first_octet = 1 + (rng.next_u64() % 126) as u32;
    let addr = (first_octet << 24) | (rng.next_u64() as u32 & 0x00ff_ffff);
    Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc()
}

/// A full-table-like IPv6 prefix inside 2001:db8::/32 (70% /48, 20%
/// /40–/47, 10% /56–/64), with 32 random bits after the /32: room for
/// 250,000 distinct /48s.
pub fn v6_doc_prefix(rng: &mut Rng) -> Ipv6Net {
    let len = match rng.next_u64() % 100 {
        0..=69 => 48,
        70..=89 => 40 + (rng.next_u64() % 8) as u8,
        _ => 56 + (rng.next_u64() % 9) as u8,
    };
    let addr = (0x2001_0db8u128 << 96)
        | ((rng.next_u64() as u128 & 0xffff_ffff) << 64)
        | (rng.next_u64() as u128);
    Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc()
}

/// `count` distinct prefixes from `generate`.
pub fn distinct<P: std::hash::Hash + Eq + Copy>(
    count: usize,
    mut generate: impl FnMut() -> P,
) -> Vec<P> {
    let mut seen = std::collections::HashSet::with_capacity(count);
    std::iter::from_fn(|| Some(generate()))
        .filter(|p| seen.insert(*p))
        .take(count)
        .collect()
}

/// The machine line every benchmark prints first.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    format!(
        "machine: {} CPUs, {cpu}, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    )
}
