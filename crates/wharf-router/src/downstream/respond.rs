//! Writes an [`Answer`] on an HTTP/1.1 connection: the status line, the replica's
//! fields straight from its head (hop-by-hop ones and those its `Connection` names left
//! out, `X-Request-Id` replaced by the request's) or the router's own, HSTS when due,
//! the framing of the body for this client, then the body as it streams.
//!
//! Framing: a replica's `Content-Length` (checked when its head was parsed) goes on
//! unchanged; a chunked or close-delimited body goes chunked to an HTTP/1.1 client and
//! close-delimited to an HTTP/1.0 one; answers of the router's own carry their length.
//! The head and a small first piece of the body leave in one write; a body that is not
//! ready yet gets its head sent first.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use hyper::body::Body as _;

use super::head::RequestHead;
use super::io::Writer;
use crate::answer::{Answer, Fields, HSTS};
use crate::codec::chunked::{size_line, LAST_CHUNK};
use crate::codec::fields::{put_field, Known};
use crate::upstream::Framing;

/// Body pieces up to this size are copied behind the head or the previous piece.
const COPY_MAX: usize = 8 * 1024;
/// What is queued is written once it reaches this size, ready pieces or not.
const FLUSH_AT: usize = 64 * 1024;

/// How the body goes to this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// No body bytes (HEAD, 1xx, 204, 304, empty).
    None,
    /// As many bytes as its `Content-Length` says.
    Length,
    Chunked,
    /// Until the connection closes (HTTP/1.0 client, length unknown).
    Close,
}

/// Writes `answer`; `close` says the connection ends after it (`Connection: close`).
/// `Ok(true)` when the connection can carry another request.
pub(crate) async fn write(
    writer: &mut Writer,
    request: &RequestHead,
    answer: &mut Answer,
    close: bool,
) -> io::Result<bool> {
    let out = head(writer, request, answer, close);
    if out == Out::None {
        writer.flush_with(&[]).await?;
        return Ok(!close);
    }
    let ended = body(writer, answer, out).await?;
    Ok(ended && !close && out != Out::Close)
}

/// Writes the head into the writer's buffer.
fn head(writer: &mut Writer, request: &RequestHead, answer: &Answer, close: bool) -> Out {
    let buf = &mut writer.buf;
    let status = answer.status;
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
    let http10 = request.version() == http::Version::HTTP_10;
    let mut hsts = answer.hsts;
    let out = match &answer.fields {
        Fields::Upstream(head) => {
            let switch = head.framing == Framing::Switch;
            for field in &head.fields.list {
                // A 101 keeps its `Connection: upgrade` and `Upgrade`.
                if !switch && !head.fields.crosses(head.bytes(), field) {
                    continue;
                }
                match field.known {
                    Known::XRequestId => continue,
                    Known::StrictTransportSecurity => hsts = false,
                    _ => {}
                }
                put_field(
                    buf,
                    field.name.get(head.bytes()),
                    field.value.get(head.bytes()),
                );
            }
            match head.framing {
                Framing::Empty | Framing::Switch => Out::None,
                Framing::Length(_) => Out::Length,
                Framing::Chunked | Framing::Close if http10 => Out::Close,
                Framing::Chunked | Framing::Close => Out::Chunked,
            }
        }
        Fields::Local(headers) => {
            for (name, value) in headers {
                hsts &= name != http::header::STRICT_TRANSPORT_SECURITY;
                put_field(buf, name.as_str().as_bytes(), value.as_bytes());
            }
            let length = answer.body.size_hint().exact().unwrap_or(0);
            buf.extend_from_slice(b"content-length: ");
            buf.extend_from_slice(length.to_string().as_bytes());
            buf.extend_from_slice(b"\r\n");
            match request.method() == http::Method::HEAD || length == 0 {
                true => Out::None,
                false => Out::Length,
            }
        }
    };
    put_field(buf, b"x-request-id", answer.request_id.as_bytes());
    if hsts {
        put_field(buf, b"strict-transport-security", HSTS);
    }
    if out == Out::Chunked {
        buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close || out == Out::Close {
        buf.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        // An HTTP/1.0 client assumes the connection closes unless told otherwise.
        buf.extend_from_slice(b"connection: keep-alive\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    out
}

/// Streams the body after the head: `Ok(true)` when it ended cleanly.
async fn body(writer: &mut Writer, answer: &mut Answer, out: Out) -> io::Result<bool> {
    let body = &mut answer.body;
    loop {
        // One poll: a piece that is ready joins what is queued.
        let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !writer.buf.is_empty() {
                    writer.flush_with(&[]).await?;
                }
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(error)) => {
                // The head went out already: all the client can be told is the cut.
                tracing::debug!(%error, "response body failed; closing the connection");
                writer.flush_with(&[]).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers are not passed on.
                Err(_) => continue,
            },
        };
        if data.is_empty() {
            continue;
        }
        if out == Out::Chunked {
            size_line(data.len(), &mut writer.buf);
        }
        if data.len() <= COPY_MAX {
            writer.buf.extend_from_slice(&data);
        } else {
            writer.flush_with(&data).await?;
        }
        if out == Out::Chunked {
            writer.buf.extend_from_slice(b"\r\n");
        }
        // A replica sending small pieces faster than they are written: bounded.
        if writer.buf.len() >= FLUSH_AT {
            writer.flush_with(&[]).await?;
        }
    }
    if out == Out::Chunked {
        writer.buf.extend_from_slice(LAST_CHUNK);
    }
    writer.flush_with(&[]).await?;
    Ok(true)
}
