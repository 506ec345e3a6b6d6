//! The router's own certificate authority, for `*.localhost` and other names no file or
//! ACME certificate covers.
//!
//! Invariants: the CA is made once and kept in `DIR/router-ca.pem` and
//! `DIR/router-ca-key.pem` (mode 0600, written before the certificate so a crash never
//! leaves a certificate without its key); users trust the certificate file. Leaf
//! certificates are made on demand, one per name, kept in memory only (at most
//! [`CACHE_LIMIT`] names; the cache starts over past that) and never written to disk.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::error::TlsError;

/// Leaf certificates kept in memory before the cache starts over.
const CACHE_LIMIT: usize = 4096;
const CA_NAME: &str = "wharf router local CA";

pub(crate) struct InternalCa {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    cert_path: PathBuf,
    leaves: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for InternalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalCa")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// The CA's parameters. The same every time, so that an [`Issuer`] rebuilt from them
/// and the stored key names the stored certificate's subject and key identifier.
fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

impl InternalCa {
    /// Loads the CA from `dir`, making it the first time.
    pub(crate) fn load_or_create(dir: &Path) -> Result<InternalCa, TlsError> {
        let cert_path = dir.join("router-ca.pem");
        let key_path = dir.join("router-ca-key.pem");
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        if !(cert_path.is_file() && key_path.is_file()) {
            std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write(&cert_path, cert.pem().as_bytes(), 0o644)?;
            tracing::info!(ca = %cert_path.display(), "made the router's local CA");
        }
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| TlsError::Invalid {
            path: key_path.clone(),
            message: format!(
                "not a usable CA key ({e}); delete it and router-ca.pem to make a new CA"
            ),
        })?;
        let ca_der = super::files::read_chain(&cert_path)?.remove(0);
        Ok(InternalCa {
            issuer: Issuer::new(ca_params()?, key),
            ca_der,
            cert_path,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate file clients trust.
    pub(crate) fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The certificate for `name` (a lowercase DNS name), made on first use.
    pub(crate) fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        // A poisoned lock only means another handshake panicked; the map is intact.
        if let Some(hit) = self
            .leaves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(hit.clone());
        }
        let made = Arc::new(self.issue(name)?);
        let mut leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        if leaves.len() >= CACHE_LIMIT {
            leaves.clear();
        }
        leaves.insert(name.to_owned(), made.clone());
        Ok(made)
    }

    fn issue(&self, name: &str) -> Result<CertifiedKey, TlsError> {
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let year = 1970 + (super::unix_now() / 31_556_952) as i32;
        params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + 1, 12, 31);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        let loaded = super::files::certified(chain, private, &self.cert_path, &self.cert_path)?;
        Ok(Arc::unwrap_or_clone(loaded.key))
    }
}

/// Writes `bytes` to `path` through a temporary file created with `mode`.
pub(crate) fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    write_file(path, bytes, mode).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a key or certificate file atomically (a new temp file with `mode`, synced,
/// then renamed over `path`): a reader never sees half a key, and a key is never
/// readable by others, even for a moment.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
