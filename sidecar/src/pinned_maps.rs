//! Reads the pinned maps of the live generation (the one the links run)
//! and says what the datapath does for an address: the route kind and, for
//! forwarding, each leg's interface, gateway, weight and neighbour state.
//! The one read-only view of the pins: `lookup`, `diff` (through
//! [`MapsView`]), `status` (counters, config, capacities, program ids) and
//! the tests read the maps through it, never the daemon's memory. The IPv4 tables are mapped read-only, so a full-table `diff`
//! reads them without a syscall per block.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use anyhow::Context;
use aya::maps::{Array, Map, MapData, PerCpuArray};
use pf_common::{
    layout::{Tbl24Element, Tbl8Group, V6LeafPair, V6Node, V6TopEntry},
    maps as names, Config, Counter, EcmpGroup, Nexthop, NexthopInfo, RouteAction, RouteKind,
};
use serde::Serialize;

use pf_control::{
    drift::MapsView,
    programmer::{nexthop_key, NexthopKey},
};

use crate::datapath::{
    mmap::{MmapRegion, MmapV6Store},
    pins,
};

/// One way out, as the maps hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegAnswer {
    pub ifindex: u32,
    /// The interface's name in this namespace, if it has one now.
    pub interface: Option<String>,
    pub gateway: Option<IpAddr>,
    /// Share of the 256 buckets (1 for a single nexthop).
    pub weight: u32,
    pub nexthop_id: u32,
    pub resolved: bool,
    pub dmac: String,
    pub smac: String,
    pub tx_ifindex: u32,
    /// The device frames leave by (the VLAN's parent for a VLAN egress).
    pub tx_interface: Option<String>,
    pub vlan_id: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub kind: String,
    /// What the route action does: `nexthop 3`, `group 1`, `blackhole`,
    /// `kernel` (a miss or `Fib`: `bpf_fib_lookup` decides), …
    pub action: String,
    /// The route action as the map holds it.
    pub action_raw: u32,
    pub legs: Vec<LegAnswer>,
}

impl Answer {
    /// (interface, gateway, weight) of each leg, sorted: what a route
    /// source would say.
    pub fn paths(&self) -> Vec<(u32, Option<IpAddr>, u32)> {
        let mut paths: Vec<_> = self
            .legs
            .iter()
            .map(|l| (l.ifindex, l.gateway, l.weight))
            .collect();
        paths.sort();
        paths
    }
}

pub struct PinnedMaps {
    /// The generation read: the one the links run (see
    /// [`pins::live_generation`]).
    pub generation: PathBuf,
    /// How it was found, and anything the operator should know about it.
    pub source: pins::LiveSource,
    pub notes: Vec<String>,
    /// Every pinned link, and the generation's `fast_path` id to tell
    /// which of them run it.
    pub links: Vec<pins::LinkState>,
    pub fast_path_id: Option<u32>,
    counters: PerCpuArray<MapData, u64>,
    config: Array<MapData, Config>,
    tbl24: MmapRegion,
    tbl8: MmapRegion,
    v6: MmapV6Store,
    nh_ptr: Array<MapData, u32>,
    nexthops: Array<MapData, Nexthop>,
    nh_info: Array<MapData, NexthopInfo>,
    grp_ptr: Array<MapData, u32>,
    groups: Array<MapData, EcmpGroup>,
    /// Absent in a generation pinned before VRFs were followed.
    ingress: Option<Array<MapData, u32>>,
}

fn open<T: TryFrom<Map, Error = aya::maps::MapError>>(
    dir: &Path,
    name: &str,
    wrap: fn(MapData) -> Map,
) -> anyhow::Result<T> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(T::try_from(wrap(data))?)
}

/// A pinned array mapped read-only.
fn mmap_pinned(dir: &Path, name: &str, element_size: usize) -> anyhow::Result<MmapRegion> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let info = data.info()?;
    let value_size = info.value_size() as usize;
    anyhow::ensure!(
        value_size == element_size,
        "{name} holds {value_size}-byte values where this pf-sidecar expects {element_size}: \
         the maps were pinned by another version of pf-sidecar; use that version's tools, or \
         restart the daemon with this one"
    );
    let entries = info.max_entries() as usize;
    MmapRegion::map(data.fd().as_fd(), entries * element_size, false)
        .with_context(|| format!("mapping {name} read-only"))
}

