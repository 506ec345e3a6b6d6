//! The HTTPS client the ACME protocol runs over: one HTTP/1.1 connection per request
//! (ACME is a handful of requests a day), rustls with ring, trusting either the CA file
//! given for a test ACME server (`--acme-ca`) or the system's CA bundle.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::Request;
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::error::TlsError;

/// Upper bound on connecting to, and getting an answer from, the ACME server.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Where Debian (and most distributions) keep the system's trusted CAs.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub(crate) struct AcmeHttp {
    connector: tokio_rustls::TlsConnector,
}

impl AcmeHttp {
    /// A client trusting the CAs in `ca` (PEM), else in `$SSL_CERT_FILE` or the system
    /// bundle.
    pub(crate) fn new(ca: Option<&Path>) -> Result<AcmeHttp, TlsError> {
        let path = match ca {
            Some(path) => path.to_path_buf(),
            None => std::env::var_os("SSL_CERT_FILE")
                .map_or_else(|| PathBuf::from(SYSTEM_BUNDLE), PathBuf::from),
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in super::files::read_chain(&path)? {
            roots.add(cert).map_err(|e| TlsError::Invalid {
                path: path.clone(),
                message: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(super::provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(AcmeHttp {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn other(e: impl Into<BoxError>) -> instant_acme::Error {
    instant_acme::Error::Other(e.into())
}

async fn send(
    connector: tokio_rustls::TlsConnector,
    request: Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, instant_acme::Error> {
    let (mut parts, body) = request.into_parts();
    if parts.uri.scheme_str() != Some("https") {
        return Err(other(format!("ACME URL {} is not https", parts.uri)));
    }
    let host = parts
        .uri
        .host()
        .ok_or_else(|| other(format!("ACME URL {} has no host", parts.uri)))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_owned();
    let port = parts.uri.port_u16().unwrap_or(443);
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| other(format!("connecting to {authority} timed out")))?
        .map_err(|e| other(format!("cannot connect to {authority}: {e}")))?;
    let name = ServerName::try_from(host).map_err(other)?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| other(format!("TLS with {authority}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(other)?;
    tokio::spawn(conn);
    // Origin form on the connection, the authority in Host.
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = path.parse().map_err(other)?;
    parts
        .headers
        .insert(HOST, authority.parse().map_err(other)?);
    let response = tokio::time::timeout(
        TIMEOUT,
        sender.send_request(Request::from_parts(parts, body)),
    )
    .await
    .map_err(|_| {
        other(format!(
            "{authority} did not answer within {}s",
            TIMEOUT.as_secs()
        ))
    })?
    .map_err(other)?;
    Ok(BytesResponse::from(response))
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        request: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        Box::pin(send(self.connector.clone(), request))
    }
}
