//! Map key and value layouts.

use bytemuck::{Pod, Zeroable};

use crate::maps::{ECMP_BUCKETS, TBL8_GROUP_SIZE, V6_STRIDE};

/// Asserts the size and alignment of a shared layout at compile time.
/// `Pod` already rules out padding; size and alignment pin the layout so
/// neither side (the BPF target and the host) drifts.
macro_rules! assert_layout {
    ($ty:ty, $size:expr, $align:expr) => {
        const _: () = assert!(core::mem::size_of::<$ty>() == $size);
        const _: () = assert!(core::mem::align_of::<$ty>() == $align);
    };
}

/// One element of `V4_TBL24`: two adjacent /24 blocks' route actions.
pub type Tbl24Element = [u32; 2];
assert_layout!(Tbl24Element, 8, 4);

/// One element of `V4_TBL8`: the route actions of the 256 addresses of a /24.
pub type Tbl8Group = [u32; TBL8_GROUP_SIZE];
assert_layout!(Tbl8Group, 1024, 4);

/// One element of `V6_TOP`: the slot's head (a route action, or `Tbl8`
/// naming the root node of its trie), then the action of the longest
/// prefix of /22 or shorter over the slot, which leaves marked
/// [`crate::route::V6_INHERIT`] stand for.
pub type V6TopEntry = [u32; 2];
assert_layout!(V6TopEntry, 8, 4);

/// One element of `V6_LEAVES`: two leaves (route actions).
pub type V6LeafPair = [u32; 2];
assert_layout!(V6LeafPair, 8, 4);

/// A node of the IPv6 trie (Poptrie's layout): six address bits pick one
/// of 64 slots. A slot with its bit set in `children` continues in the
/// child at `first_child` + (set bits of `children` up to it) - 1; any other
/// slot ends in the leaf at `first_leaf` + (set bits of `runs` up to it) -
/// 1, where `runs` marks each slot whose leaf differs from the slot before
/// (so equal neighbours share one leaf). Written once, never changed while
/// reachable: an update writes new nodes and swaps a single head.
///
/// Path compression: a chain of nodes that each have one child and no
/// prefix ending in them is left out. The node below the chain records the
/// six-bit steps it stands for in `skip` ([`V6Node::skip_strides`] of them,
/// the address bits in [`V6Node::skip_key`]); an address whose bits differ
/// there ends in `miss`, the action the chain's leaves would all have held.
///
/// Leaves in the node: a node with no children whose slots hold at most two
/// actions keeps them itself, with bit 0 of `runs` clear (a node with a
/// leaf array always sets it): slots whose bit is set in `runs` answer
/// `first_child`, the others `first_leaf`. Most lookups end in such a node
/// (a prefix alone below its branch), and each saves the leaf's dependent
/// read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct V6Node {
    pub children: u64,
    pub runs: u64,
    pub first_child: u32,
    pub first_leaf: u32,
    /// `key << 8 | width`: the bits of the steps left out, and how many
    /// bits that is (six per step, at most [`V6_MAX_SKIP`] steps) in the low
    /// five bits, the amount the datapath shifts by as it is.
    pub skip: u32,
    pub miss: u32,
}
assert_layout!(V6Node, 32, 8);

/// Most six-bit steps one node's `skip` stands for (24 key bits).
pub const V6_MAX_SKIP: u32 = 4;
const _: () = assert!(V6_MAX_SKIP * V6_STRIDE < 32, "the width fits in five bits");

/// Where a node's slot leads: see [`V6Node::next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V6Next {
    /// The node at this index of `V6_NODES`.
    Child(u32),
    /// The leaf at this index of `V6_LEAVES`.
    Leaf(u32),
    /// This action, held in the node itself.
    Action(u32),
}

impl V6Node {
    /// Whether the node holds its slots' actions itself (see the type).
    pub const fn holds_leaves(&self) -> bool {
        self.runs & 1 == 0
    }

