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
//!   doubling to 1 h), never touching what is served.
//! - State lives in `DATA/tls/acme/`: `account.json` (the account key; 0600) and
//!   `NAME/key.pem` (0600) + `NAME/cert.pem`, the key written before the certificate so
//!   a certificate on disk always has its key. Loaded back at start: no re-issuing on
//!   restart.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use super::files::{self, Loaded};
use super::internal_ca::write;
use super::resolver::Resolver;
use crate::error::TlsError;

/// First retry after a failed order; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(3600);
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

/// When a certificate valid from `not_before` to `not_after` (Unix seconds) is renewed:
/// two thirds into its lifetime.
pub(crate) fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before).max(0) * 2 / 3
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
    /// Validity (not_before, not_after) of the certificate in service per name.
    issued: RwLock<HashMap<String, (i64, i64)>>,
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
            issued: RwLock::new(HashMap::new()),
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
        self.issued
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), (loaded.not_before, loaded.not_after));
    }

    /// Unix second at which `name` needs a (new) certificate: now when it has none.
    fn due(&self, name: &str) -> i64 {
        self.issued
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map_or(0, |&(from, to)| renew_at(from, to))
    }

    /// Orders and renews certificates until the task is dropped.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut wanted = self.wanted.subscribe();
        let mut account: Option<Account> = None;
        // name -> (next attempt, current backoff) after a failure
        let mut retry: HashMap<String, (Instant, Duration)> = HashMap::new();
        loop {
            let names = wanted.borrow_and_update().clone();
            retry.retain(|name, _| names.contains(name));
            let mut wait = CHECK_EVERY;
            for name in &names {
                let now = super::unix_now() as i64;
                let due = self.due(name);
                if due > now {
                    wait = wait.min(Duration::from_secs((due - now) as u64));
                    continue;
                }
                if let Some((at, _)) = retry.get(name) {
                    if let Some(left) = at.checked_duration_since(Instant::now()) {
                        wait = wait.min(left);
                        continue;
                    }
                }
                match self.issue(&mut account, name).await {
                    Ok(loaded) => {
                        tracing::info!(%name, not_after = loaded.not_after, "ACME certificate issued");
                        self.install(name, &loaded);
                        retry.remove(name);
                        let left = renew_at(loaded.not_before, loaded.not_after)
                            - super::unix_now() as i64;
                        wait = wait.min(Duration::from_secs(left.max(1) as u64));
                    }
                    Err(error) => {
                        let delay = retry
                            .get(name)
                            .map_or(RETRY_MIN, |(_, d)| (*d * 2).min(RETRY_MAX));
                        tracing::warn!(%name, %error, retry_in_s = delay.as_secs(), "ACME certificate not issued; serving the local CA's certificate meanwhile");
                        retry.insert(name.clone(), (Instant::now() + delay, delay));
                        wait = wait.min(delay);
                    }
                }
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
    async fn issue(&self, account: &mut Option<Account>, name: &str) -> Result<Loaded, TlsError> {
        let acct = match account {
            Some(acct) => acct.clone(),
            None => {
                let acct = self.account().await?;
                *account = Some(acct.clone());
                acct
            }
        };
        let identifiers = [Identifier::Dns(name.to_owned())];
        let mut order = acct.new_order(&NewOrder::new(&identifiers)).await?;
        let mut published = Published {
            challenges: &self.challenges,
            tokens: Vec::new(),
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(TlsError::Acme(format!("authorization is {other:?}"))),
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| TlsError::Acme("the CA offers no http-01 challenge".into()))?;
            let token = challenge.token.clone();
            self.challenges.set(
                &token,
                Some(challenge.key_authorization().as_str().to_owned()),
            );
            published.tokens.push(token);
            challenge.set_ready().await?;
        }
        let retries = RetryPolicy::new().timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&retries).await?;
        drop(published);
        if status != OrderStatus::Ready {
            return Err(TlsError::Acme(format!(
                "order is {status:?}: the CA could not fetch http://{name}/.well-known/acme-challenge/...; check that {name} resolves to this machine and that port 80 reaches the router's --listen"
            )));
        }
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key)?;
        order.finalize_csr(csr.der()).await?;
        let chain_pem = order.poll_certificate(&retries).await?;

        let dir = self.dir.join(name);
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Acme(format!("the CA sent an unreadable chain: {e:?}")))?;
        if chain.is_empty() {
            return Err(TlsError::Acme("the CA sent no certificate".into()));
        }
        let private = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| TlsError::Acme(format!("the new key: {e}")))?;
        let loaded = files::certified(chain, private, &cert_path, &key_path)?;
        create_dir(&dir)?;
        write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write(&cert_path, chain_pem.as_bytes(), 0o644)?;
        Ok(loaded)
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
    fn renewal_is_two_thirds_into_the_lifetime() {
        // 90 days from t=0: renewed at day 60.
        assert_eq!(renew_at(0, 90 * 86_400), 60 * 86_400);
        assert_eq!(renew_at(1_000, 1_300), 1_200);
        // A certificate already past its end (or inverted) is due at its start.
        assert_eq!(renew_at(500, 400), 500);
    }

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
