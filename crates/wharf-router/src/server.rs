//! The downstream listeners: HTTP/1.1 keep-alive connections (with upgrades) and HTTP/2,
//! told apart by the connection preface (prior knowledge on plaintext; on TLS the
//! client sends it after ALPN chose `h2`); graceful shutdown.
//!
//! Each connection carries its own [`Conn`] (peer, and whether it came over TLS), so
//! `X-Forwarded-Proto`, redirects and HSTS follow the listener a request arrived on. A
//! TLS handshake runs in the connection's own task, bounded by the handshake timeout:
//! a slow or failed handshake drops that connection only.

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
use tokio::sync::watch;

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

pub(crate) async fn serve(
    router: Arc<Router>,
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Each connection holds a receiver; `closed()` resolves when the last one is gone.
    let (stop, stopped) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let reloader = tls.clone().map(|tls| tokio::spawn(reload(tls)));
    let acme = tls
        .as_ref()
        .and_then(|tls| tls.acme.clone())
        .map(|acme| tokio::spawn(acme.run()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (router, builder, stopped) = (router.clone(), builder.clone(), stopped.clone());
                    match &tls {
                        None => tokio::spawn(plain(router, builder, stream, stopped)),
                        Some(tls) => tokio::spawn(secure(router, builder, stream, tls.clone(), stopped)),
                    };
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
        }
    }
    for task in reloader.into_iter().chain(acme) {
        task.abort();
    }
    drop(listener);
    drop(stopped);
    router
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // Busy HTTP/1 connections close after their next answer; wait for them a while.
    let _ = tokio::time::timeout(router.drain_window, stop.closed()).await;
    // Err only when no connection is left to tell.
    let _ = stop.send(true);
    stop.closed().await;
    Ok(())
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
    router: Arc<Router>,
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
    connection(router, builder, TokioIo::new(stream), conn, stop).await;
}

async fn secure(
    router: Arc<Router>,
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
    connection(router, builder, TokioIo::new(stream), conn, stop).await;
}

async fn connection<I>(
    router: Arc<Router>,
    builder: auto::Builder<TokioExecutor>,
    io: I,
    conn: Conn,
    mut stop: watch::Receiver<bool>,
) where
    I: Read + Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let router = router.clone();
        async move { Ok::<_, Infallible>(proxy::handle(&router, request, conn).await) }
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
