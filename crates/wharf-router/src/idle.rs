//! The idle timer of a body stream: expires when no frame came for the route's idle
//! timeout. Armed lazily (the first time the stream has nothing), re-armed by each frame.

use std::task::Context;
use std::time::Duration;

use tokio::time::Instant;

use crate::deadline::Deadline;

#[derive(Debug)]
pub(crate) struct IdleTimer {
    pub(crate) after: Duration,
    deadline: Option<Deadline>,
}

impl IdleTimer {
    pub(crate) fn new(after: Duration) -> Self {
        IdleTimer {
            after,
            deadline: None,
        }
    }

    /// The stream had nothing: whether the timeout has expired (else `cx` is woken
    /// when it does).
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let after = self.after;
        self.deadline
            .get_or_insert_with(|| Deadline::new(Instant::now() + after))
            .poll_expired(cx)
    }

    /// The stream yielded something: the timeout starts over (no timer operation:
    /// see `deadline`).
    pub(crate) fn activity(&mut self) {
        if let Some(deadline) = self.deadline.as_mut() {
            deadline.set(Instant::now() + self.after);
        }
    }
}
