//! The request path: route, check the body limit, rewrite headers, send upstream
//! (once more to another replica when `retry` allows), and turn the answer into the
//! client's response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;

use crate::body::ProxyBody;
use crate::error::{BodyError, ProxyError};
use crate::headers::{
    forward_request, route_host, strip_hop_by_hop, valid_traceparent, TRACEPARENT, X_REQUEST_ID,
};
use crate::inflight::InflightGuard;
use crate::request_body::Shared;
use crate::retry::{may_retry, Failure};
use crate::server::{Conn, Local};
use crate::table::Pick;
use crate::upgrade;
use crate::upstream::{Deadlines, UpstreamBody, UpstreamError};
use crate::Router;

/// HSTS added to the HTTPS answers of an `https_only` route (one year).
const HSTS: http::HeaderValue = http::HeaderValue::from_static("max-age=31536000");

/// Where a request went, for its log line, its counters and passive health. Filled
/// by moving the pick's references in (not cloning them: each clone is an atomic
/// write on a cache line every worker shares).
#[derive(Default)]
struct Target {
    app: Option<Arc<str>>,
    replica: Option<Arc<str>>,
    release: Option<u32>,
    stats: Option<Arc<crate::stats::ReleaseCounters>>,
    slot: Option<Arc<crate::inflight::Slot>>,
    retries: u32,
    /// The answer gets HSTS (an `https_only` route, over TLS).
    hsts: bool,
}

/// What the request loop keeps of a [`Pick`] once `Target` has the rest.
struct Chosen {
    addr: SocketAddr,
    others: bool,
    guard: InflightGuard,
}

impl Target {
    fn set(&mut self, pick: Pick) -> Chosen {
        self.replica = Some(pick.replica);
        self.release = Some(pick.release);
        self.stats = Some(pick.stats);
        self.slot = Some(pick.slot);
        Chosen {
            addr: pick.addr,
            others: pick.others,
            guard: pick.guard,
        }
    }

    /// The chosen replica's id (set once a backend was picked).
    fn replica(&self) -> Arc<str> {
        self.replica.clone().unwrap_or_else(|| Arc::from(""))
    }
}

/// What the request path needs to know about the request besides its parts.
struct Context<'a> {
    conn: Conn,
    request_id: &'a http::HeaderValue,
    host: &'a str,
    path: &'a str,
}

