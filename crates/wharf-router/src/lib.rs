//! The data plane: an HTTP/1.1 and HTTP/2 reverse proxy, plaintext and TLS, from
//! clients to app replicas.
//!
//! The router owns the route table currently in force (published by the control plane
//! as a [`RouteTable`] snapshot), the host lookup built from it, the per-replica
//! in-flight counters used both for least-outstanding-requests balancing and for
//! draining, the pools of keep-alive connections to replicas (`upstream`), and the
//! downstream listeners with their graceful shutdown, and the certificates of HTTPS
//! ([`Tls`]).
//!
//! Routing: the host is the authority of an absolute-form target, else `Host`, with
//! port, case and a trailing dot ignored; an exact host beats a `*.domain` wildcard,
//! and the longest wildcard suffix wins; then the longest path prefix of that host on a
//! segment boundary (`lookup`). The path goes upstream unchanged. Unknown host or
//! path: 404; no backend: 503 with `Retry-After`; replica unreachable: 502 (504 on a
//! connect timeout) after one retry on another replica (`retry`); per-route timeouts
//! and body limit in `limits`.
//!
//! Protocols: HTTP/1.1 is served by the router's own server (`downstream`), HTTP/2 (h2
//! by ALPN, h2c with prior knowledge) by hyper (`h2`); both go through one proxy path
//! (`proxy`), which works on the request head as received (no header map) and makes an
//! answer (`answer`) that each protocol writes.
//!
//! Request smuggling: the router's HTTP/1.1 parser answers 400, and closes the
//! connection, to obsolete line folding, to differing Content-Lengths, to
//! Content-Length together with Transfer-Encoding, to a Transfer-Encoding that does not
//! end in `chunked`, to Transfer-Encoding in HTTP/1.0 and to two Host fields (RFC 9112
//! §6.3, §3.2). Upstream, every request is re-framed by the router's own client
//! (`upstream`), so the router and a replica can never disagree on where a request
//! ends; a replica's response with ambiguous framing (`Content-Length` with
//! `Transfer-Encoding`, conflicting lengths, obsolete line folding, a malformed chunk)
//! is refused (502, or a cut-off body once the head was passed on), never guessed at.
//!
//! Invariants:
//! - A published table is immutable; [`Router::publish`] swaps it atomically. A request
//!   keeps the backend it was routed to; no connection is dropped by a swap.
//! - A backend is chosen, and its in-flight counter incremented, while the table is
//!   read-locked (each worker reads its own copy of the reference, under a lock of
//!   its own; `publish` swaps every copy under its lock), so once `publish` returns
//!   no request can still be routed to a replica that the new table removed:
//!   [`Router::inflight`] then only falls.
//! - An in-flight counter belongs to a replica id, not to a table: it survives swaps
//!   and counts down through an RAII guard when the response body ends or the request
//!   is dropped or cancelled.
//! - The upstream sees the client's `Host`, an `X-Forwarded-For` ending with the client
//!   IP, `X-Forwarded-Proto` of the connection the request came on (`https` on the TLS
//!   listener), and an `X-Request-Id` (kept or generated, also returned to the client);
//!   hop-by-hop headers never cross the proxy in either direction.
//! - A route with `https_only`: a plaintext request gets `308` to the same URL on the
//!   TLS listener (when there is one); its HTTPS answers carry HSTS unless the app set
//!   it. `/.well-known/acme-challenge/TOKEN` on plaintext is answered from the ACME
//!   challenges in progress before any routing or redirect.
//! - A request goes to at most two replicas, the second only when `retry` allows it
//!   and never once a response head arrived; at most the route's `max_body` bytes of a
//!   request body ever reach a replica.

mod access;
mod answer;
mod body;
mod codec;
mod deadline;
mod downstream;
mod error;
pub mod fuzzing;
mod h2;
mod headers;
mod idle;
mod inflight;
mod limits;
pub mod lookup;
mod outlier;
mod proxy;
mod request_body;
mod retry;
mod server;
mod shard;
mod stats;
mod table;
pub mod tls;
mod upgrade;
mod upstream;

pub use error::TlsError;
pub use tls::{AcmeOptions, Tls, TlsOptions};

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use wharf_types::route::RouteTable;

use crate::error::ProxyError;
use crate::headers::RequestIds;
use crate::inflight::Counters;
use crate::limits::Limits;
use crate::table::{Pick, Table};

