//! User actions that change desired state: deploy, rollback, config, scale, destroy.

use crate::events::Event;
use crate::{ControlError, Controller, Inner};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use wharf_runtime::build::{self, BuildError, BuildSpec};
use wharf_types::api::{DeployEvent, ErrorKind};
use wharf_types::manifest::{manifest_from_procfile, parse_manifest};
use wharf_types::release::Rollout;
use wharf_types::{AppName, AppRecord, Manifest, ProcessType, Release, Strategy};

/// Options of `wharf deploy`.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub dir: PathBuf,
    pub app: Option<String>,
    pub strategy: Option<Strategy>,
    /// Return once the release is created, without waiting for the rollout.
    pub detach: bool,
}

/// Sends deploy events to the client; a client that went away does not stop the work.
#[derive(Clone)]
pub struct Progress(mpsc::Sender<DeployEvent>);

impl Progress {
    pub fn channel(cap: usize) -> (Self, mpsc::Receiver<DeployEvent>) {
        let (tx, rx) = mpsc::channel(cap);
        (Self(tx), rx)
    }
    pub(crate) async fn send(&self, e: DeployEvent) {
        let _ = self.0.send(e).await;
    }
    pub(crate) async fn say(&self, message: impl Into<String>) {
        self.send(DeployEvent::Progress {
            message: message.into(),
        })
        .await;
    }
    /// Reports an error as the final event.
    pub async fn fail(&self, e: &ControlError) {
        let (kind, manifest) = match e {
            ControlError::Manifest(m) => (ErrorKind::BadInput, Some(m.clone())),
            other => (other.kind(), None),
        };
        self.send(DeployEvent::Failed {
            reason: e.to_string(),
            kind,
            replica: None,
            logs: Vec::new(),
            manifest,
        })
        .await;
    }
}

/// Marks an app busy while a release is created and rolled out; freed on drop.
pub(crate) struct Busy<'a> {
    inner: &'a Inner,
    app: AppName,
}

impl<'a> Busy<'a> {
    pub(crate) fn take(inner: &'a Inner, app: &AppName) -> Result<Self, ControlError> {
        let mut busy = inner.busy.lock().map_err(ControlError::poisoned)?;
        if !busy.insert(app.clone()) {
            return Err(ControlError::conflict(format!(
                "{app} is busy with another deploy, rollback or config change; wait for it to finish"
            )));
        }
        Ok(Self {
            inner,
            app: app.clone(),
        })
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.inner.busy.lock() {
            b.remove(&self.app);
        }
    }
}

/// What a rollout goes to.
pub(crate) enum Target {
    /// A release to record as the next version.
    New(Box<Release>),
    /// A version that already exists (rollback).
    Existing(u32),
}

pub(crate) type Events = tokio::sync::broadcast::Receiver<Event>;

/// Reads the manifest (or Procfile) of an app directory.
pub fn load_manifest(dir: &Path, app: Option<&str>) -> Result<Manifest, ControlError> {
    if !dir.is_dir() {
        return Err(ControlError::bad_input(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().to_string());
    let default_app = app.map(str::to_string).or(dir_name);
    let toml_path = dir.join("wharf.toml");
    let proc_path = dir.join("Procfile");
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| ControlError::bad_input(format!("cannot read {}: {e}", p.display())))
    };
    let procfile = if proc_path.is_file() {
        Some(read(&proc_path)?)
    } else {
        None
    };
    let proc_name = proc_path.display().to_string();
    let mut m = if toml_path.is_file() {
        let text = read(&toml_path)?;
        parse_manifest(
            &text,
            &toml_path.display().to_string(),
            default_app.as_deref(),
            procfile.as_deref().map(|p| (p, proc_name.as_str())),
        )?
    } else if let Some(text) = procfile {
        let name = default_app
            .ok_or_else(|| ControlError::bad_input("cannot name the app; pass --app NAME"))?;
        manifest_from_procfile(&text, &proc_name, &name)?
    } else {
        return Err(ControlError::bad_input(format!(
            "{} has neither a wharf.toml nor a Procfile; add one (a Procfile line like `web: node app.js` is enough)",
            dir.display()
        )));
    };
    if let Some(name) = app {
        m.app = AppName::new(name).map_err(|e| ControlError::bad_input(format!("--app: {e}")))?;
    }
    Ok(m)
}

