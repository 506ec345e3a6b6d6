//! ACME (RFC 8555) with HTTP-01 challenges, for routed hosts that are real domain names
//! without certificate files.
//!
//! The manager runs next to the TLS listener. It learns the wanted names from each
//! published route table, orders a certificate for each name that has none or whose
//! renewal is due (two thirds into its lifetime), answers the CA's validation requests
//! through [`Challenges`] (served by the plaintext listener at
//! `/.well-known/acme-challenge/TOKEN`), and hands new certificates to the resolver.
//!
//! Invariants:
//! - Serving never waits for ACME: a name without its certificate yet is served with
//!   the local CA's, and a failure only logs (WARN) and retries with backoff (10 s
//!   doubling to 1 h, see [`acme_state`](super::acme_state)), never touching what is
//!   served. The last failure, explained, and the next attempt are kept per name for
//!   `wharf status` ([`Acme::status`]).
//! - Decisions take the time from a `Clock` (`wharf_core`); only the waiting sleeps.
//! - State lives in `DATA/tls/acme/`: `account.json` (the account key; 0600) and
//!   `NAME/key.pem` (0600) + `NAME/cert.pem`, the key written before the certificate so
//!   a certificate on disk always has its key. Loaded back at start: no re-issuing on
//!   restart.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use wharf_core::clock::{Clock, SystemClock};
use wharf_types::api::AcmeStatus;

use super::acme_state::{problem_text, Failure, NameState};
use super::files::{self, Loaded};
use super::internal_ca::write;
use super::resolver::Resolver;
use crate::error::TlsError;

/// How often the manager wakes to check renewals when nothing else wakes it.
const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// Upper bound on the CA validating the challenges, and on issuing the certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the ACME server is and how to reach it.
#[derive(Debug, Clone)]
pub struct AcmeOptions {
    /// The directory URL (`https://acme-v02.api.letsencrypt.org/directory`).
    pub directory: String,
    /// Contact address for the account (`mailto:` is added).
    pub email: Option<String>,
    /// CA certificates (PEM) to trust for the ACME server's own HTTPS instead of the
    /// system's (a test CA such as pebble's).
    pub ca: Option<PathBuf>,
}

/// Key authorizations of the HTTP-01 challenges in progress, by token.
#[derive(Debug, Default)]
pub(crate) struct Challenges(RwLock<HashMap<String, String>>);

impl Challenges {
    /// The key authorization for `token`, while its challenge is in progress.
    pub(crate) fn answer(&self, token: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    fn set(&self, token: &str, key_authorization: Option<String>) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        match key_authorization {
            Some(value) => map.insert(token.to_owned(), value),
            None => map.remove(token),
        };
    }
}

/// Removes the challenges of an order when the order is done, however it ends.
struct Published<'c> {
    challenges: &'c Challenges,
    tokens: Vec<String>,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.challenges.set(token, None);
        }
    }
}

