//! Secrets: set/unset (a new release, or staged), listing, master-key rotation, and the
//! hand-over of decrypted values to a starting replica.
//!
//! Invariants: a plaintext exists only in this process's memory, between the moment a
//! replica is launched and the moment its `wharf secret-env` helper claims it on the
//! loopback claim listener (one use, or [`TICKET_TTL`]); it is never stored, logged or part of an error message. Releases
//! reference secret versions, so a rollback restores the versions it ran with.

use crate::releases::{check_env_name, no_app, Busy, Target};
use crate::{ControlError, Controller, Inner, Progress};
use std::collections::BTreeMap;
use wharf_core::ports::VaultError;
use wharf_types::access::AuditEntry;
use wharf_types::api::DeployEvent;
use wharf_types::release::UnixMillis;
use wharf_types::secret::{RotateReport, SecretInfo, SecretsRequest};
use wharf_types::{AppName, AppRecord, Release};

/// How long a starting replica has to claim its secrets.
pub(crate) const TICKET_TTL: UnixMillis = 120_000;

/// The env var that carries a replica's one-use ticket to `wharf secret-env`.
pub const TICKET_VAR: &str = "WHARF_SECRETS_TICKET";

/// Decrypted secrets waiting for a starting replica to claim them.
pub(crate) struct Ticket {
    pub app: AppName,
    pub replica: String,
    pub expires: UnixMillis,
    pub env: BTreeMap<String, String>,
}

impl From<VaultError> for ControlError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Store(s) => ControlError::Store(s),
            VaultError::Tampered { .. } | VaultError::UnknownKey { .. } => {
                ControlError::failed(e.to_string())
            }
            VaultError::Key(_) => ControlError::internal(e.to_string()),
        }
    }
}