/// Settings of a [`Router`].
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Upper bound on establishing a TCP connection to a replica.
    pub connect_timeout: Duration,
    /// Upper bound on waiting for a replica's response headers: then 504.
    pub response_timeout: Duration,
    /// Consecutive failures (refused or timed-out connection, 5xx) that eject a replica
    /// from balancing; 0 turns passive ejection off.
    pub eject_after: u32,
    /// How long an ejected replica is left out before it is tried again.
    pub eject_for: Duration,
    /// At shutdown, how long HTTP/1 keep-alive connections get to close cleanly after
    /// their next response (`Connection: close`) before idle ones are closed.
    pub drain_window: Duration,
    /// HTTPS: the certificates and the TLS listener's port (for redirects). Without it
    /// `https_only` routes are served on plaintext as well.
    pub https: Option<Https>,
    /// Longest pause between two reads of a request or response body in flight.
    pub idle_timeout: Duration,
    /// Largest request body accepted (413 above), in bytes.
    pub max_body: u64,
    /// Threads serving each listener, each with its own single-threaded runtime and
    /// upstream connection pool (see `server`); 0 counts as 1.
    /// Default: the number of CPUs.
    pub workers: usize,
    /// Called on each worker thread as it starts, with its index (the binary pins
    /// worker `i` to the `i`-th CPU with it; the router makes no system call of its
    /// own for that).
    pub on_worker_start: Option<WorkerStart>,
}

/// A hook run on each router worker thread as it starts, with the worker's index.
#[derive(Clone)]
pub struct WorkerStart(pub Arc<dyn Fn(usize) + Send + Sync>);

impl std::fmt::Debug for WorkerStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerStart")
    }
}

/// The HTTPS side of a [`Router`].
#[derive(Debug, Clone)]
pub struct Https {
    pub tls: Arc<Tls>,
    /// Port of the TLS listener, put in `https_only` redirects unless it is 443.
    pub port: u16,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(60),
            eject_after: 5,
            eject_for: Duration::from_secs(10),
            drain_window: Duration::from_secs(2),
            https: None,
            idle_timeout: Duration::from_secs(60),
            max_body: 10 << 20,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            on_worker_start: None,
        }
    }
}

/// The reverse proxy. Share it as `Arc<Router>`; every method takes `&self`.
pub struct Router {
    /// The table in force, behind one lock per worker shard (`shard`): a request
    /// read-locks its worker's, `publish` write-locks them all in turn.
    tables: [shard::Padded<RwLock<Arc<Table>>>; shard::SHARDS],
    publishing: std::sync::Mutex<()>,
    counters: Counters,
    https: Option<Https>,
    ids: RequestIds,
    stats: stats::Stats,
    retries: retry::Retries,
    outlier: outlier::Policy,
    /// Set when the listener stopped accepting: HTTP/1 answers close their connection.
    draining: std::sync::atomic::AtomicBool,
    drain_window: Duration,
    /// Worker threads per listener.
    workers: usize,
    /// The defaults of settings a route may override.
    defaults: RouterConfig,
}

impl Router {
    /// A router with an empty route table (every host answers 404 until a publish).
    pub fn new(config: RouterConfig) -> Arc<Self> {
        Arc::new(Router {
            tables: Default::default(),
            publishing: std::sync::Mutex::new(()),
            counters: Counters::default(),
            https: config.https.clone(),
            ids: RequestIds::new(),
            stats: stats::Stats::default(),
            retries: retry::Retries::default(),
            outlier: outlier::Policy {
                eject_after: config.eject_after,
                eject_for: config.eject_for,
                epoch: std::time::Instant::now(),
            },
            draining: std::sync::atomic::AtomicBool::new(false),
            drain_window: config.drain_window,
            workers: config.workers,
            defaults: config,
        })
    }

    /// Atomically replace the route table. Requests already routed continue untouched;
    /// no connection is dropped.
    pub fn publish(&self, table: RouteTable) {
        let version = table.version;
        let routes = table.routes.len();
        if let Some(https) = &self.https {
            https.tls.publish(&table);
        }
        let env = table::Env {
            counters: &self.counters,
            stats: &self.stats,
            defaults: &self.defaults,
        };
        let next = Arc::new(Table::build(table, &env));
        // One publish at a time, so that every shard ends with the same table.
        let _publishing = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        for shard in &self.tables {
            let previous = {
                // A poisoned lock only means a reader panicked; the Arc is intact.
                let mut current = shard.0.write().unwrap_or_else(|e| e.into_inner());
                std::mem::replace(&mut *current, next.clone())
            };
            drop(previous);
        }
        tracing::debug!(version, routes, "route table published");
    }

