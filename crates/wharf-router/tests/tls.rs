//! HTTPS end to end: a real router with its TLS listener in front of real hyper
//! backends, real rustls clients, all on 127.0.0.1 with port 0.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::client::TlsStream;
use wharf_router::{Https, Router, RouterConfig, Tls, TlsOptions};
use wharf_types::route::{Backend, Route, RouteTable, RouteTls, TlsFiles};

/// A replica answering `NAME PROTO` (its name and the X-Forwarded-Proto it saw);
/// `/own-hsts` answers with its own Strict-Transport-Security.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = service_fn(move |req: Request<Incoming>| async move {
                let proto = req
                    .headers()
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                let own = req.uri().path() == "/own-hsts";
                let mut resp = Response::new(Full::new(Bytes::from(format!("{name} {proto}"))));
                if own {
                    resp.headers_mut().insert(
                        "strict-transport-security",
                        "max-age=60".parse().expect("value"),
                    );
                }
                Ok::<_, Infallible>(resp)
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A test CA that signs leaf certificates written as PEM files.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("ca");
        TestCa {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes `cert.pem` (leaf + CA) and `key.pem` for `names` into `dir`, replacing
    /// the files whole (rename), as certbot does.
    fn write_leaf(
        &self,
        dir: &Path,
        names: &[&str],
    ) -> (PathBuf, PathBuf, CertificateDer<'static>) {
        let key = KeyPair::generate().expect("key");
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let leaf = params.signed_by(&key, &self.issuer).expect("leaf");
        let chain = format!("{}{}", leaf.pem(), self.pem);
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        for (path, text) in [(&cert_path, chain), (&key_path, key.serialize_pem())] {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, path).expect("rename");
        }
        (cert_path, key_path, leaf.der().clone())
    }
}

fn route(app: &str, hosts: &[&str], addr: SocketAddr, tls: RouteTls) -> Route {
    Route {
        app: app.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        backends: vec![Backend {
            replica: format!("{app}-1"),
            release: 1,
            addr,
        }],
        weights: vec![],
        options: Default::default(),
        tls,
    }
}

fn files(cert: &Path, key: &Path) -> RouteTls {
    RouteTls {
        files: Some(TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        https_only: false,
    }
}

struct TestRouter {
    router: Arc<Router>,
    tls: Arc<Tls>,
    plain: SocketAddr,
    secure: SocketAddr,
    _stop: Vec<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

async fn start(routes: Vec<Route>, handshake_timeout: Duration) -> TestRouter {
    let dir = tempfile::tempdir().expect("tmp");
    let mut options = TlsOptions::new(dir.path().join("tls"));
    options.handshake_timeout = handshake_timeout;
    options.reload_every = Duration::from_millis(50);
    let tls = Tls::new(options).expect("tls");
    let plain_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let secure_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (plain, secure) = (
        plain_listener.local_addr().expect("addr"),
        secure_listener.local_addr().expect("addr"),
    );
    let router = Router::new(RouterConfig {
        https: Some(Https {
            tls: tls.clone(),
            port: secure.port(),
        }),
        ..RouterConfig::default()
    });
    router.publish(RouteTable { version: 1, routes });
    let (a, ra) = oneshot::channel::<()>();
    let (b, rb) = oneshot::channel::<()>();
    tokio::spawn(router.clone().serve(plain_listener, async move {
        let _ = ra.await;
    }));
    tokio::spawn(router.clone().serve_tls(secure_listener, async move {
        let _ = rb.await;
    }));
    TestRouter {
        router,
        tls,
        plain,
        secure,
        _stop: vec![a, b],
        _dir: dir,
    }
}

fn client_config(root: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    store.add(root.clone()).expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Every handshake a full one, so each sees the certificate served now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

async fn connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).expect("name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

fn leaf_of(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().expect("certs")[0].clone()
}

fn internal_ca(tls: &Tls) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(tls.ca_cert()).expect("internal CA pem")
}

/// An HTTP/1.1 connection over `stream`.
async fn http1(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    sender
}

async fn get1(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let req = Request::get(path)
        .header("host", host)
        .body(Full::default())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn file_and_internal_certificates_chosen_by_sni() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = TestCa::new("test CA");
    let (cert, key, shop_leaf) = ca.write_leaf(dir.path(), &["shop.example.com"]);
    let (shop, app) = (backend("shop").await, backend("a").await);
    let t = start(
        vec![
            route(
                "shop",
                &["shop.localhost", "shop.example.com"],
                shop,
                files(&cert, &key),
            ),
            route("a", &["a.localhost"], app, RouteTls::default()),
            route("p", &["plain.example.net"], app, RouteTls::default()),
        ],
        Duration::from_secs(5),
    )
    .await;

    // The route's file certificate, trusted through the test CA alone.
    let trust_files = client_config(&ca.der, &[b"http/1.1"]);
    let stream = connect(t.secure, "shop.example.com", trust_files.clone())
        .await
        .expect("handshake with the file certificate");
    assert_eq!(
        leaf_of(&stream),
        shop_leaf,
        "SNI shop.example.com gets the file cert"
    );
    let mut sender = http1(stream).await;
    let (status, _, body) = get1(&mut sender, "shop.example.com", "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "shop https"));

    // `*.localhost` names get certificates of the internal CA, trusted alone.
    let trust_local = client_config(&internal_ca(&t.tls), &[b"http/1.1"]);
    let stream = connect(t.secure, "a.localhost", trust_local.clone())
        .await
        .expect("handshake with an internal-CA certificate");
    let a_leaf = leaf_of(&stream);
    let mut sender = http1(stream).await;
    let (status, _, body) = get1(&mut sender, "a.localhost", "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a https"));
    // shop.localhost is not named by the file certificate: the internal CA covers it.
    let stream = connect(t.secure, "shop.localhost", trust_local.clone())
        .await
        .expect("shop.localhost from the internal CA");
    assert_ne!(leaf_of(&stream), a_leaf, "one certificate per name");

    // Each name really gets its own certificate: crossing the trust fails.
    assert!(connect(t.secure, "shop.example.com", trust_local.clone())
        .await
        .is_err());
    assert!(connect(t.secure, "a.localhost", trust_files).await.is_err());
    // A routed real name without files (and no ACME): the local CA issues for it.
    connect(t.secure, "plain.example.net", trust_local.clone())
        .await
        .expect("a routed name gets a local-CA certificate");
    // An unknown name gets the fallback certificate (for "localhost"): not valid for it.
    assert!(
        connect(t.secure, "unknown.example.org", trust_local.clone())
            .await
            .is_err()
    );
    connect(t.secure, "localhost", trust_local)
        .await
        .expect("the fallback is valid for localhost");

    // The plaintext listener still says http.
    let tcp = TcpStream::connect(t.plain).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "a.localhost")
        .body(Full::<Bytes>::default())
        .expect("req");
    let resp = sender.send_request(req).await.expect("resp");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"a http");
    drop(t.router);
}

