//! A deadline that moves on with every request and rarely fires: one timer, re-armed
//! only when it fires before the current deadline (or the deadline moves earlier), so
//! that moving it costs no timer operation. Used for a client's request-head timeout
//! (`downstream`), an upstream connection's response timeout (`upstream`) and the idle
//! timeout of a body in flight (`idle`).

use std::future::Future as _;
use std::pin::Pin;
use std::task::Context;

use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

impl Deadline {
    pub(crate) fn new(at: Instant) -> Self {
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    /// Moves the deadline to `at`.
    pub(crate) fn set(&mut self, at: Instant) {
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
        }
        self.at = at;
    }

    /// Whether the deadline passed (else `cx` is woken when it does).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.sleep.deadline() >= self.at {
                return true;
            }
            let at = self.at;
            self.sleep.as_mut().reset(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;
    use std::time::Duration;

    async fn expired(deadline: &mut Deadline) -> bool {
        poll_fn(|cx| Poll::Ready(deadline.poll_expired(cx))).await
    }

    #[tokio::test]
    async fn moves_later_and_earlier_and_fires_at_the_current_deadline() {
        let ms = Duration::from_millis;
        let start = Instant::now();
        let mut deadline = Deadline::new(start + ms(100));
        assert!(!expired(&mut deadline).await);
        deadline.set(start + ms(300));
        tokio::time::sleep_until(start + ms(150)).await;
        assert!(!expired(&mut deadline).await, "moved on: not yet");
        tokio::time::sleep_until(start + ms(300)).await;
        assert!(expired(&mut deadline).await);
        deadline.set(Instant::now() + Duration::from_secs(60));
        assert!(!expired(&mut deadline).await);
        let earlier = Instant::now() + ms(100);
        deadline.set(earlier);
        let fired = poll_fn(|cx| match deadline.poll_expired(cx) {
            true => Poll::Ready(Instant::now()),
            false => Poll::Pending,
        })
        .await;
        assert!(
            fired >= earlier && fired < earlier + Duration::from_secs(5),
            "moved earlier: fires then"
        );
    }
}
