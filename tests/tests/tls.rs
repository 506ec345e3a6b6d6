//! HTTPS through the real binary: `--listen-tls`, `[route] tls` certificate files, the
//! local CA for `*.localhost`, `https_only`, and the deploy-time checks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use wharf_e2e::{Server, TestApp};

/// `server.json` of a running server.
fn info(s: &Server) -> Value {
    let bytes = std::fs::read(s.data_dir().join("server.json")).expect("server.json");
    serde_json::from_slice(&bytes).expect("server.json is JSON")
}

/// A response over HTTPS: status, lowercased headers, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// The server's certificate (DER).
    leaf: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over TLS to `addr` with SNI and Host `host`, trusting only `ca` (PEM).
fn https_get(addr: &str, host: &str, path: &str, ca: &Path) -> Result<Answer, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{e:?}"))? {
        roots
            .add(cert.map_err(|e| format!("{e:?}"))?)
            .map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .map_err(|e| format!("handshake or write: {e}"))?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // Some servers close without close_notify; what was read is complete.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(format!("no head in {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad status line in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_owned(),
        leaf,
    })
}

/// A CA and a certificate for `names` signed by it, written as `ca.pem`, `cert.pem`
/// (leaf + CA) and `key.pem` in `dir`.
fn certificate(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = rcgen::CertificateParams::new(names)
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write");
    std::fs::write(&paths.1, format!("{}{}", leaf.pem(), ca.pem())).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    (paths.0, paths.1, paths.2)
}

fn quote(p: &Path) -> String {
    serde_json::to_string(p.to_str().expect("utf-8")).expect("quote")
}

#[test]
fn https_with_certificate_files_local_ca_and_https_only() {
    let s = Server::start_with(&["--listen-tls", "127.0.0.1:0"]);
    let info = info(&s);
    let tls_addr = info["router_tls"]
        .as_str()
        .expect("router_tls in server.json")
        .to_owned();
    let local_ca = PathBuf::from(
        info["router_ca"]
            .as_str()
            .expect("router_ca in server.json"),
    );
    assert!(
        local_ca.starts_with(s.data_dir().join("tls")),
        "{local_ca:?}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(s.data_dir().join("tls/router-ca-key.pem"))
            .expect("CA key")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the CA key is private");
    let tls_port = tls_addr.rsplit(':').next().expect("port").to_owned();

    let certs = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = certificate(certs.path(), &["shop.example.com"]);
    let app = TestApp::new("shop")
        .host("shop.example.com")
        .extra(&format!(
            "tls = {{ cert = {}, key = {} }}\nhttps_only = true",
            quote(&cert),
            quote(&key)
        ))
        .write();
    s.deploy(app.path()).ok("deploy with tls files");

    // The file certificate, trusted through its own CA only; the app sees https.
    let r = https_get(&tls_addr, "shop.example.com", "/headers", &ca).expect("https");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body
            .to_ascii_lowercase()
            .contains("x-forwarded-proto: https"),
        "{r:?}"
    );
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    // APP.localhost over HTTPS: the local CA of server.json.
    let r = https_get(&tls_addr, "shop.localhost", "/", &local_ca).expect("https local");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        https_get(&tls_addr, "shop.localhost", "/", &ca).is_err(),
        "not the file cert"
    );
    // Plain HTTP: 308 to the TLS port, path and query kept.
    let r = s.get("shop.example.com", "/a?b=1");
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("https://shop.example.com:{tls_port}/a?b=1").as_str())
    );
    let release = &s.releases("shop")[0];
    let stored = serde_json::to_string(release).expect("json");
    assert!(
        !stored.contains("PRIVATE KEY"),
        "no key material in the release"
    );

    // A key of another certificate: refused at deploy, naming the files (exit 2).
    let other = tempfile::tempdir().expect("tmp");
    let (_, _, wrong_key) = certificate(other.path(), &["shop.example.com"]);
    let bad = TestApp::new("badkey")
        .host("badkey.example.com")
        .extra(&format!(
            "tls = {{ cert = {}, key = {} }}",
            quote(&cert),
            quote(&wrong_key)
        ))
        .write();
    let out = s.deploy(bad.path());
    out.expect_code(2, "mismatched key");
    assert!(
        out.all().contains("does not belong to the certificate"),
        "{}",
        out.all()
    );
    assert!(
        out.all().contains(wrong_key.to_str().expect("utf-8")),
        "{}",
        out.all()
    );
    // A missing file, relative to the app directory.
    let missing = TestApp::new("nocert")
        .extra("[route]\ntls = { cert = \"missing.pem\", key = \"key.pem\" }")
        .write();
    let out = s.deploy(missing.path());
    out.expect_code(2, "missing certificate file");
    assert!(out.all().contains("route.tls.cert"), "{}", out.all());
    assert!(out.all().contains("missing.pem"), "{}", out.all());
}

#[test]
fn https_only_needs_a_tls_listener() {
    let s = Server::start();
    let app = TestApp::new("strict")
        .extra("[route]\nhttps_only = true")
        .write();
    let out = s.deploy(app.path());
    out.expect_code(2, "https_only without --listen-tls");
    assert!(out.all().contains("--listen-tls"), "{}", out.all());
    assert!(out.all().contains("route.https_only"), "{}", out.all());
}

/// A process the test started, killed (and reaped) when dropped.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn spawn(program: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> Spawned {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log fd");
    let child = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {program} ({e}); install it with `apt-get install -y pebble` (.ci/run does)")
        });
    Spawned(child)
}

