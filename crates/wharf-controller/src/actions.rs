//! Executing the actions `plan()` returns.

use crate::events::Event;
use crate::reconcile::start_failure;
use crate::state::Entry;
use crate::{Controller, Inner};
use wharf_core::plan::{Action, StopReason};
use wharf_core::ports::Launch;
use wharf_core::{Phase, Replica};
use wharf_types::release::{CanaryProgress, Rollout, RolloutOutcome, UnixMillis, Warm};
use wharf_types::AppName;

/// Where `[secrets] as = "files"` puts the values (a tmpfs of the sandbox).
pub(crate) const SECRETS_DIR: &str = "/run/secrets";

/// Lines of a failing replica's output a failed rollout reports.
pub(crate) const FAILURE_LOG_LINES: usize = 20;

impl Controller {
    pub(crate) fn execute(&self, action: Action, now: UnixMillis) {
        let inner = &self.inner;
        match action {
            Action::Start {
                app,
                process,
                release,
                ordinal,
                id,
            } => {
                let replica = Replica::new(app.clone(), process, release, ordinal, now);
                debug_assert_eq!(replica.id, id);
                if let Ok(mut state) = inner.state.lock() {
                    state
                        .entries
                        .insert((app.clone(), id.clone()), Entry::new(replica));
                }
                inner.launch(&app, &id, now, false);
            }
            Action::Restart { app, id } => inner.launch(&app, &id, now, true),
            Action::Stop { app, id, reason } => self.begin_stop(&app, &id, reason, now),
            Action::RolloutSucceeded { app, release } => {
                inner.rollout_succeeded(&app, release, now)
            }
            Action::RolloutFailed {
                app,
                release,
                reason,
                replica,
            } => inner.rollout_failed(&app, release, reason, replica, now),
            Action::CanaryStep {
                app,
                release,
                progress,
            } => inner.canary_step(&app, release, progress),
            Action::ForgetWarm { app } => inner.forget_warm(&app),
        }
    }

    fn begin_stop(&self, app: &AppName, id: &str, reason: StopReason, now: UnixMillis) {
        let inner = &self.inner;
        let key = (app.clone(), id.to_string());
        let Ok(mut state) = inner.state.lock() else {
            return;
        };
        let Some(entry) = state.entries.get_mut(&key) else {
            return;
        };
        let running = entry.replica.is_running();
        entry.replica.phase = Phase::Stopping {
            since: now,
            draining: running,
        };
        entry.replica.ready = false;
        drop(state);
        let why = match reason {
            StopReason::Replaced => "replaced",
            StopReason::ScaledDown => "scaled down",
            StopReason::NotDesired => "no longer desired",
        };
        inner.emit(Event::Progress {
            app: app.clone(),
            message: format!("stopping {id} ({why})"),
        });
        // The route table without this replica goes out before the stopper starts draining.
        inner.publish_routes();
        let c = self.clone();
        tokio::spawn(async move { c.stop_replica(key).await });
    }
}

impl Inner {
    /// Starts (or restarts) the process of a slot on a fresh port.
    fn launch(&self, app: &AppName, id: &str, now: UnixMillis, restart: bool) {
        let key = (app.clone(), id.to_string());
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let Some(entry) = state.entries.get_mut(&key) else {
            return;
        };
        let r = entry.replica.clone();
        let Some(release) = self.release(app, r.release) else {
            entry.replica.record_exit(start_failure(
                now,
                format!("release v{} is missing from the store", r.release),
            ));
            return;
        };
        let Some(spec) = release.processes.get(&r.process) else {
            return;
        };
        let port = match spec.port {
            Some(p) => p,
            None => match free_port() {
                Ok(p) => p,
                Err(e) => {
                    entry
                        .replica
                        .record_exit(start_failure(now, format!("no free port: {e}")));
                    return;
                }
            },
        };
        let mut env = self.env_for(&release, &r, port);
        // The runtime gives the app a HOME it can write unless the app's config sets one.
        if !release.env.contains_key("HOME") {
            env.remove("HOME");
        }
        let mut launch = Launch {
            app: app.clone(),
            process: r.process.clone(),
            release: r.release,
            id: id.to_string(),
            command: spec.command.clone(),
            dir: self.layout.artifact(&release.artifact),
            env,
            port,
            network: spec.network,
            cpu: spec.cpu,
            cpu_limit: spec.cpu_limit,
            memory: spec.memory,
            writable_dir: false,
            secret_files: false,
            image: self.image_layers(spec),
        };
        if !release.secrets.is_empty() {
            if let Err(e) = self.with_secrets(&release, &mut launch) {
                if restart {
                    entry.replica.restarts += 1;
                }
                tracing::warn!(app = %app, replica = %id, "{e}");
                entry.replica.record_exit(start_failure(now, e.to_string()));
                return;
            }
        }
        match self.runtime.start(&launch) {
            Ok(handle) => {
                if restart {
                    entry.replica.restarts += 1;
                }
                let pid = handle.pid;
                entry.started(handle, now);
                let verb = if restart { "restarted" } else { "started" };
                self.emit(Event::Progress {
                    app: app.clone(),
                    message: format!("{verb} {id} (pid {pid}, port {port})"),
                });
            }
            Err(e) => {
                if restart {
                    entry.replica.restarts += 1;
                }
                tracing::warn!(app = %app, replica = %id, "{e}");
                entry.replica.record_exit(start_failure(now, e.to_string()));
            }
        }
    }