impl Controller {
    /// Builds a release from a directory and rolls it out, reporting progress.
    pub async fn deploy(&self, opts: DeployOptions, progress: Progress) {
        if let Err(e) = self.try_deploy(opts, &progress).await {
            progress.fail(&e).await;
        }
    }

    async fn try_deploy(
        &self,
        opts: DeployOptions,
        progress: &Progress,
    ) -> Result<(), ControlError> {
        let mut manifest = load_manifest(&opts.dir, opts.app.as_deref())?;
        if !self.inner.settings.isolated_network {
            if let Some((name, _)) = manifest
                .processes
                .iter()
                .find(|(_, p)| p.network == wharf_types::Network::Isolated)
            {
                return Err(ControlError::bad_input(format!(
                    "process `{name}` asks for network = \"isolated\", which needs the sandbox; this server runs replicas as plain processes (not root, or --isolation none): run `wharf server` as root with --isolation auto or sandbox, or remove `network`"
                )));
            }
        }
        if let Some(s) = opts.strategy {
            for spec in manifest.processes.values_mut() {
                spec.deploy.strategy = s;
            }
        }
        let inner = &self.inner;
        let (tls, notes) = crate::route_tls::resolve(&opts.dir, &manifest.tls, &*inner.routes)?;
        for note in notes {
            progress.say(note).await;
        }
        let app = manifest.app.clone();
        let busy = Busy::take(inner, &app)?;
        crate::claims::check(inner, &app, &manifest.hosts, &manifest.route)?;
        let existing = inner.app(&app);
        let config = existing
            .as_ref()
            .map(|a| a.config.clone())
            .unwrap_or_default();
        let secrets = existing
            .as_ref()
            .map(|a| a.secrets.clone())
            .unwrap_or_default();
        let mut env = manifest.env.clone();
        env.extend(config);

        let latest = existing.as_ref().map_or(0, |a| a.latest);
        progress
            .say(format!(
                "building {app} v{} from {}",
                latest + 1,
                opts.dir.display()
            ))
            .await;
        let artifact = self
            .build(
                &app,
                latest + 1,
                &opts.dir,
                manifest.build.clone(),
                env.clone(),
                progress,
            )
            .await?;
        progress.say(format!("artifact {}", short(&artifact))).await;
        self.resolve_images(&mut manifest.processes, &opts.dir, progress)
            .await?;

        let release = Release {
            app: app.clone(),
            version: 0,
            artifact,
            env,
            processes: manifest.processes.clone(),
            hosts: manifest.hosts.clone(),
            tls,
            created_at: 0,
            description: "deploy".into(),
            manifest_env: manifest.env.clone(),
            secrets,
            rotate: manifest.rotate.clone(),
            secrets_as_files: manifest.secrets_as_files,
            route: manifest.route.clone(),
        };
        let (version, events) = self.start_rollout(
            &app,
            Target::New(Box::new(release)),
            "deploy".into(),
            |_| {},
        )?;
        drop(busy);
        self.announce_and_wait(&app, version, events, opts.detach, progress)
            .await
    }

    /// Unpacks the OCI images the processes run on (once per layer) and records what
    /// they resolved to, so that every replica of the release gets the same layers.
    async fn resolve_images(
        &self,
        processes: &mut BTreeMap<wharf_types::ProcessType, wharf_types::ProcessSpec>,
        dir: &Path,
        progress: &Progress,
    ) -> Result<(), ControlError> {
        for spec in processes.values_mut() {
            let Some(image) = spec.image.as_mut() else {
                continue;
            };
            let (layout, reference, base) = (
                self.inner.layout.clone(),
                image.reference.clone(),
                dir.to_path_buf(),
            );
            let resolved = tokio::task::spawn_blocking(move || {
                wharf_runtime::image::resolve(&layout, &reference, &base)
            })
            .await
            .map_err(|e| ControlError::internal(format!("image task failed: {e}")))?
            .map_err(|e| ControlError::bad_input(format!("{e}; nothing was changed")))?;
            progress
                .say(format!(
                    "image {} is {} ({} layers)",
                    resolved.reference,
                    short(&resolved.digest),
                    resolved.layers.len()
                ))
                .await;
            *image = resolved;
        }
        Ok(())
    }

