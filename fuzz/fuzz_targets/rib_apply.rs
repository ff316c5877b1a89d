//! Decoded events, however odd, through the RIB, the programmer and an
//! in-memory DIR-24-8, including a resync: nothing panics.
#![no_main]

use ipnet::{Ipv4Net, Ipv6Net};
use libfuzzer_sys::fuzz_target;
use pf_common::{EcmpGroup, Nexthop, NexthopInfo, RouteAction};
use pf_sidecar::{
    control::{
        decode::{decode, Decoded},
        rib::{Rib, Source},
    },
    datapath::dir24::{Covering, Dir24, Dir24Error, VecStore},
    programmer::{Limits, MapWriter, Programmer},
    source::split_netlink_messages,
};

struct Maps {
    v4: Dir24<VecStore>,
    v6_entries: usize,
}

impl MapWriter for Maps {
    type Error = String;
    fn write_nexthop(&mut self, _: u32, _: u32, _: &Nexthop) -> Result<(), String> {
        Ok(())
    }
    fn write_nexthop_info(&mut self, _: u32, _: &NexthopInfo) -> Result<(), String> {
        Ok(())
    }
    fn write_group(&mut self, _: u32, _: u32, _: &EcmpGroup) -> Result<(), String> {
        Ok(())
    }
    fn insert_v4(&mut self, prefix: Ipv4Net, action: RouteAction) -> Result<(), Dir24Error> {
        self.v4.insert(prefix, action)
    }
    fn remove_v4(&mut self, prefix: Ipv4Net, covering: Covering, last_in_block: bool) {
        self.v4.remove(prefix, covering, last_in_block)
    }
    fn insert_v6(&mut self, _: Ipv6Net, _: RouteAction) -> Result<(), String> {
        self.v6_entries += 1;
        Ok(())
    }
    fn remove_v6(&mut self, _: Ipv6Net) -> Result<(), String> {
        self.v6_entries = self.v6_entries.saturating_sub(1);
        Ok(())
    }
    fn reclaim(&mut self) {
        self.v4.reclaim();
    }
}

fuzz_target!(|data: &[u8]| {
    let events: Vec<_> = split_netlink_messages(data)
        .filter_map(|m| match decode(m) {
            Ok(Decoded::Event(e)) => Some(e),
            _ => None,
        })
        .collect();
    if events.is_empty() {
        return;
    }
    let maps = Maps { v4: Dir24::new(VecStore::new(8)), v6_entries: 0 };
    let mut programmer = Programmer::new(maps, Limits { nexthops: 16, ecmp_groups: 4, v6_routes: 16 });
    let mut rib = Rib::new(Source::Fpm, vec![254, 100]);
    let half = events.len() / 2;
    rib.apply_batch(Source::Fpm, events[..half].to_vec(), &mut programmer);
    rib.apply_batch(Source::Kernel, events[half..].to_vec(), &mut programmer);
    rib.begin_resync(Source::Fpm);
    rib.apply_batch(Source::Fpm, events[half..].to_vec(), &mut programmer);
    rib.finish_resync(Source::Fpm, &mut programmer);
    programmer.reclaim();
    programmer.reclaim();
    let _ = rib.desired();
});
