//! TLS for the TCP API: the server's certificate (given, or generated once with its own
//! CA under `DATA/tls/`) and the client's trust (the CA in `$WHARF_CA_CERT`).
//!
//! Invariants: the private key file is mode 0600; the CA's private key is never written
//! (a new CA and certificate are made when the names change); a client trusts only the
//! CA it is given, never "any certificate".

use crate::client::{Failure, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the server's certificate comes from.
pub struct CertSource {
    /// `--api-cert` and `--api-key` (PEM), when given.
    pub given: Option<(PathBuf, PathBuf)>,
    /// Names (DNS or IP) the generated certificate is valid for.
    pub names: Vec<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn fail(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::failed(format!("{what}: {e}"))
}

/// The CA file clients need when the certificate is generated.
pub fn ca_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("api-ca.pem")
}

/// Makes (if needed) and loads the API's certificate; returns the server config.
pub fn server_config(data_dir: &Path, src: &CertSource) -> Result<rustls::ServerConfig> {
    let (cert, key) = match &src.given {
        Some(pair) => pair.clone(),
        None => generated(data_dir, &src.names)?,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .map_err(|e| fail(&format!("cannot read {}", cert.display()), e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| fail(&format!("cannot read {}", cert.display()), e))?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| fail(&format!("cannot read the private key {}", key.display()), e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("tls", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| fail("the API certificate does not match its key", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `DATA/tls/api-cert.pem` and `api-key.pem`, made with a fresh CA when missing or when
/// the names changed.
fn generated(data_dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf)> {
    let dir = data_dir.join("tls");
    let (cert, key, list) = (
        dir.join("api-cert.pem"),
        dir.join("api-key.pem"),
        dir.join("names"),
    );
    let wanted = names.join("\n");
    if cert.is_file()
        && key.is_file()
        && std::fs::read_to_string(&list).ok() == Some(wanted.clone())
    {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| fail(&format!("cannot create {}", dir.display()), e))?;
    let gen = |e: rcgen::Error| fail("cannot make the API certificate", e);
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wharf API CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().map_err(gen)?)
            .map_err(gen)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(gen)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wharf API");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let server_key = rcgen::KeyPair::generate().map_err(gen)?;
    let server = params.signed_by(&server_key, &ca).map_err(gen)?;
    write(&key, server_key.serialize_pem().as_bytes(), 0o600)?;
    write(
        &cert,
        format!("{}{}", server.pem(), ca.pem()).as_bytes(),
        0o644,
    )?;
    write(&ca_path(data_dir), ca.pem().as_bytes(), 0o644)?;
    write(&list, wanted.as_bytes(), 0o644)?;
    Ok((cert, key))
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    wharf_router::tls::write_file(path, bytes, mode)
        .map_err(|e| fail(&format!("cannot write {}", path.display()), e))
}

/// A client config trusting only the CA certificates in `ca` (PEM).
pub fn client_config(ca: &Path) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let what = format!("cannot read the CA certificate {}", ca.display());
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| fail(&what, e))? {
        roots
            .add(c.map_err(|e| fail(&what, e))?)
            .map_err(|e| fail(&what, e))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("tls", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
