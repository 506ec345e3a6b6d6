//! Certificate files: a PEM chain and its private key, loaded and matched, and what the
//! leaf says about itself (names, validity). Also the on-disk stamp that tells when a
//! file changed (certbot-style renewals replace the files in place).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::error::TlsError;

/// A loaded certificate with what the router needs to know about its leaf.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) key: Arc<CertifiedKey>,
    /// DNS names of the leaf (subject alternative names), lowercase.
    pub(crate) names: Vec<String>,
    /// Validity of the leaf, seconds since the Unix epoch.
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

/// Identity of a file's current content as far as `stat` can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

/// The stamp of `path`, `None` when it cannot be read.
pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode: meta.ino(),
    })
}

fn pem_error(path: &Path, e: pem::Error, what: &str) -> TlsError {
    match e {
        pem::Error::Io(source) => TlsError::Read {
            path: path.to_path_buf(),
            source,
        },
        other => TlsError::Invalid {
            path: path.to_path_buf(),
            message: format!("not a valid PEM {what} ({other:?})"),
        },
    }
}

/// The PEM certificates in `path`, leaf first.
pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e, "certificate"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e, "certificate"))?;
    if chain.is_empty() {
        return Err(TlsError::Invalid {
            path: path.to_path_buf(),
            message: "no certificate in the file; expected PEM `-----BEGIN CERTIFICATE-----` blocks, the server's first".into(),
        });
    }
    Ok(chain)
}

/// Loads the chain in `cert` and the key in `key`, and checks that they belong together.
pub(crate) fn load_pair(cert: &Path, key: &Path) -> Result<Loaded, TlsError> {
    let chain = read_chain(cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Invalid {
            path: key.to_path_buf(),
            message: "no private key in the file; expected a PEM `PRIVATE KEY` block".into(),
        },
        other => pem_error(key, other, "private key"),
    })?;
    certified(chain, private, cert, key)
}

/// A certified key from a chain and key already in memory (`cert` and `key` name them
/// in errors).
pub(crate) fn certified(
    chain: Vec<CertificateDer<'static>>,
    private: PrivateKeyDer<'static>,
    cert: &Path,
    key: &Path,
) -> Result<Loaded, TlsError> {
    let (names, not_before, not_after) =
        leaf_info(&chain[0]).map_err(|message| TlsError::Invalid {
            path: cert.to_path_buf(),
            message,
        })?;
    let provider = super::provider();
    let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        },
        other => TlsError::Invalid {
            path: key.to_path_buf(),
            message: format!("unusable private key: {other}"),
        },
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        names,
        not_before,
        not_after,
    })
}

/// When the leaf of a certificate in service expires (Unix seconds).
pub(crate) fn not_after(key: &CertifiedKey) -> Option<i64> {
    leaf_info(key.end_entity_cert().ok()?)
        .ok()
        .map(|(_, _, to)| to)
}

/// DNS names and validity (Unix seconds) of a certificate.
fn leaf_info(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64, i64), String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("the first certificate cannot be parsed: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    let validity = parsed.validity();
    Ok((
        names,
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// Whether certificate name `pattern` (`host` or `*.domain`) covers `host`: a wildcard
/// stands for exactly one label (RFC 6125 §6.4.3). A wildcard host of a route is
/// covered only by the same wildcard.
pub(crate) fn covers(pattern: &str, host: &str) -> bool {
    if pattern == host {
        return true;
    }
    match (pattern.strip_prefix("*."), host.split_once('.')) {
        (Some(domain), Some((label, rest))) => label != "*" && !label.is_empty() && rest == domain,
        _ => false,
    }
}

/// Absolute paths of a route's certificate files, as published.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Pair {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(covers("a.example.com", "a.example.com"));
        assert!(covers("*.example.com", "a.example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(covers("*.example.com", "*.example.com"));
        assert!(!covers("b.example.com", "a.example.com"));
    }
}