/// Whether `host` (normalized) is a name ACME can get a certificate for by HTTP-01:
/// a real DNS name, not a wildcard, an IP or a `.localhost` name.
pub(crate) fn eligible(host: &str) -> bool {
    host.contains('.')
        && !host.starts_with("*.")
        && host != "localhost"
        && !host.ends_with(".localhost")
        && host.parse::<std::net::IpAddr>().is_err()
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

pub(crate) struct Acme {
    options: AcmeOptions,
    dir: PathBuf,
    pub(crate) challenges: Arc<Challenges>,
    resolver: Arc<Resolver>,
    wanted: watch::Sender<BTreeSet<String>>,
    /// Certificate in service and order history, per name.
    names: RwLock<HashMap<String, NameState>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Acme {
    /// The manager, with the certificates already in `dir` given to the resolver.
    pub(crate) fn new(options: AcmeOptions, dir: PathBuf, resolver: Arc<Resolver>) -> Acme {
        let acme = Acme {
            options,
            dir,
            challenges: Arc::new(Challenges::default()),
            resolver,
            wanted: watch::Sender::new(BTreeSet::new()),
            names: RwLock::new(HashMap::new()),
            clock: Arc::new(SystemClock),
        };
        if let Ok(entries) = std::fs::read_dir(&acme.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if !path.is_dir() || !eligible(&name) {
                    continue;
                }
                match files::load_pair(&path.join("cert.pem"), &path.join("key.pem")) {
                    Ok(loaded) => acme.install(&name, &loaded),
                    Err(error) => {
                        tracing::warn!(%name, %error, "stored ACME certificate not loaded; ordering a new one")
                    }
                }
            }
        }
        acme
    }

    /// The names that should have ACME certificates (from the latest route table).
    pub(crate) fn want(&self, names: BTreeSet<String>) {
        self.wanted.send_if_modified(|current| {
            let changed = *current != names;
            *current = names;
            changed
        });
    }

    fn install(&self, name: &str, loaded: &Loaded) {
        self.resolver.set_acme(name, loaded.key.clone());
        self.update(name, |state| {
            state.issued(loaded.not_before, loaded.not_after)
        });
    }

    /// Changes the state of `name` (made on first use).
    fn update<T>(&self, name: &str, change: impl FnOnce(&mut NameState) -> T) -> T {
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        change(names.entry(name.to_owned()).or_default())
    }

    /// ACME's progress for `name`, when it is one the routes want a certificate for.
    pub(crate) fn status(&self, name: &str) -> Option<AcmeStatus> {
        if !self.wanted.borrow().contains(name) {
            return None;
        }
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        Some(names.get(name).cloned().unwrap_or_default().status())
    }

    /// Orders and renews certificates until the task is dropped.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut wanted = self.wanted.subscribe();
        let mut account: Option<Account> = None;
        loop {
            let names = wanted.borrow_and_update().clone();
            {
                let mut states = self.names.write().unwrap_or_else(|e| e.into_inner());
                for (name, state) in states.iter_mut() {
                    if !names.contains(name) {
                        state.forget_failures();
                    }
                }
            }
            let mut wait = CHECK_EVERY;
            for name in &names {
                let now = self.clock.now();
                let next = self.update(name, |state| state.next_at());
                if next > now {
                    wait = wait.min(Duration::from_millis(next - now));
                    continue;
                }
                self.update(name, |state| state.ordering = true);
                let result = self.issue(&mut account, name).await;
                let now = self.clock.now();
                let next = match result {
                    Ok(loaded) => {
                        tracing::info!(%name, not_after = loaded.not_after, "ACME certificate issued");
                        self.install(name, &loaded);
                        self.update(name, |state| state.next_at())
                    }
                    Err(failure) => {
                        if matches!(failure, Failure::Unreachable { .. }) {
                            // The next attempt sets the account up again.
                            account = None;
                        }
                        let at = self.update(name, |state| state.failed(now, &failure, name));
                        let error = failure.explain(name);
                        tracing::warn!(%name, %error, retry_in_s = at.saturating_sub(now) / 1000, "ACME certificate not issued; serving the local CA's certificate meanwhile");
                        at
                    }
                };
                wait = wait.min(Duration::from_millis(next.saturating_sub(now).max(1000)));
            }
            tokio::select! {
                changed = wanted.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The account: loaded from `account.json` when it belongs to this directory, else
    /// created (and saved, 0600).
    async fn account(&self) -> Result<Account, TlsError> {
        let path = self.dir.join("account.json");
        let http = || -> Result<Box<super::acme_http::AcmeHttp>, TlsError> {
            Ok(Box::new(super::acme_http::AcmeHttp::new(
                self.options.ca.as_deref(),
            )?))
        };
        if let Ok(text) = std::fs::read_to_string(&path) {
            match serde_json::from_str::<Stored>(&text) {
                Ok(stored) if stored.directory == self.options.directory => {
                    return Ok(Account::builder_with_http(http()?)
                        .from_credentials(stored.credentials)
                        .await?);
                }
                Ok(_) => tracing::info!("ACME directory changed; creating a new account"),
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "unreadable ACME account; creating a new one")
                }
            }
        }
        let contact = self.options.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = Account::builder_with_http(http()?)
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.options.directory.clone(),
                None,
            )
            .await?;
        let stored = Stored {
            directory: self.options.directory.clone(),
            credentials,
        };
        let text = serde_json::to_string(&stored).map_err(|e| TlsError::Acme(e.to_string()))?;
        create_dir(&self.dir)?;
        write(&path, text.as_bytes(), 0o600)?;
        tracing::info!(directory = %self.options.directory, "ACME account created");
        Ok(account)
    }

    /// One order for `name`: challenges answered over HTTP-01, key and CSR made here,
    /// certificate and key saved.
    async fn issue(&self, account: &mut Option<Account>, name: &str) -> Result<Loaded, Failure> {
        let directory = self.options.directory.as_str();
        let acme = |e: instant_acme::Error| Failure::from_acme(e, directory);
        let other = |e: TlsError| match e {
            TlsError::AcmeProtocol(e) => Failure::from_acme(e, directory),
            e => Failure::Other(e.to_string()),
        };
        let acct = match account {
            Some(acct) => acct.clone(),
            None => {
                let acct = self.account().await.map_err(other)?;
                *account = Some(acct.clone());
                acct
            }
        };
        let identifiers = [Identifier::Dns(name.to_owned())];
        let mut order = acct
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(acme)?;
        let mut published = Published {
            challenges: &self.challenges,
            tokens: Vec::new(),
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(acme)?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(Failure::Validation(format!(
                        "the CA says the authorization is {other:?}"
                    )))
                }
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| Failure::Refused("the CA offers no http-01 challenge".into()))?;
            let token = challenge.token.clone();
            self.challenges.set(
                &token,
                Some(challenge.key_authorization().as_str().to_owned()),
            );
            published.tokens.push(token);
            challenge.set_ready().await.map_err(acme)?;
        }
        let retries = RetryPolicy::new().timeout(ORDER_TIMEOUT);
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(|e| Failure::from_validation(e, directory))?;
        drop(published);
        if status != OrderStatus::Ready {
            return Err(Failure::Validation(why_invalid(&mut order, status).await));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| other(e.into()))?;
        let mut params =
            rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| other(e.into()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| other(e.into()))?;
        order.finalize_csr(csr.der()).await.map_err(acme)?;
        let chain_pem = order.poll_certificate(&retries).await.map_err(acme)?;

        let dir = self.dir.join(name);
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure::Other(format!("the CA sent an unreadable chain: {e:?}")))?;
        if chain.is_empty() {
            return Err(Failure::Other("the CA sent no certificate".into()));
        }
        let private = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| Failure::Other(format!("the new key: {e}")))?;
        let loaded = files::certified(chain, private, &cert_path, &key_path).map_err(other)?;
        create_dir(&dir).map_err(other)?;
        write(&key_path, key.serialize_pem().as_bytes(), 0o600).map_err(other)?;
        write(&cert_path, chain_pem.as_bytes(), 0o644).map_err(other)?;
        Ok(loaded)
    }
}