    /// Where slot `v` (below 64) leads, as the datapath reads it. Indexes
    /// wrap rather than overflow: the tools read nodes another process may
    /// be rewriting.
    pub const fn next(&self, v: u32) -> V6Next {
        let upto = u64::MAX >> (63 - v);
        if self.children >> v & 1 != 0 {
            V6Next::Child(
                self.first_child
                    .wrapping_add((self.children & upto).count_ones())
                    .wrapping_sub(1),
            )
        } else if self.holds_leaves() {
            V6Next::Action(if self.runs >> v & 1 != 0 {
                self.first_child
            } else {
                self.first_leaf
            })
        } else {
            V6Next::Leaf(
                self.first_leaf
                    .wrapping_add((self.runs & upto).count_ones())
                    .wrapping_sub(1),
            )
        }
    }

    /// A node holding `values` itself, if they are at most two actions.
    pub fn holding(values: &[u32; 64]) -> Option<Self> {
        let first = values[0];
        let other = values.iter().copied().find(|&value| value != first);
        let mut runs = 0u64;
        for (v, &value) in values.iter().enumerate() {
            if value != first {
                if Some(value) != other {
                    return None;
                }
                runs |= 1 << v;
            }
        }
        Some(Self {
            runs,
            first_leaf: first,
            first_child: other.unwrap_or(first),
            ..Self::default()
        })
    }

    /// The node's words as the datapath's (little-endian) memory holds them.
    pub const fn to_words(&self) -> [u32; 8] {
        [
            self.children as u32,
            (self.children >> 32) as u32,
            self.runs as u32,
            (self.runs >> 32) as u32,
            self.first_child,
            self.first_leaf,
            self.skip,
            self.miss,
        ]
    }

    pub const fn from_words(w: [u32; 8]) -> Self {
        Self {
            children: w[0] as u64 | (w[1] as u64) << 32,
            runs: w[2] as u64 | (w[3] as u64) << 32,
            first_child: w[4],
            first_leaf: w[5],
            skip: w[6],
            miss: w[7],
        }
    }

    /// How many address bits the steps left out above this node stand
    /// for: a multiple of six in a node this program wrote.
    pub const fn skip_width(&self) -> u32 {
        self.skip & 31
    }

    /// How many six-bit steps above this node were left out (0 to
    /// [`V6_MAX_SKIP`]).
    pub const fn skip_strides(&self) -> u32 {
        self.skip_width() / V6_STRIDE
    }

    /// The address bits of the steps left out, the first step highest.
    pub const fn skip_key(&self) -> u32 {
        self.skip >> 8
    }

    /// `skip` for `strides` steps whose address bits are `key`.
    pub const fn skip_of(strides: u32, key: u32) -> u32 {
        (key << 8) | (strides * V6_STRIDE)
    }
}

/// Nexthop flag: the neighbour is resolved and `dmac` is valid.
pub const NH_F_RESOLVED: u16 = 1 << 0;
/// Nexthop flag: the gateway is IPv6 (RFC 5549 for IPv4 routes).
pub const NH_F_GATEWAY_V6: u16 = 1 << 1;

/// A nexthop slot in `NEXTHOPS`: everything `finalize` needs to send a
/// packet out of the port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Nexthop {
    /// Devmap key of the physical port to transmit on.
    pub tx_ifindex: u32,
    /// Largest L3 packet the egress takes.
    pub mtu: u16,
    /// VLAN id to tag egress frames with (0: untagged).
    pub vlan_id: u16,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// TPID for the egress tag, host order (0x8100 or 0x88a8).
    pub vlan_proto: u16,
    /// `NH_F_*` bits.
    pub flags: u16,
}
assert_layout!(Nexthop, 24, 4);

impl Nexthop {
    pub const fn is_resolved(&self) -> bool {
        self.flags & NH_F_RESOLVED != 0
    }
}

/// What a nexthop id stands for, for `diff` and `lookup` (the datapath
/// never reads it): the interface and gateway the route named.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct NexthopInfo {
    pub ifindex: u32,
    /// 4 or 6 (0: unused id).
    pub family: u32,
    /// The gateway; IPv4 in the first four bytes.
    pub gateway: [u8; 16],
}
assert_layout!(NexthopInfo, 24, 4);

