//! Map names as they appear in the object file and under the pin directory.
//!
//! The kernel keeps 15 characters of a map name, so every name fits in that.

/// IPv4 DIR-24-8 first level: 2^24 route actions, two per array element.
pub const V4_TBL24: &str = "V4_TBL24";
/// IPv4 DIR-24-8 second level: groups of 256 route actions for prefixes longer than /24.
pub const V4_TBL8: &str = "V4_TBL8";
/// IPv6 first level: one [`crate::layout::V6TopEntry`] per /22.
pub const V6_TOP: &str = "V6_TOP";
/// IPv6 trie nodes ([`crate::layout::V6Node`]), children of a node side by side.
pub const V6_NODES: &str = "V6_NODES";
/// IPv6 trie leaves: route actions, two per element, runs of a node side by side.
pub const V6_LEAVES: &str = "V6_LEAVES";
/// Nexthop id to the slot in [`NEXTHOPS`] that currently holds it.
pub const NH_PTR: &str = "NH_PTR";
/// Nexthop slots (resolved egress, MACs, VLAN, MTU).
pub const NEXTHOPS: &str = "NEXTHOPS";
/// Nexthop id to the interface and gateway it stands for (read by tools only).
pub const NH_INFO: &str = "NH_INFO";
/// ECMP group id to the slot in [`GROUPS`] that currently holds it.
pub const GRP_PTR: &str = "GRP_PTR";
/// ECMP group slots (weighted bucket tables).
pub const GROUPS: &str = "GROUPS";
/// Per-ifindex egress facts for the `bpf_fib_lookup` path (VLAN uppers).
pub const PORTS: &str = "PORTS";
/// Devmap (hash) of egress ports the datapath may redirect to: ifindex to
/// [`crate::TxPort`] (4-byte values, so no devmap programs).
pub const TX_PORTS: &str = "TX_PORTS";
/// ifindex to `ING_F_*` bits: which ingress ports (or their VLAN
/// sub-interfaces) are in a VRF, so their frames never meet the route cache.
pub const INGRESS: &str = "INGRESS";
/// Program array: slot [`FINALIZE_SLOT`] holds `finalize`.
pub const JUMP: &str = "JUMP";
/// Single-element datapath configuration.
pub const CONFIG: &str = "CONFIG";
/// Per-CPU counters, indexed by [`crate::Counter`].
pub const COUNTERS: &str = "COUNTERS";
/// Per-CPU hand-over from `fast_path` to `finalize`.
pub const XMIT: &str = "XMIT";

/// Every map the object defines, in a fixed order (used for pinning and checks).
pub const ALL: [&str; 17] = [
    V4_TBL24, V4_TBL8, V6_TOP, V6_NODES, V6_LEAVES, NH_PTR, NEXTHOPS, NH_INFO, GRP_PTR, GROUPS,
    PORTS, TX_PORTS, INGRESS, JUMP, CONFIG, COUNTERS, XMIT,
];

/// Program names (the `#[xdp]` function names).
pub const PROG_FAST_PATH: &str = "fast_path";
pub const PROG_FINALIZE: &str = "finalize";
/// Returns `XDP_PASS`; the benchmark floor and a helper for veth peers.
pub const PROG_PASS: &str = "xdp_pass";
/// Slot of `finalize` in [`JUMP`].
pub const FINALIZE_SLOT: u32 = 0;

/// Number of /24 blocks covered by the first level.
pub const TBL24_BLOCKS: u32 = 1 << 24;
/// Route actions packed into one [`V4_TBL24`] element. Array elements are
/// stored on an 8-byte stride, so packing two `u32`s avoids wasting half of a
/// 64 MiB map.
pub const TBL24_PER_ELEMENT: u32 = 2;
/// Elements in [`V4_TBL24`].
pub const TBL24_ELEMENTS: u32 = TBL24_BLOCKS / TBL24_PER_ELEMENT;
/// Entries in one second-level group.
pub const TBL8_GROUP_SIZE: usize = 256;
/// Address bits the IPv6 first level indexes.
pub const V6_TOP_BITS: u32 = 22;
/// Slots of the IPv6 first level (elements of [`V6_TOP`]).
pub const V6_TOP_SLOTS: u32 = 1 << V6_TOP_BITS;
/// Address bits each IPv6 trie node consumes (64 children, one `u64` bitmap).
pub const V6_STRIDE: u32 = 6;
/// Most nodes an IPv6 lookup visits: ceil((128 - V6_TOP_BITS) / 6).
pub const V6_MAX_DEPTH: u32 = (128 - V6_TOP_BITS).div_ceil(V6_STRIDE);
/// Leaves packed into one [`V6_LEAVES`] element (8-byte array stride).
pub const V6_LEAVES_PER_ELEMENT: u32 = 2;
/// Buckets in one ECMP group's table.
pub const ECMP_BUCKETS: usize = 256;
/// Most legs an ECMP group may have.
pub const ECMP_MAX_LEGS: usize = 64;

/// Elements of [`INGRESS`]: ifindexes 0 to 65535. Frames from a higher
/// ifindex go to the kernel (`pass_ingress_unknown`).
pub const INGRESS_IFINDEXES: u32 = 1 << 16;

/// Default capacities; the sidecar overrides them from its configuration.
pub const DEFAULT_TBL8_GROUPS: u32 = 4096;
pub const DEFAULT_V6_ROUTES: u32 = 300_000;
/// IPv6 trie nodes and leaves per configured IPv6 route. In use: 1.3–1.4
/// nodes and 2.8–2.9 leaves per route of a random table (70% /48) at 250k
/// and 1M routes, fewer where prefixes cluster. The rest is room for what
/// updates replace while it waits out its grace period: 250k routes in one
/// /32 written one at a time, reclaiming every 1024 (`fpm-bench`'s floor),
/// peak at 4.3 nodes and 2.5 leaves per route of the table, within this
/// room at the default 300k. Past it a slot defers to the kernel until a
/// reclaim, never answering wrongly.
pub const V6_NODES_PER_ROUTE: u32 = 4;
pub const V6_LEAVES_PER_ROUTE: u32 = 5;
pub const DEFAULT_NEXTHOPS: u32 = 16_384;
pub const DEFAULT_GROUPS: u32 = 2048;
pub const DEFAULT_PORTS: u32 = 1024;
