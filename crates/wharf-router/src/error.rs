//! Why the proxy answered a request itself, and the answer it gave.

use std::sync::Arc;

use http::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};

use crate::body::ProxyBody;

/// A request the proxy could not hand to a replica. The message is the response body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no app is routed at host {0:?}")]
    UnknownHost(String),
    #[error("no app is routed at host {0:?} for path {1:?}")]
    UnknownPath(String, String),
    #[error("no ready replica for app {0:?}")]
    NoReadyReplica(Arc<str>),
    #[error("upstream did not answer within {}s", .timeout.as_secs())]
    Timeout {
        replica: Arc<str>,
        timeout: std::time::Duration,
    },
    #[error("this site is served over HTTPS only: {0}")]
    HttpsOnly(String),
    #[error("upstream did not accept the connection within {}ms", .timeout.as_millis())]
    ConnectTimeout {
        replica: Arc<str>,
        timeout: std::time::Duration,
    },
    #[error(
        "request body larger than the limit of {0} bytes; send less, or raise [route] max_body"
    )]
    PayloadTooLarge(u64),
    #[error("request body failed: {0}")]
    Body(BodyError),
    #[error("upstream unavailable")]
    Upstream {
        replica: Arc<str>,
        #[source]
        source: crate::upstream::UpstreamError,
    },
}

impl ProxyError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::UnknownHost(_) | ProxyError::UnknownPath(..) => StatusCode::NOT_FOUND,
            ProxyError::HttpsOnly(_) => StatusCode::PERMANENT_REDIRECT,
            ProxyError::NoReadyReplica(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ConnectTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Body(BodyError::Idle(_)) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Body(_) => StatusCode::BAD_REQUEST,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The plain-text answer for this error: its header fields and body.
    pub(crate) fn answer(&self) -> (HeaderMap, ProxyBody) {
        let (mut headers, body) = plain_text(self);
        match self {
            ProxyError::NoReadyReplica(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ProxyError::HttpsOnly(location) => {
                if let Ok(value) = HeaderValue::from_str(location) {
                    headers.insert(http::header::LOCATION, value);
                }
            }
            _ => {}
        }
        (headers, body)
    }
}

/// An answer of the router's own: `message` and a newline, as plain text.
pub(crate) fn plain_text(message: &impl std::fmt::Display) -> (HeaderMap, ProxyBody) {
    let body = ProxyBody::local(format!("{message}\n"));
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    (headers, body)
}

/// Why a certificate could not be loaded, made or checked. Messages name the file and
/// say what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("the private key {key} does not belong to the certificate {cert}; give the key the certificate was issued for")]
    KeyMismatch {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("acme: {0}")]
    Acme(String),
    #[error("acme: {0}")]
    AcmeProtocol(#[from] instant_acme::Error),
}

/// Why a body stream (the client's request body, a replica's response body) stopped.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    #[error("no data for {}ms", .0.as_millis())]
    Idle(std::time::Duration),
    /// The client's body failed: the connection, its framing, or HTTP/2.
    #[error("{0}")]
    Client(Arc<dyn std::error::Error + Send + Sync>),
    #[error("request body does not match its Content-Length")]
    Length,
    #[error("{0}")]
    Upstream(Arc<std::io::Error>),
}
