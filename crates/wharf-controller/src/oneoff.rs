//! One-off processes of an app: started from a release like one of its replicas (same
//! sandbox, limits, uid, config and secrets) but not supervised. `wharf run` gets one
//! prepared and starts it itself, attached to the user's terminal; secret rotation runs
//! its rotate and check commands here and reads what they print. A build command is a
//! one-off too, in its scratch copy of the app (writable, no secrets, no limits but the
//! sandbox's pids limit).
//!
//! Invariants: secrets reach a one-off only through a one-use ticket, as they reach
//! replicas; a one-off's run directory and cgroup are removed when it has ended (or at
//! the server's next start, when whoever started it died first); a one-off id names one
//! directory of its app and nothing else.

use crate::env::{process_env, Identity};
use crate::{ControlError, Controller, Inner};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wharf_core::ports::Launch;
use wharf_runtime::build;
use wharf_types::api::RunSpec;
use wharf_types::{AppName, ProcessType, Release};

/// The label, and id prefix, of `wharf run` one-offs.
const RUN: &str = "run";

/// What a captured one-off printed and how it ended.
pub(crate) struct Captured {
    /// The app's exit code (128 + the signal that killed it).
    pub code: i32,
    pub stdout: Vec<u8>,
}

impl Inner {
    /// The layer directories of the image `spec` runs on (none: the host's root).
    pub(crate) fn image_layers(&self, spec: &wharf_types::ProcessSpec) -> Vec<std::path::PathBuf> {
        spec.image
            .as_ref()
            .map(|i| wharf_runtime::image::layer_dirs(&self.layout, i))
            .unwrap_or_default()
    }

    /// A one-off `command` of `release` labelled `label` (its process type and id
    /// prefix): the release's config and `secrets`, the limits of its `web` process (else
    /// of its first), no port.
    pub(crate) fn oneoff_launch(
        &self,
        release: &Release,
        label: &str,
        command: &str,
        secrets: BTreeMap<String, String>,
    ) -> Result<Launch, ControlError> {
        let id = format!("{label}-{}", &crate::secrets::random_hex()?[..12]);
        let process = ProcessType::new(label)
            .map_err(|e| ControlError::internal(format!("one-off label {label}: {e}")))?;
        let spec = release
            .processes
            .get(&ProcessType::web())
            .or_else(|| release.processes.values().next());
        let who = Identity {
            process: label,
            replica: Some(&id),
            port: None,
        };
        let mut launch = Launch {
            app: release.app.clone(),
            process,
            release: release.version,
            env: process_env(release, spec.and_then(|s| s.image.as_ref()), &who),
            id,
            command: command.to_string(),
            dir: self.layout.artifact(&release.artifact),
            port: 0,
            cpu: spec.and_then(|s| s.cpu),
            memory: spec.and_then(|s| s.memory),
            writable_dir: false,
            secret_files: false,
            image: spec.map(|s| self.image_layers(s)).unwrap_or_default(),
            cpu_limit: spec.and_then(|s| s.cpu_limit),
            // One-offs use the host's network, even for apps whose replicas are isolated.
            network: wharf_types::Network::Host,
        };
        if !secrets.is_empty() {
            self.deliver_secrets(release.secrets_as_files, &mut launch, secrets)?;
        }
        Ok(launch)
    }

