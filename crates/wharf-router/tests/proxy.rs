//! End-to-end tests: a real router in front of real hyper backends, all on 127.0.0.1
//! with port 0.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use wharf_router::{Router, RouterConfig};
use wharf_types::route::{Backend, Route, RouteTable};

/// A replica: answers its name; `/slow` waits for `release`; `/hop` answers with
/// hop-by-hop headers. Every request's path and headers are reported on `seen`.
struct TestBackend {
    addr: SocketAddr,
    release: Arc<Notify>,
    seen: mpsc::UnboundedReceiver<(String, HeaderMap)>,
}

async fn backend(name: &'static str) -> TestBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let release = Arc::new(Notify::new());
    let (tx, seen) = mpsc::unbounded_channel();
    let notify = release.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (tx, notify) = (tx.clone(), notify.clone());
            let service = service_fn(move |req: Request<Incoming>| {
                let (tx, notify) = (tx.clone(), notify.clone());
                async move {
                    let path = req.uri().path().to_string();
                    let _ = tx.send((path.clone(), req.headers().clone()));
                    let _ = req.into_body().collect().await;
                    if path == "/slow" {
                        notify.notified().await;
                    }
                    let mut resp = Response::new(Full::new(Bytes::from(name)));
                    if path == "/hop" {
                        let h = resp.headers_mut();
                        for (k, v) in [
                            ("connection", "x-secret"),
                            ("x-secret", "1"),
                            ("keep-alive", "timeout=5"),
                            ("proxy-connection", "keep-alive"),
                            ("trailer", "x-t"),
                            ("upgrade", "foo"),
                            ("x-kept", "1"),
                        ] {
                            h.insert(k, HeaderValue::from_static(v));
                        }
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    TestBackend {
        addr,
        release,
        seen,
    }
}

/// An address nothing listens on.
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

fn route(app: &str, hosts: &[&str], backends: &[(&str, SocketAddr)]) -> Route {
    Route {
        app: app.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        backends: backends
            .iter()
            .map(|(replica, addr)| Backend {
                replica: replica.to_string(),
                release: 1,
                addr: *addr,
            })
            .collect(),
        weights: vec![],
        tls: Default::default(),
        options: Default::default(),
    }
}

fn table(version: u64, routes: Vec<Route>) -> RouteTable {
    RouteTable { version, routes }
}

struct TestRouter {
    router: Arc<Router>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    served: JoinHandle<std::io::Result<()>>,
}

async fn start(config: RouterConfig, routes: RouteTable) -> TestRouter {
    let router = Router::new(config);
    router.publish(routes);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let served = tokio::spawn(router.clone().serve(listener, async move {
        let _ = rx.await;
    }));
    TestRouter {
        router,
        addr,
        shutdown: Some(tx),
        served,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(router: SocketAddr, request: Request<Full<Bytes>>) -> Answer {
    let stream = TcpStream::connect(router).await.expect("connect router");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Full::default())
        .expect("request")
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn routes_by_host_and_answers_unknown_and_empty() {
    let a = backend("a").await;
    let b = backend("b").await;
    let t = start(
        RouterConfig::default(),
        table(
            1,
            vec![
                route("a", &["a.localhost"], &[("a-1", a.addr)]),
                route("b", &["b.localhost", "*.b.test"], &[("b-1", b.addr)]),
                route("idle", &["idle.localhost"], &[]),
            ],
        ),
    )
    .await;

    let answer = send(t.addr, get("A.localhost:8080", "/")).await;
    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "a"));
    assert_eq!(send(t.addr, get("b.localhost", "/")).await.body, "b");
    assert_eq!(send(t.addr, get("x.y.b.test", "/")).await.body, "b");

    let unknown = send(t.addr, get("nope.localhost:80", "/")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.body,
        "no app is routed at host \"nope.localhost\"\n"
    );
    assert!(unknown.headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    assert!(unknown.headers.contains_key("x-request-id"));

    let idle = send(t.addr, get("idle.localhost", "/")).await;
    assert_eq!(idle.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(idle.headers["retry-after"], "1");
    assert_eq!(idle.body, "no ready replica for app \"idle\"\n");
}

#[tokio::test]
async fn forwarding_headers_and_request_ids() {
    let mut a = backend("a").await;
    let t = start(
        RouterConfig::default(),
        table(1, vec![route("a", &["a.localhost"], &[("a-1", a.addr)])]),
    )
    .await;

    let mut request = get("a.localhost:1234", "/path?q=1");
    request
        .headers_mut()
        .insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
    let answer = send(t.addr, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    let (path, seen) = a.seen.recv().await.expect("seen");
    assert_eq!(path, "/path");
    assert_eq!(seen["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http", "the plaintext listener");
    assert_eq!(seen["host"], "a.localhost:1234");
    let id = seen["x-request-id"].to_str().expect("ascii").to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(answer.headers["x-request-id"], id.as_str());

    // a second generated id differs; a client's id is kept and returned
    send(t.addr, get("a.localhost", "/")).await;
    let (_, seen) = a.seen.recv().await.expect("seen");
    assert_ne!(seen["x-request-id"], id.as_str());
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");

    let mut request = get("a.localhost", "/");
    request
        .headers_mut()
        .insert("x-request-id", HeaderValue::from_static("client-id-7"));
    let answer = send(t.addr, request).await;
    let (_, seen) = a.seen.recv().await.expect("seen");
    assert_eq!(seen["x-request-id"], "client-id-7");
    assert_eq!(answer.headers["x-request-id"], "client-id-7");
}

#[tokio::test]
async fn forwarded_host_and_trace_context() {
    let mut a = backend("a").await;
    let t = start(
        RouterConfig::default(),
        table(1, vec![route("a", &["a.localhost"], &[("a-1", a.addr)])]),
    )
    .await;
    send(t.addr, get("a.localhost:8080", "/")).await;
    let (_, seen) = a.seen.recv().await.expect("seen");
    assert_eq!(seen["x-forwarded-host"], "a.localhost:8080");
    let started = seen["traceparent"].to_str().expect("ascii").to_owned();
    let parts: Vec<&str> = started.split('-').collect();
    assert_eq!(
        (parts.len(), parts[0], parts[1].len(), parts[2].len()),
        (4, "00", 32, 16),
        "{started}"
    );

    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = get("a.localhost", "/");
    request
        .headers_mut()
        .insert("traceparent", HeaderValue::from_static(incoming));
    send(t.addr, request).await;
    let (_, seen) = a.seen.recv().await.expect("seen");
    assert_eq!(
        seen["traceparent"], incoming,
        "a valid trace context is propagated"
    );

    let mut request = get("a.localhost", "/");
    request
        .headers_mut()
        .insert("traceparent", HeaderValue::from_static("nonsense"));
    send(t.addr, request).await;
    let (_, seen) = a.seen.recv().await.expect("seen");
    assert_ne!(
        seen["traceparent"], "nonsense",
        "an invalid one is replaced by a new trace"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let mut a = backend("a").await;
    let t = start(
        RouterConfig::default(),
        table(1, vec![route("a", &["a.localhost"], &[("a-1", a.addr)])]),
    )
    .await;
    let mut request = get("a.localhost", "/hop");
    for (k, v) in [
        ("connection", "x-secret"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("trailer", "x-t"),
        ("x-kept", "1"),
    ] {
        request.headers_mut().insert(k, HeaderValue::from_static(v));
    }
    let answer = send(t.addr, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    let (_, seen) = a.seen.recv().await.expect("seen");
    let hop = [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "transfer-encoding",
    ];
    for name in hop {
        assert!(!seen.contains_key(name), "upstream saw {name}");
        assert!(!answer.headers.contains_key(name), "client saw {name}");
    }
    assert_eq!(seen["x-kept"], "1");
    assert_eq!(answer.headers["x-kept"], "1");
}

#[tokio::test]
async fn publish_during_a_slow_request() {
    let mut old = backend("old").await;
    let new = backend("new").await;
    let t = start(
        RouterConfig::default(),
        table(
            1,
            vec![route("a", &["a.localhost"], &[("old-1", old.addr)])],
        ),
    )
    .await;
    let addr = t.addr;
    let slow = tokio::spawn(async move { send(addr, get("a.localhost", "/slow")).await });
    old.seen.recv().await.expect("slow request arrived");
    assert_eq!(t.router.inflight("old-1"), 1);

    t.router.publish(table(
        2,
        vec![route("a", &["a.localhost"], &[("new-1", new.addr)])],
    ));
    assert_eq!(send(t.addr, get("a.localhost", "/")).await.body, "new");
    // removed from the table, still counted until its request ends
    assert_eq!(t.router.inflight("old-1"), 1);
    assert_eq!(t.router.inflight("new-1"), 0);

    old.release.notify_one();
    let answer = slow.await.expect("join");
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "old")
    );
    eventually("old-1 drained", || t.router.inflight("old-1") == 0).await;
}

#[tokio::test]
async fn inflight_counts_and_survives_republish() {
    let mut a = backend("a").await;
    let routes = || table(1, vec![route("a", &["a.localhost"], &[("a-1", a.addr)])]);
    let t = start(RouterConfig::default(), routes()).await;
    assert_eq!(t.router.inflight("a-1"), 0);

    let addr = t.addr;
    let slow = tokio::spawn(async move { send(addr, get("a.localhost", "/slow")).await });
    a.seen.recv().await.expect("arrived");
    assert_eq!(t.router.inflight("a-1"), 1);
    t.router.publish(routes()); // same replica again: same counter
    assert_eq!(t.router.inflight("a-1"), 1);
    a.release.notify_one();
    assert_eq!(slow.await.expect("join").status, StatusCode::OK);
    eventually("a-1 back to 0", || t.router.inflight("a-1") == 0).await;

    // a client that goes away mid-request releases the count too
    let slow = tokio::spawn(async move { send(addr, get("a.localhost", "/slow")).await });
    a.seen.recv().await.expect("arrived");
    assert_eq!(t.router.inflight("a-1"), 1);
    slow.abort();
    eventually("cancelled request released", || {
        t.router.inflight("a-1") == 0
    })
    .await;
}

#[tokio::test]
async fn refused_connection_is_retried_on_another_replica() {
    let live = backend("live").await;
    let dead = dead_addr().await;
    let routes = table(
        1,
        vec![route(
            "a",
            &["a.localhost"],
            &[("dead-1", dead), ("live-1", live.addr)],
        )],
    );
    let t = start(RouterConfig::default(), routes.clone()).await;
    // round-robin sends every other first attempt to the dead replica
    for _ in 0..4 {
        let answer = send(t.addr, get("a.localhost", "/")).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "live")
        );
    }
    assert_eq!(t.router.inflight("dead-1"), 0);

    // a refused connection sent nothing: a POST goes to the other replica too (a
    // fresh table starts its rotation on dead-1)
    t.router.publish(routes);
    let post = Request::post("/")
        .header("host", "a.localhost")
        .body(Full::new(Bytes::from_static(b"payload")))
        .expect("request");
    let answer = send(t.addr, post).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "live")
    );
}

#[tokio::test]
async fn only_replica_down_is_502() {
    let dead = dead_addr().await;
    let t = start(
        RouterConfig::default(),
        table(1, vec![route("a", &["a.localhost"], &[("dead-1", dead)])]),
    )
    .await;
    let answer = send(t.addr, get("a.localhost", "/")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.body, "upstream unavailable\n");
    assert!(answer.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let mut a = backend("a").await;
    let mut t = start(
        RouterConfig::default(),
        table(1, vec![route("a", &["a.localhost"], &[("a-1", a.addr)])]),
    )
    .await;
    // an idle keep-alive connection must not hold shutdown up
    let idle = TcpStream::connect(t.addr).await.expect("connect");

    let addr = t.addr;
    let slow = tokio::spawn(async move { send(addr, get("a.localhost", "/slow")).await });
    a.seen.recv().await.expect("arrived");

    t.shutdown
        .take()
        .expect("once")
        .send(())
        .expect("serve is running");
    // stops accepting
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !t.served.is_finished(),
        "serve returned with a request in flight"
    );

    a.release.notify_one();
    let answer = slow.await.expect("join");
    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "a"));
    tokio::time::timeout(Duration::from_secs(10), &mut t.served)
        .await
        .expect("serve returns")
        .expect("join")
        .expect("serve ok");
    drop(idle);
}

#[tokio::test]
async fn draining_closes_busy_keep_alive_connections_after_an_answer_then_idle_ones() {
    let mut a = backend("a").await;
    let config = RouterConfig {
        drain_window: Duration::from_millis(400),
        ..RouterConfig::default()
    };
    let mut t = start(
        config,
        table(1, vec![route("a", &["a.localhost"], &[("a-1", a.addr)])]),
    )
    .await;
    let keep_alive = |addr| async move {
        let stream = TcpStream::connect(addr).await.expect("connect router");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        (sender, tokio::spawn(conn))
    };
    let (mut busy, busy_conn) = keep_alive(t.addr).await;
    let (mut idle, idle_conn) = keep_alive(t.addr).await;
    let first = idle
        .send_request(get("a.localhost", "/"))
        .await
        .expect("answer");
    assert_eq!(first.status(), StatusCode::OK);
    drop(first);
    a.seen.recv().await.expect("idle's request arrived");
    let before = busy
        .send_request(get("a.localhost", "/"))
        .await
        .expect("answer");
    assert!(before.headers().get("connection").is_none());
    drop(before);

    // A request in flight when the drain starts keeps the router draining.
    let addr = t.addr;
    let slow = tokio::spawn(async move { send(addr, get("a.localhost", "/slow")).await });
    a.seen.recv().await.expect("first arrived");
    a.seen.recv().await.expect("slow arrived");
    t.shutdown.take().expect("once").send(()).expect("serving");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting while draining");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The busy client's next answer closes its connection cleanly.
    let during = busy
        .send_request(get("a.localhost", "/"))
        .await
        .expect("a request on a draining connection is answered");
    assert_eq!(during.status(), StatusCode::OK);
    assert_eq!(during.headers()["connection"], "close");
    drop(during);
    tokio::time::timeout(Duration::from_secs(5), busy_conn)
        .await
        .expect("the busy connection closes after its answer")
        .expect("join")
        .expect("clean close");
    // The idle one is closed when the window ends.
    tokio::time::timeout(Duration::from_secs(5), idle_conn)
        .await
        .expect("the idle connection is closed after the drain window")
        .expect("join")
        .expect("clean close");
    a.release.notify_one();
    assert_eq!(slow.await.expect("join").status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(10), &mut t.served)
        .await
        .expect("serve returns")
        .expect("join")
        .expect("serve ok");
}

/// A replica that accepts any `Upgrade`, answers 101, then echoes every byte back.
async fn echo_upgrade_backend() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                assert!(text.contains("upgrade: websocket"), "{text}");
                assert!(text.contains("connection: upgrade"), "{text}");
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    .await;
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_upgrade_is_spliced_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = echo_upgrade_backend().await;
    let r = start(
        RouterConfig::default(),
        table(1, vec![route("ws", &["ws.localhost"], &[("ws-1", addr)])]),
    )
    .await;
    let mut s = TcpStream::connect(r.addr).await.expect("connect");
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: ws.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("101 head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert_eq!(
        r.router.inflight("ws-1"),
        1,
        "an open tunnel counts in flight"
    );
    for msg in [&b"hello"[..], b"through the router"] {
        s.write_all(msg).await.expect("write");
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.expect("echo");
        assert_eq!(got, msg);
    }
    drop(s);
    eventually("the tunnel closes", || r.router.inflight("ws-1") == 0).await;
}

/// Sends raw bytes to the router and returns the head of its answer.
async fn raw_head(router: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(router).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn smuggling_shapes_are_refused() {
    let mut a = backend("a").await;
    let t = start(
        RouterConfig::default(),
        table(1, vec![route("a", &["a.localhost"], &[("a-1", a.addr)])]),
    )
    .await;
    for (what, req) in [
        (
            "TE not ending in chunked",
            &b"POST / HTTP/1.1\r\nHost: a.localhost\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"[..],
        ),
        (
            "two different CL",
            b"POST / HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "obsolete line folding",
            b"GET / HTTP/1.1\r\nHost: a.localhost\r\nX-A: 1\r\n 2\r\n\r\n",
        ),
        (
            "CL with TE, something smuggled behind",
            b"POST / HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
        ),
        (
            "two Host fields",
            b"GET / HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n\r\n",
        ),
        (
            "TE in HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: a.localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
    ] {
        let head = raw_head(t.addr, req).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{what}: {head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{what}: {head}"
        );
    }
    assert!(a.seen.try_recv().is_err(), "nothing reached the replica");
    let ok = raw_head(
        t.addr,
        b"POST / HTTP/1.1\r\nHost: a.localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test]
async fn slow_replica_gets_a_504_after_the_response_timeout() {
    let a = backend("a").await;
    let config = RouterConfig {
        response_timeout: Duration::from_millis(300),
        ..RouterConfig::default()
    };
    let t = start(
        config,
        table(1, vec![route("a", &["a.localhost"], &[("a-1", a.addr)])]),
    )
    .await;
    let started = Instant::now();
    let answer = send(t.addr, get("a.localhost", "/slow")).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(3));
    eventually("in flight released", || t.router.inflight("a-1") == 0).await;
    a.release.notify_waiters();
}

/// A replica that answers 500 to everything.
async fn failing_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|_req: Request<Incoming>| async {
                let mut resp = Response::new(Full::new(Bytes::from("broken")));
                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                Ok::<_, Infallible>(resp)
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    addr
}

#[tokio::test]
async fn failing_replica_is_ejected_then_tried_again() {
    let good = backend("good").await;
    let bad = failing_backend().await;
    let config = RouterConfig {
        eject_after: 3,
        eject_for: Duration::from_millis(300),
        ..RouterConfig::default()
    };
    let t = start(
        config,
        table(
            1,
            vec![route(
                "a",
                &["a.localhost"],
                &[("good-1", good.addr), ("bad-1", bad)],
            )],
        ),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(send(t.addr, get("a.localhost", "/")).await.status);
    }
    let errors = statuses
        .iter()
        .filter(|s| **s == StatusCode::INTERNAL_SERVER_ERROR)
        .count();
    assert_eq!(errors, 3, "ejected after its third failure: {statuses:?}");
    assert!(
        statuses[10..].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut again = Vec::new();
    for _ in 0..4 {
        again.push(send(t.addr, get("a.localhost", "/")).await.status);
    }
    assert!(
        again.contains(&StatusCode::INTERNAL_SERVER_ERROR),
        "tried again after eject_for: {again:?}"
    );
}

#[tokio::test]
async fn ejection_never_empties_a_route() {
    let bad = failing_backend().await;
    let config = RouterConfig {
        eject_after: 1,
        ..RouterConfig::default()
    };
    let t = start(
        config,
        table(1, vec![route("a", &["a.localhost"], &[("bad-1", bad)])]),
    )
    .await;
    for _ in 0..3 {
        let answer = send(t.addr, get("a.localhost", "/")).await;
        assert_eq!(
            answer.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "still routed, not 503"
        );
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let mut a = backend("a").await;
    let t = start(
        RouterConfig::default(),
        table(1, vec![route("a", &["a.localhost"], &[("a-1", a.addr)])]),
    )
    .await;
    let stream = TcpStream::connect(t.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    for i in 0..3 {
        let request = Request::get(format!("http://a.localhost/h2/{i}"))
            .version(http::Version::HTTP_2)
            .body(Full::<Bytes>::default())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert!(response.headers().contains_key("x-request-id"));
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"a");
        let (path, seen) = a.seen.recv().await.expect("seen");
        assert_eq!(path, format!("/h2/{i}"));
        assert_eq!(
            seen["host"], "a.localhost",
            "the replica gets a Host header over HTTP/1.1"
        );
    }
}

/// Writes `bytes` on a new connection and reads until the router closes it (or 5 s).
async fn raw_exchange(router: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(router).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the router did not close: {}",
        String::from_utf8_lossy(&got)
    );
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let mut a = backend("a").await;
    let t = start(
        RouterConfig::default(),
        table(1, vec![route("a", &["a.localhost"], &[("a-1", a.addr)])]),
    )
    .await;
    let text = raw_exchange(
        t.addr,
        b"GET /1 HTTP/1.1\r\nHost: a.localhost\r\n\r\nGET /2 HTTP/1.1\r\nHost: a.localhost\r\n\r\nGET /3 HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    for expected in ["/1", "/2", "/3"] {
        assert_eq!(a.seen.recv().await.expect("seen").0, expected);
    }
}

#[tokio::test]
async fn expect_continue_is_answered_before_the_body_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = backend("a").await;
    let t = start(
        RouterConfig::default(),
        table(1, vec![route("a", &["a.localhost"], &[("a-1", a.addr)])]),
    )
    .await;
    let mut s = TcpStream::connect(t.addr).await.expect("connect");
    s.write_all(b"POST / HTTP/1.1\r\nHost: a.localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await
        .expect("head");
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).await.expect("100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.expect("body");
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.expect("answer");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\na"), "{answer}");
    // A request answered without its body gets no 100 Continue: its answer at once.
    let text = raw_exchange(
        t.addr,
        b"POST / HTTP/1.1\r\nHost: nobody.localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
}

#[tokio::test]
async fn an_http_1_0_client_gets_its_answer_and_the_connection_closes() {
    let a = backend("a").await;
    let t = start(
        RouterConfig::default(),
        table(1, vec![route("a", &["a.localhost"], &[("a-1", a.addr)])]),
    )
    .await;
    let text = raw_exchange(t.addr, b"GET / HTTP/1.0\r\nHost: a.localhost\r\n\r\n").await;
    let lower = text.to_ascii_lowercase();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(lower.contains("content-length: 1\r\n"), "{text}");
    assert!(lower.contains("connection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\na"), "{text}");
    // One that asks for keep-alive is told it is kept.
    let text = raw_exchange(
        t.addr,
        b"GET / HTTP/1.0\r\nHost: a.localhost\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\nHost: a.localhost\r\n\r\n",
    )
    .await;
    let lower = text.to_ascii_lowercase();
    assert_eq!(
        lower.matches("connection: keep-alive\r\n").count(),
        1,
        "{text}"
    );
    assert_eq!(lower.matches("connection: close\r\n").count(), 1, "{text}");
}

#[tokio::test]
async fn oversized_heads_are_431_and_unread_bodies_close_the_connection() {
    let mut a = backend("a").await;
    let t = start(
        RouterConfig::default(),
        table(1, vec![route("a", &["a.localhost"], &[("a-1", a.addr)])]),
    )
    .await;
    let mut huge = b"GET / HTTP/1.1\r\nHost: a.localhost\r\nX-Big: ".to_vec();
    huge.resize(70 * 1024, b'a');
    huge.extend_from_slice(b"\r\n\r\n");
    let text = raw_exchange(t.addr, &huge).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    // A body the router did not read (nobody is routed at this host): the answer says
    // the connection closes, and the bytes after the body are never a request.
    let text = raw_exchange(
        t.addr,
        b"POST / HTTP/1.1\r\nHost: nobody.localhost\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(a.seen.try_recv().is_err(), "nothing reached the replica");
}