    /// Decrypts the release's secrets for this start and wraps the command in the
    /// `secret-env` helper, which claims them with a one-use ticket. Nothing secret goes
    /// into the launch spec (which the runtime writes under the data dir).
    fn with_secrets(
        &self,
        release: &wharf_types::Release,
        launch: &mut Launch,
    ) -> Result<(), crate::ControlError> {
        let env = self.open_secrets(release)?;
        self.deliver_secrets(release.secrets_as_files, launch, env)
    }

    /// Parks `secrets` for the process of `launch` and wraps its command in the
    /// `secret-env` helper that claims them (into the environment, or as files).
    pub(crate) fn deliver_secrets(
        &self,
        as_files: bool,
        launch: &mut Launch,
        secrets: std::collections::BTreeMap<String, String>,
    ) -> Result<(), crate::ControlError> {
        let helper = self.settings.secret_env.as_ref().ok_or_else(|| {
            crate::ControlError::failed(
                "this server cannot deliver secrets to replicas (no secret-env helper)",
            )
        })?;
        // A replica with its own network cannot reach the host's loopback: it claims on
        // the host's side of its bridge.
        let claim = match launch.network {
            wharf_types::Network::Host => helper.claim.clone(),
            wharf_types::Network::Isolated => helper
                .isolated
                .as_ref()
                .ok_or_else(|| {
                    crate::ControlError::failed(
                        "this server cannot deliver secrets to replicas with network = \"isolated\"",
                    )
                })?
                .addr()
                .map_err(|e| {
                    crate::ControlError::failed(format!(
                        "cannot open the secret claim listener of isolated replicas: {e}"
                    ))
                })?,
        };
        let ticket = self.park_secrets(&launch.app, &launch.id, secrets)?;
        launch
            .env
            .insert(crate::secrets::TICKET_VAR.to_string(), ticket);
        launch.secret_files = as_files;
        let files = if as_files {
            format!("--files {} ", SECRETS_DIR)
        } else {
            String::new()
        };
        launch.command = format!(
            "{} secret-env {files}{} {}",
            shell_quote(&helper.exe.to_string_lossy()),
            shell_quote(&claim),
            shell_quote(&launch.command)
        );
        Ok(())
    }

    fn rollout_succeeded(&self, app: &AppName, release: u32, now: UnixMillis) {
        let deploy = self.release(app, release).and_then(|r| {
            r.processes
                .get(&wharf_types::ProcessType::web())
                .map(|p| p.deploy.clone())
        });
        let recorded = self.modify(app, |rec| {
            let Some(rollout) = rec.rollout.take() else {
                return Ok(None);
            };
            rec.last_good = Some(release);
            if rollout.reverting.is_none() {
                rec.last_outcome = Some(RolloutOutcome {
                    release,
                    succeeded: true,
                    at: now,
                    reason: None,
                    replica: None,
                    cause: rollout.cause.clone(),
                });
                if rollout.from.is_some_and(|f| f != release) {
                    rec.previous = rollout.from;
                }
                // Blue-green keeps the set it switched away from warm for a quick way back.
                rec.warm = match (&deploy, rollout.from) {
                    (Some(d), Some(from))
                        if d.strategy == wharf_types::Strategy::BlueGreen && from != release =>
                    {
                        let until = now.saturating_add(d.keep_previous.as_millis() as u64);
                        Some(Warm {
                            release: from,
                            until,
                        })
                    }
                    _ => None,
                };
            }
            Ok(Some(rollout.reverting.is_none()))
        });
        // The route table for the new state goes out before anyone hears of the success.
        self.publish_routes();
        match recorded {
            Ok(Some(Some(true))) => self.emit(Event::RolloutSucceeded {
                app: app.clone(),
                release,
            }),
            Ok(Some(Some(false))) => self.emit(Event::Progress {
                app: app.clone(),
                message: format!("v{release} serves all traffic again"),
            }),
            Ok(_) => {}
            Err(e) => tracing::error!(app = %app, "cannot record the rollout of v{release}: {e}"),
        }
    }