    pub(crate) async fn announce_and_wait(
        &self,
        app: &AppName,
        version: u32,
        events: Events,
        detach: bool,
        progress: &Progress,
    ) -> Result<(), ControlError> {
        progress
            .say(format!("release v{version} created; rolling out"))
            .await;
        if detach {
            progress
                .send(DeployEvent::Done {
                    app: app.to_string(),
                    release: version,
                    url: self.inner.url(app),
                })
                .await;
            return Ok(());
        }
        self.wait_rollout(app, version, events, progress).await
    }

    async fn build(
        &self,
        app: &AppName,
        version: u32,
        dir: &Path,
        command: Option<String>,
        env: BTreeMap<String, String>,
        progress: &Progress,
    ) -> Result<String, ControlError> {
        let layout = self.inner.layout.clone();
        let log = layout.build_log(app, version);
        let src = dir.to_path_buf();
        let tx = progress.0.clone();
        let runner = crate::oneoff::BuildRunner::new(self.inner.clone(), app.clone(), version);
        let res = tokio::task::spawn_blocking(move || {
            let spec = BuildSpec {
                src: &src,
                command: command.as_deref(),
                env: &env,
                log: &log,
            };
            build::build(&layout, &spec, &runner, &mut |line| {
                let _ = tx.blocking_send(DeployEvent::Build {
                    line: line.to_string(),
                });
            })
        })
        .await
        .map_err(|e| ControlError::internal(format!("build task failed: {e}")))?;
        match res {
            Ok(a) => Ok(a.hash),
            Err(BuildError::Failed {
                command,
                status,
                tail,
            }) => Err(ControlError::failed(format!(
                "build failed: `{command}` {status}; nothing was changed\n{}",
                tail.join("\n")
            ))),
            Err(e) => Err(ControlError::failed(format!(
                "build failed: {e}; nothing was changed"
            ))),
        }
    }

