//! Why the proxy answered a request itself, and the answer it gave.

use std::sync::Arc;

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

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
        source: hyper_util::client::legacy::Error,
    },
}

impl ProxyError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::UnknownHost(_) | ProxyError::UnknownPath(..) => StatusCode::NOT_FOUND,
            ProxyError::NoReadyReplica(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ConnectTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Body(BodyError::Idle(_)) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Body(_) => StatusCode::BAD_REQUEST,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The plain-text response for this error.
    pub(crate) fn to_response(&self) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::local(format!("{self}\n")));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let ProxyError::NoReadyReplica(_) = self {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Why a body stream (the client's request body, a replica's response body) stopped.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    #[error("no data for {}ms", .0.as_millis())]
    Idle(std::time::Duration),
    #[error("{0}")]
    Client(Arc<hyper::Error>),
    #[error("{0}")]
    Upstream(Arc<hyper::Error>),
}
