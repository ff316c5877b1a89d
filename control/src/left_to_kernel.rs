//! Routes the datapath leaves to the kernel for a reason the operator can
//! act on: more ECMP legs than a group holds, or a full table. The
//! programmer counts each case ([`ProgrammerStats`]); this names the
//! reasons, logs each one once with its fix, and gives the counts to
//! `status` and the metrics.

use std::collections::BTreeMap;

use crate::programmer::ProgrammerStats;

/// A reason: its name (a metrics label), what it means and what to do, and
/// its counter.
pub struct Reason {
    pub name: &'static str,
    pub why: &'static str,
    pub count: fn(&ProgrammerStats) -> u64,
}

pub const REASONS: [Reason; 5] = [
    Reason {
        name: "ecmp_over_64_legs",
        why: "a route has more than 64 ECMP legs, more than a datapath group holds; nothing to raise, the kernel forwards it",
        count: |s| s.unsupported_routes,
    },
    Reason {
        name: "nexthops_full",
        why: "the nexthop table is full; raise capacity.nexthops",
        count: |s| s.overflow_nexthops,
    },
    Reason {
        name: "ecmp_groups_full",
        why: "the ECMP group table is full; raise capacity.ecmp_groups",
        count: |s| s.overflow_groups,
    },
    Reason {
        name: "v4_tbl8_full",
        why: "the IPv4 second-level groups (one per /24 with longer prefixes) are full; raise capacity.tbl8_groups",
        count: |s| s.overflow_v4_groups,
    },
    Reason {
        name: "v6_routes_full",
        why: "the IPv6 route table is full; raise capacity.v6_routes",
        count: |s| s.overflow_v6_routes,
    },
];

/// How many times each reason left a route to the kernel.
pub fn counts(stats: &ProgrammerStats) -> BTreeMap<&'static str, u64> {
    REASONS.iter().map(|r| (r.name, (r.count)(stats))).collect()
}

/// Logs each reason the first time it happens, and only then.
#[derive(Debug, Default)]
pub struct Once {
    logged: [bool; REASONS.len()],
}

impl Once {
    /// Returns the reasons logged now (for tests).
    pub fn observe(&mut self, stats: &ProgrammerStats) -> Vec<&'static str> {
        let mut now = Vec::new();
        for (reason, logged) in REASONS.iter().zip(self.logged.iter_mut()) {
            let count = (reason.count)(stats);
            if count > 0 && !*logged {
                *logged = true;
                tracing::warn!(
                    reason = reason.name,
                    count,
                    "routes left to the kernel (bpf_fib_lookup forwards them): {}. Logged once; `pf-sidecar status` and pf_sidecar_routes_left_to_kernel_total count them",
                    reason.why
                );
                now.push(reason.name);
            }
        }
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_is_logged_once_and_counted() {
        let mut once = Once::default();
        let mut stats = ProgrammerStats::default();
        assert!(once.observe(&stats).is_empty());
        stats.unsupported_routes = 1;
        stats.overflow_nexthops = 2;
        assert_eq!(
            once.observe(&stats),
            vec!["ecmp_over_64_legs", "nexthops_full"]
        );
        stats.unsupported_routes = 5;
        assert!(once.observe(&stats).is_empty(), "logged once");
        stats.overflow_v6_routes = 1;
        assert_eq!(once.observe(&stats), vec!["v6_routes_full"]);
        let counts = counts(&stats);
        assert_eq!(counts["ecmp_over_64_legs"], 5);
        assert_eq!(counts["nexthops_full"], 2);
        assert_eq!(counts["v4_tbl8_full"], 0);
    }
}
