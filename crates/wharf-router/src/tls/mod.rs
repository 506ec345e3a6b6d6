//! HTTPS for the router: the server config (TLS 1.2 and 1.3 only, ALPN `h2` and
//! `http/1.1`), the certificate sources and the hot-swappable resolver over them.
//!
//! Sources, by SNI name ([`resolver`]): certificate files named by a route
//! (`[route] tls`), ACME certificates ([`acme`], HTTP-01), and the router's internal CA
//! ([`internal_ca`]) for `*.localhost` and routed hosts nothing else covers.
//!
//! Invariants:
//! - Certificate files are read by the router, from the absolute paths in the route
//!   table; their private keys are never copied into the store. A file that changes on
//!   disk is reloaded within [`TlsOptions::reload_every`]; a file that fails to load
//!   keeps the last good certificate in service (and is logged).
//! - A certificate change affects new handshakes only; open connections keep theirs.

pub(crate) mod acme;
mod acme_http;
mod acme_state;
pub(crate) mod files;
pub(crate) mod internal_ca;
pub(crate) mod resolver;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use wharf_types::api::CertificateStatus;
use wharf_types::route::RouteTable;

pub use acme::AcmeOptions;
pub use internal_ca::write_file;

use crate::error::TlsError;
use crate::headers::normalize_host;
use files::{Loaded, Pair, Stamp};
use resolver::{Resolver, Snapshot};

/// Settings of the router's HTTPS side.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Where the internal CA lives (`DATA/tls`); ACME state goes in `DIR/acme`.
    pub dir: PathBuf,
    /// Upper bound on a client's TLS handshake; then the connection is dropped.
    pub handshake_timeout: Duration,
    /// How often certificate files are checked for changes.
    pub reload_every: Duration,
    /// ACME for routed real domain names without certificate files; `None`: off.
    pub acme: Option<AcmeOptions>,
}

impl TlsOptions {
    /// Defaults: 10 s handshakes, files checked every 5 s.
    pub fn new(dir: impl Into<PathBuf>) -> TlsOptions {
        TlsOptions {
            dir: dir.into(),
            handshake_timeout: Duration::from_secs(10),
            reload_every: Duration::from_secs(5),
            acme: None,
        }
    }
}

