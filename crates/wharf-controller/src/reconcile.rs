//! One reconcile tick: observe, plan, act, publish routes. And re-adoption at start.

use crate::events::Event;
use crate::state::{Entry, ADOPTION_WARMUP_MS, READY_WITHOUT_PROBE_MS};
use crate::{Controller, Inner};
use wharf_core::ports::Liveness;
use wharf_core::{plan, Exit, Phase, Replica};
use wharf_types::release::UnixMillis;
use wharf_types::route::{Backend, Route, RouteTable};
use wharf_types::ProcessType;

impl Controller {
    /// Observes, plans and acts once.
    pub fn tick(&self) {
        let inner = &self.inner;
        let now = inner.clock.now();
        self.observe(now);
        self.schedule_probes(now);
        let (replicas, warming) = {
            let Ok(state) = inner.state.lock() else {
                return;
            };
            let warming = state.warming_up(now);
            (
                state
                    .entries
                    .values()
                    .map(|e| e.replica.clone())
                    .collect::<Vec<Replica>>(),
                warming,
            )
        };
        if !warming {
            let desired = inner.desired();
            for action in plan(&desired, &replicas, now) {
                self.execute(action, now);
            }
        }
        inner.publish_routes();
    }

    /// Polls every running process; records exits.
    fn observe(&self, now: UnixMillis) {
        let inner = &self.inner;
        let Ok(mut state) = inner.state.lock() else {
            return;
        };
        for entry in state.entries.values_mut() {
            let Some(handle) = entry.handle.as_ref() else {
                continue;
            };
            if !entry.replica.is_running() {
                continue;
            }
            match inner.runtime.poll(handle) {
                Liveness::Running => {
                    let has_probe = inner.readiness_probe(&entry.replica).is_some();
                    if !has_probe && !entry.replica.ready {
                        if let Phase::Running { since, .. } = entry.replica.phase {
                            if now.saturating_sub(since) >= READY_WITHOUT_PROBE_MS {
                                entry.replica.ready = true;
                                entry.replica.ever_ready = true;
                                entry.ready_since_start = true;
                            }
                        }
                    }
                }
                Liveness::Exited(mut exit) => {
                    if let Some(reason) = entry.kill_reason.take() {
                        exit.reason = format!("{reason} ({})", exit.reason);
                    }
                    let h = handle.clone();
                    inner.runtime.cleanup(&h);
                    inner.emit(Event::Progress {
                        app: entry.replica.app.clone(),
                        message: format!("{} {}", entry.replica.id, exit.reason),
                    });
                    tracing::info!(app = %entry.replica.app, replica = %entry.replica.id, "replica {}", exit.reason);
                    entry.replica.record_exit(exit);
                    entry.awaiting_first_probe = false;
                }
            }
        }
    }

    /// True while replicas adopted at start still await their first probe (at most
    /// a few seconds): until then the route table may lack replicas that are serving.
    pub fn warming_up(&self) -> bool {
        let now = self.inner.clock.now();
        self.inner
            .state
            .lock()
            .map(|s| s.warming_up(now))
            .unwrap_or(false)
    }

