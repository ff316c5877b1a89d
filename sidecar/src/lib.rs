//! pf-sidecar: follows a router's forwarding state and mirrors it into the
//! XDP fast path's maps.
//!
//! The path a reader can follow: a [`source`] (kernel rtnetlink or FRR's
//! FPM stream) hands bytes to `pf_control`, which decodes them into events,
//! applies them to the desired state (the RIB) and programs it through a
//! `MapWriter`; [`datapath`] implements that writer on the maps
//! `fast_path` reads. The [`daemon`] wires the two together.

pub mod attach;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod elf_scan;
pub mod events;
pub mod frr_offload;
pub mod kernel_probe;
pub mod log_limit;
pub mod metrics;
pub mod pinned_maps;
pub mod ports;
pub mod query;
pub mod redirect_errors;
pub mod source;
pub mod state;

/// The XDP object built from `ebpf/` by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pf-ebpf.o"));
