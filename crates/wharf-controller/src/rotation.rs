//! Scheduled secret rotation (`[secrets.rotate]`): when a secret's current version is
//! older than `every` (or missing), run the rotate command as a one-off of the release
//! (in the app's sandbox, with its config and secrets) to produce a new value, test it
//! with the check command (the same, with the new value), then roll it out like
//! `wharf secrets set`. A failure keeps the old value, is audited, raises an event, and
//! is retried after `min(every, 1m)`.
//!
//! Invariants: the new value is never logged nor part of an error (the commands' output
//! is captured, stderr discarded); a rotation never starts during a rollout of its app.

use crate::events::Event;
use crate::releases::Busy;
use crate::{Controller, Inner, Progress};
use std::collections::BTreeMap;
use std::time::Duration;
use wharf_types::access::AuditEntry;
use wharf_types::api::DeployEvent;
use wharf_types::secret::{RotateSpec, SecretsRequest};
use wharf_types::{AppName, Release};

/// How long a rotate or check command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait before retrying a failed rotation.
const MAX_RETRY_MS: u64 = 60_000;

/// Runs `command` as a one-off of `release` (its sandbox, config, `secrets`); returns
/// what it printed when it exits 0.
async fn run(
    inner: &Inner,
    release: &Release,
    command: &str,
    secrets: BTreeMap<String, String>,
    what: &str,
) -> Result<String, String> {
    let launch = inner
        .oneoff_launch(release, what, command, secrets)
        .map_err(|e| format!("cannot prepare the {what} command: {e}"))?;
    let out = inner
        .capture(&launch, COMMAND_TIMEOUT)
        .await
        .map_err(|e| format!("the {what} command: {e}"))?;
    if out.code != 0 {
        return Err(format!(
            "the {what} command failed (exit code {})",
            out.code
        ));
    }
    let mut s = String::from_utf8(out.stdout)
        .map_err(|_| format!("the {what} command printed something that is not UTF-8 text"))?;
    if s.ends_with('\n') {
        s.pop();
    }
    Ok(s)
}

impl Controller {
    /// Checks for due rotations every second until the task is aborted.
    pub(crate) async fn rotation_loop(self) {
        loop {
            self.rotate_due().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn rotate_due(&self) {
        let inner = &self.inner;
        let apps: Vec<_> = match inner.apps.lock() {
            Ok(a) => a.values().cloned().collect(),
            Err(_) => return,
        };
        for rec in apps {
            if rec.rollout.is_some() {
                continue;
            }
            let Some(release) = rec.target.and_then(|v| inner.release(&rec.name, v)) else {
                continue;
            };
            for (name, spec) in &release.rotate {
                let now = inner.clock.now();
                let key = (rec.name.clone(), name.clone());
                let retry_at = inner
                    .rotation_retry
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&key).copied());
                if retry_at.is_some_and(|t| t > now) {
                    continue;
                }
                let last = rec
                    .secrets
                    .get(name)
                    .and_then(|&v| inner.store.secret(&rec.name, name, v).ok().flatten())
                    .map(|s| s.created_at);
                if last.is_some_and(|t| now < t.saturating_add(spec.every_ms)) {
                    continue;
                }
                let outcome = self.rotate_one(&release, name, spec).await;
                let at = inner.clock.now();
                if let Ok(mut m) = inner.rotation_retry.lock() {
                    match &outcome {
                        Ok(()) => m.remove(&key),
                        Err(_) => m.insert(key, at + spec.every_ms.min(MAX_RETRY_MS)),
                    };
                }
                self.report_rotation(&rec.name, name, at, outcome);
            }
        }
    }

    fn report_rotation(&self, app: &AppName, name: &str, at: u64, outcome: Result<(), String>) {
        let inner = &self.inner;
        let result = match &outcome {
            Ok(()) => "ok".to_string(),
            Err(reason) => {
                tracing::warn!(app = %app, "rotation of secret {name} failed: {reason}; the old value stays");
                inner.emit(Event::Progress {
                    app: app.clone(),
                    message: format!(
                        "rotation of secret {name} failed: {reason}; the old value stays"
                    ),
                });
                format!("failed: {reason}")
            }
        };
        inner.audit(AuditEntry {
            at,
            who: "rotation".into(),
            action: format!("secrets rotate {name}"),
            app: Some(app.to_string()),
            outcome: result,
        });
    }

    async fn rotate_one(
        &self,
        release: &Release,
        name: &str,
        spec: &RotateSpec,
    ) -> Result<(), String> {
        let inner = &self.inner;
        let mut secrets = inner.open_secrets(release).map_err(|e| e.to_string())?;
        if !secrets.is_empty() {
            inner.audit(AuditEntry {
                at: inner.clock.now(),
                who: "rotation".into(),
                action: format!(
                    "secrets read ({}) for rotating {name}",
                    secrets.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                app: Some(release.app.to_string()),
                outcome: "ok".into(),
            });
        }
        let value = run(inner, release, &spec.command, secrets.clone(), "rotate").await?;
        if value.is_empty() {
            return Err("the rotate command printed no value".into());
        }
        if let Some(check) = &spec.check {
            secrets.insert(name.to_string(), value.clone());
            run(inner, release, check, secrets, "check").await?;
        }
        let (progress, mut rx) = Progress::channel(256);
        let req = SecretsRequest {
            set: BTreeMap::from([(name.to_string(), value)]),
            unset: Vec::new(),
            stage: false,
        };
        let c = self.clone();
        let app = release.app.clone();
        tokio::spawn(async move { c.change_secrets(&app, req, &progress, "rotate").await });
        let mut last = None;
        while let Some(e) = rx.recv().await {
            last = Some(e);
        }
        match last {
            Some(DeployEvent::Done { .. }) => Ok(()),
            Some(DeployEvent::Failed { reason, .. }) => {
                self.keep_live_version(&release.app, name).await;
                Err(reason)
            }
            _ => Err("the rollout ended without an outcome".into()),
        }
    }

    /// After a failed rollout of a rotated value: the version the app runs becomes the
    /// current one again, so that the next release does not pick the bad value up. Waits
    /// for the automatic rollback to finish first.
    async fn keep_live_version(&self, app: &AppName, name: &str) {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        // Once the automatic rollback is over, the target is the release that serves.
        let _busy = loop {
            let settled = inner.app(app).is_some_and(|r| r.rollout.is_none());
            if settled {
                if let Ok(busy) = Busy::take(inner, app) {
                    break busy;
                }
            }
            if inner.app(app).is_none() || tokio::time::Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let restored = inner.modify(app, |rec| {
            let live = rec
                .target
                .and_then(|v| inner.release(app, v))
                .and_then(|r| r.secrets.get(name).copied());
            match live {
                Some(v) => rec.secrets.insert(name.to_string(), v),
                None => rec.secrets.remove(name),
            };
            Ok(())
        });
        if let Err(e) = restored {
            tracing::error!(app = %app, "cannot restore the live version of secret {name}: {e}");
        }
    }
}
