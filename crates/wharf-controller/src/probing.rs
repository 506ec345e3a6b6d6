//! Scheduling probes and turning their results into verdicts.
//!
//! A startup probe, when the process has one, runs alone until it first passes; it
//! restarts the replica after `failure_threshold` failures. Then readiness decides
//! routing and liveness (once the process was ready) restarts a hung replica. Until a
//! new process is first ready it is probed every 100 ms (a failing startup probe at its
//! own interval), then at the probes' interval.

use crate::events::Event;
use crate::state::{Key, STARTUP_PROBE_PERIOD_MS};
use crate::{probe, Controller};
use wharf_core::ports::StopSignal;
use wharf_types::release::UnixMillis;
use wharf_types::Probe;

/// The probes due for one process, and then their results.
#[derive(Default)]
struct Round {
    startup: Option<(Probe, bool)>,
    readiness: Option<(Probe, bool)>,
    liveness: Option<(Probe, bool)>,
}

impl Controller {
    /// Starts due probes, each replica's in its own task; results come back through
    /// the state.
    pub(crate) fn schedule_probes(&self, now: UnixMillis) {
        let inner = &self.inner;
        let Ok(mut state) = inner.state.lock() else {
            return;
        };
        for (key, entry) in state.entries.iter_mut() {
            if !entry.replica.is_running() || entry.probing || now < entry.next_probe {
                continue;
            }
            let Some(addr) = entry.addr() else { continue };
            let Some(spec) = inner.process_spec(&entry.replica) else {
                continue;
            };
            let mut round = Round::default();
            match spec.startup {
                Some(p) if !entry.startup_passed => round.startup = Some((p, false)),
                _ => {
                    round.readiness = spec.readiness.map(|p| (p, false));
                    if entry.ready_since_start {
                        round.liveness = spec.liveness.map(|p| (p, false));
                    }
                }
            }
            if round.startup.is_none() && round.readiness.is_none() && round.liveness.is_none() {
                continue;
            }
            entry.probing = true;
            let pid = entry.replica.pid();
            let key = key.clone();
            let c = self.clone();
            // Exec checks run inside the replica, through the runtime.
            let exec = |p: &Option<(Probe, bool)>| match (p, entry.handle.as_ref()) {
                (Some((probe, _)), Some(h)) => match &probe.check {
                    wharf_types::Check::Exec { command } => inner.runtime.exec(h, command).ok(),
                    _ => None,
                },
                _ => None,
            };
            let execs = [
                exec(&round.startup),
                exec(&round.readiness),
                exec(&round.liveness),
            ];
            tokio::spawn(async move {
                let slots = [
                    &mut round.startup,
                    &mut round.readiness,
                    &mut round.liveness,
                ];
                for (slot, exec) in slots.into_iter().zip(&execs) {
                    if let Some((p, ok)) = slot {
                        *ok = probe::run(&p.check, addr, p.timeout, exec.as_ref()).await;
                    }
                }
                c.record_probes(&key, pid, round);
            });
        }
    }

    fn record_probes(&self, key: &Key, pid: Option<u32>, round: Round) {
        let inner = &self.inner;
        let now = inner.clock.now();
        let Ok(mut state) = inner.state.lock() else {
            return;
        };
        let Some(entry) = state.entries.get_mut(key) else {
            return;
        };
        entry.probing = false;
        if entry.replica.pid() != pid || !entry.replica.is_running() {
            return; // a different process now; this result is stale
        }
        entry.awaiting_first_probe = false;
        let mut interval = u64::MAX;
        let mut kill = None;
        // A failing startup probe keeps its own pace: its threshold counts intervals.
        let mut fast = !entry.ready_since_start;
        if let Some((p, ok)) = round.startup {
            interval = interval.min(p.interval.as_millis() as u64);
            if ok {
                entry.startup_passed = true;
                interval = 0; // readiness right away
            } else {
                entry.startup_failures += 1;
                fast = false;
                if entry.startup_failures >= p.failure_threshold.max(1) {
                    kill = Some(format!(
                        "restarted: startup check failed {} times",
                        entry.startup_failures
                    ));
                }
            }
        }
        if let Some((p, ok)) = round.readiness {
            interval = interval.min(p.interval.as_millis() as u64);
            if entry
                .readiness
                .record(ok, p.success_threshold, p.failure_threshold)
            {
                entry.replica.ready = entry.readiness.passing;
                let id = entry.replica.id.clone();
                let message = if entry.readiness.passing {
                    entry.replica.ever_ready = true;
                    entry.ready_since_start = true;
                    format!("{id} is ready")
                } else {
                    format!("{id} failed its readiness check: out of routing")
                };
                inner.emit(Event::Progress {
                    app: entry.replica.app.clone(),
                    message,
                });
                inner.wake.notify_one();
            }
        }
        if let Some((p, ok)) = round.liveness {
            interval = interval.min(p.interval.as_millis() as u64);
            if entry
                .liveness
                .record(ok, p.success_threshold, p.failure_threshold)
                && !entry.liveness.passing
            {
                kill = Some("restarted: liveness check failed".to_string());
            }
        }
        if let Some(reason) = kill {
            inner.emit(Event::Progress {
                app: entry.replica.app.clone(),
                message: format!("{}: {reason}", entry.replica.id),
            });
            entry.kill_reason = Some(reason);
            if let Some(h) = entry.handle.as_ref() {
                let _ = inner.runtime.signal(h, StopSignal::Kill);
            }
        }
        let period = if fast {
            STARTUP_PROBE_PERIOD_MS.min(interval)
        } else {
            interval
        };
        entry.next_probe = now.saturating_add(period.max(10));
    }
}
