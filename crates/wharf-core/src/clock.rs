//! Time, as the core sees it: milliseconds since the epoch, given by a [`Clock`].

use std::sync::atomic::{AtomicU64, Ordering};
use wharf_types::release::UnixMillis;

/// The one source of time for every timing decision.
pub trait Clock: Send + Sync {
    fn now(&self) -> UnixMillis;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct FakeClock(AtomicU64);

impl FakeClock {
    pub fn new(start: UnixMillis) -> Self {
        Self(AtomicU64::new(start))
    }
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> UnixMillis {
        self.0.load(Ordering::SeqCst)
    }
}