    /// The table in force, read-locked in this thread's shard.
    fn table(&self) -> std::sync::RwLockReadGuard<'_, Arc<Table>> {
        let shard = &self.tables[shard::index()].0;
        shard.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests currently in flight to this replica id (used to drain a replica before
    /// stopping it). Keeps counting for a replica no longer in the table until its
    /// last request finishes.
    pub fn inflight(&self, replica: &str) -> usize {
        self.counters.get(replica)
    }

    /// Request counters and latency histograms of every release of `app` (monotonic).
    pub fn stats(&self, app: &str) -> Vec<wharf_types::route::ReleaseStats> {
        self.stats.of(app)
    }

    /// The router's RED metrics in Prometheus text format.
    pub fn metrics(&self) -> String {
        let mut text = stats::prometheus(&self.stats.all());
        text.push_str(&self.retries.prometheus());
        text
    }

    /// Serve on `listener` until `shutdown` resolves; then stop accepting and drain: for
    /// the drain window every HTTP/1 answer carries `Connection: close` (so busy
    /// keep-alive clients reconnect, to a successor that took the listening socket
    /// over, without a request lost to a closing connection), then idle connections
    /// are closed, HTTP/2 ones with GOAWAY, and in-flight requests finish. A client
    /// that never finishes its request can hold this up: bound it with a timeout.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        server::serve(self, listener, None, shutdown).await
    }

    /// Like [`Router::serve`], for HTTPS: TLS on every connection, with the
    /// certificates of [`RouterConfig::https`] (an error without them). Certificate
    /// files that change on disk are reloaded while this runs.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Some(https) = self.https.clone() else {
            return Err(std::io::Error::other(
                "the router has no certificates (RouterConfig::https)",
            ));
        };
        server::serve(self, listener, Some(https.tls), shutdown).await
    }

    /// The TLS listener's port when `host` and `path` are routed `https_only` and there
    /// is one.
    fn https_only_port(&self, host: &str, path: &str) -> Option<u16> {
        let https = self.https.as_ref()?;
        let table = self.table();
        table
            .find(host, path)
            .is_some_and(|route| route.https_only)
            .then_some(https.port)
    }

    /// Choose a backend for `host` (already normalized) and `path`, skipping replica
    /// `exclude`; with the route's limits. The pick, and the increment of its in-flight counter, happen under
    /// the read lock so that `publish` waits for them.
    fn route(
        &self,
        host: &str,
        path: &str,
        exclude: Option<&str>,
    ) -> Result<(Limits, Pick), ProxyError> {
        let table = self.table();
        let route = table.find(host, path).ok_or_else(|| {
            if table.serves(host) {
                ProxyError::UnknownPath(host.to_owned(), path.to_owned())
            } else {
                ProxyError::UnknownHost(host.to_owned())
            }
        })?;
        let pick = route
            .pick(exclude, &self.outlier)
            .ok_or_else(|| ProxyError::NoReadyReplica(route.app.clone()))?;
        Ok((route.limits, pick))
    }
}

impl wharf_core::ports::RouteSink for Router {
    fn publish(&self, table: RouteTable) {
        Router::publish(self, table);
    }
    fn inflight(&self, replica: &str) -> usize {
        Router::inflight(self, replica)
    }
    fn stats(&self, app: &str) -> Vec<wharf_types::route::ReleaseStats> {
        Router::stats(self, app)
    }
    fn metrics(&self) -> String {
        Router::metrics(self)
    }
    fn check_certificate(
        &self,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<(), String> {
        tls::check_files(cert, key).map_err(|e| e.to_string())
    }
    fn https_port(&self) -> Option<u16> {
        self.https.as_ref().map(|h| h.port)
    }
    fn certificates(&self, hosts: &[String]) -> Vec<wharf_types::api::CertificateStatus> {
        self.https
            .as_ref()
            .map_or_else(Vec::new, |h| h.tls.certificates(hosts))
    }
}