#[tokio::test]
async fn h2_is_negotiated_by_alpn() {
    let app = backend("a").await;
    let t = start(
        vec![route("a", &["a.localhost"], app, RouteTls::default())],
        Duration::from_secs(5),
    )
    .await;
    let config = client_config(&internal_ca(&t.tls), &[b"h2", b"http/1.1"]);
    let stream = connect(t.secure, "a.localhost", config)
        .await
        .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::get("https://a.localhost/x")
            .body(Full::<Bytes>::default())
            .expect("req");
        let resp = sender.send_request(req).await.expect("h2 response");
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"a https");
    }
    // A client offering only http/1.1 gets it.
    let config = client_config(&internal_ca(&t.tls), &[b"http/1.1"]);
    let stream = connect(t.secure, "a.localhost", config)
        .await
        .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn https_only_redirects_plaintext_and_sets_hsts() {
    let (secure_app, open_app) = (backend("s").await, backend("o").await);
    let strict = RouteTls {
        files: None,
        https_only: true,
    };
    let t = start(
        vec![
            route("s", &["s.localhost"], secure_app, strict),
            route("o", &["o.localhost"], open_app, RouteTls::default()),
        ],
        Duration::from_secs(5),
    )
    .await;
    let raw = |host: &'static str, path: &'static str| async move {
        let mut tcp = TcpStream::connect(t.plain).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.expect("read");
        out
    };
    let answer = raw("S.localhost:8080", "/a/b?x=1&y=2").await;
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    let location = format!(
        "location: https://s.localhost:{}/a/b?x=1&y=2\r\n",
        t.secure.port()
    );
    assert!(answer.to_ascii_lowercase().contains(&location), "{answer}");
    let open = raw("o.localhost", "/").await;
    assert!(open.starts_with("HTTP/1.1 200"), "{open}");
    assert!(
        !open
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{open}"
    );

    let config = client_config(&internal_ca(&t.tls), &[b"http/1.1"]);
    let mut s = http1(
        connect(t.secure, "s.localhost", config.clone())
            .await
            .expect("tls"),
    )
    .await;
    let (status, headers, body) = get1(&mut s, "s.localhost", "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "s https"));
    assert_eq!(headers["strict-transport-security"], "max-age=31536000");
    let (_, headers, _) = get1(&mut s, "s.localhost", "/own-hsts").await;
    let all: Vec<_> = headers
        .get_all("strict-transport-security")
        .iter()
        .collect();
    assert_eq!(all, ["max-age=60"], "the app's own HSTS is kept");
    let mut o = http1(connect(t.secure, "o.localhost", config).await.expect("tls")).await;
    let (_, headers, _) = get1(&mut o, "o.localhost", "/").await;
    assert!(!headers.contains_key("strict-transport-security"));
}

#[tokio::test]
async fn tls_1_1_and_garbage_are_refused_without_harm() {
    let app = backend("a").await;
    let t = start(
        vec![route("a", &["a.localhost"], app, RouteTls::default())],
        Duration::from_millis(500),
    )
    .await;
    // A TLS 1.1 ClientHello (no supported_versions extension).
    let mut hello = vec![0x03, 0x02];
    hello.extend([7u8; 32]); // random
    hello.push(0); // session id
                   // suites rustls has (TLS 1.2 ECDHE-GCM), and a TLS 1.0/1.1 one
    hello.extend([0x00, 0x06, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x13]);
    hello.extend([0x01, 0x00]); // null compression
    let extensions = [
        &[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04][..], // signature algorithms
        &[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17][..], // groups
        &[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00][..],                         // point formats
    ]
    .concat();
    hello.extend([0x00, extensions.len() as u8]);
    hello.extend(extensions);
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend(handshake);
    let mut tcp = TcpStream::connect(t.secure).await.expect("connect");
    tcp.write_all(&record).await.expect("write");
    let mut answer = [0u8; 7];
    tcp.read_exact(&mut answer).await.expect("an alert");
    assert_eq!(answer[0], 0x15, "an alert record: {answer:?}");
    assert_eq!(answer[6], 70, "protocol_version alert: {answer:?}");

    // Garbage, and a client that never says anything: both dropped, others unharmed.
    let mut junk = TcpStream::connect(t.secure).await.expect("connect");
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut silent = TcpStream::connect(t.secure).await.expect("connect");
    let config = client_config(&internal_ca(&t.tls), &[b"http/1.1"]);
    let mut good = http1(connect(t.secure, "a.localhost", config).await.expect("tls")).await;
    assert_eq!(get1(&mut good, "a.localhost", "/").await.2, "a https");
    let start = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a silent client is dropped after the handshake timeout"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), junk.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "garbage is dropped");
    assert_eq!(get1(&mut good, "a.localhost", "/").await.2, "a https");
}

#[tokio::test]
async fn certificate_files_swap_without_dropping_open_connections() {
    let dir = tempfile::tempdir().expect("tmp");
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("new CA"));
    let (cert, key, old_leaf) = old_ca.write_leaf(dir.path(), &["*.example.com"]);
    let app = backend("w").await;
    let t = start(
        vec![route("w", &["*.example.com"], app, files(&cert, &key))],
        Duration::from_secs(5),
    )
    .await;
    let old_trust = client_config(&old_ca.der, &[b"http/1.1"]);
    let new_trust = client_config(&new_ca.der, &[b"http/1.1"]);
    let stream = connect(t.secure, "www.example.com", old_trust.clone())
        .await
        .expect("old certificate");
    assert_eq!(leaf_of(&stream), old_leaf);
    let mut open = http1(stream).await;
    assert_eq!(get1(&mut open, "www.example.com", "/").await.2, "w https");

    // Renewed on disk (as certbot does): picked up without a publish or restart.
    let (_, _, new_leaf) = new_ca.write_leaf(dir.path(), &["*.example.com"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        if let Ok(stream) = connect(t.secure, "www.example.com", new_trust.clone()).await {
            break stream;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(leaf_of(&stream), new_leaf);
    assert!(connect(t.secure, "www.example.com", old_trust)
        .await
        .is_err());
    // The connection opened before the swap still serves.
    assert_eq!(get1(&mut open, "www.example.com", "/").await.2, "w https");

    // A route table naming other files swaps at once (the control plane's publish).
    let third_dir = tempfile::tempdir().expect("tmp");
    let third_ca = TestCa::new("third CA");
    let (third_cert, third_key, third_leaf) =
        third_ca.write_leaf(third_dir.path(), &["*.example.com"]);
    t.router.publish(RouteTable {
        version: 2,
        routes: vec![route(
            "w",
            &["*.example.com"],
            app,
            files(&third_cert, &third_key),
        )],
    });
    let third_trust = client_config(&third_ca.der, &[b"http/1.1"]);
    let stream = connect(t.secure, "api.example.com", third_trust)
        .await
        .expect("the published certificate");
    assert_eq!(leaf_of(&stream), third_leaf);
    assert_eq!(get1(&mut open, "www.example.com", "/").await.2, "w https");
    t.router.publish(RouteTable {
        version: 3,
        routes: vec![route("w", &["*.example.com"], app, files(&cert, &key))],
    });

    // A broken replacement (key of another certificate) keeps the last good one.
    let other = tempfile::tempdir().expect("tmp");
    let (_, wrong_key, _) = new_ca.write_leaf(other.path(), &["x.example.com"]);
    std::fs::copy(&wrong_key, dir.path().join("key.new")).expect("copy");
    std::fs::rename(dir.path().join("key.new"), &key).expect("rename");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stream = connect(t.secure, "a.example.com", new_trust)
        .await
        .expect("the last good certificate stays");
    assert_eq!(leaf_of(&stream), new_leaf);
    assert!(wharf_router::tls::check_files(&cert, &key)
        .expect_err("mismatch")
        .to_string()
        .contains("does not belong to the certificate"));
}
