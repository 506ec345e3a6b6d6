//! Which certificate a TLS handshake gets, by SNI name; swapped whole when the route
//! table or a certificate changes, so a handshake sees one consistent set.
//!
//! Order: the route's certificate files (exact host, then the longest `*.domain`), an
//! ACME certificate for the exact name, then the internal CA: for `localhost`, names
//! under `.localhost` and routed hosts that nothing else covers it issues a certificate
//! on demand. Any other name, or no SNI at all, gets the internal CA's certificate for
//! `localhost` (a client checking names rejects it; nothing about the routed apps leaks).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use wharf_types::api::CertificateSource;

use super::internal_ca::InternalCa;
use crate::headers::normalize_host;

/// Certificates chosen from the route table (file certificates) and the hosts routed.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Exact host -> certificate of its route's files.
    pub(crate) exact: HashMap<String, Arc<CertifiedKey>>,
    /// `.domain` of a `*.domain` route host -> certificate of its route's files.
    pub(crate) wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Exact hosts routed (the internal CA may issue for them).
    pub(crate) routed: HashSet<String>,
    /// `.domain` of every `*.domain` routed.
    pub(crate) routed_wildcards: HashSet<String>,
}

impl Snapshot {
    /// The value for `host` in `exact`, else in `wildcard` by the longest suffix.
    fn find<'m, T>(
        host: &str,
        exact: &'m HashMap<String, T>,
        wildcard: &'m HashMap<String, T>,
    ) -> Option<&'m T> {
        exact.get(host).or_else(|| {
            host.char_indices()
                .filter(|&(i, c)| c == '.' && i > 0)
                .find_map(|(i, _)| wildcard.get(&host[i..]))
        })
    }

    fn routes(&self, host: &str) -> bool {
        self.routed.contains(host)
            || host
                .char_indices()
                .filter(|&(i, c)| c == '.' && i > 0)
                .any(|(i, _)| self.routed_wildcards.contains(&host[i..]))
    }
}

#[derive(Debug)]
pub(crate) struct Resolver {
    snapshot: RwLock<Arc<Snapshot>>,
    acme: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    pub(crate) ca: InternalCa,
    fallback: Arc<CertifiedKey>,
}

impl Resolver {
    pub(crate) fn new(ca: InternalCa) -> Result<Resolver, crate::error::TlsError> {
        let fallback = ca.leaf("localhost")?;
        Ok(Resolver {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            acme: RwLock::new(HashMap::new()),
            ca,
            fallback,
        })
    }

    /// Replaces the file certificates and routed hosts (new handshakes only).
    pub(crate) fn swap(&self, next: Snapshot) {
        // A poisoned lock only means a reader panicked; the Arc inside is intact.
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }

    /// Sets the ACME certificate of `name`.
    pub(crate) fn set_acme(&self, name: &str, key: Arc<CertifiedKey>) {
        let mut acme = self.acme.write().unwrap_or_else(|e| e.into_inner());
        acme.insert(name.to_owned(), key);
    }

    /// Where the certificate for SNI `name` (normalized) comes from, and the certificate
    /// when it is already made: what [`Resolver::pick`] would choose, without issuing.
    pub(crate) fn source(&self, name: &str) -> (CertificateSource, Option<Arc<CertifiedKey>>) {
        let snapshot = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(key) = Snapshot::find(name, &snapshot.exact, &snapshot.wildcard) {
            return (CertificateSource::Files, Some(key.clone()));
        }
        let acme = self.acme.read().unwrap_or_else(|e| e.into_inner());
        match acme.get(name) {
            Some(key) => (CertificateSource::Acme, Some(key.clone())),
            None => (CertificateSource::LocalCa, None),
        }
    }

    /// The certificate for SNI `name` (`None`: no SNI).
    pub(crate) fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else {
            return self.fallback.clone();
        };
        let name = normalize_host(name);
        let snapshot = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(key) = Snapshot::find(&name, &snapshot.exact, &snapshot.wildcard) {
            return key.clone();
        }
        if let Some(key) = self
            .acme
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&*name)
        {
            return key.clone();
        }
        let local = name == "localhost" || name.ends_with(".localhost");
        if local || snapshot.routes(&name) {
            match self.ca.leaf(&name) {
                Ok(key) => return key,
                Err(error) => tracing::warn!(%name, %error, "cannot issue a local certificate"),
            }
        }
        self.fallback.clone()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}
