//! The client against real sockets on 127.0.0.1 (port 0): the pool's reuse, expiry and
//! bounds, connections closed while idle, request framing on the wire, response
//! framing and what it means for reuse.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
async fn replica(keep_alive: bool, gate: Arc<tokio::sync::Semaphore>) -> (SocketAddr, Arc<Seen>) {
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

/// A replica that reads one request head per answer and writes `answer` after each,
/// `answers` times, then closes (without saying so; with 0 answers, it reads one head
/// and closes); the heads it read go to `heads`.
async fn scripted(
    answer: &'static [u8],
    answers: usize,
) -> (
    SocketAddr,
    Arc<Seen>,
    tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let (tx, heads) = tokio::sync::mpsc::unbounded_channel();
    let (addr, seen) = listen(move |mut stream| {
        let tx = tx.clone();
        async move {
            for n in 0..answers.max(1) {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = tx.send(head);
                if n == answers || stream.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (addr, seen, heads)
}

fn open() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(
        tokio::sync::Semaphore::MAX_PERMITS,
    ))
}

fn get() -> RequestHead {
    request("GET")
}

fn request(method: &str) -> RequestHead {
    head(&format!("{method} / HTTP/1.1\r\nhost: test\r\n\r\n"))
}

fn head(text: &str) -> RequestHead {
    let mut head = RequestHead::default();
    head.parse(text.as_bytes())
        .expect("valid")
        .expect("complete");
    head
}

impl Upstream {
    /// `send` starting now, with the test's forwarding fields and no body.
    async fn send_now(
        &self,
        addr: SocketAddr,
        deadlines: Deadlines,
        request: &RequestHead,
    ) -> Result<(Head, UpstreamBody), UpstreamError> {
        let now = tokio::time::Instant::now();
        self.send(addr, deadlines, now, request, &FORWARD, &Shared::empty())
            .await
    }
}

const FORWARD: Forward<'static> = Forward {
    client: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    secure: false,
    request_id: b"test",
    traceparent: None,
};

const DEADLINES: Deadlines = Deadlines {
    connect: Duration::from_secs(2),
    response: Duration::from_secs(5),
};

/// One whole exchange: status and body.
async fn exchange_as(upstream: &Upstream, addr: SocketAddr, request: &RequestHead) -> (u16, Bytes) {
    let (head, body) = upstream
        .send_now(addr, DEADLINES, request)
        .await
        .expect("exchange");
    let status = head.status.as_u16();
    let body = body.collect().await.expect("body");
    (status, body.to_bytes())
}

/// A GET to a new replica that answers it with `answer`.
async fn answered(answer: &'static [u8]) -> Result<(Head, UpstreamBody), UpstreamError> {
    answered_to(&get(), answer).await
}

/// `request` to a new replica that answers it with `answer`.
async fn answered_to(
    request: &RequestHead,
    answer: &'static [u8],
) -> Result<(Head, UpstreamBody), UpstreamError> {
    let (addr, _, _) = scripted(answer, 1).await;
    Upstream::default().send_now(addr, DEADLINES, request).await
}

async fn exchange(upstream: &Upstream, addr: SocketAddr) -> Bytes {
    exchange_as(upstream, addr, &get()).await.1
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
        assert_eq!(upstream.idle(addr), 1, "back in the pool at the body's end");
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
    assert_eq!(upstream.idle(addr), 0, "none pooled");

    // The replica closes without saying so, after each answer: the next request
    // finds the pooled connection closed, or sees it close unanswered, and goes on a
    // new connection either way.
    let (addr, seen, _) = scripted(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 1).await;
    for n in 1..=3 {
        assert_eq!(exchange(&upstream, addr).await, "ok");
        assert_eq!(seen.accepted(), n);
    }
}

#[tokio::test]
async fn a_pooled_connection_the_replica_closed_is_not_used() {
    // One answer on the first connection, then the replica closes it while pooled.
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (addr, seen, _) = scripted(answer, 1).await;
    let upstream = Upstream::default();
    assert_eq!(exchange(&upstream, addr).await, "ok");
    eventually("closed", || seen.closed() == 1).await;
    // A GET goes again on a new connection.
    assert_eq!(exchange(&upstream, addr).await, "ok");
    assert_eq!(seen.accepted(), 2);
}

#[tokio::test]
async fn a_request_closed_unanswered_on_a_reused_connection_goes_again_if_idempotent() {
    // A replica that reads each request head and closes without an answer.
    let (addr, seen, mut heads) = scripted(b"", 0).await;
    let upstream = Upstream::default();
    let pool_one = || async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Home::of(&upstream.pool).checkin(Conn::new(stream, addr, tokio::time::Instant::now()));
    };
    // A POST written on a pooled connection that then closed unanswered may have been
    // processed: it is not sent again.
    pool_one().await;
    let error = upstream
        .send_now(addr, DEADLINES, &request("POST"))
        .await
        .expect_err("no answer");
    assert_eq!(Failure::of(&error), Failure::Reset, "{error}");
    assert!(heads.recv().await.is_some());
    assert_eq!(seen.accepted(), 1, "not sent on another connection");
    // A GET is: once more, on a new connection (which fails the same way).
    pool_one().await;
    let error = upstream
        .send_now(addr, DEADLINES, &get())
        .await
        .expect_err("no answer");
    assert_eq!(Failure::of(&error), Failure::Reset, "{error}");
    assert_eq!(seen.accepted(), 3, "the pooled one, then a new one");
    assert!(heads.recv().await.is_some() && heads.recv().await.is_some());
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
        .send_now(addr, DEADLINES, &get())
        .await
        .expect_err("nothing listens");
    assert_eq!(Failure::of(&error), Failure::Connect { timed_out: false });
}

#[tokio::test]
async fn a_bodiless_request_is_one_write_of_its_head() {
    // The replica reads exactly once: the whole head must be in that one segment.
    let (addr, _) = listen(|mut stream| async move {
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap_or(0);
        let whole = buf[..n].ends_with(b"\r\n\r\n");
        let reply: &[u8] = match whole {
            true => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none",
            false => b"HTTP/1.1 500 Split\r\ncontent-length: 5\r\n\r\nsplit",
        };
        let _ = stream.write_all(reply).await;
    })
    .await;
    let (status, body) = exchange_as(&Upstream::default(), addr, &get()).await;
    assert_eq!((status, &body[..]), (200, &b"one"[..]));
}

#[tokio::test]
async fn response_framings_and_what_they_mean_for_reuse() {
    let cases: [(&'static [u8], &str, bool); 6] = [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", "hello", true),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\nx-t: 1\r\n\r\n",
            "hello",
            true,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", "", true),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", "ok", true),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok", "ok", false),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", "ok", false),
    ];
    for (answer, body, reused) in cases {
        let (addr, seen, _) = scripted(answer, 2).await;
        let upstream = Upstream::default();
        for _ in 0..2 {
            let (status, got) = exchange_as(&upstream, addr, &get()).await;
            assert!(status == 200 || status == 204);
            assert_eq!(got, body.as_bytes(), "{}", String::from_utf8_lossy(answer));
        }
        let want = if reused { 1 } else { 2 };
        assert_eq!(seen.accepted(), want, "{}", String::from_utf8_lossy(answer));
    }
}

