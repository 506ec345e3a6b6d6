//! The request path, whatever protocol the request came in: route, check the body
//! limit, send the request upstream with the forwarding fields (once more to another
//! replica when `retry` allows), and make the [`Answer`], which the client's protocol
//! then writes (HTTP/1.1: `downstream::respond`; HTTP/2: `Answer::into_response`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderMap;
use http::StatusCode;

use crate::answer::{Answer, Fields, Tunnel};
use crate::body::ProxyBody;
use crate::codec::fields::Known;
use crate::downstream::head::RequestHead;
use crate::error::{BodyError, ProxyError};
use crate::headers::{valid_traceparent, RequestId};
use crate::inflight::InflightGuard;
use crate::request_body::{ClientBody, Shared};
use crate::retry::{may_retry, Failure};
use crate::server::{Conn, Local};
use crate::table::{BackendEntry, Pick};
use crate::upstream::{Deadlines, Forward, Framing, UpstreamError};
use crate::Router;

/// Where a request went, for its log line, its counters and passive health: the
/// chosen backend as one reference (not a clone per field: each clone is an atomic
/// write on a cache line every worker shares).
#[derive(Default)]
struct Target {
    backend: Option<Arc<BackendEntry>>,
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
        let chosen = Chosen {
            addr: pick.backend.addr,
            others: pick.others,
            guard: pick.guard,
        };
        self.backend = Some(pick.backend);
        chosen
    }

    /// The chosen replica's id (set once a backend was picked).
    fn replica(&self) -> Arc<str> {
        self.backend
            .as_ref()
            .map_or_else(|| Arc::from(""), |b| b.replica.clone())
    }
}

/// What the request path needs to know about the request besides its head.
struct Context<'a> {
    conn: Conn,
    start: Instant,
    request_id: &'a RequestId,
    host: &'a str,
    path: &'a str,
}

/// An answer without what `handle` adds to every answer.
struct Replied {
    status: StatusCode,
    fields: Fields,
    body: ProxyBody,
    tunnel: Option<Tunnel>,
}

impl Replied {
    fn local(status: StatusCode, (headers, body): (HeaderMap, ProxyBody)) -> Self {
        Replied {
            status,
            fields: Fields::Local(headers),
            body,
            tunnel: None,
        }
    }
}

/// Proxy one request that came on `conn`; always produces an answer.
pub(crate) async fn handle(
    local: &Local,
    request: &RequestHead,
    body: ClientBody,
    conn: Conn,
) -> Answer {
    let router = &*local.router;
    let start = Instant::now();
    let request_id = local.ids.of(request.first(Known::XRequestId));
    let host = request.host();
    let path = request.path();
    let mut target = Target::default();
    let context = Context {
        conn,
        start,
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
        None => forward(local, request, body, &context, &mut target).await,
    };
    let mut failure = None;
    let mut replied = match forwarded {
        Ok(replied) => replied,
        Err(error) => {
            let reason = match &error {
                ProxyError::Upstream { replica, source } => {
                    tracing::warn!(%replica, error = %source, "upstream request failed");
                    format!("{error}: {source}")
                }
                other => other.to_string(),
            };
            failure = Some(reason);
            Replied::local(error.status(), error.answer())
        }
    };
    let status = replied.status.as_u16();
    if let Some(backend) = &target.backend {
        backend.stats.record(status, start.elapsed());
        if backend.slot.health.record(status < 500, &router.outlier) {
            tracing::warn!(
                replica = &*backend.replica,
                "replica ejected after {} consecutive failures",
                router.outlier.eject_after
            );
        }
    }
    // The line is built only when some subscriber wants it.
    if tracing::enabled!(target: crate::access::TARGET, tracing::Level::INFO) {
        replied.body.log(crate::access::Entry {
            started: start,
            method: request.method().clone(),
            path: path.to_owned(),
            host: host.clone().into_owned(),
            app: target.backend.as_ref().map(|b| b.app.clone()),
            release: target.backend.as_ref().map(|b| b.release),
            replica: target.backend.as_ref().map(|b| b.replica.clone()),
            status,
            request_id: String::from_utf8_lossy(request_id.as_bytes()).into_owned(),
            bytes: 0,
            retries: target.retries,
            error: failure,
        });
    }
    let draining = router.draining.load(std::sync::atomic::Ordering::SeqCst);
    Answer {
        status: replied.status,
        fields: replied.fields,
        body: replied.body,
        request_id,
        hsts: target.hsts,
        close: draining && request.version() <= http::Version::HTTP_11 && status != 101,
        tunnel: replied.tunnel,
    }
}