    fn rollout_failed(
        &self,
        app: &AppName,
        release: u32,
        reason: String,
        replica: Option<String>,
        now: UnixMillis,
    ) {
        let recorded = self.modify(app, |rec| {
            let (from, cause) = rec
                .rollout
                .as_ref()
                .map_or((None, String::new()), |r| (r.from, r.cause.clone()));
            rec.target = from;
            rec.rollout = from.map(|f| Rollout {
                reverting: Some(reason.clone()),
                ..Rollout::new(f, Some(release), now, "automatic rollback")
            });
            rec.last_outcome = Some(RolloutOutcome {
                release,
                succeeded: false,
                at: now,
                reason: Some(reason.clone()),
                replica: replica.clone(),
                cause,
            });
            Ok(())
        });
        match recorded {
            Ok(Some(())) => {}
            Ok(None) => return,
            Err(e) => {
                tracing::error!(app = %app, "cannot record the failed rollout of v{release}: {e}");
                return;
            }
        }
        let logs = replica
            .as_deref()
            .map(|id| self.runtime.tail(app, id, FAILURE_LOG_LINES))
            .unwrap_or_default();
        tracing::warn!(app = %app, "rollout of v{release} failed: {reason}");
        self.publish_routes();
        self.emit(Event::RolloutFailed {
            app: app.clone(),
            release,
            reason,
            replica,
            logs,
        });
    }

    /// Records canary progress (a new step, a failed check, the latest analysis).
    fn canary_step(&self, app: &AppName, release: u32, progress: CanaryProgress) {
        let recorded = self.modify(app, |rec| {
            let Some(ro) = rec.rollout.as_mut().filter(|r| r.release == release) else {
                return Ok(None);
            };
            let message = match &progress.last {
                Some(a)
                    if ro.canary.as_ref().is_some_and(|c| {
                        c.step == progress.step && c.failed_checks == progress.failed_checks
                    }) =>
                {
                    format!("canary v{release} at {}%: {}", progress.weight, a.summary())
                }
                Some(a) => format!(
                    "canary v{release}: {} -> {}% of traffic (failed checks: {})",
                    a.summary(),
                    progress.weight,
                    progress.failed_checks
                ),
                None => format!("canary v{release} takes {}% of traffic", progress.weight),
            };
            ro.canary = Some(progress);
            Ok(Some(message))
        });
        match recorded {
            Ok(Some(Some(message))) => self.emit(Event::Progress {
                app: app.clone(),
                message,
            }),
            Ok(_) => {}
            Err(e) => tracing::error!(app = %app, "cannot record canary progress: {e}"),
        }
    }

    fn forget_warm(&self, app: &AppName) {
        match self.modify(app, |rec| Ok(rec.warm.take())) {
            Ok(Some(Some(w))) => self.emit(Event::Progress {
                app: app.clone(),
                message: format!("the warm set of v{} is no longer kept", w.release),
            }),
            Ok(_) => {}
            Err(e) => tracing::error!(app = %app, "cannot record the end of the warm window: {e}"),
        }
    }
}

/// A port nobody listens on right now (the kernel's choice for port 0).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Quotes `s` as one word for `/bin/sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod quote_tests {
    #[test]
    fn shell_quote_keeps_one_word() {
        assert_eq!(super::shell_quote("a b"), "'a b'");
        assert_eq!(super::shell_quote("it's"), "'it'\\''s'");
    }
}
