//! `TX_PORTS`' map type: a DEVMAP_HASH whose values are a bare ifindex.
//!
//! aya-ebpf's `DevMapHash` declares the 8-byte `bpf_devmap_val` (ifindex and
//! a devmap program). Kernels 5.8 to 5.13 refuse generic (skb) XDP for any
//! program that uses a devmap with room for a program, and the datapath runs
//! none, so this map declares 4-byte values ([`TxPort`]) instead. The sidecar
//! creates the map with that size too (aya would otherwise widen it).

use core::cell::UnsafeCell;

use aya_ebpf::{
    bindings::{bpf_map_def, bpf_map_type::BPF_MAP_TYPE_DEVMAP_HASH, xdp_action::XDP_REDIRECT},
    cty::c_void,
    helpers::{bpf_map_lookup_elem, bpf_redirect_map},
};
use pf_common::TxPort;

#[repr(transparent)]
pub struct TxPortMap {
    def: UnsafeCell<bpf_map_def>,
}

// SAFETY: the definition is only read by the loader and passed by address to
// helpers; the program never writes it.
unsafe impl Sync for TxPortMap {}

impl TxPortMap {
    pub const fn with_max_entries(max_entries: u32, flags: u32) -> Self {
        Self {
            def: UnsafeCell::new(bpf_map_def {
                type_: BPF_MAP_TYPE_DEVMAP_HASH,
                key_size: core::mem::size_of::<u32>() as u32,
                value_size: core::mem::size_of::<TxPort>() as u32,
                max_entries,
                map_flags: flags,
                id: 0,
                pinning: 0,
            }),
        }
    }

    /// The ifindex stored under `key`, if the port is a redirect target.
    #[inline(always)]
    pub fn get_ifindex(&self, key: u32) -> Option<u32> {
        // SAFETY: a lookup in this map; the value, if any, is a `TxPort`.
        let value = unsafe {
            bpf_map_lookup_elem(self.def.get().cast(), (&key as *const u32).cast::<c_void>())
        }
        .cast::<TxPort>();
        if value.is_null() {
            None
        } else {
            // SAFETY: non-null pointer to a live map value of this layout.
            Some(unsafe { (*value).ifindex })
        }
    }

    /// Redirects the frame to the port under `key`. The low two bits of
    /// `flags` are the action returned (as `Err`) when the key is missing.
    #[inline(always)]
    pub fn redirect(&self, key: u32, flags: u64) -> Result<u32, u32> {
        // SAFETY: a devmap and a plain key; the helper only reads them.
        let ret = unsafe { bpf_redirect_map(self.def.get().cast(), key.into(), flags) };
        match ret.unsigned_abs() as u32 {
            XDP_REDIRECT => Ok(XDP_REDIRECT),
            action => Err(action),
        }
    }
}
