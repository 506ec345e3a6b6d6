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
        .host("www.shop.example.com")
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
    // `wharf status` names the source and expiry of each host's certificate.
    let files = certificate_status(&s, "shop", "shop.example.com");
    assert_eq!(files["source"], "files", "{files}");
    assert!(files["not_after"].as_u64() > Some(0), "{files}");
    assert!(
        files["acme"].is_null(),
        "no ACME without --acme-directory: {files}"
    );
    assert!(files["files_error"].is_null(), "{files}");
    let www = certificate_status(&s, "shop", "www.shop.example.com");
    assert_eq!(www["source"], "local-ca", "{www}");
    assert!(
        www["files_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not name www.shop.example.com")),
        "{www}"
    );
    let local = certificate_status(&s, "shop", "shop.localhost");
    assert!(local["files_error"].is_null(), "by design: {local}");
    let text = s.wharf(&["status", "shop"]).ok("status").stdout.clone();
    assert!(
        text.lines()
            .any(|l| l.starts_with("shop.example.com") && l.contains(" files ")),
        "{text}"
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

    // A key replaced by one that does not match: status says so, the last good
    // certificate stays in service; the right key back clears it.
    let good_key = std::fs::read(&key).expect("key");
    std::fs::copy(&wrong_key, &key).expect("replace the key");
    let mut shown = Value::Null;
    let said = wharf_e2e::wait_until(Duration::from_secs(20), || {
        shown = certificate_status(&s, "shop", "shop.example.com");
        shown["files_error"].as_str().is_some_and(|e| {
            e.contains("does not belong to the certificate")
                && e.ends_with("the last good certificate stays in service")
        })
    });
    assert!(said, "{}", wharf_e2e::pretty(&shown));
    assert_eq!(shown["source"], "files", "{shown}");
    let text = s.wharf(&["status", "shop"]).ok("status").stdout.clone();
    assert!(text.contains("certificate files error: "), "{text}");
    let r = https_get(&tls_addr, "shop.example.com", "/", &ca).expect("still served");
    assert_eq!(r.status, 200, "{r:?}");
    std::fs::write(&key, good_key).expect("restore the key");
    let cleared = wharf_e2e::wait_until(Duration::from_secs(20), || {
        shown = certificate_status(&s, "shop", "shop.example.com");
        shown["files_error"].is_null()
    });
    assert!(cleared, "{}", wharf_e2e::pretty(&shown));
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

/// Pebble (the ACME API, with its own HTTPS from a test CA) and the DNS server it
/// resolves every name with, to 127.0.0.1.
struct Pebble {
    /// The directory URL for `--acme-directory`.
    directory: String,
    /// The CA of pebble's own HTTPS, for `--acme-ca`.
    ca: PathBuf,
    management: u16,
    log: PathBuf,
    dns_ports: (u16, u16),
    acme_port: u16,
    tls_alpn: u16,
    processes: Vec<Spawned>,
}

impl Pebble {
    /// Ports and certificates, before the server that needs the directory URL starts.
    fn prepare(w: &Path) -> Pebble {
        let (ca, _, _) = certificate(w, &["localhost", "127.0.0.1"]);
        let acme_port = free_port();
        Pebble {
            directory: format!("https://127.0.0.1:{acme_port}/dir"),
            ca,
            management: free_port(),
            log: w.join("pebble.log"),
            dns_ports: (free_port(), free_port()),
            acme_port,
            tls_alpn: free_port(),
            processes: Vec::new(),
        }
    }

    /// `--acme-directory URL --acme-ca FILE`.
    fn args(&self) -> [&str; 4] {
        [
            "--acme-directory",
            &self.directory,
            "--acme-ca",
            self.ca.to_str().expect("utf-8"),
        ]
    }

    /// Starts both; pebble validates HTTP-01 challenges on `http_port` (really: never
    /// `PEBBLE_VA_ALWAYS_VALID`) and issues certificates valid for `validity` seconds.
    /// Returns pebble's root (PEM file) that its certificates chain to.
    fn start(&mut self, w: &Path, http_port: u16, validity: u64) -> PathBuf {
        // DNS for the validation: every name resolves to 127.0.0.1 (IPv4 only).
        let dns_addr = format!("127.0.0.1:{}", self.dns_ports.0);
        self.processes.push(spawn(
            "pebble-challtestsrv",
            &[
                "-dns01",
                &dns_addr,
                "-management",
                &format!("127.0.0.1:{}", self.dns_ports.1),
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
        ));
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.acme_port),
            "managementListenAddress": format!("127.0.0.1:{}", self.management),
            "certificate": w.join("cert.pem"),
            "privateKey": w.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": self.tls_alpn,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }});
        let config_path = w.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("pebble config");
        self.processes.push(spawn(
            "pebble",
            &[
                "-config",
                config_path.to_str().expect("utf-8"),
                "-dnsserver",
                &dns_addr,
            ],
            &[("PEBBLE_VA_NOSLEEP", "1")],
            &self.log,
        ));
        let up = wharf_e2e::wait_until(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", self.acme_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.management)).is_ok()
        });
        assert!(up, "pebble did not start:\n{}", self.said());
        let root = https_get(
            &format!("127.0.0.1:{}", self.management),
            "localhost",
            "/roots/0",
            &self.ca,
        )
        .expect("pebble's root");
        assert_eq!(root.status, 200, "{root:?}");
        let path = w.join("pebble-root.pem");
        std::fs::write(&path, &root.body).expect("write root");
        path
    }

    /// Pebble's log so far.
    fn said(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[test]
fn acme_certificate_from_pebble_over_http_01() {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let mut pebble = Pebble::prepare(w);
    // A fixed plaintext port: pebble validates there, before and after the restart.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--listen", &listen, "--listen-tls", "127.0.0.1:0"];
    args.extend(pebble.args());
    args.extend(["--acme-email", "ops@example.com"]);
    let mut s = Server::start_with(&args);
    let tls_addr = info(&s)["router_tls"]
        .as_str()
        .expect("router_tls")
        .to_owned();
    // Pebble validates HTTP-01 on the router's plaintext port, for real; short-lived
    // certificates, so that the renewal (at two thirds) happens here.
    let pebble_root = pebble.start(w, s.port(), 30);

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
        pebble.said(),
        s.log_tail(40)
    );
    let first = first.expect("the first certificate");
    let log = String::from_utf8_lossy(&s.log_text()).into_owned();
    assert!(log.contains("ACME certificate issued"), "{log}");
    let pebble_said = pebble.said();
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
    // `wharf status` says where each host's certificate comes from.
    let cert = certificate_status(&s, "acmeshop", host);
    assert_eq!(cert["source"], "acme", "{}", wharf_e2e::pretty(&cert));
    assert!(cert["not_after"].as_u64().is_some(), "{cert}");
    assert_eq!(cert["acme"]["failures"], 0, "{cert}");
    assert!(cert["acme"]["next_attempt_at"].as_u64().is_some(), "{cert}");
    let local = certificate_status(&s, "acmeshop", "acmeshop.localhost");
    assert_eq!(local["source"], "local-ca", "{local}");
    assert!(local["acme"].is_null(), "no ACME for .localhost: {local}");

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
        pebble.said(),
        s.log_tail(60)
    );
    assert_eq!(s.pid(), pid, "renewed without a restart");
}

