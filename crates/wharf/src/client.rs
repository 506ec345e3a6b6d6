//! The API client: HTTP/1.1 over the server's unix socket (or TCP with --server).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::PathBuf;
use wharf_types::api::{ApiError, ErrorKind};

/// A failure the CLI reports: message and exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code,
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(2, message)
    }
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(1, message)
    }
    /// Exit code of an API error kind: bad input and unknown things are the user's (2).
    pub fn from_api(e: ApiError) -> Self {
        let code = match e.kind {
            ErrorKind::BadInput | ErrorKind::NotFound => 2,
            _ => 1,
        };
        let message = match e.manifest {
            Some(m) => m.to_string(),
            None => e.error,
        };
        Self::new(code, message)
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

/// Where the server's API is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
    /// `https://HOST:PORT`, trusting the CA certificate in `ca` ($WHARF_CA_CERT).
    Tls {
        addr: String,
        host: String,
        ca: Option<PathBuf>,
    },
}

impl Endpoint {
    /// `--server` as given: `https://HOST:PORT` is TLS, `HOST:PORT` or `http://...` plain.
    pub fn parse(server: &str, ca: Option<PathBuf>) -> Self {
        if let Some(addr) = server.strip_prefix("https://") {
            let addr = addr.trim_end_matches('/').to_string();
            let host = match addr.rsplit_once(':') {
                Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
                None => addr.clone(),
            };
            return Self::Tls { addr, host, ca };
        }
        let addr = server.strip_prefix("http://").unwrap_or(server);
        Self::Tcp(addr.trim_end_matches('/').to_string())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Tls { addr, .. } => write!(f, "https://{addr}"),
        }
    }
}

#[derive(Clone)]
pub struct Client {
    pub endpoint: Endpoint,
    /// Bearer token for TCP endpoints ($WHARF_TOKEN); the unix socket needs none.
    pub token: Option<String>,
}

impl Client {
    pub fn unix(path: PathBuf) -> Self {
        Self {
            endpoint: Endpoint::Unix(path),
            token: None,
        }
    }
}

impl Client {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Response<Incoming>> {
        let body = body
            .map(|b| serde_json::to_vec(b))
            .transpose()
            .map_err(|e| Failure::failed(e.to_string()))?;
        let unreachable = |e: &dyn std::fmt::Display| {
            Failure::failed(format!(
                "no wharf server answers at {} ({e}); start one with `wharf server` or `wharf up`",
                self.endpoint
            ))
        };
        let mut sender = match &self.endpoint {
            Endpoint::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| unreachable(&e))?;
                handshake(s).await.map_err(|e| unreachable(&e))?
            }
            Endpoint::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a)
                    .await
                    .map_err(|e| unreachable(&e))?;
                handshake(s).await.map_err(|e| unreachable(&e))?
            }
            Endpoint::Tls { addr, host, ca } => {
                let ca = ca.as_ref().ok_or_else(|| {
                    Failure::usage(format!(
                        "--server https://{addr}: set WHARF_CA_CERT to the CA certificate the server uses (its DATA/tls/api-ca.pem when it made its own)"
                    ))
                })?;
                let config = crate::tls::client_config(ca)?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| Failure::usage(format!("--server: invalid host {host:?}: {e}")))?;
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| unreachable(&e))?;
                let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                    .connect(name, s)
                    .await
                    .map_err(|e| {
                        Failure::failed(format!(
                            "TLS with https://{addr} failed ({e}); is WHARF_CA_CERT the server's CA certificate?"
                        ))
                    })?;
                handshake(tls).await.map_err(|e| unreachable(&e))?
            }
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "wharf")
            .header("content-type", "application/json");
        if let (Endpoint::Tcp(_) | Endpoint::Tls { .. }, Some(t)) = (&self.endpoint, &self.token) {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Failure::failed(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| Failure::failed(format!("the server closed the connection: {e}")))
    }

    /// Sends a request and decodes a JSON answer (or the API error).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::failed(e.to_string()))?
            .to_bytes();
        decode(status, &bytes)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// Sends a request whose answer is newline-delimited JSON; calls `on` per value.
    pub async fn stream<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        mut on: impl FnMut(T) -> Result<()>,
    ) -> Result<()> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| Failure::failed(e.to_string()))?
                .to_bytes();
            return decode::<()>(status, &bytes);
        }
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| Failure::failed(format!("the server stopped answering: {e}")))?;
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let v = serde_json::from_slice(&line).map_err(|e| {
                        Failure::failed(format!("unexpected answer from the server: {e}"))
                    })?;
                    on(v)?;
                }
            }
        }
        Ok(())
    }

    /// True when the server answers its health check.
    pub async fn healthy(&self) -> bool {
        match self.send(Method::GET, "/healthz", None::<&()>).await {
            Ok(r) => r.status() == StatusCode::OK,
            Err(_) => false,
        }
    }
}

async fn handshake<S>(s: S) -> std::io::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T> {
    if status.is_success() {
        return serde_json::from_slice(bytes)
            .map_err(|e| Failure::failed(format!("unexpected answer from the server: {e}")));
    }
    match serde_json::from_slice::<ApiError>(bytes) {
        Ok(e) => Err(Failure::from_api(e)),
        Err(_) => {
            let text = String::from_utf8_lossy(bytes).trim().to_string();
            let code = if status.is_client_error() { 2 } else { 1 };
            Err(Failure::new(
                code,
                format!("the server answered {status}: {text}"),
            ))
        }
    }
}
