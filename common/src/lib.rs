//! Everything the XDP programs and the sidecar must agree on, defined once.
//!
//! Every map key and value is `#[repr(C)]`, derives [`bytemuck::Pod`] (which
//! refuses to compile a struct with padding) and has its size asserted, so a
//! layout change on one side cannot silently disagree with the other.
#![no_std]

pub mod config;
pub mod counters;
pub mod hash;
pub mod layout;
pub mod maps;
pub mod route;
pub mod special;

pub use config::{Config, Mode};
pub use counters::Counter;
pub use layout::{EcmpGroup, Nexthop, NexthopInfo, Port, TxPort, V6Node, Xmit};
pub use route::{RouteAction, RouteKind};
