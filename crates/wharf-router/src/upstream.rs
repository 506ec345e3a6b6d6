//! The upstream client: HTTP/1.1 to replicas over keep-alive connections, one pool per
//! router worker (see `server`), so nothing in it is shared between threads.
//!
//! A request takes the most recently returned idle connection to its replica's address
//! (LIFO: the warmest one, and the cold ones at the front expire), skipping connections
//! that closed or expired; with none left it connects, within the route's connect
//! timeout, with `TCP_NODELAY`. The exchange holds its connection as a [`Lease`]; the
//! response body gives it back ([`Lease::release`]) once it ended cleanly, any other
//! end (error, idle timeout, client gone, upgrade) drops it, which closes the
//! connection. Idle connections are closed after the idle timeout by a task that runs
//! only while the pool holds some, and at most `max_idle` stay per address (the oldest
//! go first).
//!
//! A request that a reused connection rejected before writing any of it (the replica
//! closed that connection while it sat idle) is sent again on the next idle or a new
//! connection: it never reached the replica, so this is not a retry in `retry`'s sense.
//!
//! Invariants: a pooled connection is idle (its sender is ready: no exchange in
//! progress), so two requests never share one; the pool holds at most `max_idle`
//! connections per address and none older than `idle_timeout` once the reaper ran.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::request_body::RequestBody;

/// How long an idle upstream keep-alive connection stays in the pool.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per replica address and worker. Above the concurrency a
/// worker sees in bursts, else connections are closed and made again: with 256, h2c
/// at 640 streams (320 a worker) closed about 1,500 connections a second whenever the
/// load generator was descheduled and every exchange came back at once.
pub(crate) const MAX_IDLE: usize = 1024;

type Sender = http1::SendRequest<RequestBody>;

/// How the pool treats idle connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolConfig {
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            idle_timeout: IDLE_TIMEOUT,
            max_idle: MAX_IDLE,
        }
    }
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection was made (refused, unreachable, or the connect timeout expired).
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        timed_out: bool,
        #[source]
        source: std::io::Error,
    },
    /// The connection failed during the exchange, or refused the request.
    #[error("{0}")]
    Exchange(#[source] hyper::Error),
}

/// One worker's client: its idle connections by replica address.
#[derive(Debug)]
pub(crate) struct Upstream {
    pool: Arc<Mutex<Pool>>,
    builder: http1::Builder,
}

#[derive(Debug, Default)]
struct Pool {
    config: PoolConfig,
    /// Per address, oldest first: requests take from the back, expiry works from the
    /// front.
    idle: HashMap<SocketAddr, VecDeque<Idle>>,
    /// The expiry task is running.
    reaping: bool,
}

#[derive(Debug)]
struct Idle {
    sender: Sender,
    since: Instant,
}

/// The connection one exchange uses; see [`Lease::release`].
#[derive(Debug)]
pub(crate) struct Lease {
    sender: Sender,
    addr: SocketAddr,
    pool: Weak<Mutex<Pool>>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream::new(PoolConfig::default())
    }
}

impl Upstream {
    pub(crate) fn new(config: PoolConfig) -> Self {
        Upstream {
            pool: Arc::new(Mutex::new(Pool {
                config,
                ..Pool::default()
            })),
            builder: http1::Builder::new(),
        }
    }

