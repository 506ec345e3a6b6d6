//! The downstream listener: HTTP/1.1 keep-alive connections (with upgrades) and HTTP/2
//! with prior knowledge (h2c), told apart by the connection preface; graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::proxy;
use crate::Router;

/// Pause after a failed accept (say, out of file descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) async fn serve(
    router: Arc<Router>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Each connection holds a receiver; `closed()` resolves when the last one is gone.
    let (stop, stopped) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let connection = connection(router.clone(), builder.clone(), stream, stopped.clone());
                    tokio::spawn(connection);
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

async fn connection(
    router: Arc<Router>,
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let router = router.clone();
        async move { Ok::<_, Infallible>(proxy::handle(&router, request, peer).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = async { drop(stop.wait_for(|stop| *stop).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "downstream connection ended with an error");
    }
}