    /// Rebuilds observed state from the world: replicas still running are taken over,
    /// records of dead ones are cleaned up (their slots restart at once).
    pub(crate) fn adopt(&self) {
        let inner = &self.inner;
        let now = inner.clock.now();
        let Ok(mut state) = inner.state.lock() else {
            return;
        };
        for (handle, live) in inner.runtime.discover() {
            let ordinal = handle
                .id
                .split('-')
                .rev()
                .nth(1)
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            let mut replica = Replica::new(
                handle.app.clone(),
                handle.process.clone(),
                handle.release,
                ordinal,
                now,
            );
            replica.id = handle.id.clone();
            // A replica that was serving before the restart is not a failed new release.
            replica.ever_ready = inner
                .app(&handle.app)
                .and_then(|a| a.rollout)
                .is_none_or(|r| r.release != handle.release);
            let mut entry = Entry::new(replica);
            match live {
                Liveness::Running => {
                    tracing::info!(app = %handle.app, replica = %handle.id, pid = handle.pid, "re-adopted running replica");
                    entry.started(handle.clone(), now);
                    entry.replica.phase = Phase::Running {
                        pid: handle.pid,
                        since: handle.started_at,
                    };
                    entry.awaiting_first_probe = inner.readiness_probe(&entry.replica).is_some();
                    entry.next_probe = now;
                }
                Liveness::Exited(exit) => {
                    tracing::info!(app = %handle.app, replica = %handle.id, "replica ended while the server was down: {}", exit.reason);
                    inner.runtime.cleanup(&handle);
                    entry.replica.last_exit = Some(exit);
                    entry.replica.phase = Phase::Exited { restart_at: now };
                }
            }
            state
                .entries
                .insert((handle.app.clone(), handle.id.clone()), entry);
        }
        state.warm_until = now + ADOPTION_WARMUP_MS;
    }
}

impl Inner {
    pub(crate) fn process_spec(&self, r: &Replica) -> Option<wharf_types::ProcessSpec> {
        self.release(&r.app, r.release)?
            .processes
            .get(&r.process)
            .cloned()
    }
    pub(crate) fn readiness_probe(&self, r: &Replica) -> Option<wharf_types::Probe> {
        self.process_spec(r)?.readiness
    }

    /// The environment of a replica process.
    pub(crate) fn env_for(
        &self,
        release: &wharf_types::Release,
        r: &Replica,
        port: u16,
    ) -> std::collections::BTreeMap<String, String> {
        let who = crate::env::Identity {
            process: r.process.as_str(),
            replica: Some(&r.id),
            port: Some(port),
        };
        let image = release
            .processes
            .get(&r.process)
            .and_then(|s| s.image.as_ref());
        crate::env::process_env(release, image, &who)
    }

    /// Computes the route table from ready `web` replicas and publishes it if it changed.
    pub(crate) fn publish_routes(&self) {
        let mut routes = Vec::new();
        let weights: std::collections::BTreeMap<
            wharf_types::AppName,
            Vec<wharf_types::route::Weight>,
        > = self
            .desired()
            .iter()
            .map(|d| (d.app.clone(), wharf_core::plan::traffic(d)))
            .collect();
        {
            let Ok(apps) = self.apps.lock() else { return };
            let Ok(state) = self.state.lock() else { return };
            for app in apps.values() {
                let Some(target) = app.target.and_then(|v| self.release(&app.name, v)) else {
                    continue;
                };
                let hosts = crate::claims::hosts(&app.name, &target.hosts);
                let backends = state
                    .entries
                    .values()
                    .filter(|e| {
                        e.replica.app == app.name
                            && e.replica.process.as_str() == ProcessType::WEB
                            && e.replica.is_ready()
                    })
                    .filter_map(|e| {
                        Some(Backend {
                            replica: e.replica.id.clone(),
                            release: e.replica.release,
                            addr: e.addr()?,
                        })
                    })
                    .collect();
                routes.push(Route {
                    app: app.name.to_string(),
                    hosts,
                    backends,
                    weights: weights.get(&app.name).cloned().unwrap_or_default(),
                    tls: target.tls.clone(),
                    options: target.route.clone(),
                });
            }
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let changed = state.published.as_ref().is_none_or(|p| p.routes != routes);
        if changed {
            let version = state.published.as_ref().map_or(1, |p| p.version + 1);
            let table = RouteTable { version, routes };
            self.routes.publish(table.clone());
            state.published = Some(table);
        }
    }
}

/// Converts a start failure into an exit, so that backoff and rollout checks apply.
pub(crate) fn start_failure(now: UnixMillis, message: String) -> Exit {
    Exit {
        at: now,
        code: None,
        signal: None,
        reason: message,
    }
}
