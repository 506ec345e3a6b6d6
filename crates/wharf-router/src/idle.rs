//! The idle timer of a body stream: expires when no frame came for the route's idle
//! timeout. Armed lazily (the first time the stream has nothing), re-armed by each frame.

use std::future::Future as _;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub(crate) struct IdleTimer {
    pub(crate) after: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    pub(crate) fn new(after: Duration) -> Self {
        IdleTimer { after, sleep: None }
    }

    /// The stream had nothing: whether the timeout has expired (else `cx` is woken
    /// when it does).
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.after;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        sleep.as_mut().poll(cx).is_ready()
    }

    /// The stream yielded something: the timeout starts over.
    pub(crate) fn activity(&mut self) {
        if let Some(sleep) = self.sleep.as_mut() {
            sleep.as_mut().reset(Instant::now() + self.after);
        }
    }
}