    /// Makes `release` (a new release, or an existing version to go back to) the
    /// app's target and starts its rollout. A rollout still in progress is superseded:
    /// the new one starts from the last release that fully rolled out.
    pub(crate) fn start_rollout(
        &self,
        app: &AppName,
        target: Target,
        cause: String,
        edit: impl FnOnce(&mut AppRecord),
    ) -> Result<(u32, Events), ControlError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let events = self.subscribe();
        let (version, superseded) = inner.update(app, |current| {
            let mut rec = current.unwrap_or_else(|| AppRecord::new(app.clone(), now));
            edit(&mut rec);
            let (version, new_release) = match target {
                Target::New(release) => {
                    let mut release = *release;
                    rec.latest += 1;
                    release.version = rec.latest;
                    release.created_at = now;
                    // Keep the formation in step with process types that exist in this release.
                    rec.formation
                        .retain(|p, _| release.processes.contains_key(p));
                    (release.version, Some(release))
                }
                Target::Existing(v) => (v, None),
            };
            let superseded = rec
                .rollout
                .as_ref()
                .filter(|r| r.reverting.is_none() && r.release != version)
                .map(|r| r.release);
            let from = if superseded.is_some() {
                rec.last_good
            } else {
                rec.target
            };
            rec.rollout = Some(Rollout::new(version, from, now, cause));
            rec.target = Some(version);
            Ok((rec, new_release, (version, superseded)))
        })?;
        if let Some(old) = superseded {
            inner.emit(Event::RolloutSuperseded {
                app: app.clone(),
                release: old,
                by: version,
            });
        }
        Ok((version, events))
    }

    /// Streams the rollout of `version` until its outcome.
    async fn wait_rollout(
        &self,
        app: &AppName,
        version: u32,
        mut events: Events,
        progress: &Progress,
    ) -> Result<(), ControlError> {
        let inner = &self.inner;
        loop {
            let event = match events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return Err(ControlError::internal("controller stopped")),
            };
            if event.app() != app {
                continue;
            }
            match event {
                Event::Progress { message, .. } => progress.say(message).await,
                Event::RolloutSucceeded { release, .. } if release == version => {
                    progress
                        .send(DeployEvent::Done {
                            app: app.to_string(),
                            release,
                            url: inner.url(app),
                        })
                        .await;
                    return Ok(());
                }
                Event::RolloutSuperseded { release, by, .. } if release == version => {
                    return Err(ControlError::conflict(format!(
                        "the rollout of v{version} was superseded by v{by}, which rolls out now"
                    )));
                }
                Event::RolloutFailed {
                    release,
                    reason,
                    replica,
                    logs,
                    ..
                } if release == version => {
                    let back = inner.app(app).and_then(|a| a.target);
                    let reason = match back {
                        Some(v) => format!("{reason}; rolled back to v{v}, which keeps serving"),
                        None => {
                            format!("{reason}; nothing was serving before, so nothing serves now")
                        }
                    };
                    progress
                        .send(DeployEvent::Failed {
                            reason,
                            kind: ErrorKind::Failed,
                            replica,
                            logs,
                            manifest: None,
                        })
                        .await;
                    return Ok(());
                }
                _ => {}
            }
        }
    }

    /// Rolls back to `to` (default: the release that served before the current one):
    /// that release becomes the target again, with its artifact and config, through the
    /// same rollout rules as a deploy. A blue-green warm set makes this instant.
    pub async fn rollback(&self, app: &AppName, to: Option<u32>, progress: Progress) {
        let res = async {
            let started = {
                let _busy = Busy::take(&self.inner, app)?;
                let rec = self.inner.app(app).ok_or_else(|| no_app(app))?;
                let current = rec.target.ok_or_else(|| ControlError::bad_input(format!("{app} has no running release to roll back from")))?;
                let to = match to.or(rec.previous) {
                    Some(v) => v,
                    None => return Err(ControlError::bad_input(format!("{app} has no earlier release that served; name one: `wharf rollback {app} vN`"))),
                };
                if to == current {
                    return Err(ControlError::bad_input(format!("{app} already runs v{to}")));
                }
                let old = self.inner.release(app, to).ok_or_else(|| ControlError::not_found(format!("{app} has no release v{to}; see `wharf releases {app}`")))?;
                // The app's config follows the release rolled back to.
                let config: BTreeMap<String, String> = old.env.iter().filter(|(k, v)| old.manifest_env.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
                // So do its secret versions (staged changes are dropped).
                let secrets = old.secrets.clone();
                self.start_rollout(app, Target::Existing(to), format!("rollback from v{current}"), |r| {
                    r.config = config;
                    r.secrets = secrets;
                })?
            };
            progress.say(format!("rolling back to v{}", started.0)).await;
            self.wait_rollout(app, started.0, started.1, &progress).await
        }
        .await;
        if let Err(e) = res {
            progress.fail(&e).await;
        }
    }

    /// Sets and unsets config vars: a new release with the current artifact.
    pub async fn configure(
        &self,
        app: &AppName,
        set: BTreeMap<String, String>,
        unset: Vec<String>,
        progress: Progress,
    ) {
        let res = async {
            for k in set.keys() {
                check_env_name(k)?;
            }
            let busy = Busy::take(&self.inner, app)?;
            let mut rec = self.inner.app(app).ok_or_else(|| no_app(app))?;
            let base = rec
                .target
                .or(Some(rec.latest))
                .and_then(|v| self.inner.release(app, v))
                .ok_or_else(|| {
                    ControlError::bad_input(format!("{app} has no release yet; deploy it first"))
                })?;
            for k in &unset {
                if !rec.config.contains_key(k) {
                    if base.manifest_env.contains_key(k) {
                        return Err(ControlError::bad_input(format!(
                            "{k} comes from the manifest's [env]; remove it there and deploy"
                        )));
                    }
                    return Err(ControlError::bad_input(format!("{k} is not set on {app}")));
                }
            }
            if set.iter().all(|(k, v)| rec.config.get(k) == Some(v)) && unset.is_empty() {
                return Err(ControlError::bad_input(
                    "nothing changes: every variable already has that value",
                ));
            }
            for k in &unset {
                rec.config.remove(k);
            }
            rec.config.extend(set.clone());
            let mut env = base.manifest_env.clone();
            env.extend(rec.config.clone());
            let mut release = (*base).clone();
            release.env = env;
            release.secrets = rec.secrets.clone();
            let mut what: Vec<String> = set.keys().map(|k| format!("set {k}")).collect();
            what.extend(unset.iter().map(|k| format!("unset {k}")));
            release.description = format!("config {}", what.join(", "));
            let cause = release.description.clone();
            let (version, events) =
                self.start_rollout(app, Target::New(Box::new(release)), cause, |r| {
                    r.config = rec.config
                })?;
            drop(busy);
            self.announce_and_wait(app, version, events, false, &progress)
                .await
        }
        .await;
        if let Err(e) = res {
            progress.fail(&e).await;
        }
    }

    /// Sets replica counts of process types of the current release.
    pub fn scale(
        &self,
        app: &AppName,
        counts: &BTreeMap<String, u32>,
    ) -> Result<BTreeMap<String, u32>, ControlError> {
        let inner = &self.inner;
        if counts.is_empty() {
            return Err(ControlError::bad_input(
                "nothing to scale; use TYPE=N, e.g. web=3",
            ));
        }
        let scaled = inner.modify(app, |rec| {
            let release = rec
                .target
                .and_then(|v| inner.release(app, v))
                .ok_or_else(|| {
                    ControlError::bad_input(format!(
                        "{app} has no running release; deploy it first"
                    ))
                })?;
            for (p, n) in counts {
                let ptype = ProcessType::new(p.clone())
                    .map_err(|e| ControlError::bad_input(e.to_string()))?;
                if !release.processes.contains_key(&ptype) {
                    let known: Vec<&str> = release.processes.keys().map(|k| k.as_str()).collect();
                    return Err(ControlError::bad_input(format!(
                        "{app} has no process type `{p}` in v{}; it has: {}",
                        release.version,
                        known.join(", ")
                    )));
                }
                if *n > wharf_types::manifest::MAX_REPLICAS {
                    return Err(ControlError::bad_input(format!(
                        "{n} replicas is more than the limit of {}",
                        wharf_types::manifest::MAX_REPLICAS
                    )));
                }
                rec.formation.insert(ptype, *n);
            }
            Ok(release
                .processes
                .iter()
                .map(|(p, s)| (p.to_string(), rec.desired(p, s)))
                .collect())
        })?;
        scaled.ok_or_else(|| no_app(app))
    }

    /// Stops every replica of the app and forgets it (releases, config, logs).
    pub async fn destroy(&self, app: &AppName) -> Result<(), ControlError> {
        let inner = &self.inner;
        let _busy = Busy::take(inner, app)?;
        if inner.app(app).is_none() {
            return Err(no_app(app));
        }
        inner.store.delete(app)?;
        inner
            .apps
            .lock()
            .map_err(ControlError::poisoned)?
            .remove(app);
        inner
            .releases
            .lock()
            .map_err(ControlError::poisoned)?
            .retain(|(a, _), _| a != app);
        inner.wake.notify_one();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            let left = inner
                .state
                .lock()
                .map(|s| s.entries.keys().any(|(a, _)| a == app))
                .unwrap_or(false);
            if !left {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ControlError::failed(format!(
                    "{app} was removed but some replicas are still stopping; see `wharf ps`"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let _ = std::fs::remove_dir_all(inner.layout.app_logs_dir(app));
        Ok(())
    }
}

pub(crate) fn no_app(app: &AppName) -> ControlError {
    ControlError::not_found(format!("no app named {app}; see `wharf apps`"))
}

fn short(hash: &str) -> &str {
    hash.get(..19).unwrap_or(hash)
}

pub(crate) fn check_env_name(k: &str) -> Result<(), ControlError> {
    if !wharf_types::manifest::valid_env_name(k) {
        return Err(ControlError::bad_input(format!(
            "invalid variable name {k:?}; use letters, digits and '_', not starting with a digit"
        )));
    }
    if k == "PORT" || k.starts_with("WHARF_") {
        return Err(ControlError::bad_input(format!(
            "{k} is set by wharf and cannot be configured"
        )));
    }
    Ok(())
}
