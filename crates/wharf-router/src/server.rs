//! The downstream listeners: HTTP/1.1 keep-alive connections (with upgrades) and HTTP/2,
//! told apart by the connection preface (prior knowledge on plaintext; on TLS the
//! client sends it after ALPN chose `h2`); graceful shutdown.
//!
//! Workers, share-nothing like nginx's: a listener is served by
//! [`RouterConfig::workers`](crate::RouterConfig::workers) OS threads, each running a
//! single-threaded tokio runtime with its own upstream client (`upstream::Upstream`). A
//! connection, its requests and the upstream connections they use all stay on one
//! thread: no work stealing, no cross-thread wake-ups, uncontended connection pools.
//! What the workers share is the [`Router`] (route table, in-flight counters, stats).
//! The accept loop runs in the caller's runtime and hands each connection to the
//! worker with the fewest (workers accepting on the shared socket themselves ended up
//! with every keep-alive connection on one of them); it also runs the TLS certificate
//! reloads. One listening socket, so a takeover still hands over one fd.
//!
//! Each connection carries its own [`Conn`] (peer, and whether it came over TLS), so
//! `X-Forwarded-Proto`, redirects and HSTS follow the listener a request arrived on. A
//! TLS handshake runs in the connection's own task, bounded by the handshake timeout:
//! a slow or failed handshake drops that connection only.
//!
//! Invariants (the `serve` contract): once `shutdown` resolved nothing is accepted any
//! more, then `draining` is set; `serve` returns only after every connection of every
//! worker ended. Dropping the `serve` future stops the workers too (they see their
//! channels closed): idle connections close, requests in flight finish.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::downstream::{self, Reader, Writer};
use crate::h2;
use crate::headers::RequestIds;
use crate::tls::Tls;
use crate::upstream::Upstream;
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
    /// This worker's upstream client and its connection pool.
    pub(crate) upstream: Upstream,
    /// This worker's request id generator.
    pub(crate) ids: RequestIds,
}

/// One worker thread: the connections the acceptor hands it.
struct Worker {
    router: Arc<Router>,
    tls: Option<Arc<Tls>>,
    /// Accepted connections; closed when the listener stopped accepting.
    streams: mpsc::UnboundedReceiver<std::net::TcpStream>,
    /// This worker's connections (counted up by the acceptor, down when one ends).
    live: Arc<AtomicUsize>,
    /// Held by every connection: turns true when idle connections must close.
    stop: watch::Receiver<bool>,
}

/// The acceptor's handle on a worker.
struct Handle {
    streams: mpsc::UnboundedSender<std::net::TcpStream>,
    live: Arc<AtomicUsize>,
    finished: oneshot::Receiver<()>,
}

pub(crate) async fn serve(
    router: Arc<Router>,
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Each connection holds a receiver; `closed()` resolves when the last one is gone.
    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for index in 0..router.workers.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (streams, receiver) = mpsc::unbounded_channel();
        let live = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            router: router.clone(),
            tls: tls.clone(),
            streams: receiver,
            live: live.clone(),
            stop: stopped.clone(),
        };
        let (done, finished) = oneshot::channel::<()>();
        let on_start = router.defaults.on_worker_start.clone();
        std::thread::Builder::new()
            .name(format!("wharf-router-{index}"))
            .spawn(move || {
                crate::shard::set_worker(index);
                if let Some(hook) = on_start {
                    (hook.0)(index);
                }
                runtime.block_on(worker.run());
                // Upstream connections still pooled are dropped with the runtime.
                drop(runtime);
                let _ = done.send(());
            })?;
        workers.push(Handle {
            streams,
            live,
            finished,
        });
    }
    let reloader = tls.clone().map(|tls| tokio::spawn(reload(tls)));
    let acme = tls
        .as_ref()
        .and_then(|tls| tls.acme.clone())
        .map(|acme| tokio::spawn(acme.run()));
    let mut turn = 0usize;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted.and_then(|(stream, _)| stream.into_std()) {
                Ok(stream) => {
                    turn = turn.wrapping_add(1);
                    dispatch(&workers, turn, stream);
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
    // Workers serve what was handed to them, then see their channel closed.
    let finished: Vec<_> = workers.into_iter().map(|w| w.finished).collect();
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

/// Hands `stream` to the worker with the fewest connections (ties: from the `turn`-th
/// worker on, so they go round-robin). A worker whose thread is gone (it can only have
/// panicked) is marked full and never chosen again.
fn dispatch(workers: &[Handle], turn: usize, mut stream: std::net::TcpStream) {
    let count = workers.len();
    for _ in 0..count {
        let Some(worker) = (0..count)
            .map(|i| &workers[(turn + i) % count])
            .min_by_key(|w| w.live.load(Ordering::Relaxed))
        else {
            return;
        };
        worker.live.fetch_add(1, Ordering::Relaxed);
        match worker.streams.send(stream) {
            Ok(()) => return,
            Err(returned) => {
                worker.live.store(GONE, Ordering::Relaxed);
                stream = returned.0;
            }
        }
    }
    // No worker left: the connection is closed.
}

/// The load of a worker whose thread is gone (far from overflowing either way).
const GONE: usize = usize::MAX / 2;

/// Counts a connection down from its worker's load when it ends.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Worker {
    /// Serves the connections handed over until the acceptor stops, then waits for
    /// them to end.
    async fn run(self) {
        let Worker {
            router,
            tls,
            mut streams,
            live,
            stop,
        } = self;
        let local = Arc::new(Local {
            ids: router.ids.worker(),
            router,
            upstream: Upstream::default(),
        });
        // Each connection task holds a receiver: `closed()` once they all ended.
        let (alive, _) = watch::channel(());
        // The listener's stop signal reaches this worker's connections through a channel
        // of their own: a connection polls it at every wake-up, and polling a channel
        // shared by every worker takes a lock both cores write. The relay holds the
        // listener's receiver for as long as this worker takes or has connections.
        let (relay, stop_here) = watch::channel(false);
        tokio::spawn(async move {
            let mut stop = stop;
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => drop(relay.send(true)),
                () = relay.closed() => {}
            }
        });
        let stop = stop_here;
        while let Some(stream) = streams.recv().await {
            let counted = Live(live.clone());
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "router worker cannot take a connection");
                    continue;
                }
            };
            let local = local.clone();
            let (stop, alive) = (stop.clone(), alive.subscribe());
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => plain(local, stream, stop).await,
                    Some(tls) => secure(local, stream, tls, stop).await,
                }
                drop((alive, counted));
            });
        }
        drop(stop);
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

