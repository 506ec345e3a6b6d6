//! Failure behaviour of the router against misbehaving replicas: retries, timeouts and
//! the request body limit. Everything on 127.0.0.1 with port 0; raw TCP where a
//! replica must misbehave below HTTP.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use wharf_router::{Router, RouterConfig};
use wharf_types::route::{Backend, Route, RouteTable};
use wharf_types::route_options::RouteOptions;

/// A replica answering `NAME:BODY` after reading the whole request body; every body
/// it read completely is reported on the channel.
async fn echo(name: &'static str) -> (SocketAddr, mpsc::UnboundedReceiver<Bytes>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let tx = tx.clone();
                async move {
                    let body = match req.into_body().collect().await {
                        Ok(body) => body.to_bytes(),
                        Err(_) => Bytes::from_static(b"<broken>"),
                    };
                    let _ = tx.send(body.clone());
                    let mut answer = name.as_bytes().to_vec();
                    answer.push(b':');
                    answer.extend_from_slice(&body);
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer))))
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (addr, rx)
}

/// A replica that accepts, reads the request head, writes `reply` and then either
/// closes (`hold == false`) or keeps the connection open without another byte.
/// Returns its address and the count of connections it accepted.
async fn raw(reply: &'static [u8], hold: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(reply).await;
                if hold {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            });
        }
    });
    (addr, accepted)
}

/// An address nothing listens on.
async fn refused() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// A listener whose accept queue is full, so that connecting to it hangs. The
/// returned streams and listener must live as long as the test needs the blackhole.
async fn blackhole() -> (SocketAddr, TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(e)) => panic!("filling the backlog: {e}"),
            Err(_) => return (addr, listener, held),
        }
    }
    panic!("the accept queue never filled up");
}

fn route(backends: &[SocketAddr], options: RouteOptions) -> RouteTable {
    RouteTable {
        version: 1,
        routes: vec![Route {
            app: "a".into(),
            hosts: vec!["a.localhost".into()],
            backends: backends
                .iter()
                .enumerate()
                .map(|(i, addr)| Backend {
                    replica: format!("a-{i}"),
                    release: 1,
                    addr: *addr,
                })
                .collect(),
            weights: vec![],
            options,
            tls: Default::default(),
        }],
    }
}