    /// Sends `request` (origin-form target, `Host` set) to `addr` on an idle connection,
    /// else on a new one made within `connect`. The response comes with the lease of
    /// its connection, to give back when the response body ended.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        connect: Duration,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        loop {
            let (mut sender, reused) = match self.checkout(addr) {
                Some(sender) => (sender, true),
                // Boxed: the rare path should not make every request's future larger.
                None => (Box::pin(self.connect(addr, connect)).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let pool = Arc::downgrade(&self.pool);
                    return Ok((response, Lease { sender, addr, pool }));
                }
                Err(mut error) => match error.take_message() {
                    // Never written: the connection had closed while idle.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(UpstreamError::Exchange(error.into_error())),
                },
            }
        }
    }

    /// The most recently returned usable idle connection to `addr`; the unusable ones
    /// met on the way are dropped.
    fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        let mut pool = lock(&self.pool);
        let timeout = pool.config.idle_timeout;
        let list = pool.idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(idle) = list.pop_back() {
            if now.duration_since(idle.since) >= timeout {
                // The rest are older still.
                list.clear();
                break;
            }
            if idle.sender.is_ready() {
                return Some(idle.sender);
            }
        }
        None
    }

    async fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<Sender, UpstreamError> {
        let failed = |timed_out, source| UpstreamError::Connect {
            addr,
            timed_out,
            source,
        };
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(failed(false, error)),
            Err(_) => return Err(failed(true, std::io::ErrorKind::TimedOut.into())),
        };
        stream
            .set_nodelay(true)
            .map_err(|error| failed(false, error))?;
        let (sender, connection) = self
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Exchange)?;
        tokio::spawn(async move {
            // Upgrades: a 101 hands the socket to `hyper::upgrade::on` of the response.
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%addr, %error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Idle connections pooled for `addr`.
    #[cfg(test)]
    fn idle(&self, addr: SocketAddr) -> usize {
        lock(&self.pool).idle.get(&addr).map_or(0, VecDeque::len)
    }
}

impl Lease {
    /// The response ended cleanly: the connection goes back to the pool as soon as it
    /// can take the next request (at once, unless hyper has yet to finish the exchange).
    pub(crate) fn release(mut self) {
        if self.sender.is_ready() {
            self.checkin();
        } else if !self.sender.is_closed() {
            tokio::spawn(async move {
                if self.sender.ready().await.is_ok() {
                    self.checkin();
                }
            });
        }
    }

    fn checkin(self) {
        let Some(shared) = self.pool.upgrade() else {
            return;
        };
        let mut pool = lock(&shared);
        let max_idle = pool.config.max_idle;
        let list = pool.idle.entry(self.addr).or_default();
        list.push_back(Idle {
            sender: self.sender,
            since: Instant::now(),
        });
        while list.len() > max_idle {
            list.pop_front();
        }
        if !pool.reaping && tokio::runtime::Handle::try_current().is_ok() {
            pool.reaping = true;
            tokio::spawn(reap(Arc::downgrade(&shared)));
        }
    }
}

/// Closes idle connections as they expire; ends when the pool is empty (the next
/// check-in starts it again) or gone.
async fn reap(pool: Weak<Mutex<Pool>>) {
    loop {
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            let mut pool = lock(&pool);
            let timeout = pool.config.idle_timeout;
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            pool.idle.retain(|_, list| {
                list.retain(|idle| {
                    now.duration_since(idle.since) < timeout && !idle.sender.is_closed()
                });
                if let Some(oldest) = list.front() {
                    let expiry = oldest.since + timeout;
                    next = Some(next.map_or(expiry, |n| n.min(expiry)));
                }
                !list.is_empty()
            });
            if next.is_none() {
                pool.reaping = false;
            }
            next
        };
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => return,
        }
    }
}

