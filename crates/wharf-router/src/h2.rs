//! HTTP/2 connections, served by hyper: on TLS when ALPN chose `h2`, on plaintext when
//! the client starts with the HTTP/2 connection preface (prior knowledge, h2c).
//!
//! Each request is written out as an HTTP/1.1 head and parsed by the same code as the
//! router's own HTTP/1.1 server (`downstream::head`), then proxied by the same path;
//! its answer becomes an `http::Response` ([`Answer::into_response`]). So routing,
//! forwarding fields and hop-by-hop rules are one implementation for both protocols.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf as _, BytesMut};
use http::{Request, Response};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::answer::Answer;
use crate::body::ProxyBody;
use crate::downstream::head::{HeadError, RequestHead};
use crate::request_body::ClientBody;
use crate::server::{Conn, Local};

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves an HTTP/2 connection until it ends; once `stop` turns true it goes away
/// gracefully (GOAWAY, streams in flight finish).
pub(crate) async fn serve<I>(local: Arc<Local>, io: I, conn: Conn, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = service_fn(move |request| {
        let local = local.clone();
        async move { Ok::<_, Infallible>(handle(&local, request, conn).await) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    let serving = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(serving);
    let result = tokio::select! {
        biased;
        result = serving.as_mut() => result,
        () = async { drop(stop.wait_for(|stop| *stop).await) } => {
            serving.as_mut().graceful_shutdown();
            serving.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(peer = %conn.peer, %error, "HTTP/2 connection ended with an error");
    }
}

/// Proxies one HTTP/2 request.
async fn handle(local: &Local, request: Request<Incoming>, conn: Conn) -> Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let mut head = RequestHead::default();
    if let Err(error) = head_of(&parts, &mut head) {
        let mut response = Response::new(ProxyBody::local(format!("{error}\n")));
        *response.status_mut() = error.status();
        return response;
    }
    head.set_version(parts.version);
    let body = match body.is_end_stream() {
        true => ClientBody::Empty,
        false => ClientBody::H2(body),
    };
    let answer: Answer = crate::proxy::handle(local, &head, body, conn).await;
    answer.into_response()
}

/// Writes the request of `parts` out as an HTTP/1.1 head and parses it into `head`:
/// an absolute-form target when the request has an authority (as HTTP/2 requests do),
/// so that it is routed by `:authority`.
fn head_of(parts: &http::request::Parts, head: &mut RequestHead) -> Result<(), HeadError> {
    let mut text = Vec::with_capacity(256);
    text.extend_from_slice(parts.method.as_str().as_bytes());
    text.push(b' ');
    let uri = &parts.uri;
    match (uri.scheme_str(), uri.authority()) {
        (_, Some(authority)) if parts.method == http::Method::CONNECT => {
            text.extend_from_slice(authority.as_str().as_bytes());
        }
        (scheme, Some(authority)) => {
            text.extend_from_slice(scheme.unwrap_or("http").as_bytes());
            text.extend_from_slice(b"://");
            text.extend_from_slice(authority.as_str().as_bytes());
            text.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
        }
        (_, None) => {
            text.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
        }
    }
    text.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        crate::codec::fields::put_field(&mut text, name.as_str().as_bytes(), value.as_bytes());
    }
    text.extend_from_slice(b"\r\n");
    match head.parse(&text)? {
        Some(_) => Ok(()),
        None => Err(HeadError::Malformed(httparse::Error::Status)),
    }
}

/// A stream whose first bytes were already read (the connection preface): they are
/// read again first.
pub(crate) struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: BytesMut, inner: S) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .version(http::Version::HTTP_2);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).expect("request").into_parts().0
    }

    #[test]
    fn an_h2_request_is_routed_by_its_authority() {
        let mut head = RequestHead::default();
        head_of(
            &parts(
                "POST",
                "https://Shop.LocalHost:8443/a/b?c=1",
                &[
                    ("host", "ignored"),
                    ("content-length", "3"),
                    ("te", "trailers"),
                ],
            ),
            &mut head,
        )
        .expect("head");
        assert_eq!(head.host(), "shop.localhost");
        assert_eq!(head.path(), "/a/b");
        assert_eq!(&*head.origin_target(), b"/a/b?c=1");
        assert_eq!(head.framing(), crate::downstream::head::Framing::Length(3));
        let mut connect = RequestHead::default();
        head_of(&parts("CONNECT", "a.example:443", &[]), &mut connect).expect("head");
        assert_eq!((connect.host(), connect.path()), ("a.example".into(), ""));
        let mut smuggled = RequestHead::default();
        let error = head_of(
            &parts("GET", "/", &[("host", "a"), ("host", "b")]),
            &mut smuggled,
        )
        .unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_prefixed_stream_reads_its_prefix_first() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (near, mut far) = tokio::io::duplex(64);
        far.write_all(b" world").await.expect("write");
        drop(far);
        let mut stream = Prefixed::new(BytesMut::from(&b"hello"[..]), near);
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("read");
        assert_eq!(text, "hello world");
    }
}