/// An ECMP group slot in `GROUPS`: a weighted bucket table of nexthop ids.
/// A flow picks `buckets[bucket_of(hash, bucket_count)]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct EcmpGroup {
    /// Buckets in use, 1..=ECMP_BUCKETS (0: the group is empty).
    pub bucket_count: u32,
    /// Distinct legs, for status output only.
    pub leg_count: u32,
    pub buckets: [u32; ECMP_BUCKETS],
}
assert_layout!(EcmpGroup, 8 + 4 * ECMP_BUCKETS, 4);

impl Default for EcmpGroup {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// Port flag: the ifindex is a VLAN upper of `tx_ifindex`.
pub const PORT_F_VLAN: u32 = 1 << 0;

/// Egress facts for an ifindex returned by `bpf_fib_lookup`. A VLAN device
/// cannot be a devmap target, so the frame goes out of its parent with a tag.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Port {
    pub tx_ifindex: u32,
    pub vlan_id: u16,
    /// TPID, host order.
    pub vlan_proto: u16,
    /// `PORT_F_*` bits.
    pub flags: u32,
}
assert_layout!(Port, 12, 4);

/// `INGRESS` flag: the port is enslaved to a VRF, and so is every VLAN
/// sub-interface on it that is in any. Its frames are routed by
/// `bpf_fib_lookup` in the VRF's table (`BPF_FIB_LOOKUP_DIRECT` takes the
/// table of the ingress device's VRF), never from the route cache, which
/// holds the main table.
pub const ING_F_VRF: u32 = 1 << 0;
/// `INGRESS` flag: the port's frames can belong to a VRF the datapath
/// cannot place them in, so all go to the kernel. Either a VLAN
/// sub-interface of the port (at any depth) is in another VRF than the
/// port (a tag tells them apart, but a tag the NIC strips on receive, VLAN
/// offload, or on a veth the sender's, never reaches XDP), or the port is a
/// member of a bond or bridge in a VRF (the program runs on the member,
/// whose own ifindex names no VRF to `bpf_fib_lookup`).
pub const ING_F_VRF_KERNEL: u32 = 1 << 1;

/// A value of `TX_PORTS` (a DEVMAP_HASH keyed by ifindex): the egress
/// ifindex and nothing else. Four bytes, not the 8-byte `bpf_devmap_val`: a
/// devmap whose values have room for a program id is one that "can have
/// programs", and kernels 5.8 to 5.13 refuse to attach, in generic (skb)
/// mode, any XDP program that uses such a map. The datapath runs no devmap
/// programs, so it needs none of that room.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct TxPort {
    pub ifindex: u32,
}
assert_layout!(TxPort, 4, 4);
const _: () = assert!(core::mem::align_of::<TxPort>() == 4);

/// Where a packet came from when `finalize` sends it.
pub const XMIT_FROM_CACHE: u8 = 0;
pub const XMIT_FROM_FIB: u8 = 1;

/// Per-CPU hand-over from `fast_path` to `finalize`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Xmit {
    pub tx_ifindex: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// Egress VLAN id (0: untagged).
    pub vlan_id: u16,
    /// Egress TPID, host order.
    pub vlan_proto: u16,
    /// Offset of the IP header in the frame as it arrived.
    pub l3_offset: u16,
    /// 4 or 6.
    pub ip_version: u8,
    /// `XMIT_FROM_*`.
    pub source: u8,
}
assert_layout!(Xmit, 24, 4);

#[cfg(feature = "user")]
mod user {
    use super::*;
    use crate::config::Config;

    // SAFETY: every type here is repr(C), Pod (no padding, any bit pattern valid).
    unsafe impl aya::Pod for V6Node {}
    unsafe impl aya::Pod for Nexthop {}
    unsafe impl aya::Pod for NexthopInfo {}
    unsafe impl aya::Pod for EcmpGroup {}
    unsafe impl aya::Pod for Port {}
    unsafe impl aya::Pod for TxPort {}
    unsafe impl aya::Pod for Xmit {}
    unsafe impl aya::Pod for Config {}
}