fn lock(pool: &Mutex<Pool>) -> MutexGuard<'_, Pool> {
    // Every critical section leaves the pool consistent; poisoning is harmless.
    pool.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::request_body::Shared;
    use crate::retry::Failure;

    /// Connections a test replica accepted and saw end.
    #[derive(Default)]
    struct Seen {
        accepted: AtomicUsize,
        closed: AtomicUsize,
    }

    impl Seen {
        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::SeqCst)
        }
        fn closed(&self) -> usize {
            self.closed.load(Ordering::SeqCst)
        }
    }

    /// Listens on port 0 and runs `serve` on each connection, counting them.
    async fn listen<F, S>(serve: S) -> (SocketAddr, Arc<Seen>)
    where
        S: Fn(tokio::net::TcpStream) -> F + Send + 'static,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counts.accepted.fetch_add(1, Ordering::SeqCst);
                let (served, counts) = (serve(stream), counts.clone());
                tokio::spawn(async move {
                    served.await;
                    counts.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (addr, seen)
    }

    /// A hyper replica answering "ok" (with keep-alive unless `keep_alive` is false)
    /// once `gate` lets it.
    async fn replica(
        keep_alive: bool,
        gate: Arc<tokio::sync::Semaphore>,
    ) -> (SocketAddr, Arc<Seen>) {
        listen(move |stream| {
            let gate = gate.clone();
            let service = service_fn(move |_: Request<Incoming>| {
                let gate = gate.clone();
                async move {
                    drop(gate.acquire().await);
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
                }
            });
            async move {
                let _ = server::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        })
        .await
    }

    fn open() -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(
            tokio::sync::Semaphore::MAX_PERMITS,
        ))
    }

    fn get() -> Request<RequestBody> {
        let mut request = Request::new(Shared::empty().attempt());
        request
            .headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("test"));
        request
    }

    /// One whole exchange, the connection given back as the proxy's body does.
    async fn exchange(upstream: &Upstream, addr: SocketAddr) -> Bytes {
        let (response, lease) = upstream
            .send(addr, Duration::from_secs(2), get())
            .await
            .expect("exchange");
        let body = response.into_body().collect().await.expect("body");
        lease.release();
        body.to_bytes()
    }

    /// Waits until `done` holds, failing the test after five seconds.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn reuses_an_idle_connection() {
        let (addr, seen) = replica(true, open()).await;
        let upstream = Upstream::default();
        for _ in 0..3 {
            assert_eq!(exchange(&upstream, addr).await, "ok");
            eventually("back in the pool", || upstream.idle(addr) == 1).await;
        }
        assert_eq!(seen.accepted(), 1, "one connection for three requests");
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let (addr, seen) = replica(true, open()).await;
        let upstream = Upstream::new(PoolConfig {
            idle_timeout: Duration::from_millis(50),
            max_idle: 8,
        });
        exchange(&upstream, addr).await;
        eventually("closed by the reaper", || {
            upstream.idle(addr) == 0 && seen.closed() == 1
        })
        .await;
        exchange(&upstream, addr).await;
        assert_eq!(seen.accepted(), 2, "an expired connection is not reused");
    }

    #[tokio::test]
    async fn closed_connections_are_not_reused() {
        // The replica says `Connection: close`.
        let (addr, seen) = replica(false, open()).await;
        let upstream = Upstream::default();
        for n in 1..=3 {
            assert_eq!(exchange(&upstream, addr).await, "ok");
            assert_eq!(seen.accepted(), n);
        }
        eventually("none pooled", || upstream.idle(addr) == 0).await;

        // The replica closes without saying so, after each answer: the next request
        // finds the pooled connection closed, or is refused unsent by it, and goes
        // on a new connection either way.
        let (addr, seen) = listen(|mut stream| async move {
            // hyper writes a bodiless request head with one write.
            let mut head = [0u8; 1024];
            if matches!(stream.read(&mut head).await, Ok(n) if n > 0) {
                let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                let _ = stream.write_all(reply).await;
            }
        })
        .await;
        for n in 1..=3 {
            assert_eq!(exchange(&upstream, addr).await, "ok");
            assert_eq!(seen.accepted(), n);
        }
    }

    #[tokio::test]
    async fn keeps_at_most_max_idle_per_address() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (addr, seen) = replica(true, gate.clone()).await;
        let upstream = Arc::new(Upstream::new(PoolConfig {
            idle_timeout: Duration::from_secs(60),
            max_idle: 2,
        }));
        let exchanges: Vec<_> = (0..4)
            .map(|_| {
                let upstream = upstream.clone();
                tokio::spawn(async move { exchange(&upstream, addr).await })
            })
            .collect();
        // All four in flight at once: four connections.
        eventually("four connections", || seen.accepted() == 4).await;
        gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
        for exchange in exchanges {
            assert_eq!(exchange.await.expect("task"), "ok");
        }
        eventually("two pooled, two closed", || {
            upstream.idle(addr) == 2 && seen.closed() == 2
        })
        .await;
    }

    #[tokio::test]
    async fn refused_connect_is_a_connect_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let error = Upstream::default()
            .send(addr, Duration::from_secs(2), get())
            .await
            .expect_err("nothing listens");
        assert_eq!(Failure::of(&error), Failure::Connect { timed_out: false });
    }
}
