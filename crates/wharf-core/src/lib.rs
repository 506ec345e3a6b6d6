//! wharf-core: the reconciler. Decides; never does.
//!
//! [`plan()`] takes the desired state (apps, their target releases, scale), the observed
//! state (replicas and their health) and the time, and returns the [`Action`]s that move
//! the world toward the desired state: start, restart after backoff, stop, and the
//! verdict of a rollout. Rollout strategies, restart backoff and probe thresholds are
//! pure state machines here, tested with a fake clock.
//!
//! Invariants: no I/O, no clock reads, no randomness; the same inputs give the same plan.
//! Adapters (runtime, store, router) implement the traits in [`ports`].

pub mod addresses;
pub mod backoff;
pub mod clock;
pub mod plan;
pub mod ports;
pub mod probe;
pub mod replica;

pub use backoff::Backoff;
pub use clock::{Clock, FakeClock};
pub use plan::{plan, Action, AppDesired, ProcessDesired};
pub use replica::{Exit, Phase, Replica};