/// The `certificates` entry of `host` in `wharf status --json APP`.
fn certificate_status(s: &Server, app: &str, host: &str) -> Value {
    let status = s.wharf(&["status", "--json", app]).ok("status").json();
    status["certificates"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["host"] == host))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no certificate entry for {host}: {}",
                wharf_e2e::pretty(&status)
            )
        })
}

/// Waits until ACME failed `n` times in a row for `host`; its status entry then.
fn acme_failed(s: &Server, app: &str, host: &str, n: u64, within: Duration) -> Value {
    let mut last = Value::Null;
    let failed = wharf_e2e::wait_until(within, || {
        last = certificate_status(s, app, host);
        last["acme"]["failures"].as_u64() >= Some(n)
    });
    assert!(
        failed,
        "ACME did not fail {n} times for {host}: {}\n{}",
        wharf_e2e::pretty(&last),
        s.log_tail(30)
    );
    last
}

#[test]
fn acme_validation_failures_show_in_status_and_back_off() {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let mut pebble = Pebble::prepare(w);
    let mut args = vec!["--listen-tls", "127.0.0.1:0"];
    args.extend(pebble.args());
    let s = Server::start_with(&args);
    // Pebble validates on a port where nothing listens: as when port 80 does not reach
    // the router.
    let closed = free_port();
    pebble.start(w, closed, 300);

    let host = "shop.acme-fails.example";
    let app = TestApp::new("failshop").host(host).write();
    s.deploy(app.path()).ok("deploy");
    let cert = acme_failed(&s, "failshop", host, 1, Duration::from_secs(60));
    assert_eq!(cert["source"], "local-ca", "served meanwhile: {cert}");
    let acme = &cert["acme"];
    let error = acme["last_error"].as_str().expect("last_error");
    assert!(
        error.starts_with(&format!("ACME HTTP-01 validation for {host} failed: ")),
        "{error}"
    );
    assert!(
        error.contains(&format!(":{closed}")),
        "pebble's words: {error}"
    );
    assert!(
        error.ends_with(&format!(
            "check that DNS for {host} points to this machine and that port 80 reaches wharf's router (--listen)"
        )),
        "{error}"
    );
    let (at, next) = (
        acme["last_error_at"].as_u64().expect("last_error_at"),
        acme["next_attempt_at"].as_u64().expect("next_attempt_at"),
    );
    assert_eq!(next - at, 10_000, "first retry after 10 s: {acme}");
    assert!(
        pebble.said().contains(&format!(
            "Attempting to validate w/ HTTP: http://{host}:{closed}/.well-known/acme-challenge/"
        )),
        "{}",
        pebble.said()
    );
    // The text form says it too.
    let text = s.wharf(&["status", "failshop"]).ok("status").stdout.clone();
    assert!(text.contains("failed 1x, next try in"), "{text}");
    assert!(text.contains("acme error ("), "{text}");
    assert!(text.contains(error), "{text}");

    // The second attempt comes after the first retry delay, the third after twice it.
    let cert = acme_failed(&s, "failshop", host, 2, Duration::from_secs(60));
    let acme = &cert["acme"];
    let second = acme["last_error_at"].as_u64().expect("last_error_at");
    assert!(
        second >= next,
        "not before the retry time: {second} < {next}"
    );
    assert_eq!(
        acme["next_attempt_at"].as_u64().expect("next") - second,
        20_000,
        "doubled: {acme}"
    );
    assert_eq!(acme["failures"], 2, "no hot loop: {acme}");
}

#[test]
fn an_unreachable_acme_directory_shows_in_status() {
    let work = tempfile::tempdir().expect("tmp");
    // Any CA to trust (not the system's bundle, which a bare machine may lack).
    let (ca, _, _) = certificate(work.path(), &["localhost"]);
    let closed = free_port();
    let directory = format!("https://127.0.0.1:{closed}/dir");
    let s = Server::start_with(&[
        "--listen-tls",
        "127.0.0.1:0",
        "--acme-directory",
        &directory,
        "--acme-ca",
        ca.to_str().expect("utf-8"),
    ]);
    let host = "shop.acme-down.example";
    let app = TestApp::new("downshop").host(host).write();
    s.deploy(app.path()).ok("deploy");
    let cert = acme_failed(&s, "downshop", host, 1, Duration::from_secs(30));
    let error = cert["acme"]["last_error"].as_str().expect("last_error");
    assert!(
        error.starts_with(&format!(
            "cannot reach the ACME server {directory} for {host}: cannot connect to 127.0.0.1:{closed}"
        )),
        "{error}"
    );
    assert!(error.contains("check --acme-directory"), "{error}");
    assert_eq!(cert["source"], "local-ca", "{cert}");
}
