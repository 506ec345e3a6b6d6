//! What the proxy answers a request with, before it is written in the client's
//! protocol: by the router's own HTTP/1.1 server (`downstream::respond`, straight from
//! the replica's head: no header map) or as an `http::Response` for hyper's HTTP/2
//! server ([`Answer::into_response`]).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, STRICT_TRANSPORT_SECURITY};
use http::{Response, StatusCode};
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::headers::RequestId;
use crate::inflight::InflightGuard;
use crate::upstream::Head;

/// HSTS added to the HTTPS answers of an `https_only` route (one year).
pub(crate) const HSTS: &[u8] = b"max-age=31536000";

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Where an answer's header fields come from.
#[derive(Debug)]
pub(crate) enum Fields {
    /// The replica's response head (its hop-by-hop fields are left out when written).
    Upstream(Head),
    /// An answer of the router's own.
    Local(HeaderMap),
}

/// A replica's connection after its `101`, to be spliced with the client's.
#[derive(Debug)]
pub(crate) struct Tunnel {
    pub replica: TcpStream,
    /// What the replica sent right after its `101` head.
    pub early: Bytes,
    /// Keeps the replica counted in flight while the tunnel is open.
    pub guard: InflightGuard,
}

#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub fields: Fields,
    pub body: ProxyBody,
    /// Returned to the client as `X-Request-Id`.
    pub request_id: RequestId,
    /// Add HSTS unless the replica set it.
    pub hsts: bool,
    /// The connection closes after this answer (the router is draining).
    pub close: bool,
    pub tunnel: Option<Tunnel>,
}

impl Answer {
    /// The answer as a response for hyper's HTTP/2 server. (A tunnel cannot be: HTTP/2
    /// requests never ask for an upgrade.)
    pub(crate) fn into_response(self) -> Response<ProxyBody> {
        let headers = match self.fields {
            Fields::Local(headers) => headers,
            Fields::Upstream(head) => match head.header_map(true) {
                Ok(headers) => headers,
                Err(error) => {
                    tracing::warn!(%error, "replica's answer cannot go on over HTTP/2");
                    let mut response = Response::new(ProxyBody::local(format!("{error}\n")));
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                    return response;
                }
            },
        };
        let mut response = Response::new(self.body);
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        let headers = response.headers_mut();
        if let Ok(id) = HeaderValue::from_bytes(self.request_id.as_bytes()) {
            headers.insert(X_REQUEST_ID, id);
        }
        if self.hsts && !headers.contains_key(STRICT_TRANSPORT_SECURITY) {
            headers.insert(
                STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000"),
            );
        }
        response
    }
}