/// Why an order ended `status` instead of ready: the CA's words on the failed
/// challenges (fetched again), else on the order.
async fn why_invalid(order: &mut Order, status: OrderStatus) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(problem_text(problem));
            }
        }
    }
    if reasons.is_empty() {
        if let Some(problem) = &order.state().error {
            reasons.push(problem_text(problem));
        }
    }
    if reasons.is_empty() {
        format!("the order is {status:?}")
    } else {
        reasons.join("; ")
    }
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// `account.json`: the credentials and the directory they belong to.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    directory: String,
    credentials: AccountCredentials,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_names_are_ordered() {
        assert!(eligible("shop.example.com"));
        assert!(eligible("xn--bcher-kva.example"));
        for name in [
            "localhost",
            "a.localhost",
            "*.example.com",
            "127.0.0.1",
            "[::1]",
            "intranet",
        ] {
            assert!(!eligible(name), "{name}");
        }
    }

    #[test]
    fn challenges_are_answered_while_published() {
        let challenges = Challenges::default();
        {
            let published = Published {
                challenges: &challenges,
                tokens: vec!["tok".into()],
            };
            challenges.set("tok", Some("tok.thumb".into()));
            assert_eq!(challenges.answer("tok").as_deref(), Some("tok.thumb"));
            drop(published);
        }
        assert_eq!(challenges.answer("tok"), None);
    }
}
