//! Per-route timeouts and body limit: the route's `[route]` settings over the router's
//! defaults, and the upstream clients, one per connect timeout (and per worker thread:
//! see `server`).
//!
//! - `connect`: establishing the TCP connection to a replica (then the request goes
//!   once to another replica; with none left, 504).
//! - `response`: from sending the request to the replica's response head (504).
//! - `idle`: the longest pause between two reads of a body in flight: the client's
//!   request body (408 when nothing was answered yet, else the exchange is aborted) and
//!   the replica's response body (the client's response is cut off). Idle keep-alive
//!   connections between requests are a separate, global matter (hyper's header read
//!   timeout downstream, the pool's idle timeout upstream).
//! - `max_body`: request bodies above it get 413, at once when `Content-Length` says
//!   so, else as soon as the streamed body crosses it (the upstream request is aborted).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use wharf_types::route_options::RouteOptions;

use crate::request_body::RequestBody;
use crate::RouterConfig;

/// How long an idle upstream keep-alive connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The client that talks to replicas.
pub(crate) type Upstream = Client<HttpConnector, RequestBody>;

/// One route's effective limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub connect: Duration,
    pub response: Duration,
    pub idle: Duration,
    pub max_body: u64,
}

impl Limits {
    pub(crate) fn resolve(options: &RouteOptions, defaults: &RouterConfig) -> Limits {
        let ms = |v: Option<u64>, default| v.map_or(default, Duration::from_millis);
        Limits {
            connect: ms(options.connect_timeout_ms, defaults.connect_timeout),
            response: ms(options.response_timeout_ms, defaults.response_timeout),
            idle: ms(options.idle_timeout_ms, defaults.idle_timeout),
            max_body: options.max_body.unwrap_or(defaults.max_body),
        }
    }
}

/// Upstream clients by connect timeout. A replica belongs to one route, so a worker's
/// pooled connections to it all live in the one client of that route's timeout. Each
/// worker has its own, so the lock is uncontended.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    by_connect: Mutex<HashMap<Duration, Upstream>>,
}

impl Clients {
    /// Sends `request` with the client of connect timeout `connect`.
    pub(crate) fn request(
        &self,
        connect: Duration,
        request: http::Request<RequestBody>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        let mut by = self.by_connect.lock().unwrap_or_else(|e| e.into_inner());
        by.entry(connect)
            .or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(connect));
                connector.set_nodelay(true);
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_timer(TokioTimer::new())
                    .build(connector)
            })
            .request(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_settings_override_defaults() {
        let defaults = RouterConfig::default();
        let plain = Limits::resolve(&RouteOptions::default(), &defaults);
        assert_eq!(plain.connect, defaults.connect_timeout);
        assert_eq!(plain.response, defaults.response_timeout);
        assert_eq!(plain.idle, defaults.idle_timeout);
        assert_eq!(plain.max_body, defaults.max_body);
        let set = Limits::resolve(
            &RouteOptions {
                connect_timeout_ms: Some(100),
                response_timeout_ms: Some(200),
                idle_timeout_ms: Some(300),
                max_body: Some(400),
                ..RouteOptions::default()
            },
            &defaults,
        );
        assert_eq!(
            set,
            Limits {
                connect: Duration::from_millis(100),
                response: Duration::from_millis(200),
                idle: Duration::from_millis(300),
                max_body: 400
            }
        );
    }
}
