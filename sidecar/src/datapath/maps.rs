//! Typed handles on every map of the datapath.

use std::{
    mem::size_of,
    os::fd::AsFd,
    sync::{Arc, Mutex, MutexGuard},
};

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray, ProgramArray},
    Ebpf,
};
use pf_common::{
    counters::COUNTER_COUNT,
    layout::{Tbl24Element, Tbl8Group, V6LeafPair, V6Node, V6TopEntry},
    maps as names, Config, Counter, EcmpGroup, Nexthop, NexthopInfo, Port, RouteAction,
};

use pf_control::{dir24::Dir24, v6trie::V6Trie};

use super::{
    mmap::{MmapDir24Store, MmapRegion, MmapV6Store},
    tx_ports::TxPorts,
    DatapathError,
};

/// A route table written through shared memory, shared so that
/// [`super::route_writer::RouteWriter`] can write it from its writer
/// thread; whoever writes holds the lock for the whole run of writes.
pub struct Shared<T>(Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// The IPv4 table: `V4_TBL24` and `V4_TBL8`.
pub type SharedDir24 = Shared<Dir24<MmapDir24Store>>;
/// The IPv6 table: `V6_TOP`, `V6_NODES` and `V6_LEAVES`.
pub type SharedV6 = Shared<V6Trie<MmapV6Store>>;

impl<T> Shared<T> {
    fn new(table: T) -> Self {
        Self(Arc::new(Mutex::new(table)))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        // A writer that panicked mid-run left entries the datapath can
        // read either way; the shadow state is still the best there is.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct DatapathMaps {
    pub v4: SharedDir24,
    pub v6: SharedV6,
    pub nh_ptr: Array<MapData, u32>,
    pub nexthops: Array<MapData, Nexthop>,
    pub nexthop_info: Array<MapData, NexthopInfo>,
    pub grp_ptr: Array<MapData, u32>,
    pub groups: Array<MapData, EcmpGroup>,
    pub ports: HashMap<MapData, u32, Port>,
    pub tx_ports: TxPorts,
    pub ingress: Array<MapData, u32>,
    pub config: Array<MapData, Config>,
    pub counters: PerCpuArray<MapData, u64>,
    pub jump: ProgramArray<MapData>,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, DatapathError> {
    ebpf.take_map(name).ok_or(DatapathError::Missing(name))
}

macro_rules! typed {
    ($ebpf:expr, $name:expr) => {
        take($ebpf, $name)?
            .try_into()
            .map_err(|source| DatapathError::Map {
                name: $name,
                source,
            })?
    };
}

/// Maps all of an array map's values, `element` bytes each.
fn mmap_whole(map: Map, name: &'static str, element: usize) -> Result<MmapRegion, DatapathError> {
    let entries = match &map {
        Map::Array(data) => data.info().map(|i| i.max_entries()).unwrap_or(0),
        _ => 0,
    };
    mmap_array(map, name, entries as usize * element)
}

fn mmap_array(map: Map, name: &'static str, bytes: usize) -> Result<MmapRegion, DatapathError> {
    let data = match map {
        Map::Array(data) => data,
        _ => {
            return Err(DatapathError::Map {
                name,
                source: aya::maps::MapError::InvalidName {
                    name: name.to_string(),
                },
            })
        }
    };
    MmapRegion::map(data.fd().as_fd(), bytes, true)
        .map_err(|source| DatapathError::Io { name, source })
}

impl DatapathMaps {
    pub(super) fn take(
        ebpf: &mut Ebpf,
        jump: ProgramArray<MapData>,
    ) -> Result<Self, DatapathError> {
        let tbl24 = mmap_array(
            take(ebpf, names::V4_TBL24)?,
            names::V4_TBL24,
            names::TBL24_ELEMENTS as usize * std::mem::size_of::<Tbl24Element>(),
        )?;
        let tbl8_map = take(ebpf, names::V4_TBL8)?;
        let tbl8_groups = match &tbl8_map {
            Map::Array(data) => data.info().map(|i| i.max_entries()).unwrap_or(0),
            _ => 0,
        };
        let tbl8 = mmap_array(
            tbl8_map,
            names::V4_TBL8,
            tbl8_groups as usize * std::mem::size_of::<Tbl8Group>(),
        )?;
        Ok(Self {
            v4: SharedDir24::new(Dir24::new(MmapDir24Store {
                tbl24,
                tbl8,
                groups: tbl8_groups,
            })),
            v6: SharedV6::new(V6Trie::new(MmapV6Store {
                top: mmap_whole(
                    take(ebpf, names::V6_TOP)?,
                    names::V6_TOP,
                    size_of::<V6TopEntry>(),
                )?,
                nodes: mmap_whole(
                    take(ebpf, names::V6_NODES)?,
                    names::V6_NODES,
                    size_of::<V6Node>(),
                )?,
                leaves: mmap_whole(
                    take(ebpf, names::V6_LEAVES)?,
                    names::V6_LEAVES,
                    size_of::<V6LeafPair>(),
                )?,
            })),
            nh_ptr: typed!(ebpf, names::NH_PTR),
            nexthops: typed!(ebpf, names::NEXTHOPS),
            nexthop_info: typed!(ebpf, names::NH_INFO),
            grp_ptr: typed!(ebpf, names::GRP_PTR),
            groups: typed!(ebpf, names::GROUPS),
            ports: typed!(ebpf, names::PORTS),
            tx_ports: TxPorts::new(take(ebpf, names::TX_PORTS)?)?,
            ingress: typed!(ebpf, names::INGRESS),
            config: typed!(ebpf, names::CONFIG),
            counters: typed!(ebpf, names::COUNTERS),
            jump,
        })
    }

    pub fn set_config(&mut self, config: &Config) -> Result<(), DatapathError> {
        self.config
            .set(0, config, 0)
            .map_err(|source| DatapathError::Map {
                name: names::CONFIG,
                source,
            })
    }

    /// Sums a counter over all CPUs.
    pub fn counter(&self, counter: Counter) -> Result<u64, DatapathError> {
        let per_cpu =
            self.counters
                .get(&(counter as u32), 0)
                .map_err(|source| DatapathError::Map {
                    name: names::COUNTERS,
                    source,
                })?;
        Ok(per_cpu.iter().sum())
    }

    /// Every counter, summed over CPUs, in `Counter::ALL` order.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, DatapathError> {
        debug_assert_eq!(Counter::ALL.len() as u32, COUNTER_COUNT);
        Counter::ALL
            .iter()
            .map(|&c| Ok((c, self.counter(c)?)))
            .collect()
    }

    /// Lets the datapath redirect to `ifindex`.
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        self.tx_ports
            .insert(ifindex)
            .map_err(|source| DatapathError::Io {
                name: names::TX_PORTS,
                source,
            })
    }

    pub fn set_port(&mut self, ifindex: u32, port: &Port) -> Result<(), DatapathError> {
        self.ports
            .insert(ifindex, port, 0)
            .map_err(|source| DatapathError::Map {
                name: names::PORTS,
                source,
            })
    }

    /// Writes a nexthop into `slot` and points `id` at it.
    pub fn write_nexthop(
        &mut self,
        id: u32,
        slot: u32,
        nexthop: &Nexthop,
    ) -> Result<(), DatapathError> {
        self.nexthops
            .set(slot, nexthop, 0)
            .map_err(|source| DatapathError::Map {
                name: names::NEXTHOPS,
                source,
            })?;
        self.nh_ptr
            .set(id, slot, 0)
            .map_err(|source| DatapathError::Map {
                name: names::NH_PTR,
                source,
            })
    }

    /// Writes an ECMP group into `slot` and points `id` at it.
    pub fn write_group(
        &mut self,
        id: u32,
        slot: u32,
        group: &EcmpGroup,
    ) -> Result<(), DatapathError> {
        self.groups
            .set(slot, group, 0)
            .map_err(|source| DatapathError::Map {
                name: names::GROUPS,
                source,
            })?;
        self.grp_ptr
            .set(id, slot, 0)
            .map_err(|source| DatapathError::Map {
                name: names::GRP_PTR,
                source,
            })
    }

    /// Installs an IPv6 route in the trie (tests and benches; the daemon
    /// writes through the programmer).
    pub fn set_v6_route(
        &mut self,
        addr: [u8; 16],
        prefix_len: u8,
        action: u32,
    ) -> Result<(), DatapathError> {
        let prefix = ipnet::Ipv6Net::new(addr.into(), prefix_len)
            .map_err(|_| DatapathError::PrefixLength(prefix_len))?;
        Ok(self.v6.lock().insert(prefix, RouteAction(action))?)
    }

    pub fn remove_v6_route(&mut self, addr: [u8; 16], prefix_len: u8) -> Result<(), DatapathError> {
        let prefix = ipnet::Ipv6Net::new(addr.into(), prefix_len)
            .map_err(|_| DatapathError::PrefixLength(prefix_len))?;
        self.v6.lock().remove(prefix);
        Ok(())
    }
}

impl pf_control::programmer::MapWriter for DatapathMaps {
    type Error = DatapathError;

    fn write_nexthop(
        &mut self,
        id: u32,
        slot: u32,
        nexthop: &Nexthop,
    ) -> Result<(), DatapathError> {
        DatapathMaps::write_nexthop(self, id, slot, nexthop)
    }

    fn write_nexthop_info(&mut self, id: u32, info: &NexthopInfo) -> Result<(), DatapathError> {
        self.nexthop_info
            .set(id, info, 0)
            .map_err(|source| DatapathError::Map {
                name: names::NH_INFO,
                source,
            })
    }

    fn write_group(&mut self, id: u32, slot: u32, group: &EcmpGroup) -> Result<(), DatapathError> {
        DatapathMaps::write_group(self, id, slot, group)
    }

    fn insert_v4(
        &mut self,
        prefix: ipnet::Ipv4Net,
        action: RouteAction,
    ) -> Result<(), pf_control::dir24::Dir24Error> {
        self.v4.lock().insert(prefix, action)
    }

    fn remove_v4(
        &mut self,
        prefix: ipnet::Ipv4Net,
        covering: pf_control::dir24::Covering,
        last_in_block: bool,
    ) {
        self.v4.lock().remove(prefix, covering, last_in_block)
    }

    fn rebuild_v4_block(
        &mut self,
        block: u32,
        covering: pf_control::dir24::Covering,
        longer: &[(ipnet::Ipv4Net, pf_common::RouteAction)],
    ) -> Result<(), pf_control::dir24::Dir24Error> {
        self.v4.lock().rebuild_deferred(block, covering, longer)
    }

    fn insert_v6(
        &mut self,
        prefix: ipnet::Ipv6Net,
        action: RouteAction,
    ) -> Result<(), pf_control::v6trie::V6TrieError> {
        self.v6.lock().insert(prefix, action)
    }

    fn remove_v6(&mut self, prefix: ipnet::Ipv6Net) {
        self.v6.lock().remove(prefix)
    }

    fn retry_v6_slots(&mut self) -> Vec<u32> {
        self.v6.lock().retry_deferred()
    }

    fn write_vlan_port(&mut self, ifindex: u32, port: Option<&Port>) -> Result<(), DatapathError> {
        match port {
            Some(port) => self.set_port(ifindex, port),
            // Forgetting a VLAN the map never held is no error.
            None if self.ports.get(&ifindex, 0).is_err() => Ok(()),
            None => self
                .ports
                .remove(&ifindex)
                .map_err(|source| DatapathError::Map {
                    name: names::PORTS,
                    source,
                }),
        }
    }

    fn write_ingress(&mut self, ifindex: u32, flags: u32) -> Result<(), DatapathError> {
        self.ingress
            .set(ifindex, flags, 0)
            .map_err(|source| DatapathError::Map {
                name: names::INGRESS,
                source,
            })
    }

    fn reclaim(&mut self) {
        self.v4.lock().reclaim();
        self.v6.lock().reclaim_at(std::time::Instant::now());
    }
}
