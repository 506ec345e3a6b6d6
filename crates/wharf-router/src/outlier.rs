//! Passive health: a replica that fails `eject_after` requests in a row (connection
//! refused or timed out, or a 5xx answer) is left out of balancing for `eject_for`, then
//! tried again. The control plane's readiness checks remain the authority: a replica
//! they fail leaves the table; ejection only reacts faster, between two checks.
//!
//! Invariant: ejection never empties a route: when every candidate is ejected, the
//! least loaded one is still used (better a likely failure than a certain 503).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When ejections happen and how long they last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub eject_after: u32,
    pub eject_for: Duration,
    pub epoch: Instant,
}

impl Policy {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// The passive health of one replica.
#[derive(Debug, Default)]
pub(crate) struct Health {
    failures: AtomicU32,
    /// Milliseconds since the policy's epoch until which the replica is ejected.
    ejected_until: AtomicU64,
}

impl Health {
    pub(crate) fn ejected(&self, policy: &Policy) -> bool {
        // 0: never ejected (almost always), and no clock read for it.
        match self.ejected_until.load(Ordering::Relaxed) {
            0 => false,
            until => until > policy.now_ms(),
        }
    }

    /// Records one request's outcome; returns true when this failure ejected it.
    pub(crate) fn record(&self, ok: bool, policy: &Policy) -> bool {
        if ok {
            // Load first: most answers succeed, and a store on every request would
            // bounce this cache line between the worker threads.
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if policy.eject_after == 0 || failures < policy.eject_after {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let until = policy.now_ms() + policy.eject_for.as_millis() as u64;
        self.ejected_until.store(until, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_failures_for_a_while() {
        let policy = Policy {
            eject_after: 3,
            eject_for: Duration::from_millis(50),
            epoch: Instant::now(),
        };
        let h = Health::default();
        assert!(!h.record(false, &policy));
        assert!(!h.record(false, &policy));
        assert!(!h.record(true, &policy), "a success resets the count");
        assert!(!h.record(false, &policy));
        assert!(!h.record(false, &policy));
        assert!(h.record(false, &policy));
        assert!(h.ejected(&policy));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!h.ejected(&policy), "tried again after eject_for");
        let off = Policy {
            eject_after: 0,
            ..policy
        };
        for _ in 0..10 {
            assert!(!h.record(false, &off), "0 turns ejection off");
        }
    }
}