async fn plain(local: Arc<Local>, stream: TcpStream, stop: watch::Receiver<bool>) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    let conn = Conn {
        peer,
        secure: false,
    };
    http(local, stream, conn, stop).await;
}

async fn secure(
    local: Arc<Local>,
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
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        h2::serve(local, stream, conn, stop).await;
    } else {
        http(local, stream, conn, stop).await;
    }
}

/// A stream the router's HTTP/1.1 server can read and write at once.
trait Halves: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    fn halves(
        self,
    ) -> (
        Box<dyn AsyncRead + Send + Unpin>,
        Box<dyn AsyncWrite + Send + Unpin>,
    );
}

impl Halves for TcpStream {
    fn halves(
        self,
    ) -> (
        Box<dyn AsyncRead + Send + Unpin>,
        Box<dyn AsyncWrite + Send + Unpin>,
    ) {
        // Owned halves of a socket: no lock between them.
        let (read, write) = self.into_split();
        (Box::new(read), Box::new(write))
    }
}

impl Halves for tokio_rustls::server::TlsStream<TcpStream> {
    fn halves(
        self,
    ) -> (
        Box<dyn AsyncRead + Send + Unpin>,
        Box<dyn AsyncWrite + Send + Unpin>,
    ) {
        let (read, write) = tokio::io::split(self);
        (Box::new(read), Box::new(write))
    }
}

/// HTTP/1.1, or HTTP/2 with prior knowledge: told apart by the first bytes.
async fn http<S: Halves>(
    local: Arc<Local>,
    mut stream: S,
    conn: Conn,
    stop: watch::Receiver<bool>,
) {
    let mut first = BytesMut::with_capacity(8 * 1024);
    let timeout = tokio::time::sleep(downstream::HEAD_TIMEOUT);
    tokio::pin!(timeout);
    let mut stopped = stop.clone();
    let stopping = stopped.wait_for(|stop| *stop);
    tokio::pin!(stopping);
    // Until the bytes read can no longer be the start of the preface (at once for an
    // HTTP/1.1 request), or are the whole preface.
    while first.len() < h2::PREFACE.len() && h2::PREFACE.starts_with(&first) {
        let read = poll_fn(|cx| {
            if let Poll::Ready(read) = std::pin::pin!(stream.read_buf(&mut first)).poll(cx) {
                return Poll::Ready(read.ok().filter(|n| *n > 0));
            }
            if stopping.as_mut().poll(cx).is_ready() || timeout.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        if read.is_none() {
            return;
        }
    }
    if first.starts_with(h2::PREFACE) {
        h2::serve(local, h2::Prefixed::new(first, stream), conn, stop).await;
        return;
    }
    let (read, write) = stream.halves();
    downstream::serve(
        local,
        Reader::new(read, first),
        Writer::new(write),
        conn,
        stop,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> (Handle, mpsc::UnboundedReceiver<std::net::TcpStream>) {
        let (streams, receiver) = mpsc::unbounded_channel();
        let (_, finished) = oneshot::channel();
        let live = Arc::new(AtomicUsize::new(0));
        (
            Handle {
                streams,
                live,
                finished,
            },
            receiver,
        )
    }

    #[test]
    fn dispatch_goes_to_the_least_loaded_live_worker() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connect = || std::net::TcpStream::connect(addr).expect("connect");
        let (a, mut a_rx) = handle();
        let (b, b_rx) = handle();
        let workers = [a, b];
        workers[0].live.store(3, Ordering::Relaxed);
        dispatch(&workers, 0, connect());
        assert_eq!(workers[1].live.load(Ordering::Relaxed), 1, "b had fewer");
        // b's thread is gone: its connections go to a, and b is never chosen again.
        drop(b_rx);
        dispatch(&workers, 1, connect());
        assert_eq!(workers[1].live.load(Ordering::Relaxed), GONE);
        assert_eq!(workers[0].live.load(Ordering::Relaxed), 4);
        assert!(a_rx.try_recv().is_ok());
        dispatch(&workers, 1, connect());
        assert_eq!(workers[0].live.load(Ordering::Relaxed), 5);
    }
}
