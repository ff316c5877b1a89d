//! Destinations `fast_path` hands to the kernel before any lookup, for the
//! host side (`lookup`, the differential tests): the same rules as
//! `parse_ipv4` / `parse_ipv6` in the XDP program, whose datapath tests
//! send each of these and check the counter.

use core::net::IpAddr;

use crate::Counter;

/// The pass counter `fast_path` counts for `address` before any lookup, if
/// it never looks it up: multicast and limited broadcast
/// (`pass_l3_multicast`); unspecified, loopback and link-local
/// (`pass_special_address`).
pub fn passed_before_lookup(address: IpAddr) -> Option<Counter> {
    match address {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_multicast() || a.is_broadcast() {
                Some(Counter::PassL3Multicast)
            } else if o[0] == 0 || o[0] == 127 || (o[0] == 169 && o[1] == 254) {
                Some(Counter::PassSpecialAddress)
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            if a.is_multicast() {
                Some(Counter::PassL3Multicast)
            } else if a.is_unspecified() || a.is_loopback() || (a.segments()[0] & 0xffc0) == 0xfe80
            {
                Some(Counter::PassSpecialAddress)
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(address: &str) -> Option<Counter> {
        passed_before_lookup(address.parse().unwrap())
    }

    #[test]
    fn multicast_broadcast_and_the_special_ranges_never_reach_a_lookup() {
        assert_eq!(of("224.0.0.1"), Some(Counter::PassL3Multicast));
        assert_eq!(of("255.255.255.255"), Some(Counter::PassL3Multicast));
        assert_eq!(of("ff02::1"), Some(Counter::PassL3Multicast));
        assert_eq!(of("127.0.0.1"), Some(Counter::PassSpecialAddress));
        assert_eq!(of("169.254.0.1"), Some(Counter::PassSpecialAddress));
        assert_eq!(of("0.1.2.3"), Some(Counter::PassSpecialAddress));
        assert_eq!(of("fe80::1"), Some(Counter::PassSpecialAddress));
        assert_eq!(of("::1"), Some(Counter::PassSpecialAddress));
        assert_eq!(of("192.0.2.1"), None);
        assert_eq!(of("2001:db8::1"), None);
    }
}