#[tokio::test]
async fn a_body_until_close_is_read_to_the_end_and_not_reused() {
    let (addr, seen) = listen(|mut stream| async move {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\nall of ").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = stream.write_all(b"it").await;
    })
    .await;
    let upstream = Upstream::default();
    assert_eq!(exchange(&upstream, addr).await, "all of it");
    assert_eq!(upstream.idle(addr), 0);
    assert_eq!(exchange(&upstream, addr).await, "all of it");
    assert_eq!(seen.accepted(), 2);
}

#[tokio::test]
async fn bodies_are_streamed_and_cut_bodies_are_errors() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX",
    ] {
        let (_, mut body) = answered(answer).await.expect("head");
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.is_data());
        let mut rest = Ok(());
        while let Some(frame) = body.frame().await {
            if let Err(error) = frame {
                rest = Err(error);
                break;
            }
        }
        assert!(rest.is_err(), "{}", String::from_utf8_lossy(answer));
    }
}

#[tokio::test]
async fn invalid_heads_are_protocol_errors_never_retried() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\nok"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nx: 1\r\n folded\r\ncontent-length: 2\r\n\r\nok",
        b"garbage\r\n\r\n",
    ] {
        let error = answered(answer).await.expect_err("refused");
        assert!(matches!(error, UpstreamError::Protocol(_)), "{error}");
        assert_eq!(Failure::of(&error), Failure::Other);
    }
}

#[tokio::test]
async fn a_101_hands_over_the_connection_and_the_early_bytes() {
    let switch =
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\nearly";
    let upgrade = head("GET / HTTP/1.1\r\nhost: test\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n");
    let (head, body) = answered_to(&upgrade, switch).await.expect("head");
    assert_eq!(head.status, 101);
    let (_, early) = body.into_tunnel().expect("the connection");
    assert_eq!(early, "early");
    // Not asked for: refused, never a tunnel.
    let error = answered(switch).await.expect_err("unasked 101");
    assert!(
        matches!(error, UpstreamError::Protocol(ProtocolError::UnaskedSwitch)),
        "{error}"
    );
}

#[tokio::test]
async fn the_response_timeout_bounds_the_head() {
    let (addr, _) = listen(|stream| async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(stream);
    })
    .await;
    let deadlines = Deadlines {
        connect: Duration::from_secs(1),
        response: Duration::from_millis(100),
    };
    let started = std::time::Instant::now();
    let error = Upstream::default()
        .send_now(addr, deadlines, &get())
        .await
        .expect_err("no answer");
    assert!(matches!(error, UpstreamError::Timeout), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
}