    /// Runs the one-off `launch` to its end with no stdin, its stdout captured and its
    /// stderr dropped; kills it (and all it started) after `timeout`.
    pub(crate) async fn capture(
        &self,
        launch: &Launch,
        timeout: Duration,
    ) -> Result<Captured, String> {
        let oneoff = self.runtime.oneoff(launch).map_err(|e| e.to_string())?;
        let spawned = tokio::process::Command::new(&oneoff.program)
            .args(&oneoff.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let (pgid, outcome) = match spawned {
            Err(e) => (None, Err(format!("cannot start it: {e}"))),
            Ok(child) => {
                let pgid = child.id();
                let waited = tokio::time::timeout(timeout, child.wait_with_output()).await;
                let outcome = match waited {
                    Err(_) => Err(format!("it did not finish within {timeout:?}")),
                    Ok(Err(e)) => Err(format!("lost track of it: {e}")),
                    Ok(Ok(out)) => Ok(Captured {
                        code: out.status.code().unwrap_or(1),
                        stdout: out.stdout,
                    }),
                };
                (pgid, outcome)
            }
        };
        self.runtime.finish_oneoff(&launch.app, &oneoff.id, pgid);
        outcome
    }
}

impl Controller {
    /// Prepares a `wharf run` one-off of `app`'s current release; the caller starts it
    /// and calls [`Controller::finish_run`] when it has ended.
    pub fn start_run(&self, app: &AppName, command: &str) -> Result<RunSpec, ControlError> {
        if command.trim().is_empty() {
            return Err(ControlError::bad_input(
                "no command to run; pass one after --, as in `wharf run APP -- node migrate.js`",
            ));
        }
        let inner = &self.inner;
        let rec = self.known(app)?;
        let release = rec
            .target
            .and_then(|v| inner.release(app, v))
            .ok_or_else(|| {
                ControlError::bad_input(format!("{app} has no running release; deploy it first"))
            })?;
        let secrets = inner.open_secrets(&release)?;
        let launch = inner.oneoff_launch(&release, RUN, command, secrets)?;
        let oneoff = inner
            .runtime
            .oneoff(&launch)
            .map_err(|e| ControlError::failed(e.to_string()))?;
        Ok(RunSpec {
            release: release.version,
            id: oneoff.id,
            program: oneoff.program.to_string_lossy().into_owned(),
            args: oneoff
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        })
    }

    /// Removes what the `wharf run` one-off `id` of `app` left behind.
    pub fn finish_run(&self, app: &AppName, id: &str) -> Result<(), ControlError> {
        if !is_run_id(id) {
            return Err(ControlError::bad_input(format!(
                "{id:?} is not the id of a one-off started by `wharf run`"
            )));
        }
        self.inner.runtime.finish_oneoff(app, id, None);
        Ok(())
    }
}

/// Runs build commands as one-offs of the app being built.
pub(crate) struct BuildRunner {
    inner: Arc<Inner>,
    app: AppName,
    release: u32,
    id: Mutex<Option<String>>,
}

impl BuildRunner {
    pub(crate) fn new(inner: Arc<Inner>, app: AppName, release: u32) -> Self {
        Self {
            inner,
            app,
            release,
            id: Mutex::new(None),
        }
    }
}

impl build::Runner for BuildRunner {
    fn command(
        &self,
        command: &str,
        work: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<std::process::Command, String> {
        let hex = crate::secrets::random_hex().map_err(|e| e.to_string())?;
        let launch = Launch {
            app: self.app.clone(),
            process: ProcessType::new("build").map_err(|e| e.to_string())?,
            release: self.release,
            id: format!("build-{}", &hex[..12]),
            command: command.to_string(),
            dir: work.to_path_buf(),
            env: env.clone(),
            port: 0,
            cpu: None,
            memory: None,
            writable_dir: true,
            secret_files: false,
            image: Vec::new(),
            cpu_limit: None,
            network: wharf_types::Network::Host,
        };
        let oneoff = self
            .inner
            .runtime
            .oneoff(&launch)
            .map_err(|e| e.to_string())?;
        if let Ok(mut id) = self.id.lock() {
            *id = Some(oneoff.id);
        }
        let mut cmd = std::process::Command::new(&oneoff.program);
        cmd.args(&oneoff.args).process_group(0);
        Ok(cmd)
    }

    fn finish(&self, pid: Option<u32>) {
        if let Some(id) = self.id.lock().ok().and_then(|mut id| id.take()) {
            self.inner.runtime.finish_oneoff(&self.app, &id, pid);
        }
    }
}

/// `run-` and 12 lowercase hex digits, as [`Inner::oneoff_launch`] makes them.
fn is_run_id(id: &str) -> bool {
    id.strip_prefix("run-").is_some_and(|hex| {
        hex.len() == 12
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_ids() {
        assert!(super::is_run_id("run-0123456789ab"));
        for bad in [
            "run-0123456789abc",
            "run-0123456789a",
            "run-../../etc/x",
            "rotate-0123456789ab",
            "run-0123456789AB",
            "",
        ] {
            assert!(!super::is_run_id(bad), "{bad}");
        }
    }
}
