//! The downstream listeners: HTTP/1.1 keep-alive connections (with upgrades) and HTTP/2,
//! told apart by the connection preface (prior knowledge on plaintext; on TLS the
//! client sends it after ALPN chose `h2`); graceful shutdown.
//!
//! Workers, share-nothing like nginx's: a listener is served by
//! [`RouterConfig::workers`](crate::RouterConfig::workers) OS threads, each running a
//! single-threaded tokio runtime with its own accept loop on a duplicate of the
//! listening socket (one socket, so a takeover still hands over one fd) and its own
//! upstream clients (`limits::Clients`). A connection, its requests and the upstream
//! connections they use all stay on one thread: no work stealing, no cross-thread
//! wake-ups, uncontended connection pools. What the workers share is the [`Router`]
//! (route table, in-flight counters, stats); the caller's runtime only waits for the
//! shutdown signal and runs the TLS certificate reloads.
//!
//! Each connection carries its own [`Conn`] (peer, and whether it came over TLS), so
//! `X-Forwarded-Proto`, redirects and HSTS follow the listener a request arrived on. A
//! TLS handshake runs in the connection's own task, bounded by the handshake timeout:
//! a slow or failed handshake drops that connection only.
//!
//! Invariants (the `serve` contract): once `shutdown` resolved, no worker accepts again
//! before `draining` is set; `serve` returns only after every connection of every
//! worker ended. Dropping the `serve` future stops the workers too (they see their
//! channels closed): idle connections close, requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::rt::{Read, Write};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use crate::limits::Clients;
use crate::proxy;
use crate::tls::Tls;
use crate::Router;

/// Pause after a failed accept (say, out of file descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What the proxy knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conn {
    pub(crate) peer: SocketAddr,
    /// Whether the connection is TLS (the client used `https`).
    pub(crate) secure: bool,
}

/// What the connections of one worker share. Cloned per request, so its reference
/// count stays on this worker's cache lines (not the `Router`'s, which every worker
/// would contend for).
pub(crate) struct Local {
    pub(crate) router: Arc<Router>,
    /// This worker's upstream clients and their connection pools.
    pub(crate) clients: Clients,
}

/// One worker thread's share of a listener.
struct Worker {
    router: Arc<Router>,
    listener: std::net::TcpListener,
    tls: Option<Arc<Tls>>,
    /// Turns true (or closes) when the worker must stop accepting.
    quit: watch::Receiver<bool>,
    /// Held while the worker may still accept.
    accepting: watch::Receiver<()>,
    /// Held by every connection: turns true when idle connections must close.
    stop: watch::Receiver<bool>,
}

pub(crate) async fn serve(
    router: Arc<Router>,
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Each connection holds a receiver; `closed()` resolves when the last one is gone.
    let (stop, stopped) = watch::channel(false);
    let (quit, quitting) = watch::channel(false);
    let (accepting, accepting_rx) = watch::channel(());
    let listener = listener.into_std()?;
    let mut finished = Vec::new();
    for index in 0..router.workers.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let worker = Worker {
            router: router.clone(),
            listener: listener.try_clone()?,
            tls: tls.clone(),
            quit: quitting.clone(),
            accepting: accepting_rx.clone(),
            stop: stopped.clone(),
        };
        let (done, done_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("wharf-router-{index}"))
            .spawn(move || {
                runtime.block_on(worker.run());
                // Upstream connections still pooled are dropped with the runtime.
                drop(runtime);
                let _ = done.send(());
            })?;
        finished.push(done_rx);
    }
    drop((listener, quitting, accepting_rx));
    let reloader = tls.clone().map(|tls| tokio::spawn(reload(tls)));
    let acme = tls
        .as_ref()
        .and_then(|tls| tls.acme.clone())
        .map(|acme| tokio::spawn(acme.run()));
    shutdown.await;
    for task in reloader.into_iter().chain(acme) {
        task.abort();
    }
    let _ = quit.send(true);
    // Every worker has stopped accepting and closed its copy of the listening socket.
    accepting.closed().await;
    drop(stopped);
    router
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // Busy HTTP/1 connections close after their next answer; wait for them a while.
    let _ = tokio::time::timeout(router.drain_window, stop.closed()).await;
    // Err only when no connection is left to tell.
    let _ = stop.send(true);
    stop.closed().await;
    for done in finished {
        let _ = done.await;
    }
    Ok(())
}

impl Worker {
    /// Accepts until told to quit, then waits for this worker's connections to end.
    async fn run(self) {
        let Worker {
            router,
            listener,
            tls,
            mut quit,
            accepting,
            stop,
        } = self;
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "router worker cannot listen");
                return;
            }
        };
        let local = Arc::new(Local {
            router,
            clients: Clients::default(),
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        // Each connection task holds a receiver: `closed()` once they all ended.
        let (alive, _) = watch::channel(());
        loop {
            let failed = tokio::select! {
                _ = quit.wait_for(|quit| *quit) => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let (local, builder) = (local.clone(), builder.clone());
                        let (stop, alive) = (stop.clone(), alive.subscribe());
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            match tls {
                                None => plain(local, builder, stream, stop).await,
                                Some(tls) => secure(local, builder, stream, tls, stop).await,
                            }
                            drop(alive);
                        });
                        false
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        true
                    }
                },
            };
            if failed {
                tokio::select! {
                    _ = quit.wait_for(|quit| *quit) => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
        drop((listener, accepting, stop));
        alive.closed().await;
    }
}

/// Re-reads certificate files that changed on disk, while the TLS listener serves.
async fn reload(tls: Arc<Tls>) {
    let mut every = tokio::time::interval(tls.options.reload_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let tls = tls.clone();
        // File reads and key parsing: off the async workers.
        let _ = tokio::task::spawn_blocking(move || tls.reload_changed()).await;
    }
}

async fn plain(
    local: Arc<Local>,
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    stop: watch::Receiver<bool>,
) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    let conn = Conn {
        peer,
        secure: false,
    };
    connection(local, builder, TokioIo::new(stream), conn, stop).await;
}

async fn secure(
    local: Arc<Local>,
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    tls: Arc<Tls>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    let handshake =
        tokio::time::timeout(tls.options.handshake_timeout, tls.acceptor().accept(stream));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = stop.wait_for(|stop| *stop) => return,
    };
    let conn = Conn { peer, secure: true };
    connection(local, builder, TokioIo::new(stream), conn, stop).await;
}

async fn connection<I>(
    local: Arc<Local>,
    builder: auto::Builder<TokioExecutor>,
    io: I,
    conn: Conn,
    mut stop: watch::Receiver<bool>,
) where
    I: Read + Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let local = local.clone();
        async move {
            Ok::<_, Infallible>(proxy::handle(&local.router, &local.clients, request, conn).await)
        }
    });
    let serving = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(serving);
    let result = tokio::select! {
        result = serving.as_mut() => result,
        () = async { drop(stop.wait_for(|stop| *stop).await) } => {
            serving.as_mut().graceful_shutdown();
            serving.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(peer = %conn.peer, %error, "downstream connection ended with an error");
    }
}