/// A router serving `table`; stops when dropped.
struct Running {
    router: Arc<Router>,
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn serve(table: RouteTable) -> Running {
    let router = Router::new(RouterConfig::default());
    router.publish(table);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(router.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    Running {
        router,
        addr,
        _stop: stop,
    }
}

/// Status, and the body or the error that ended it.
async fn send<B>(router: SocketAddr, request: Request<B>) -> (StatusCode, Result<String, String>)
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(router).await.expect("connect router");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let body = match response.into_body().collect().await {
        Ok(b) => Ok(String::from_utf8_lossy(&b.to_bytes()).into_owned()),
        Err(e) => Err(e.to_string()),
    };
    (status, body)
}

fn request(method: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri("/x")
        .header("host", "a.localhost")
        .body(Full::new(Bytes::from_static(body)))
        .expect("request")
}

/// Writes raw bytes and returns the head of the router's answer.
async fn raw_exchange(router: SocketAddr, parts: &[&[u8]], pause: Duration) -> String {
    let mut s = TcpStream::connect(router).await.expect("connect");
    for part in parts {
        s.write_all(part).await.expect("write");
        tokio::time::sleep(pause).await;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer in time");
    String::from_utf8_lossy(&got).into_owned()
}

fn metrics_line(router: &Router, needle: &str) -> Option<String> {
    router
        .metrics()
        .lines()
        .find(|l| l.starts_with("wharf_router_retries_total") && l.contains(needle))
        .map(str::to_owned)
}

#[tokio::test]
async fn refused_post_is_retried_with_its_body_intact() {
    let (live, mut bodies) = echo("live").await;
    let t = serve(route(&[refused().await, live], RouteOptions::default())).await;
    let payload: &'static [u8] = b"the whole payload, byte for byte";
    let (status, body) = send(t.addr, request("POST", payload)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_deref(), Ok("live:the whole payload, byte for byte"));
    assert_eq!(&bodies.recv().await.expect("body")[..], payload);
    let line = metrics_line(&t.router, "reason=\"connect\"").expect("counted");
    assert!(line.ends_with(" 1"), "{line}");
}

#[tokio::test]
async fn get_reset_before_any_byte_is_retried() {
    let (closer, accepted) = raw(b"", false).await;
    let (live, _) = echo("live").await;
    let t = serve(route(&[closer, live], RouteOptions::default())).await;
    let (status, body) = send(t.addr, request("GET", b"")).await;
    assert_eq!((status, body.as_deref()), (StatusCode::OK, Ok("live:")));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the first attempt went to the closer"
    );
    let line = metrics_line(&t.router, "reason=\"reset\"").expect("counted");
    assert!(line.ends_with(" 1"), "{line}");
    // a PUT with a small body is idempotent and was kept: retried too, body intact
    t.router
        .publish(route(&[closer, live], RouteOptions::default()));
    let (status, body) = send(t.addr, request("PUT", b"v=2")).await;
    assert_eq!((status, body.as_deref()), (StatusCode::OK, Ok("live:v=2")));
}

/// The first replica got the request once, the second never did, and no retry was
/// counted.
fn assert_not_retried(
    t: &Running,
    accepted: &AtomicUsize,
    bodies: &mut mpsc::UnboundedReceiver<Bytes>,
) {
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert!(
        bodies.try_recv().is_err(),
        "never sent to the other replica"
    );
    assert!(metrics_line(&t.router, "app=\"a\"").is_none());
}

#[tokio::test]
async fn post_reset_before_any_byte_is_not_retried() {
    let (closer, accepted) = raw(b"", false).await;
    let (live, mut bodies) = echo("live").await;
    let t = serve(route(&[closer, live], RouteOptions::default())).await;
    let (status, _) = send(t.addr, request("POST", b"charge=1")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_not_retried(&t, &accepted, &mut bodies);
}

#[tokio::test]
async fn no_retry_after_response_bytes() {
    let (partial, accepted) = raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it",
        false,
    )
    .await;
    let (live, mut bodies) = echo("live").await;
    let t = serve(route(&[partial, live], RouteOptions::default())).await;
    let (status, body) = send(t.addr, request("GET", b"")).await;
    assert_eq!(status, StatusCode::OK, "the replica's head was passed on");
    assert!(body.is_err(), "the cut-off body is an error: {body:?}");
    assert_not_retried(&t, &accepted, &mut bodies);
}

#[tokio::test]
async fn connect_timeout_is_per_route_then_504_or_retry() {
    let (hole, _listener, _held) = blackhole().await;
    let options = RouteOptions {
        connect_timeout_ms: Some(200),
        ..RouteOptions::default()
    };
    let t = serve(route(&[hole], options.clone())).await;
    let started = Instant::now();
    let (status, body) = send(t.addr, request("GET", b"")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body:?}");
    assert!(body.as_deref().unwrap_or("").contains("200ms"), "{body:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let (live, _) = echo("live").await;
    t.router.publish(route(&[hole, live], options));
    let (status, body) = send(t.addr, request("POST", b"p")).await;
    assert_eq!((status, body.as_deref()), (StatusCode::OK, Ok("live:p")));
}

#[tokio::test]
async fn response_timeout_is_per_route() {
    let (silent, _) = raw(b"", true).await;
    let options = RouteOptions {
        response_timeout_ms: Some(200),
        ..RouteOptions::default()
    };
    let t = serve(route(&[silent], options)).await;
    let started = Instant::now();
    let (status, _) = send(t.addr, request("GET", b"")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn idle_replica_body_is_cut_off() {
    let (stalls, _) = raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst part",
        true,
    )
    .await;
    let options = RouteOptions {
        idle_timeout_ms: Some(200),
        ..RouteOptions::default()
    };
    let t = serve(route(&[stalls], options)).await;
    let started = Instant::now();
    let (status, body) = send(t.addr, request("GET", b"")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_err(), "{body:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn idle_client_body_gets_408() {
    let (live, mut bodies) = echo("live").await;
    let options = RouteOptions {
        idle_timeout_ms: Some(200),
        ..RouteOptions::default()
    };
    let t = serve(route(&[live], options)).await;
    let head = raw_exchange(
        t.addr,
        &[b"POST / HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 10\r\n\r\nabc"],
        Duration::ZERO,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    let seen = tokio::time::timeout(Duration::from_secs(5), bodies.recv()).await;
    assert_ne!(
        seen.ok().flatten().as_deref(),
        Some(&b"abc"[..]),
        "the replica never got a complete request"
    );
}

#[tokio::test]
async fn body_limit_with_content_length_and_chunked() {
    let (live, mut bodies) = echo("live").await;
    let options = RouteOptions {
        max_body: Some(10),
        ..RouteOptions::default()
    };
    let t = serve(route(&[live], options)).await;
    let (status, body) = send(t.addr, request("POST", b"0123456789")).await;
    assert_eq!(
        (status, body.as_deref()),
        (StatusCode::OK, Ok("live:0123456789"))
    );
    assert_eq!(&bodies.recv().await.expect("body")[..], b"0123456789");

    let (status, body) = send(t.addr, request("POST", b"0123456789!")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body:?}");
    assert!(
        body.as_deref().unwrap_or("").contains("max_body"),
        "{body:?}"
    );
    assert!(
        bodies.try_recv().is_err(),
        "refused before reaching the replica"
    );

    // chunked: the limit is crossed mid-stream, after the replica got the head
    let head = raw_exchange(
        t.addr,
        &[
            b"POST / HTTP/1.1\r\nHost: a.localhost\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n",
            b"6\r\n6789ab\r\n0\r\n\r\n",
        ],
        Duration::from_millis(50),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    if let Ok(Some(seen)) = tokio::time::timeout(Duration::from_millis(500), bodies.recv()).await {
        assert!(
            seen.len() <= 10,
            "at most the limit was forwarded: {seen:?}"
        );
    }
}

#[tokio::test]
async fn no_ready_replica_is_503_with_retry_after() {
    let t = serve(route(&[], RouteOptions::default())).await;
    let stream = TcpStream::connect(t.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let response = sender
        .send_request(request("GET", b""))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
}

#[tokio::test]
async fn path_prefix_routes_and_path_goes_upstream_unchanged() {
    let (api, _) = echo("api").await;
    let (web, _) = echo("web").await;
    let mut table = route(&[web], RouteOptions::default());
    let mut api_route = route(
        &[api],
        RouteOptions {
            paths: vec!["/api".into()],
            ..RouteOptions::default()
        },
    )
    .routes
    .remove(0);
    api_route.app = "api".into();
    api_route.backends[0].replica = "api-0".into();
    table.routes.insert(0, api_route);
    let t = serve(table).await;
    for (path, want) in [
        ("/api/v1?q=1", "api:"),
        ("/api", "api:"),
        ("/apix", "web:"),
        ("/", "web:"),
    ] {
        let req = Request::get(path)
            .header("host", "a.localhost")
            .body(Full::default())
            .expect("request");
        let (status, body) = send(t.addr, req).await;
        assert_eq!(
            (status, body.as_deref()),
            (StatusCode::OK, Ok(want)),
            "{path}"
        );
    }
}

#[tokio::test]
async fn body_over_the_limit_after_the_answer_started_aborts_the_upstream_request() {
    // A replica that answers at once (a streamed response it never ends), then reads
    // the request body until its connection is closed, and reports what it read.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (read_tx, read_rx) = oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = read_tx.send(got);
    });
    let options = RouteOptions {
        max_body: Some(10),
        ..RouteOptions::default()
    };
    let t = serve(route(&[addr], options)).await;
    let mut client = TcpStream::connect(t.addr).await.expect("connect");
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: a.localhost\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the head");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    // the answer has started: crossing the limit now aborts the upstream request
    client
        .write_all(b"6\r\n6789ab\r\n0\r\n\r\n")
        .await
        .expect("write");
    let upstream = tokio::time::timeout(Duration::from_secs(5), read_rx)
        .await
        .expect("the upstream connection is closed in time")
        .expect("report");
    let text = String::from_utf8_lossy(&upstream);
    assert!(text.contains("012345"), "{text}");
    assert!(!text.contains("6789ab"), "nothing past the limit: {text}");
}

/// A request body of unknown length (sent chunked), in the given pieces.
struct Pieces(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[tokio::test]
async fn replica_answers_are_proxied_intact_whatever_their_framing() {
    for (what, reply) in [
        (
            "chunked",
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfram\r\n3\r\ned \r\n5\r\nintac\r\n1;x=y\r\nt\r\n0\r\nX-Sum: 1\r\n\r\n"[..],
        ),
        ("until close", b"HTTP/1.1 200 OK\r\n\r\nframed intact"),
        ("length", b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nframed intact"),
    ] {
        // The replica closes each connection after its answer, unannounced: a pooled
        // one is found closed, and the next request goes on a new one.
        let (replica, accepted) = raw(reply, false).await;
        let t = serve(route(&[replica], RouteOptions::default())).await;
        for n in 1..=2 {
            let (status, body) = send(t.addr, request("GET", b"")).await;
            assert_eq!((status, body.as_deref()), (StatusCode::OK, Ok("framed intact")), "{what}");
            assert_eq!(accepted.load(Ordering::SeqCst), n, "{what}");
        }
    }
}

#[tokio::test]
async fn ambiguous_replica_answers_are_502_and_never_retried() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let (bad, accepted) = raw(reply, false).await;
        let (live, mut bodies) = echo("live").await;
        let t = serve(route(&[bad, live], RouteOptions::default())).await;
        let (status, body) = send(t.addr, request("GET", b"")).await;
        let what = String::from_utf8_lossy(reply);
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{what}");
        assert_eq!(body.as_deref(), Ok("upstream unavailable\n"), "{what}");
        assert_not_retried(&t, &accepted, &mut bodies);
    }
    // A malformed chunk after the head: the client gets the head, then a cut body.
    let (bad, _) = raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX",
        true,
    )
    .await;
    let t = serve(route(&[bad], RouteOptions::default())).await;
    let (status, body) = send(t.addr, request("GET", b"")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_err(), "{body:?}");
}

#[tokio::test]
async fn large_request_bodies_reach_the_replica_intact_by_length_or_chunked() {
    let (live, mut bodies) = echo("live").await;
    let t = serve(route(&[live], RouteOptions::default())).await;
    let payload: Bytes = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let post = || {
        Request::builder()
            .method("POST")
            .uri("/x")
            .header("host", "a.localhost")
    };
    let by_length = post().body(Full::new(payload.clone())).expect("request");
    let (status, _) = send(t.addr, by_length).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bodies.recv().await.expect("body"), payload);
    // Unknown length: chunked upstream, pieces small (copied behind the framing) and
    // large (written from their own buffers).
    let mut pieces = std::collections::VecDeque::new();
    let mut at = 0;
    for size in [1, 10, 4096, 4097, 70_000, 100].into_iter().cycle() {
        let end = (at + size).min(payload.len());
        pieces.push_back(payload.slice(at..end));
        at = end;
        if at == payload.len() {
            break;
        }
    }
    let chunked = post().body(Pieces(pieces)).expect("request");
    let (status, _) = send(t.addr, chunked).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bodies.recv().await.expect("body"), payload);
}