#[test]
fn acme_certificate_from_pebble_over_http_01() {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    // Pebble's own HTTPS (the ACME API) with a test CA that the server is told to trust.
    let (pebble_ca, pebble_cert, pebble_key) = certificate(w, &["localhost", "127.0.0.1"]);
    let (acme_port, management, dns, dns_management, tls_alpn) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let directory = format!("https://127.0.0.1:{acme_port}/dir");
    let ca_arg = pebble_ca.to_str().expect("utf-8").to_owned();
    // A fixed plaintext port: pebble validates there, before and after the restart.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut s = Server::start_with(&[
        "--listen",
        &listen,
        "--listen-tls",
        "127.0.0.1:0",
        "--acme-directory",
        &directory,
        "--acme-ca",
        &ca_arg,
        "--acme-email",
        "ops@example.com",
    ]);
    let tls_addr = info(&s)["router_tls"]
        .as_str()
        .expect("router_tls")
        .to_owned();

    // DNS for the validation: every name resolves to 127.0.0.1 (IPv4 only).
    let dns_addr = format!("127.0.0.1:{dns}");
    let _dns = spawn(
        "pebble-challtestsrv",
        &[
            "-dns01",
            &dns_addr,
            "-management",
            &format!("127.0.0.1:{dns_management}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ],
        &[],
        &w.join("challtestsrv.log"),
    );
    // Pebble validates HTTP-01 on the router's plaintext port, for real.
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{acme_port}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": pebble_cert,
        "privateKey": pebble_key,
        "httpPort": s.port(),
        "tlsPort": tls_alpn,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
        // Short-lived certificates, so that the renewal (at two thirds) happens here.
        "certificateValidityPeriod": 30,
    }});
    let config_path = w.join("pebble.json");
    std::fs::write(&config_path, config.to_string()).expect("pebble config");
    let pebble_log = w.join("pebble.log");
    let pebble = spawn(
        "pebble",
        &[
            "-config",
            config_path.to_str().expect("utf-8"),
            "-dnsserver",
            &dns_addr,
        ],
        &[("PEBBLE_VA_NOSLEEP", "1")],
        &pebble_log,
    );
    let up = wharf_e2e::wait_until(Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", acme_port)).is_ok()
            && TcpStream::connect(("127.0.0.1", management)).is_ok()
    });
    assert!(
        up,
        "pebble did not start:\n{}",
        std::fs::read_to_string(&pebble_log).unwrap_or_default()
    );
    let root = https_get(
        &format!("127.0.0.1:{management}"),
        "localhost",
        "/roots/0",
        &pebble_ca,
    )
    .expect("pebble's root");
    assert_eq!(root.status, 200, "{root:?}");
    let pebble_root = w.join("pebble-root.pem");
    std::fs::write(&pebble_root, &root.body).expect("write root");

    let host = "shop.acme-e2e.example";
    let app = TestApp::new("acmeshop").host(host).write();
    s.deploy(app.path()).ok("deploy");
    let mut last = String::new();
    let mut first = None;
    let issued = wharf_e2e::wait_until(Duration::from_secs(90), || {
        match https_get(&tls_addr, host, "/headers", &pebble_root) {
            Ok(r) if r.status == 200 => {
                first = Some(r.leaf);
                true
            }
            Ok(r) => {
                last = format!("{r:?}");
                false
            }
            Err(e) => {
                last = e;
                false
            }
        }
    });
    assert!(
        issued,
        "no certificate from pebble within 90 s (last: {last})\n--- pebble:\n{}\n{}",
        std::fs::read_to_string(&pebble_log).unwrap_or_default(),
        s.log_tail(40)
    );
    let first = first.expect("the first certificate");
    let log = String::from_utf8_lossy(&s.log_text()).into_owned();
    assert!(log.contains("ACME certificate issued"), "{log}");
    let pebble_said = std::fs::read_to_string(&pebble_log).unwrap_or_default();
    assert!(
        !pebble_said.contains("ALWAYS_VALID"),
        "the challenge must really be validated"
    );
    assert!(
        pebble_said.contains(&format!(
            "Attempting to validate w/ HTTP: http://{host}:{}/.well-known/acme-challenge/",
            s.port()
        )) && pebble_said.contains("set VALID by completed challenge"),
        "pebble validated the HTTP-01 challenge on the router's port:\n{pebble_said}"
    );

    // Account and certificate keys are private.
    let acme_dir = s.data_dir().join("tls/acme");
    for file in [
        acme_dir.join("account.json"),
        acme_dir.join(host).join("key.pem"),
    ] {
        let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600,
            "{}",
            file.display()
        );
    }
    // A restart serves the stored certificate at once: no new order.
    s.restart_same_data_dir();
    assert_eq!(s.router(), listen, "the plaintext port pebble validates on");
    let tls_addr = info(&s)["router_tls"]
        .as_str()
        .expect("router_tls")
        .to_owned();
    let r = https_get(&tls_addr, host, "/", &pebble_root).expect("the stored ACME certificate");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.leaf, first, "the stored certificate, not a new one");
    // Two thirds into its 30 s lifetime it is renewed, by the same server process.
    let pid = s.pid();
    let mut served = Vec::new();
    // Generous: CI machines are shared; a failed attempt is retried after 10 s.
    let renewed = wharf_e2e::wait_until(Duration::from_secs(120), || {
        served = https_get(&tls_addr, host, "/", &pebble_root)
            .map(|r| r.leaf)
            .unwrap_or_default();
        !served.is_empty() && served != first
    });
    assert!(
        renewed,
        "the certificate was not renewed\n--- pebble:\n{}\n{}",
        std::fs::read_to_string(&pebble_log).unwrap_or_default(),
        s.log_tail(60)
    );
    assert_eq!(s.pid(), pid, "renewed without a restart");
    drop(pebble);
}