async fn forward(
    local: &Local,
    request: &RequestHead,
    body: ClientBody,
    context: &Context<'_>,
    target: &mut Target,
) -> Result<Replied, ProxyError> {
    let router = &*local.router;
    if !context.conn.secure {
        if let Some(port) = router.https_only_port(context.host, context.path) {
            return Err(ProxyError::HttpsOnly(https_location(
                context.host,
                port,
                &request.origin_target(),
            )));
        }
    }
    let (limits, pick) = router.route(context.host, context.path, None)?;
    target.hsts = context.conn.secure && pick.https_only;
    let mut chosen = target.set(pick);
    if body.size_hint().lower() > limits.max_body {
        return Err(ProxyError::PayloadTooLarge(limits.max_body));
    }
    let traceparent = match request.first(Known::Traceparent) {
        Some(given) if valid_traceparent(given) => None,
        _ => Some(local.ids.traceparent(context.request_id)),
    };
    let forward = Forward {
        client: context.conn.peer.ip(),
        secure: context.conn.secure,
        request_id: context.request_id.as_bytes(),
        traceparent: traceparent.as_ref().map(|t| &t[..]),
    };
    let body = Shared::new(body, limits.max_body, limits.idle);
    let deadlines = Deadlines {
        connect: limits.connect,
        response: limits.response,
    };
    let method = request.method();
    let now = tokio::time::Instant::from_std(context.start);
    loop {
        let last = target.retries > 0 || !chosen.others;
        let sent = local
            .upstream
            .send(chosen.addr, deadlines, now, request, &forward, &body)
            .await;
        let source = match sent {
            // Only to a request that asked for an upgrade (else `send` failed).
            Ok((head, answer)) if head.framing == Framing::Switch => {
                let tunnel = answer.into_tunnel().map(|(replica, early)| Tunnel {
                    replica,
                    early,
                    guard: chosen.guard,
                });
                return Ok(Replied {
                    status: head.status,
                    fields: Fields::Upstream(head),
                    body: ProxyBody::empty(),
                    tunnel,
                });
            }
            Ok((head, answer)) => {
                return Ok(Replied {
                    status: head.status,
                    fields: Fields::Upstream(head),
                    body: ProxyBody::upstream(answer, chosen.guard, limits.idle),
                    tunnel: None,
                });
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
        if last || !may_retry(method, failure, body.replayable()) {
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
        if let Some(backend) = &target.backend {
            backend.slot.health.record(false, &router.outlier);
        }
        tracing::warn!(replica = %failed, error = %source, reason = failure.reason(), "retrying on another replica");
        if let Some(backend) = &target.backend {
            router.retries.count(&backend.app, failure);
        }
        target.retries += 1;
        let Ok((_, next)) = router.route(context.host, context.path, Some(&failed)) else {
            return Err(ProxyError::Upstream {
                replica: failed,
                source,
            });
        };
        chosen = target.set(next);
    }
}

/// The answer to an ACME HTTP-01 validation request for a challenge in progress.
fn acme_challenge(router: &Router, path: &str) -> Option<Replied> {
    let token = path.strip_prefix("/.well-known/acme-challenge/")?;
    let answer = router.https.as_ref()?.tls.acme_challenge(token)?;
    let mut headers = HeaderMap::with_capacity(1);
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    Some(Replied::local(
        StatusCode::OK,
        (headers, ProxyBody::local(answer)),
    ))
}

/// `https://host[:port]/path?query` for a plaintext request to an `https_only` route;
/// `target` is the request's origin-form target (ASCII).
fn https_location(host: &str, port: u16, target: &[u8]) -> String {
    let path = std::str::from_utf8(target).unwrap_or("/");
    let path = if path.starts_with('/') { path } else { "/" };
    match port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    }
}
