//! Restart backoff: 1 s doubling to 5 min; forgotten after 10 min of healthy running.

use wharf_types::release::UnixMillis;

/// First restart delay.
pub const INITIAL_MS: u64 = 1_000;
/// Longest restart delay.
pub const MAX_MS: u64 = 5 * 60 * 1_000;
/// A replica that ran this long before exiting starts its backoff from scratch.
pub const RESET_AFTER_MS: u64 = 10 * 60 * 1_000;
/// Consecutive quick failures after which `ps` calls the replica crash-looping.
pub const CRASH_LOOP_AFTER: u32 = 3;

/// The backoff state of one replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backoff {
    /// Exits since the replica last ran healthy for `RESET_AFTER_MS`.
    pub failures: u32,
}

impl Backoff {
    /// Records an exit of a replica that started at `started` and exited at `exited`;
    /// returns the time at which it may be restarted.
    pub fn record_exit(&mut self, started: UnixMillis, exited: UnixMillis) -> UnixMillis {
        if exited.saturating_sub(started) >= RESET_AFTER_MS {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        exited.saturating_add(self.delay_ms())
    }

    /// Delay before the next restart: 1 s, 2 s, 4 s, ... capped at 5 min.
    pub fn delay_ms(&self) -> u64 {
        let exp = self.failures.saturating_sub(1).min(20);
        (INITIAL_MS << exp).min(MAX_MS)
    }

    pub fn crash_looping(&self) -> bool {
        self.failures >= CRASH_LOOP_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_to_five_minutes() {
        let mut b = Backoff::default();
        let mut delays = Vec::new();
        let mut t = 0;
        for _ in 0..12 {
            let at = b.record_exit(t, t + 10);
            delays.push(at - (t + 10));
            t = at;
        }
        assert_eq!(&delays[..6], &[1_000, 2_000, 4_000, 8_000, 16_000, 32_000]);
        assert_eq!(delays[8], 256_000);
        assert!(delays[9..].iter().all(|d| *d == MAX_MS));
        assert!(b.crash_looping());
    }

    #[test]
    fn resets_after_ten_healthy_minutes() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.record_exit(0, 100);
        }
        assert_eq!(b.delay_ms(), 16_000);
        let at = b.record_exit(1_000, 1_000 + RESET_AFTER_MS);
        assert_eq!(at, 1_000 + RESET_AFTER_MS + INITIAL_MS);
        assert!(!b.crash_looping());
    }

    #[test]
    fn just_short_of_ten_minutes_does_not_reset() {
        let mut b = Backoff::default();
        b.record_exit(0, 10);
        let at = b.record_exit(0, RESET_AFTER_MS - 1);
        assert_eq!(at, RESET_AFTER_MS - 1 + 2_000);
    }
}
