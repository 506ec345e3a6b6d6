//! Probe thresholds: consecutive successes and failures turn raw results into a verdict.

/// The running verdict of one probe on one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbeState {
    pub passing: bool,
    successes: u32,
    failures: u32,
}

impl ProbeState {
    /// Starts failing (readiness) or passing (liveness).
    pub fn new(passing: bool) -> Self {
        Self {
            passing,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one probe result; returns true when the verdict changed.
    pub fn record(&mut self, ok: bool, success_threshold: u32, failure_threshold: u32) -> bool {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.passing && self.successes >= success_threshold.max(1) {
                self.passing = true;
                return true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.passing && self.failures >= failure_threshold.max(1) {
                self.passing = false;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_success_threshold() {
        let mut p = ProbeState::new(false);
        assert!(!p.record(true, 2, 3));
        assert!(!p.passing);
        assert!(p.record(true, 2, 3));
        assert!(p.passing);
    }

    #[test]
    fn failure_threshold_and_reset() {
        let mut p = ProbeState::new(true);
        assert!(!p.record(false, 1, 3));
        assert!(!p.record(false, 1, 3));
        assert!(!p.record(true, 1, 3), "a success resets the failure count");
        assert!(!p.record(false, 1, 3));
        assert!(!p.record(false, 1, 3));
        assert!(p.record(false, 1, 3));
        assert!(!p.passing);
        assert!(p.record(true, 1, 3));
    }
}
