//! The rtnetlink decoder (routes, nexthop objects, neighbours, links,
//! addresses) as the kernel source uses it, on arbitrary datagrams.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pf_control::netlink::split_netlink_messages;
use pf_wire::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    for message in split_netlink_messages(data) {
        let _ = decode(message);
    }
});