/// The name of interface `ifindex` in the calling thread's namespace.
pub fn interface_name(ifindex: u32) -> Option<String> {
    if ifindex == 0 {
        return None;
    }
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes, as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: on success the name is NUL-terminated inside `buf`.
    Some(
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl PinnedMaps {
    /// Opens the maps of the generation the pinned links run (the newest
    /// when no link is pinned).
    pub fn open(pin_dir: &Path) -> anyhow::Result<Self> {
        let live = pins::live_generation(pin_dir)?;
        let generation = live.dir;
        let g = generation.as_path();
        Ok(Self {
            tbl24: mmap_pinned(g, names::V4_TBL24, size_of::<Tbl24Element>())?,
            tbl8: mmap_pinned(g, names::V4_TBL8, size_of::<Tbl8Group>())?,
            v6: MmapV6Store {
                top: mmap_pinned(g, names::V6_TOP, size_of::<V6TopEntry>())?,
                nodes: mmap_pinned(g, names::V6_NODES, size_of::<V6Node>())?,
                leaves: mmap_pinned(g, names::V6_LEAVES, size_of::<V6LeafPair>())?,
            },
            nh_ptr: open(g, names::NH_PTR, Map::Array)?,
            nexthops: open(g, names::NEXTHOPS, Map::Array)?,
            nh_info: open(g, names::NH_INFO, Map::Array)?,
            grp_ptr: open(g, names::GRP_PTR, Map::Array)?,
            groups: open(g, names::GROUPS, Map::Array)?,
            counters: open(g, names::COUNTERS, Map::PerCpuArray)?,
            config: open(g, names::CONFIG, Map::Array)?,
            ingress: open(g, names::INGRESS, Map::Array).ok(),
            generation,
            source: live.source,
            notes: live.notes,
            links: live.links,
            fast_path_id: live.fast_path_id,
        })
    }

    /// Every counter, summed over the CPUs, in [`Counter::ALL`]'s order.
    pub fn counters(&self) -> anyhow::Result<Vec<u64>> {
        Counter::ALL
            .iter()
            .map(|c| Ok(self.counters.get(&(*c as u32), 0)?.iter().sum()))
            .collect()
    }

    /// The `INGRESS` bits of `ifindex`: `None` when the generation has no
    /// such map or the ifindex is beyond it (its frames go to the kernel).
    pub fn ingress(&self, ifindex: u32) -> anyhow::Result<Option<u32>> {
        let Some(ingress) = &self.ingress else {
            return Ok(None);
        };
        match ingress.get(&ifindex, 0) {
            Ok(flags) => Ok(Some(flags)),
            Err(aya::maps::MapError::OutOfBounds { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The datapath's configuration (mode, heartbeat, fail-safe bound).
    pub fn config(&self) -> anyhow::Result<Config> {
        Ok(self.config.get(&0, 0)?)
    }

    /// How many entries the map `name` holds at most (0 if unreadable).
    pub fn capacity(&self, name: &str) -> u64 {
        MapData::from_pin(self.generation.join(name))
            .ok()
            .and_then(|m| m.info().ok())
            .map_or(0, |i| i.max_entries() as u64)
    }

    /// The ids of the generation's pinned programs that can be read.
    pub fn program_ids(&self) -> Vec<(String, u32)> {
        let mut program_ids = Vec::new();
        for name in [names::PROG_FAST_PATH, names::PROG_FINALIZE] {
            let path = self.generation.join(format!("prog_{name}"));
            if let Ok(info) = aya::programs::ProgramInfo::from_pin(&path) {
                program_ids.push((name.to_string(), info.id()));
            }
        }
        program_ids
    }

    /// The route action for an address, as `fast_path` computes it.
    pub fn action(&self, addr: IpAddr) -> anyhow::Result<RouteAction> {
        Ok(match addr {
            IpAddr::V4(a) => self.action_v4(a)?,
            IpAddr::V6(a) => self.action_v6(a)?,
        })
    }

    fn action_v4(&self, addr: Ipv4Addr) -> anyhow::Result<RouteAction> {
        let block = u32::from(addr) >> 8;
        let action = RouteAction(self.tbl24(block));
        if action.kind() != Some(RouteKind::Tbl8) {
            return Ok(action);
        }
        match self.tbl8(action.index(), u32::from(addr) & 0xff) {
            u32::MAX => anyhow::bail!(
                "{addr}: second-level group {} is outside the table",
                action.index()
            ),
            word => Ok(RouteAction(word)),
        }
    }

    fn action_v6(&self, addr: Ipv6Addr) -> anyhow::Result<RouteAction> {
        Ok(pf_control::v6trie::lookup_in(&self.v6, addr.into()))
    }

    fn leg(&self, id: u32, weight: u32) -> anyhow::Result<LegAnswer> {
        let slot = self.nh_ptr.get(&id, 0)?;
        let nexthop = self.nexthops.get(&slot, 0)?;
        let key: Option<NexthopKey> = nexthop_key(&self.nh_info.get(&id, 0)?);
        let ifindex = key.map_or(nexthop.tx_ifindex, |k| k.ifindex);
        Ok(LegAnswer {
            ifindex,
            interface: interface_name(ifindex),
            gateway: key.map(|k| k.gateway),
            weight,
            nexthop_id: id,
            resolved: nexthop.is_resolved(),
            dmac: mac(nexthop.dmac),
            smac: mac(nexthop.smac),
            tx_ifindex: nexthop.tx_ifindex,
            tx_interface: interface_name(nexthop.tx_ifindex),
            vlan_id: nexthop.vlan_id,
        })
    }

    /// What the datapath does for `addr`.
    pub fn answer(&self, addr: IpAddr) -> anyhow::Result<Answer> {
        let action = self.action(addr)?;
        let kind = action
            .kind()
            .map_or_else(|| format!("invalid({:#x})", action.0), |k| format!("{k:?}"));
        let legs = match action.kind() {
            Some(RouteKind::Nexthop) => vec![self.leg(action.index(), 1)?],
            Some(RouteKind::Group) => {
                let slot = self.grp_ptr.get(&action.index(), 0)?;
                let group = self.groups.get(&slot, 0)?;
                let mut buckets: BTreeMap<u32, u32> = BTreeMap::new();
                for id in &group.buckets[..group.bucket_count.min(256) as usize] {
                    *buckets.entry(*id).or_default() += 1;
                }
                buckets
                    .into_iter()
                    .map(|(id, count)| self.leg(id, count))
                    .collect::<anyhow::Result<_>>()?
            }
            _ => Vec::new(),
        };
        Ok(Answer {
            kind,
            action: pf_control::programmer::describe_action(action),
            action_raw: action.0,
            legs,
        })
    }
}

impl MapsView for PinnedMaps {
    fn tbl24(&self, block: u32) -> u32 {
        self.tbl24.load(block as usize)
    }

    fn tbl8(&self, group: u32, offset: u32) -> u32 {
        let index = group as usize * 256 + offset as usize;
        if index >= self.tbl8.len_words() {
            return u32::MAX;
        }
        self.tbl8.load(index)
    }

    fn v6(&self) -> &dyn pf_control::v6trie::V6Read {
        &self.v6
    }

    fn nexthop(&self, id: u32) -> Option<(NexthopKey, Nexthop)> {
        let key = nexthop_key(&self.nh_info.get(&id, 0).ok()?)?;
        let slot = self.nh_ptr.get(&id, 0).ok()?;
        Some((key, self.nexthops.get(&slot, 0).ok()?))
    }

    fn group_buckets(&self, id: u32) -> Option<Vec<u32>> {
        let slot = self.grp_ptr.get(&id, 0).ok()?;
        let group = self.groups.get(&slot, 0).ok()?;
        let count = (group.bucket_count as usize).min(group.buckets.len());
        (count > 0).then(|| group.buckets[..count].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::sys::{map_create, MapSpec, BPF_F_MMAPABLE, BPF_MAP_TYPE_ARRAY};

    /// Pins an mmapable array of `value_size`-byte values as `name` in `dir`.
    fn pin_array(dir: &Path, name: &str, value_size: u32) {
        let fd = map_create(&MapSpec {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size,
            max_entries: 128,
            flags: BPF_F_MMAPABLE,
            name,
        })
        .unwrap();
        MapData::from_fd(fd).unwrap().pin(dir.join(name)).unwrap();
    }

    #[test]
    fn maps_another_version_pinned_with_other_value_sizes_are_refused_by_name() {
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("PF_REQUIRE_ROOT").is_none(),
                "this test needs root (CAP_BPF)"
            );
            return;
        }
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/pf-sidecar-test-pins-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // The node layout of the version before path compression: 24 bytes.
        pin_array(&dir, names::V6_NODES, 24);
        pin_array(&dir, names::V6_TOP, size_of::<V6TopEntry>() as u32);
        let old = mmap_pinned(&dir, names::V6_NODES, size_of::<V6Node>());
        let current = mmap_pinned(&dir, names::V6_TOP, size_of::<V6TopEntry>());
        std::fs::remove_dir_all(&dir).unwrap();
        let error = format!("{:#}", old.err().expect("a 24-byte node map is refused"));
        assert!(
            error.contains("V6_NODES holds 24-byte values where this pf-sidecar expects 32"),
            "{error}"
        );
        assert!(current.is_ok());
    }
}
