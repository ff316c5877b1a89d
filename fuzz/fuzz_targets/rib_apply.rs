//! Decoded events, however odd, through the RIB and the programmer (over
//! maps kept in hash maps, so each run is cheap; the DIR-24-8 table has its
//! own reference tests), including a resync: nothing panics.
#![no_main]

use ipnet::{Ipv4Net, Ipv6Net};
use libfuzzer_sys::fuzz_target;
use pf_common::{EcmpGroup, Nexthop, NexthopInfo, Port, RouteAction};
use pf_control::{
    dir24::{Covering, Dir24Error},
    netlink::split_netlink_messages,
    programmer::{Limits, MapWriter, Programmer},
    rib::{Rib, RibEntry, Source},
};
use pf_wire::{decode, Decoded};

#[derive(Default)]
struct Maps {
    v4: std::collections::HashMap<Ipv4Net, RouteAction>,
    v6: std::collections::HashMap<Ipv6Net, RouteAction>,
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
        self.v4.insert(prefix, action);
        Ok(())
    }
    fn remove_v4(&mut self, prefix: Ipv4Net, _: Covering, _: bool) {
        self.v4.remove(&prefix);
    }
    fn rebuild_v4_block(
        &mut self,
        _: u32,
        _: Covering,
        longer: &[(Ipv4Net, RouteAction)],
    ) -> Result<(), Dir24Error> {
        self.v4.extend(longer.iter().copied());
        Ok(())
    }
    fn write_vlan_port(&mut self, _: u32, _: Option<&Port>) -> Result<(), String> {
        Ok(())
    }
    fn write_ingress(&mut self, _: u32, _: u32) -> Result<(), String> {
        Ok(())
    }
    fn insert_v6(
        &mut self,
        prefix: Ipv6Net,
        action: RouteAction,
    ) -> Result<(), pf_control::v6trie::V6TrieError> {
        self.v6.insert(prefix, action);
        Ok(())
    }
    fn remove_v6(&mut self, prefix: Ipv6Net) {
        self.v6.remove(&prefix);
    }
    fn retry_v6_slots(&mut self) -> Vec<u32> {
        Vec::new()
    }
    fn reclaim(&mut self) {}
}

fuzz_target!(|data: &[u8]| {
    let events: Vec<_> = split_netlink_messages(data)
        .filter_map(|m| match decode(m) {
            Ok(Decoded::Change(e)) => Some(e),
            _ => None,
        })
        .collect();
    if events.is_empty() {
        return;
    }
    let maps = Maps::default();
    let mut programmer: Programmer<_, RibEntry> = Programmer::sharing_table(
        maps,
        Limits {
            nexthops: 16,
            ecmp_groups: 4,
        },
    );
    let mut rib = Rib::new(Source::Fpm, vec![254, 100]);
    let half = events.len() / 2;
    rib.apply_batch(Source::Fpm, events[..half].to_vec(), &mut programmer);
    rib.apply_batch(Source::Kernel, events[half..].to_vec(), &mut programmer);
    rib.begin_resync(Source::Fpm, &mut programmer);
    rib.apply_batch(Source::Fpm, events[half..].to_vec(), &mut programmer);
    rib.finish_resync(Source::Fpm, &mut programmer);
    programmer.reclaim();
    programmer.reclaim();
    let _ = rib.desired(&programmer);
});
