//! Stopping a replica without dropping a request: out of routing (already done by the
//! caller), wait for in-flight requests (drain timeout), SIGTERM, grace period, SIGKILL.

use crate::events::Event;
use crate::state::Key;
use crate::Controller;
use std::time::Duration;
use tokio::time::{sleep, Instant};
use wharf_core::ports::{Liveness, StopSignal};
use wharf_core::Phase;
use wharf_types::spec::{DEFAULT_DRAIN_TIMEOUT, DEFAULT_STOP_TIMEOUT};

/// Requests routed just before the table swap are counted within this delay.
const ROUTE_SETTLE: Duration = Duration::from_millis(50);
const POLL: Duration = Duration::from_millis(25);
/// How long to wait for the kernel after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

impl Controller {
    pub(crate) async fn stop_replica(&self, key: Key) {
        let inner = &self.inner;
        let (handle, running, spec) = {
            let Ok(state) = inner.state.lock() else {
                return;
            };
            let Some(e) = state.entries.get(&key) else {
                return;
            };
            let spec = inner
                .release(&key.0, e.replica.release)
                .and_then(|r| r.processes.get(&e.replica.process).cloned());
            (
                e.handle.clone(),
                matches!(e.replica.phase, Phase::Stopping { draining: true, .. }),
                spec,
            )
        };
        let drain = spec
            .as_ref()
            .map_or(DEFAULT_DRAIN_TIMEOUT, |s| s.drain_timeout);
        let grace = spec
            .as_ref()
            .map_or(DEFAULT_STOP_TIMEOUT, |s| s.stop_timeout);
        let mut how = "stopped".to_string();
        if let (Some(h), true) = (handle.as_ref(), running) {
            sleep(ROUTE_SETTLE).await;
            let deadline = Instant::now() + drain;
            while inner.routes.inflight(&key.1) > 0 && Instant::now() < deadline {
                sleep(POLL).await;
            }
            if let Ok(mut state) = inner.state.lock() {
                if let Some(e) = state.entries.get_mut(&key) {
                    if let Phase::Stopping { draining, .. } = &mut e.replica.phase {
                        *draining = false;
                    }
                }
            }
            let _ = inner.runtime.signal(h, StopSignal::Term);
            if !self.wait_exit(h, grace).await {
                how = format!(
                    "killed after the {} grace period",
                    humantime::format_duration(grace)
                );
                let _ = inner.runtime.signal(h, StopSignal::Kill);
                self.wait_exit(h, KILL_WAIT).await;
            }
            // Nothing the replica started may outlive it.
            let _ = inner.runtime.signal(h, StopSignal::Kill);
        }
        if let Some(h) = handle.as_ref() {
            inner.runtime.cleanup(h);
        }
        if let Ok(mut state) = inner.state.lock() {
            state.entries.remove(&key);
        }
        inner.emit(Event::Progress {
            app: key.0.clone(),
            message: format!("{} {how}", key.1),
        });
        inner.wake.notify_one();
    }

    async fn wait_exit(&self, h: &wharf_core::ports::Handle, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Liveness::Exited(_) = self.inner.runtime.poll(h) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(POLL).await;
        }
    }
}
