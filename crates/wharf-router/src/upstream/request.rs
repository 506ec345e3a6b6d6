//! The request head as it goes to a replica, and how its body is framed: the same
//! on-the-wire choices hyper's HTTP/1 client made for the proxy's requests.
//!
//! - A body that is already at its end (none, or `Content-Length: 0`) sends nothing;
//!   the head keeps the client's `Content-Length`, if any.
//! - A valid `Content-Length` (all values agree) frames the body by length.
//! - Otherwise a body of known size gets `Content-Length` of that size, and one of
//!   unknown size (an HTTP/1.1 chunked or HTTP/2 upload) is sent chunked, with
//!   `Transfer-Encoding: chunked` and any invalid `Content-Length` dropped; except that
//!   GET, HEAD and CONNECT send no body then (as hyper did).
//! - `Transfer-Encoding` never comes from the client's headers (it is hop-by-hop and
//!   stripped before); request trailers are not forwarded (nor was `Trailer`).
//!
//! The head is one buffer: request line (origin-form target, authority-form for
//! CONNECT), the headers as the proxy prepared them, `Host` when the client sent none.

use std::io::Write as _;
use std::net::SocketAddr;

use http::header::{self, HeaderMap};
use http::request::Parts;
use http::Method;

use super::framing::content_length;

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// Nothing is sent.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
}

/// The framing of a request, and whether the head must carry a `Content-Length` of
/// its own (`Some`) instead of the client's.
fn framing(
    method: &Method,
    headers: &HeaderMap,
    end_stream: bool,
    exact: Option<u64>,
) -> (BodyFraming, Option<u64>) {
    if end_stream {
        return (BodyFraming::Empty, None);
    }
    let given = content_length(
        headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .map(|v| v.as_bytes()),
    );
    match (given, exact) {
        (Ok(Some(n)), _) => (BodyFraming::Length(n), None),
        (_, Some(n)) => (BodyFraming::Length(n), Some(n)),
        (_, None) if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) => {
            (BodyFraming::Empty, None)
        }
        (_, None) => (BodyFraming::Chunked, None),
    }
}

/// Writes the request head for the replica at `addr` into `out` and returns how the
/// body follows it. `end_stream` and `exact` describe the body (its size hint).
pub(crate) fn encode(
    parts: &Parts,
    addr: SocketAddr,
    end_stream: bool,
    exact: Option<u64>,
    out: &mut Vec<u8>,
) -> BodyFraming {
    let (framing, own_length) = framing(&parts.method, &parts.headers, end_stream, exact);
    // The client's Content-Length stays unless the head gets its own, or goes chunked.
    let drop_length = own_length.is_some() || framing == BodyFraming::Chunked;
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    if parts.method == Method::CONNECT {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{addr}");
    } else {
        match parts.uri.path_and_query() {
            Some(path) if path.as_str().starts_with('/') => {
                out.extend_from_slice(path.as_str().as_bytes());
            }
            _ => out.push(b'/'),
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host = false;
    for (name, value) in &parts.headers {
        if *name == header::TRANSFER_ENCODING || (drop_length && *name == header::CONTENT_LENGTH) {
            continue;
        }
        host |= *name == header::HOST;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !host {
        let _ = write!(out, "host: {addr}\r\n");
    }
    if let Some(n) = own_length {
        let _ = write!(out, "content-length: {n}\r\n");
    }
    if framing == BodyFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}
