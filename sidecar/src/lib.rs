//! pf-sidecar: follows a router's forwarding state and mirrors it into the
//! XDP fast path's maps.
//!
//! The path a reader can follow: a source ([`control`]: kernel rtnetlink or
//! FRR's FPM stream) is decoded into events, applied to the desired state
//! (the RIB), diffed against what is programmed, and written by the
//! [`datapath`] map programmer into the maps `fast_path` reads.

pub mod cli;
pub mod collections;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod diff;
pub mod elf_scan;
pub mod events;
pub mod frr_offload;
pub mod inspect;
pub mod kernel_probe;
pub mod left_to_kernel;
pub mod log_limit;
pub mod metrics;
pub mod ports;
pub mod programmer;
pub mod query;
pub mod redirect_errors;
pub mod source;

/// The XDP object built from `ebpf/` by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pf-ebpf.o"));
