//! The maps. Names, layouts and default sizes come from `pf_common`; the
//! sidecar resizes the capacity maps at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, ProgramArray},
};
use pf_common::{
    counters::COUNTER_COUNT,
    layout::{Tbl24Element, Tbl8Group, V6LeafPair, V6Node, V6TopEntry},
    maps::*,
    Config, Counter, EcmpGroup, Nexthop, NexthopInfo, Port, Xmit,
};

use crate::devmap::TxPortMap;

/// Lets the sidecar write route actions straight into the arrays' memory.
const BPF_F_MMAPABLE: u32 = 1 << 10;

#[map]
pub static V4_TBL24: Array<Tbl24Element> = Array::with_max_entries(TBL24_ELEMENTS, BPF_F_MMAPABLE);

#[map]
pub static V4_TBL8: Array<Tbl8Group> = Array::with_max_entries(DEFAULT_TBL8_GROUPS, BPF_F_MMAPABLE);

#[map]
pub static V6_TOP: Array<V6TopEntry> = Array::with_max_entries(V6_TOP_SLOTS, BPF_F_MMAPABLE);

#[map]
pub static V6_NODES: Array<V6Node> =
    Array::with_max_entries(DEFAULT_V6_ROUTES * V6_NODES_PER_ROUTE, BPF_F_MMAPABLE);

#[map]
pub static V6_LEAVES: Array<V6LeafPair> = Array::with_max_entries(
    DEFAULT_V6_ROUTES * V6_LEAVES_PER_ROUTE / V6_LEAVES_PER_ELEMENT,
    BPF_F_MMAPABLE,
);

#[map]
pub static NH_PTR: Array<u32> = Array::with_max_entries(DEFAULT_NEXTHOPS, 0);

/// Twice the ids, so a nexthop can be rewritten into a fresh slot and
/// flipped while the old slot is still readable.
#[map]
pub static NEXTHOPS: Array<Nexthop> = Array::with_max_entries(2 * DEFAULT_NEXTHOPS, 0);

/// Written by the sidecar for `diff` and `lookup`; never read here.
#[map]
pub static NH_INFO: Array<NexthopInfo> = Array::with_max_entries(DEFAULT_NEXTHOPS, 0);

#[map]
pub static GRP_PTR: Array<u32> = Array::with_max_entries(DEFAULT_GROUPS, 0);

#[map]
pub static GROUPS: Array<EcmpGroup> = Array::with_max_entries(2 * DEFAULT_GROUPS, 0);

#[map]
pub static PORTS: HashMap<u32, Port> = HashMap::with_max_entries(DEFAULT_PORTS, 0);

/// ifindex → [`pf_common::TxPort`]: 4-byte values, see [`TxPortMap`].
#[map]
pub static TX_PORTS: TxPortMap = TxPortMap::with_max_entries(DEFAULT_PORTS, 0);

/// ifindex → `ING_F_*` bits, written by the sidecar from the links it
/// follows (an array: the lookup is inlined, one load per frame).
#[map]
pub static INGRESS: Array<u32> = Array::with_max_entries(INGRESS_IFINDEXES, 0);

#[map]
pub static JUMP: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

#[map]
pub static XMIT: PerCpuArray<Xmit> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, so no other writer runs concurrently.
        unsafe { *slot += 1 };
    }
}
