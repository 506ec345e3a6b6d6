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
