//! wharf-controller: the control plane's event loop.
//!
//! User actions (deploy, scale, config, secrets, rollback, destroy) write desired state to the
//! store and wake the loop; every tick the loop observes the world (replica exits, probe
//! verdicts), asks `wharf_core::plan()` what to do, executes the actions through the
//! ports (runtime, route sink, store) and publishes the route table.
//!
//! Invariants: the store is written before an action is acknowledged; observed state is
//! rebuilt from the world at start (re-adoption), never trusted from the store; a replica
//! leaves the route table before it is signalled; every timing decision uses the Clock;
//! secret values are decrypted only to start a replica and live only in memory; every
//! change to an app record is one serialized read-modify-write (`Inner::update`), so the
//! loop and user actions never overwrite each other's changes.

mod access;
mod actions;
mod claims;
mod desired;
mod env;
mod error;
mod events;
mod oneoff;
mod probe;
mod probing;
mod query;
mod reconcile;
mod releases;
mod rotation;
mod route_tls;
mod secrets;
mod state;
mod stopper;

pub use error::{ControlError, Kind};
pub use events::Event;
pub use releases::{load_manifest, DeployOptions, Progress};
pub use secrets::TICKET_VAR;

pub use wharf_runtime::logs;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, Notify};
use wharf_core::ports::{RouteSink, Runtime, Store, Vault};
use wharf_core::Clock;
use wharf_runtime::Layout;
use wharf_types::{AppName, AppRecord, Release};

/// Static settings of a controller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The router's public port, for the URLs shown to users (`http://A.localhost:PORT`).
    pub public_port: u16,
    /// Reconcile period when nothing wakes the loop earlier.
    pub tick: std::time::Duration,
    /// How replicas of releases with secrets get them; `None`: such replicas fail to
    /// start with a clear reason.
    pub secret_env: Option<SecretEnv>,
    /// Whether the runtime can give replicas their own network (`network = "isolated"`:
    /// the sandbox); deploys asking for it are refused otherwise.
    pub isolated_network: bool,
}

/// The helper that fetches a starting replica's secrets and execs the app:
/// `EXE secret-env CLAIM_ADDR COMMAND`, with a one-use ticket in `WHARF_SECRETS_TICKET`.
#[derive(Debug, Clone)]
pub struct SecretEnv {
    pub exe: std::path::PathBuf,
    /// Loopback `HOST:PORT` of the claim listener.
    pub claim: String,
    /// The claim listener of replicas with their own network, which cannot reach the
    /// host's loopback; `None`: their secrets cannot be delivered (said at start).
    pub isolated: Option<IsolatedClaim>,
}

/// Where replicas with `network = "isolated"` claim their secrets: a listener on the
/// host's side of their bridge, which the server binds when it is first needed (the
/// bridge exists only from the first isolated replica on).
#[derive(Clone)]
pub struct IsolatedClaim(pub Arc<dyn Fn() -> Result<String, String> + Send + Sync>);

impl IsolatedClaim {
    /// `HOST:PORT` of the listener, bound now if it was not yet.
    pub fn addr(&self) -> Result<String, String> {
        (self.0)()
    }
}

impl std::fmt::Debug for IsolatedClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IsolatedClaim")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            public_port: 8080,
            tick: std::time::Duration::from_millis(100),
            secret_env: None,
            isolated_network: false,
        }
    }
}

/// The control plane. Cheap to clone; all clones drive the same loop.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub vault: Arc<dyn Vault>,
    pub runtime: Arc<dyn Runtime>,
    pub routes: Arc<dyn RouteSink>,
    pub clock: Arc<dyn Clock>,
    pub layout: Layout,
    pub settings: Settings,
    pub state: Mutex<state::State>,
    /// App records and releases, mirrored from the store (the controller is its only writer).
    pub apps: Mutex<BTreeMap<AppName, AppRecord>>,
    pub releases: Mutex<BTreeMap<(AppName, u32), Arc<Release>>>,
    pub wake: Notify,
    pub events: broadcast::Sender<Event>,
    /// Held across each read-modify-write of an app record (see [`Inner::update`]).
    pub writes: Mutex<()>,
    /// Router counters at the start of each canary step.
    pub baselines: Mutex<desired::Baselines>,
    /// Apps with a release being created (deploy, config, rollback): one at a time.
    pub busy: Mutex<std::collections::BTreeSet<AppName>>,
    /// Decrypted secrets waiting for starting replicas, by ticket.
    pub tickets: Mutex<std::collections::HashMap<String, secrets::Ticket>>,
    /// Failed rotations: when to try again, per (app, secret).
    pub rotation_retry: Mutex<BTreeMap<(AppName, String), wharf_types::release::UnixMillis>>,
}

