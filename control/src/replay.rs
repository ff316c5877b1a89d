//! When a route source's view can be trusted: the end of zebra's replay,
//! and how long the routes of a source that went away keep forwarding.
//!
//! Both are pure: the daemon passes the time in.

use std::time::{Duration, Instant};

/// Where an FPM session is in its replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No session.
    Idle,
    /// A session is open and has sent no complete message yet.
    AwaitingFirst,
    /// The replay runs: its first and latest message.
    Replaying { first: Instant, last: Instant },
    /// The replay is over; what follows are changes.
    Live,
}

/// Decides when an FPM replay is over. zebra sends no end marker and no
/// keepalives: after a connect it replays everything, then only changes.
/// The replay counts as complete once no message has arrived for `quiet`
/// after at least one did, or once `max` has passed since its first
/// message.
///
/// A session that delivered no complete message has replayed nothing, so
/// it never ends a replay: silence is not evidence that zebra has no
/// routes. (Such a session is dropped by the listener's idle timeout.)
#[derive(Debug, Clone)]
pub struct ReplayTracker {
    quiet: Duration,
    max: Duration,
    phase: Phase,
}

impl ReplayTracker {
    pub fn new(quiet: Duration, max: Duration) -> Self {
        Self {
            quiet,
            max,
            phase: Phase::Idle,
        }
    }

    pub fn connected(&mut self) {
        self.phase = Phase::AwaitingFirst;
    }

    /// A complete message arrived. True for the session's first one: the
    /// replay starts now (mark what the source contributed, then apply).
    pub fn message(&mut self, now: Instant) -> bool {
        match &mut self.phase {
            Phase::AwaitingFirst => {
                self.phase = Phase::Replaying {
                    first: now,
                    last: now,
                };
                true
            }
            Phase::Replaying { last, .. } => {
                *last = now;
                false
            }
            Phase::Idle | Phase::Live => false,
        }
    }

    /// True while a replay has started and not ended.
    pub fn in_replay(&self) -> bool {
        matches!(self.phase, Phase::Replaying { .. })
    }

    /// True once, when the replay has just ended.
    pub fn poll(&mut self, now: Instant) -> bool {
        let Phase::Replaying { first, last } = self.phase else {
            return false;
        };
        if now.duration_since(last) >= self.quiet || now.duration_since(first) >= self.max {
            self.phase = Phase::Live;
            return true;
        }
        false
    }

    /// The session ended. True when it ended in the middle of a replay,
    /// which then sweeps nothing (the next one will).
    pub fn disconnected(&mut self) -> bool {
        let abandoned = self.in_replay();
        self.phase = Phase::Idle;
        abandoned
    }
}

/// How long the routes of a source that went away (the FPM session closed
/// and not back, the kernel source failing) keep forwarding from the
/// cache: `after` from the moment it went, until a resync of the source
/// completes again.
#[derive(Debug, Clone)]
pub struct StaleClock {
    after: Duration,
    lost_at: Option<Instant>,
    stale: bool,
}

impl StaleClock {
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            lost_at: None,
            stale: false,
        }
    }

    /// The source went away (again: the first time counts).
    pub fn lost(&mut self, now: Instant) {
        self.lost_at.get_or_insert(now);
    }

    /// The source completed a resync. True if its routes were stale.
    pub fn restored(&mut self) -> bool {
        self.lost_at = None;
        std::mem::take(&mut self.stale)
    }

    /// True once, when the grace has just run out.
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.lost_at {
            Some(at) if !self.stale && now.duration_since(at) >= self.after => {
                self.stale = true;
                true
            }
            _ => false,
        }
    }

    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// How long the source has been gone, if it is.
    pub fn down_for(&self, now: Instant) -> Option<Duration> {
        self.lost_at.map(|at| now.duration_since(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_replay_ends_after_a_quiet_period_or_at_the_cap() {
        let start = Instant::now();
        let mut tracker = ReplayTracker::new(ms(100), ms(1000));
        tracker.connected();
        assert!(
            tracker.message(start + ms(0)),
            "the first message starts it"
        );
        assert!(!tracker.message(start + ms(50)));
        assert!(!tracker.poll(start + ms(120)));
        assert!(tracker.poll(start + ms(151)));
        assert!(!tracker.poll(start + ms(152)), "only once");
        assert!(
            !tracker.message(start + ms(160)),
            "a change after the replay"
        );
        assert!(!tracker.poll(start + ms(5000)));

        tracker.connected();
        for n in (0..1000).step_by(50) {
            let first = tracker.message(start + ms(n));
            assert_eq!(first, n == 0);
            assert!(!tracker.poll(start + ms(n)));
        }
        assert!(
            tracker.poll(start + ms(1000)),
            "the cap ends a replay that never goes quiet"
        );
    }

    #[test]
    fn a_session_that_sends_nothing_never_completes_a_replay() {
        let start = Instant::now();
        let mut tracker = ReplayTracker::new(ms(100), ms(1000));
        tracker.connected();
        for n in [0, 100, 1000, 60_000, 3_600_000] {
            assert!(!tracker.poll(start + ms(n)), "at {n} ms");
        }
        assert!(!tracker.in_replay());
        assert!(!tracker.disconnected(), "nothing was abandoned");
        // Nor does a message without a session.
        assert!(!tracker.message(start));
        assert!(!tracker.poll(start + ms(5000)));
    }

    #[test]
    fn a_session_that_ends_mid_replay_abandons_it() {
        let start = Instant::now();
        let mut tracker = ReplayTracker::new(ms(100), ms(1000));
        tracker.connected();
        tracker.message(start);
        assert!(tracker.in_replay());
        assert!(tracker.disconnected());
        assert!(
            !tracker.poll(start + ms(500)),
            "an abandoned replay sweeps nothing"
        );
    }

    #[test]
    fn routes_go_stale_once_the_grace_runs_out_and_not_again_until_restored() {
        let start = Instant::now();
        let mut clock = StaleClock::new(ms(30_000));
        assert!(!clock.poll(start + ms(100_000)), "never lost, never stale");
        clock.lost(start);
        clock.lost(start + ms(10_000)); // a second session ends: the first loss counts
        assert_eq!(clock.down_for(start + ms(12_000)), Some(ms(12_000)));
        assert!(!clock.poll(start + ms(29_999)));
        assert!(clock.poll(start + ms(30_000)));
        assert!(clock.is_stale());
        assert!(!clock.poll(start + ms(40_000)), "only once");
        assert!(clock.restored(), "it was stale");
        assert!(!clock.is_stale() && clock.down_for(start).is_none());
        clock.lost(start + ms(50_000));
        assert!(!clock.restored(), "back within the grace: never stale");
        assert!(!clock.poll(start + ms(200_000)));
    }
}