/// Proxy one request that came on `conn`; always produces a response.
pub(crate) async fn handle(
    local: &Local,
    request: Request<Incoming>,
    conn: Conn,
) -> Response<ProxyBody> {
    let router = &*local.router;
    let start = Instant::now();
    let (mut parts, body) = request.into_parts();
    let version = parts.version;
    let request_id = local.ids.of(&parts.headers);
    // Cheap clones (reference-counted bytes) that the host and path borrow from while
    // `parts` is rewritten.
    let uri = parts.uri.clone();
    let host_header = parts.headers.get(http::header::HOST).cloned();
    let host = route_host(&uri, host_header.as_ref());
    let path = uri.path();
    let method = parts.method.clone();
    let mut target = Target::default();
    let context = Context {
        conn,
        request_id: &request_id,
        host: &host,
        path,
    };
    let challenge = match conn.secure {
        false => acme_challenge(router, path),
        true => None,
    };
    let forwarded = match challenge {
        Some(answer) => Ok(answer),
        None => forward(local, &mut parts, body, &context, &mut target).await,
    };
    let mut failure = None;
    let mut response = match forwarded {
        Ok(response) => response,
        Err(error) => {
            let reason = match &error {
                ProxyError::Upstream { replica, source } => {
                    tracing::warn!(%replica, error = %source, "upstream request failed");
                    format!("{error}: {source}")
                }
                other => other.to_string(),
            };
            failure = Some(reason);
            error.to_response()
        }
    };
    if target.hsts
        && !response
            .headers()
            .contains_key(http::header::STRICT_TRANSPORT_SECURITY)
    {
        response
            .headers_mut()
            .insert(http::header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
    let status = response.status().as_u16();
    if let Some(stats) = &target.stats {
        stats.record(status, start.elapsed());
    }
    if let Some(slot) = &target.slot {
        if slot.health.record(status < 500, &router.outlier) {
            tracing::warn!(
                replica = target.replica.as_deref().unwrap_or(""),
                "replica ejected after {} consecutive failures",
                router.outlier.eject_after
            );
        }
    }
    // The line is built only when some subscriber wants it.
    if tracing::enabled!(target: crate::access::TARGET, tracing::Level::INFO) {
        response.body_mut().log(crate::access::Entry {
            started: start,
            method,
            path: path.to_owned(),
            host: host.into_owned(),
            app: target.app,
            release: target.release,
            replica: target.replica,
            status,
            request_id: request_id.to_str().unwrap_or("").to_string(),
            bytes: 0,
            retries: target.retries,
            error: failure,
        });
    }
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    let draining = router.draining.load(std::sync::atomic::Ordering::SeqCst);
    if draining && version <= http::Version::HTTP_11 && status != 101 {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

async fn forward(
    local: &Local,
    parts: &mut Parts,
    body: Incoming,
    context: &Context<'_>,
    target: &mut Target,
) -> Result<Response<ProxyBody>, ProxyError> {
    let router = &*local.router;
    if !context.conn.secure {
        if let Some(port) = router.https_only_port(context.host, context.path) {
            return Err(ProxyError::HttpsOnly(https_location(
                context.host,
                port,
                &parts.uri,
            )));
        }
    }
    let (app, limits, pick) = router.route(context.host, context.path, None)?;
    target.hsts = context.conn.secure && pick.https_only;
    target.app = Some(app);
    let mut chosen = target.set(pick);
    if body.size_hint().lower() > limits.max_body {
        return Err(ProxyError::PayloadTooLarge(limits.max_body));
    }

    let uri_host = parts.uri.authority().cloned();
    let upgrade = upgrade::requested(&parts.headers);
    let client_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<OnUpgrade>());
    let proto = http::HeaderValue::from_static(if context.conn.secure { "https" } else { "http" });
    forward_request(
        &mut parts.headers,
        context.conn.peer.ip(),
        &proto,
        uri_host.as_ref().map(Authority::as_str),
    );
    parts
        .headers
        .insert(X_REQUEST_ID, context.request_id.clone());
    if !parts
        .headers
        .get(TRACEPARENT)
        .is_some_and(valid_traceparent)
    {
        parts.headers.insert(TRACEPARENT, local.ids.traceparent());
    }
    if let Some(value) = upgrade {
        upgrade::restore(&mut parts.headers, value);
    }

    let body = Shared::new(body, limits.max_body, limits.idle);
    let deadlines = Deadlines {
        connect: limits.connect,
        response: limits.response,
    };
    loop {
        let last = target.retries > 0 || !chosen.others;
        let sent = local
            .upstream
            .send(chosen.addr, deadlines, parts, &body)
            .await;
        let source = match sent {
            Ok(response) => {
                if let (StatusCode::SWITCHING_PROTOCOLS, Some(client)) =
                    (response.status(), client_upgrade)
                {
                    let (parts, body) = response.into_parts();
                    if let Some((replica, early)) = body.into_tunnel() {
                        upgrade::splice(client, replica, early, chosen.guard);
                    }
                    return Ok(Response::from_parts(parts, ProxyBody::empty()));
                }
                return Ok(downstream(response, chosen.guard, limits.idle));
            }
            Err(source) => source,
        };
        if let Some(failure) = body.failure() {
            return Err(match failure {
                BodyError::TooLarge(limit) => ProxyError::PayloadTooLarge(limit),
                other => ProxyError::Body(other),
            });
        }
        if let UpstreamError::Timeout = source {
            return Err(ProxyError::Timeout {
                replica: target.replica(),
                timeout: limits.response,
            });
        }
        let failure = Failure::of(&source);
        let failed = target.replica();
        if last || !may_retry(&parts.method, failure, body.replayable()) {
            return Err(match failure {
                Failure::Connect { timed_out: true } => ProxyError::ConnectTimeout {
                    replica: failed,
                    timeout: limits.connect,
                },
                _ => ProxyError::Upstream {
                    replica: failed,
                    source,
                },
            });
        }
        drop(chosen.guard);
        if let Some(slot) = &target.slot {
            slot.health.record(false, &router.outlier);
        }
        tracing::warn!(replica = %failed, error = %source, reason = failure.reason(), "retrying on another replica");
        if let Some(app) = &target.app {
            router.retries.count(app, failure);
        }
        target.retries += 1;
        let Ok((_, _, next)) = router.route(context.host, context.path, Some(&failed)) else {
            return Err(ProxyError::Upstream {
                replica: failed,
                source,
            });
        };
        chosen = target.set(next);
    }
}

/// The answer to an ACME HTTP-01 validation request for a challenge in progress.
fn acme_challenge(router: &Router, path: &str) -> Option<Response<ProxyBody>> {
    let token = path.strip_prefix("/.well-known/acme-challenge/")?;
    let answer = router.https.as_ref()?.tls.acme_challenge(token)?;
    let mut response = Response::new(ProxyBody::local(answer));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    Some(response)
}

/// `https://host[:port]/path?query` for a plaintext request to an `https_only` route.
fn https_location(host: &str, port: u16, uri: &Uri) -> String {
    let path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let path = if path.starts_with('/') { path } else { "/" };
    match port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    }
}

/// The client's response: hop-by-hop headers stripped, body counted in flight.
fn downstream(
    response: Response<UpstreamBody>,
    guard: InflightGuard,
    idle: std::time::Duration,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, ProxyBody::upstream(body, guard, idle))
}