impl Controller {
    /// Loads desired state from the store and re-adopts running replicas. Call
    /// [`Controller::run`] to start reconciling.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        vault: Arc<dyn Vault>,
        runtime: Arc<dyn Runtime>,
        routes: Arc<dyn RouteSink>,
        clock: Arc<dyn Clock>,
        layout: Layout,
        settings: Settings,
    ) -> Result<Self, ControlError> {
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            store,
            vault,
            runtime,
            routes,
            clock,
            layout,
            settings,
            state: Mutex::new(state::State::default()),
            apps: Mutex::new(BTreeMap::new()),
            releases: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            events,
            writes: Mutex::new(()),
            baselines: Mutex::new(Default::default()),
            busy: Mutex::new(Default::default()),
            tickets: Mutex::new(Default::default()),
            rotation_retry: Mutex::new(BTreeMap::new()),
        });
        let c = Self { inner };
        c.load()?;
        c.adopt();
        Ok(c)
    }

    /// Runs the reconcile loop until `shutdown` resolves. Replicas keep running after it
    /// returns: they belong to the platform, not to this process.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let rotation = tokio::spawn(self.clone().rotation_loop());
        loop {
            self.tick();
            tokio::select! {
                _ = &mut shutdown => {
                    rotation.abort();
                    return;
                }
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(self.inner.settings.tick) => {}
            }
        }
    }

    /// Subscribes to platform events (rollout progress and outcomes).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    fn load(&self) -> Result<(), ControlError> {
        let apps = self.inner.store.apps()?;
        let mut map = self.inner.apps.lock().map_err(ControlError::poisoned)?;
        for app in apps {
            for r in self.inner.store.releases(&app.name)? {
                self.inner.cache_release(r);
            }
            map.insert(app.name.clone(), app);
        }
        Ok(())
    }
}

impl Inner {
    pub(crate) fn cache_release(&self, r: Release) -> Arc<Release> {
        let r = Arc::new(r);
        if let Ok(mut m) = self.releases.lock() {
            m.insert((r.app.clone(), r.version), Arc::clone(&r));
        }
        r
    }

    pub(crate) fn release(&self, app: &AppName, version: u32) -> Option<Arc<Release>> {
        self.releases
            .lock()
            .ok()?
            .get(&(app.clone(), version))
            .cloned()
    }

    pub(crate) fn app(&self, app: &AppName) -> Option<AppRecord> {
        self.apps.lock().ok()?.get(app).cloned()
    }

    /// Read-modify-write of one app record, serialized with every other writer (user
    /// actions and the control loop alike), so that none overwrites another's change
    /// with a stale copy. `edit` gets the current record (`None`: no such app) and
    /// returns the record to store, a new release to store with it, and a result; an
    /// error stores nothing. The store is written before the mirror, then the loop wakes.
    pub(crate) fn update<R>(
        &self,
        app: &AppName,
        edit: impl FnOnce(Option<AppRecord>) -> Result<(AppRecord, Option<Release>, R), ControlError>,
    ) -> Result<R, ControlError> {
        let _writer = self.writes.lock().map_err(ControlError::poisoned)?;
        let (rec, release, out) = edit(self.app(app))?;
        self.store.put(&rec, release.as_ref())?;
        if let Some(r) = release {
            self.cache_release(r);
        }
        self.apps
            .lock()
            .map_err(ControlError::poisoned)?
            .insert(rec.name.clone(), rec);
        self.wake.notify_one();
        Ok(out)
    }

    /// [`Inner::update`] of an existing app with an in-place edit; `Ok(None)` when the
    /// app is gone.
    pub(crate) fn modify<R>(
        &self,
        app: &AppName,
        edit: impl FnOnce(&mut AppRecord) -> Result<R, ControlError>,
    ) -> Result<Option<R>, ControlError> {
        let mut missing = false;
        let out = self.update(app, |rec| match rec {
            Some(mut rec) => {
                let out = edit(&mut rec)?;
                Ok((rec, None, Some(out)))
            }
            None => {
                missing = true;
                Err(ControlError::not_found(String::new()))
            }
        });
        match out {
            Err(_) if missing => Ok(None),
            other => other,
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    pub(crate) fn url(&self, app: &AppName) -> String {
        // An https_only app is shown with its HTTPS address.
        let https_only = self
            .app(app)
            .and_then(|a| a.target)
            .and_then(|v| self.release(app, v))
            .is_some_and(|r| r.tls.https_only);
        if let (true, Some(port)) = (https_only, self.routes.https_port()) {
            return match port {
                443 => format!("https://{app}.localhost"),
                p => format!("https://{app}.localhost:{p}"),
            };
        }
        match self.settings.public_port {
            80 => format!("http://{app}.localhost"),
            p => format!("http://{app}.localhost:{p}"),
        }
    }
}
