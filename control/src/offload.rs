//! Offload replies to zebra: for each route zebra sent over FPM, whether
//! the router forwards it, answered as an `RTM_NEWROUTE` flagged
//! `RTM_F_OFFLOAD` when it does (the fast path itself, or the kernel after
//! `XDP_PASS`) and `RTM_F_OFFLOAD_FAILED` when nothing does. FRR 9 and later
//! match the reply to its route by prefix, table and protocol. This module
//! decides the answer; `pf-wire` encodes it.
//!
//! Why these flags (FRR's zebra, `--asic-offload=notify_on_offload`):
//! `fpm_read` (dplane_fpm_nl.c) hands each reply to
//! `netlink_route_notify_read_ctx`, which maps `RTM_F_OFFLOAD`,
//! `RTM_F_TRAP` and `RTM_F_OFFLOAD_FAILED` to `ZEBRA_FLAG_OFFLOADED`,
//! `_TRAPPED` and `_OFFLOAD_FAILED`; `rib_process_dplane_notify`
//! (zebra_rib.c) then tells the route's owner `ZAPI_ROUTE_INSTALLED` for
//! OFFLOADED and `ZAPI_ROUTE_FAIL_INSTALL` for OFFLOAD_FAILED, and nothing
//! for TRAPPED alone (which it also never clears). bgpd advertises under
//! `bgp suppress-fib-pending` on INSTALLED only. So a route the kernel
//! forwards is answered OFFLOAD, never TRAP (held back for ever) nor
//! OFFLOAD_FAILED (withdrawn from the peers).
//!
//! `fpm_read` reads only the first netlink message of each FPM frame, so
//! every reply travels in its own frame; several frames share one write.

use ipnet::IpNet;
use pf_common::{RouteAction, RouteKind};

/// What forwards a route zebra sent, as far as the router goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarder {
    /// The maps answer it: a nexthop, an ECMP group or a blackhole.
    FastPath,
    /// The datapath passes it (`XDP_PASS` or `bpf_fib_lookup`) and the
    /// kernel, where zebra installed it before the FPM provider ran,
    /// forwards it, answers it (unreachable, prohibit, local) or holds it
    /// in a covering route's place: on-link, an object not (yet) known, a
    /// full table, more legs than a group holds, a deferred block.
    Kernel,
    /// No entry for it in the maps: nothing the sidecar wrote forwards it.
    Nobody,
}

impl Forwarder {
    /// From what the programmer holds for the prefix: its action and
    /// whether the action is deferred (left to `bpf_fib_lookup`).
    pub fn of(programmed: Option<(RouteAction, bool)>) -> Self {
        let Some((action, deferred)) = programmed else {
            return Self::Nobody;
        };
        match action.kind() {
            Some(RouteKind::Nexthop | RouteKind::Group | RouteKind::Blackhole) if !deferred => {
                Self::FastPath
            }
            _ => Self::Kernel,
        }
    }

    /// Whether zebra is told the route is installed (`RTM_F_OFFLOAD`):
    /// unless nothing forwards it (`RTM_F_OFFLOAD_FAILED`).
    pub fn offloaded(self) -> bool {
        match self {
            Self::FastPath | Self::Kernel => true,
            Self::Nobody => false,
        }
    }
}

/// One route's reply, as zebra matches it: prefix, table and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadReply {
    pub prefix: IpNet,
    pub table: u32,
    /// `rtm_protocol` as zebra sent it.
    pub protocol: u8,
    pub forwarder: Forwarder,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_the_kernel_forwards_are_offloaded_so_bgp_advertises_them() {
        let fast = [RouteKind::Nexthop, RouteKind::Group, RouteKind::Blackhole];
        for kind in fast {
            let action = RouteAction::new(kind, 3);
            assert_eq!(Forwarder::of(Some((action, false))), Forwarder::FastPath);
            // A deferred entry answers bpf_fib_lookup: the kernel forwards.
            assert_eq!(Forwarder::of(Some((action, true))), Forwarder::Kernel);
        }
        let passed = [
            RouteKind::Fib,
            RouteKind::Miss,
            RouteKind::Unreachable,
            RouteKind::Prohibit,
            RouteKind::Local,
        ];
        for kind in passed {
            let action = RouteAction::simple(kind);
            assert_eq!(Forwarder::of(Some((action, false))), Forwarder::Kernel);
        }
        assert_eq!(Forwarder::of(None), Forwarder::Nobody);
        // Neither TRAP alone (zebra never tells BGP) nor OFFLOAD_FAILED
        // (BGP withholds it) for a route the kernel forwards.
        assert!(Forwarder::Kernel.offloaded());
        assert!(Forwarder::FastPath.offloaded());
        assert!(!Forwarder::Nobody.offloaded());
    }
}
