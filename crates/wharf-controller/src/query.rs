//! Read-only views for the API: apps, status, ps, releases, config, run, metrics.

use crate::{ControlError, Controller};
use std::collections::BTreeMap;
use wharf_core::Phase;
use wharf_types::api::{AppStatus, ProcessStatus, ReleaseInfo, ReplicaInfo, ReplicaState};
use wharf_types::AppName;

impl Controller {
    pub(crate) fn known(&self, app: &AppName) -> Result<wharf_types::AppRecord, ControlError> {
        self.inner
            .app(app)
            .ok_or_else(|| ControlError::not_found(format!("no app named {app}; see `wharf apps`")))
    }

    pub fn apps(&self) -> Vec<AppStatus> {
        let names: Vec<AppName> = self
            .inner
            .apps
            .lock()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        names.iter().filter_map(|n| self.status(n).ok()).collect()
    }

    pub fn status(&self, app: &AppName) -> Result<AppStatus, ControlError> {
        let inner = &self.inner;
        let rec = self.known(app)?;
        let release = rec.target.and_then(|v| inner.release(app, v));
        let replicas = self.ps(Some(app))?;
        let mut processes = Vec::new();
        let mut all_ready = true;
        if let Some(r) = &release {
            for (p, spec) in &r.processes {
                let desired = rec.desired(p, spec);
                let mine = replicas
                    .iter()
                    .filter(|x| x.process == p.as_str() && x.release == r.version);
                let ready = mine
                    .clone()
                    .filter(|x| x.state == ReplicaState::Ready)
                    .count() as u32;
                let running = mine.filter(|x| x.pid.is_some()).count() as u32;
                all_ready &= ready >= desired;
                processes.push(ProcessStatus {
                    process: p.to_string(),
                    command: spec.command.clone(),
                    desired,
                    ready,
                    running,
                });
            }
        }
        let status = match (&rec.rollout, &release) {
            (Some(ro), _) if ro.reverting.is_some() => format!("rolling back to v{}", ro.release),
            (Some(ro), _) => format!("deploying v{}", ro.release),
            (None, None) => "stopped".to_string(),
            (None, Some(_)) if all_ready => "running".to_string(),
            (None, Some(_)) => "degraded".to_string(),
        };
        let hosts = crate::claims::hosts(app, release.as_ref().map_or(&[], |r| &r.hosts));
        let route = release
            .as_ref()
            .map(|r| r.route.clone())
            .unwrap_or_default();
        let certificates = inner.routes.certificates(&hosts);
        Ok(AppStatus {
            name: app.to_string(),
            release: rec.target,
            url: inner.url(app),
            hosts,
            paths: route.prefixes().map(str::to_owned).collect(),
            status,
            processes,
            last_outcome: rec.last_outcome.clone(),
            created_at: rec.created_at,
            strategy: release
                .as_ref()
                .and_then(|r| r.processes.get(&wharf_types::ProcessType::web()))
                .map(|p| {
                    serde_json::to_value(p.deploy.strategy)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                })
                .unwrap_or_default(),
            canary: rec.rollout.as_ref().and_then(|r| r.canary.clone()),
            warm: rec.warm.clone(),
            certificates,
        })
    }

    /// Replicas of one app (or all), in a stable order.
    pub fn ps(&self, app: Option<&AppName>) -> Result<Vec<ReplicaInfo>, ControlError> {
        if let Some(a) = app {
            self.known(a)?;
        }
        let state = self.inner.state.lock().map_err(ControlError::poisoned)?;
        Ok(state
            .entries
            .values()
            .filter(|e| app.is_none_or(|a| &e.replica.app == a))
            .map(|e| {
                let r = &e.replica;
                let state = match r.phase {
                    Phase::Running { .. } if r.ready => ReplicaState::Ready,
                    Phase::Running { .. } if !e.ready_since_start => ReplicaState::Starting,
                    Phase::Running { .. } => ReplicaState::Unready,
                    Phase::Exited { .. } if r.backoff.crash_looping() => ReplicaState::CrashLoop,
                    Phase::Exited { .. } => ReplicaState::Backoff,
                    Phase::Stopping { draining: true, .. } => ReplicaState::Draining,
                    Phase::Stopping { .. } => ReplicaState::Stopping,
                };
                let running = r.is_running() || matches!(r.phase, Phase::Stopping { .. });
                let started_at = match r.phase {
                    Phase::Running { since, .. } => Some(since),
                    _ => None,
                };
                ReplicaInfo {
                    app: r.app.to_string(),
                    id: r.id.clone(),
                    process: r.process.to_string(),
                    release: r.release,
                    state,
                    pid: e.handle.as_ref().filter(|_| running).map(|h| h.pid),
                    address: e.addr().filter(|_| running).map(|a| a.to_string()),
                    restarts: r.restarts,
                    last_exit: r.last_exit.as_ref().map(|x| x.reason.clone()),
                    started_at,
                }
            })
            .collect())
    }

    pub fn releases(&self, app: &AppName) -> Result<Vec<ReleaseInfo>, ControlError> {
        let rec = self.known(app)?;
        let mut list = self.inner.store.releases(app)?;
        list.sort_by_key(|r| std::cmp::Reverse(r.version));
        Ok(list
            .into_iter()
            .map(|r| ReleaseInfo {
                version: r.version,
                artifact: r.artifact.clone(),
                description: r.description.clone(),
                created_at: r.created_at,
                current: rec.target == Some(r.version),
                processes: r
                    .processes
                    .iter()
                    .map(|(p, s)| (p.to_string(), s.command.clone()))
                    .collect(),
            })
            .collect())
    }

    /// The environment of the current release (what the app sees, without PORT).
    pub fn config(&self, app: &AppName) -> Result<BTreeMap<String, String>, ControlError> {
        let rec = self.known(app)?;
        Ok(rec
            .target
            .and_then(|v| self.inner.release(app, v))
            .map(|r| r.env.clone())
            .unwrap_or_else(|| rec.config.clone()))
    }

    /// The app's log file, checked to belong to a known app.
    pub fn log_path(&self, app: &AppName) -> Result<std::path::PathBuf, ControlError> {
        self.known(app)?;
        Ok(self.inner.layout.app_log(app))
    }

    /// Prometheus text exposition of the platform's own gauges.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP wharf_replicas Replicas by app, process and state.\n# TYPE wharf_replicas gauge\n");
        let mut counts: BTreeMap<(String, String, String), u64> = BTreeMap::new();
        let mut restarts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in self.ps(None).unwrap_or_default() {
            *counts
                .entry((r.app.clone(), r.process.clone(), r.state.to_string()))
                .or_default() += 1;
            *restarts.entry((r.app, r.process)).or_default() += u64::from(r.restarts);
        }
        for ((a, p, s), n) in counts {
            out.push_str(&format!(
                "wharf_replicas{{app=\"{a}\",process=\"{p}\",state=\"{s}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP wharf_replica_restarts Restarts of current replicas.\n# TYPE wharf_replica_restarts gauge\n");
        for ((a, p), n) in restarts {
            out.push_str(&format!(
                "wharf_replica_restarts{{app=\"{a}\",process=\"{p}\"}} {n}\n"
            ));
        }
        out.push_str(
            "# HELP wharf_release Current release of each app.\n# TYPE wharf_release gauge\n",
        );
        for s in self.apps() {
            out.push_str(&format!(
                "wharf_release{{app=\"{}\"}} {}\n",
                s.name,
                s.release.unwrap_or(0)
            ));
        }
        out.push_str(&self.inner.routes.metrics());
        out
    }
}
