//! pf-control: the control plane of pf-sidecar, with no I/O.
//!
//! The path a reader can follow: bytes from a source are split into
//! netlink messages ([`fpm`] frames them for FRR's FPM stream, [`netlink`]
//! walks them), decoded by `pf-wire` into [`change`]s, applied to the
//! desired forwarding state ([`rib`]), and turned by the [`programmer`]
//! into writes through its `MapWriter` trait: IPv4 routes into the
//! [`dir24`] table, ECMP legs into [`ecmp`] groups. [`drift`] compares maps
//! with a source by behaviour, [`offload`] decides zebra's offload replies
//! (`pf-wire` encodes them), [`replay`] tracks zebra's replay after a
//! connect, and [`events`] are what the daemon publishes. The
//! [`controller`] runs all of it as one pure step, the time passed in;
//! pf-sidecar owns the sockets, the maps and the clock.
//!
//! No netlink parser lives here: `netlink-packet-route` brings libc, and
//! this crate has no libc, aya, tokio or netlink-sys dependency.

pub mod change;
pub mod controller;
pub mod dir24;
pub mod drift;
pub mod ecmp;
pub mod events;
pub mod fast_maps;
pub mod fpm;
pub mod left_to_kernel;
pub mod netlink;
pub mod offload;
pub mod programmer;
pub mod replay;
pub mod rib;
pub mod v6trie;

#[cfg(test)]
mod test_rng;
