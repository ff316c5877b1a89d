//! Where forwarding state comes from: socket I/O only. Decoding and state
//! live in `pf_control`; the netlink walk is
//! [`pf_control::netlink::split_netlink_messages`].

pub mod fpm;
pub mod fpm_peer;
pub mod kernel;