/// A random 256-bit value in hex (tickets and API tokens).
pub(crate) fn random_hex() -> Result<String, ControlError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|e| ControlError::internal(format!("no randomness from the OS: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Controller {
    /// Names, versions and update times of an app's current secrets; never values.
    pub fn secrets(&self, app: &AppName) -> Result<Vec<SecretInfo>, ControlError> {
        let inner = &self.inner;
        let rec = inner.app(app).ok_or_else(|| no_app(app))?;
        let live = rec
            .target
            .and_then(|v| inner.release(app, v))
            .map(|r| r.secrets.clone())
            .unwrap_or_default();
        let sealed = inner.store.secrets(app)?;
        Ok(rec
            .secrets
            .iter()
            .map(|(name, &version)| SecretInfo {
                name: name.clone(),
                version,
                updated_at: sealed
                    .iter()
                    .find(|s| &s.name == name && s.version == version)
                    .map_or(0, |s| s.created_at),
                live: live.get(name) == Some(&version),
            })
            .collect())
    }

    /// Sets and unsets secrets: new sealed versions, then a new release rolled out with
    /// the app's strategy (or, with `stage`, only recorded for the next release).
    pub async fn set_secrets(&self, app: &AppName, req: SecretsRequest, progress: Progress) {
        self.change_secrets(app, req, &progress, "set").await;
    }

    /// [`Controller::set_secrets`]; `verb` names the change in the release description.
    pub(crate) async fn change_secrets(
        &self,
        app: &AppName,
        req: SecretsRequest,
        progress: &Progress,
        verb: &str,
    ) {
        if let Err(e) = self.try_set_secrets(app, req, progress, verb).await {
            progress.fail(&e).await;
        }
    }

    async fn try_set_secrets(
        &self,
        app: &AppName,
        req: SecretsRequest,
        progress: &Progress,
        verb: &str,
    ) -> Result<(), ControlError> {
        let inner = &self.inner;
        for k in req.set.keys() {
            check_env_name(k)?;
        }
        if req.set.is_empty() && req.unset.is_empty() {
            return Err(ControlError::bad_input(
                "nothing to change; use NAME=VALUE, NAME=@FILE or NAME=- (stdin)",
            ));
        }
        let busy = Busy::take(inner, app)?;
        let mut rec = inner
            .app(app)
            .unwrap_or_else(|| AppRecord::new(app.clone(), inner.clock.now()));
        for k in &req.unset {
            if !rec.secrets.contains_key(k) {
                return Err(ControlError::bad_input(format!(
                    "{k} is not a secret of {app}; see `wharf secrets {app}`"
                )));
            }
        }
        let now = inner.clock.now();
        let existing = inner.store.secrets(app)?;
        let mut sealed = Vec::new();
        for (k, v) in &req.set {
            let version = existing
                .iter()
                .filter(|s| &s.name == k)
                .map(|s| s.version)
                .max()
                .unwrap_or(0)
                + 1;
            sealed.push(inner.vault.seal(app, k, version, now, v.as_bytes())?);
            rec.secrets.insert(k.clone(), version);
        }
        for k in &req.unset {
            rec.secrets.remove(k);
        }
        inner.store.put_secrets(&sealed)?;
        let mut what: Vec<String> = req.set.keys().map(|k| format!("{verb} {k}")).collect();
        what.extend(req.unset.iter().map(|k| format!("unset {k}")));
        let description = format!("secrets {}", what.join(", "));
        let base = rec.target.and_then(|v| inner.release(app, v));
        let secrets = rec.secrets.clone();
        let Some(base) = base.filter(|_| !req.stage) else {
            inner.update(app, |current| {
                let mut fresh = current.unwrap_or_else(|| rec.clone());
                fresh.secrets = secrets;
                Ok((fresh, None, ()))
            })?;
            drop(busy);
            progress
                .say(format!(
                    "{description}: staged; the next deploy or config change of {app} releases it"
                ))
                .await;
            progress
                .send(DeployEvent::Done {
                    app: app.to_string(),
                    release: rec.target.unwrap_or(0),
                    url: inner.url(app),
                })
                .await;
            return Ok(());
        };
        let mut release: Release = (*base).clone();
        release.secrets = rec.secrets.clone();
        release.description = description.clone();
        let (version, events) =
            self.start_rollout(app, Target::New(Box::new(release)), description, |r| {
                r.secrets = secrets;
            })?;
        drop(busy);
        self.announce_and_wait(app, version, events, false, progress)
            .await
    }

    /// Re-wraps every data key under a new master key, in one transaction. Running
    /// replicas are untouched.
    pub fn rotate_master_key(&self) -> Result<RotateReport, ControlError> {
        let (key_id, rewrapped) = self.inner.vault.rotate(self.inner.store.as_ref())?;
        Ok(RotateReport { key_id, rewrapped })
    }

    /// Hands a starting replica its decrypted secrets, once.
    pub fn claim_secrets(&self, ticket: &str) -> Result<BTreeMap<String, String>, ControlError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let t = {
            let mut tickets = inner.tickets.lock().map_err(ControlError::poisoned)?;
            tickets.retain(|_, t| t.expires > now);
            tickets.remove(ticket)
        };
        let t = t.ok_or_else(|| {
            ControlError::not_found(
                "unknown or expired secrets ticket; the replica is restarted with a new one",
            )
        })?;
        inner.audit(AuditEntry {
            at: now,
            who: format!("replica {}", t.replica),
            action: format!(
                "secrets read ({})",
                t.env.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            app: Some(t.app.to_string()),
            outcome: "ok".into(),
        });
        Ok(t.env)
    }
}

impl Inner {
    /// Decrypts the secret versions `release` uses. Errors name the secret, never a value.
    pub(crate) fn open_secrets(
        &self,
        release: &Release,
    ) -> Result<BTreeMap<String, String>, ControlError> {
        let mut env = BTreeMap::new();
        for (name, &version) in &release.secrets {
            let sealed = self
                .store
                .secret(&release.app, name, version)?
                .ok_or_else(|| {
                    ControlError::failed(format!(
                        "secret {name} (version {version}) of {} is missing from the store; set it again with `wharf secrets set`",
                        release.app
                    ))
                })?;
            let bytes = self.vault.open(&sealed)?;
            let value = String::from_utf8(bytes).map_err(|_| {
                ControlError::failed(format!(
                    "secret {name} of {} is not UTF-8 text and cannot be an environment variable",
                    release.app
                ))
            })?;
            env.insert(name.clone(), value);
        }
        Ok(env)
    }

    /// Parks decrypted secrets for replica `id` and returns its ticket.
    pub(crate) fn park_secrets(
        &self,
        app: &AppName,
        id: &str,
        env: BTreeMap<String, String>,
    ) -> Result<String, ControlError> {
        let ticket = random_hex()?;
        let now = self.clock.now();
        let mut tickets = self.tickets.lock().map_err(ControlError::poisoned)?;
        tickets.retain(|_, t| t.expires > now);
        tickets.insert(
            ticket.clone(),
            Ticket {
                app: app.clone(),
                replica: id.to_string(),
                expires: now + TICKET_TTL,
                env,
            },
        );
        Ok(ticket)
    }

    /// Records an audit entry; a failure to record is logged, not fatal.
    pub(crate) fn audit(&self, entry: AuditEntry) {
        if let Err(e) = self.store.append_audit(&entry) {
            tracing::error!("cannot write the audit log: {e}");
        }
    }
}