/// The router's certificates and TLS server config. Share it as `Arc<Tls>`.
pub struct Tls {
    resolver: Arc<Resolver>,
    config: Arc<ServerConfig>,
    pub(crate) options: TlsOptions,
    files: Mutex<FileState>,
    pub(crate) acme: Option<Arc<acme::Acme>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The routes' certificate files, as last published, and what was loaded from them.
#[derive(Default)]
struct FileState {
    /// (normalized hosts, certificate files) of every route.
    routes: Vec<(Vec<String>, Option<Pair>)>,
    /// Last load of each pair.
    loaded: HashMap<Pair, Load>,
}

/// The stamps of a pair's files at the last load attempt, its last good result, and
/// why the last attempt failed if it did.
#[derive(Default)]
struct Load {
    at: Option<(Option<Stamp>, Option<Stamp>)>,
    good: Option<Loaded>,
    error: Option<String>,
}

pub(crate) fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Tls {
    /// Loads (or makes, the first time) the internal CA in `options.dir`.
    pub fn new(options: TlsOptions) -> Result<Arc<Tls>, TlsError> {
        let ca = internal_ca::InternalCa::load_or_create(&options.dir)?;
        let resolver = Arc::new(Resolver::new(ca)?);
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if let Some(acme_options) = &options.acme {
            // Fail at start, not at the first order, when the trust for the ACME server
            // cannot be read.
            acme_http::AcmeHttp::new(acme_options.ca.as_deref())?;
        }
        let acme = options.acme.clone().map(|acme_options| {
            let dir = options.dir.join("acme");
            Arc::new(acme::Acme::new(acme_options, dir, resolver.clone()))
        });
        Ok(Arc::new(Tls {
            resolver,
            config: Arc::new(config),
            options,
            files: Mutex::new(FileState::default()),
            acme,
        }))
    }

    /// The internal CA's certificate (PEM), for clients to trust.
    pub fn ca_cert(&self) -> &Path {
        self.resolver.ca.cert_path()
    }

    /// What is served for each of `hosts` (route hosts, `*.domain` included): the
    /// certificate's source and expiry, and ACME's progress where ACME manages the host.
    pub fn certificates(&self, hosts: &[String]) -> Vec<CertificateStatus> {
        hosts
            .iter()
            .map(|host| {
                let name = normalize_host(host);
                let (source, key) = self.resolver.source(&name);
                let not_after = key
                    .and_then(|key| files::not_after(&key))
                    .and_then(|s| u64::try_from(s).ok())
                    .map(|s| s.saturating_mul(1000));
                CertificateStatus {
                    host: host.clone(),
                    source,
                    not_after,
                    files_error: self.files_error(&name),
                    acme: self.acme.as_ref().and_then(|acme| acme.status(&name)),
                }
            })
            .collect()
    }

    /// What is wrong with the certificate files of the route(s) of `host`
    /// (normalized): the last load failed, or the certificate does not name the host
    /// (not said of `.localhost` names, which the local CA serves by design).
    fn files_error(&self, host: &str) -> Option<String> {
        let state = self.files.lock().unwrap_or_else(|e| e.into_inner());
        state.routes.iter().find_map(|(hosts, pair)| {
            let pair = pair.as_ref().filter(|_| hosts.iter().any(|h| h == host))?;
            let load = state.loaded.get(pair)?;
            match (&load.error, &load.good) {
                (Some(error), Some(_)) => Some(format!(
                    "{error}; the last good certificate stays in service"
                )),
                (Some(error), None) => Some(format!(
                    "{error}; the local CA's certificate is served meanwhile"
                )),
                // `APP.localhost` is always routed and always the local CA's.
                (None, Some(good))
                    if !host.ends_with(".localhost")
                        && !good.names.iter().any(|n| files::covers(n, host)) =>
                {
                    Some(format!(
                        "{} does not name {host}; the local CA's certificate is served for it",
                        pair.cert.display()
                    ))
                }
                (None, _) => None,
            }
        })
    }

    /// The key authorization of an ACME HTTP-01 challenge in progress.
    pub(crate) fn acme_challenge(&self, token: &str) -> Option<String> {
        self.acme.as_ref()?.challenges.answer(token)
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// Takes the certificate files and hosts of a new route table.
    pub(crate) fn publish(&self, table: &RouteTable) {
        let mut state = self.files.lock().unwrap_or_else(|e| e.into_inner());
        state.routes = table
            .routes
            .iter()
            .map(|route| {
                let hosts = route
                    .hosts
                    .iter()
                    .map(|h| normalize_host(h).into_owned())
                    .collect();
                let pair = route.tls.files.as_ref().map(|f| Pair {
                    cert: f.cert.clone(),
                    key: f.key.clone(),
                });
                (hosts, pair)
            })
            .collect();
        self.rebuild(&mut state, true);
    }

    /// Reloads the certificate files that changed on disk since they were loaded.
    pub(crate) fn reload_changed(&self) {
        let mut state = self.files.lock().unwrap_or_else(|e| e.into_inner());
        self.rebuild(&mut state, false);
    }

    /// Loads what changed and swaps the resolver's snapshot when anything did (always
    /// when `force`).
    fn rebuild(&self, state: &mut FileState, force: bool) {
        let mut changed = force;
        let pairs: Vec<Pair> = state.routes.iter().filter_map(|(_, p)| p.clone()).collect();
        state.loaded.retain(|pair, _| pairs.contains(pair));
        for pair in pairs {
            let stamps = (files::stamp(&pair.cert), files::stamp(&pair.key));
            let entry = state.loaded.entry(pair.clone()).or_default();
            if entry.at == Some(stamps) || (entry.good.is_some() && stamps.0.is_none()) {
                // Unchanged, or being replaced: keep what was loaded.
                continue;
            }
            entry.at = Some(stamps);
            match files::load_pair(&pair.cert, &pair.key) {
                Ok(loaded) => {
                    tracing::info!(cert = %pair.cert.display(), names = ?loaded.names, "certificate loaded");
                    entry.good = Some(loaded);
                    entry.error = None;
                    changed = true;
                }
                Err(error) => {
                    tracing::warn!(%error, "certificate not loaded; the last good one (if any) stays in use");
                    entry.error = Some(error.to_string());
                }
            }
        }
        if !changed {
            return;
        }
        let mut next = Snapshot::default();
        let mut acme_names = std::collections::BTreeSet::new();
        for (hosts, pair) in &state.routes {
            let loaded = pair
                .as_ref()
                .and_then(|p| state.loaded.get(p))
                .and_then(|l| l.good.as_ref());
            for host in hosts {
                let (exact, routed) = match host.strip_prefix('*') {
                    Some(suffix) if suffix.starts_with('.') => (false, suffix.to_owned()),
                    _ => (true, host.clone()),
                };
                if exact {
                    next.routed.insert(routed.clone());
                } else {
                    next.routed_wildcards.insert(routed.clone());
                }
                let covered =
                    loaded.is_some_and(|l| l.names.iter().any(|n| files::covers(n, host)));
                if !covered && acme::eligible(host) {
                    acme_names.insert(host.clone());
                }
                let Some(loaded) = loaded else { continue };
                if !covered {
                    tracing::debug!(%host, "the route's certificate does not name this host");
                    continue;
                }
                let map = if exact {
                    &mut next.exact
                } else {
                    &mut next.wildcard
                };
                map.entry(routed).or_insert_with(|| loaded.key.clone());
            }
        }
        self.resolver.swap(next);
        if let Some(acme) = &self.acme {
            acme.want(acme_names);
        }
    }
}

/// Checks that `cert` and `key` are readable PEM files that belong together (what the
/// router will load for a route with `[route] tls`).
pub fn check_files(cert: &Path, key: &Path) -> Result<(), TlsError> {
    files::load_pair(cert, key).map(|_| ())
}
