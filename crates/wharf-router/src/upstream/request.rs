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

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, target: &str, headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::builder().method(method).uri(target);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).expect("request").into_parts().0
    }

    const ADDR: &str = "10.0.0.7:8080";

    fn head(parts: &Parts, end_stream: bool, exact: Option<u64>) -> (String, BodyFraming) {
        let mut out = Vec::new();
        let framing = encode(
            parts,
            ADDR.parse().expect("addr"),
            end_stream,
            exact,
            &mut out,
        );
        (String::from_utf8(out).expect("text"), framing)
    }

    #[test]
    fn bodiless_get_is_origin_form_with_the_headers_in_order() {
        let p = parts(
            "GET",
            "http://a.example/x/y?q=1",
            &[("host", "a.example"), ("x-b", "2"), ("x-a", "1")],
        );
        let (text, framing) = head(&p, true, Some(0));
        assert_eq!(
            text,
            "GET /x/y?q=1 HTTP/1.1\r\nhost: a.example\r\nx-b: 2\r\nx-a: 1\r\n\r\n"
        );
        assert_eq!(framing, BodyFraming::Empty);
    }

    #[test]
    fn host_defaults_to_the_replica_address() {
        let (text, _) = head(&parts("GET", "/", &[]), true, Some(0));
        assert_eq!(text, format!("GET / HTTP/1.1\r\nhost: {ADDR}\r\n\r\n"));
        let (text, _) = head(&parts("OPTIONS", "*", &[("host", "h")]), true, Some(0));
        assert!(text.starts_with("OPTIONS / HTTP/1.1\r\n"), "{text}");
        let (text, _) = head(
            &parts("CONNECT", "a.example:443", &[("host", "h")]),
            true,
            Some(0),
        );
        assert!(
            text.starts_with(&format!("CONNECT {ADDR} HTTP/1.1\r\n")),
            "{text}"
        );
    }

    #[test]
    fn content_length_bodies_keep_their_length() {
        let p = parts("POST", "/", &[("host", "h"), ("content-length", "5")]);
        let (text, framing) = head(&p, false, Some(5));
        assert_eq!(
            text,
            "POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(framing, BodyFraming::Length(5));
        // A bodiless request keeps the client's `Content-Length: 0`.
        let p = parts("POST", "/", &[("host", "h"), ("content-length", "0")]);
        let (text, framing) = head(&p, true, Some(0));
        assert!(text.contains("content-length: 0\r\n"), "{text}");
        assert_eq!(framing, BodyFraming::Empty);
    }

    #[test]
    fn streamed_bodies_go_chunked_except_for_get_head_connect() {
        for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            let p = parts(method, "/", &[("host", "h")]);
            let (text, framing) = head(&p, false, None);
            assert_eq!(framing, BodyFraming::Chunked, "{method}");
            assert!(
                text.ends_with("host: h\r\ntransfer-encoding: chunked\r\n\r\n"),
                "{text}"
            );
        }
        for method in ["GET", "HEAD", "CONNECT"] {
            let p = parts(method, "/", &[("host", "h")]);
            let (text, framing) = head(&p, false, None);
            assert_eq!(framing, BodyFraming::Empty, "{method}");
            assert!(!text.contains("transfer-encoding"), "{text}");
        }
    }

    #[test]
    fn invalid_lengths_are_replaced_and_coding_never_passes_through() {
        let p = parts(
            "POST",
            "/",
            &[
                ("host", "h"),
                ("content-length", "nope"),
                ("transfer-encoding", "gzip"),
            ],
        );
        let (text, framing) = head(&p, false, None);
        assert_eq!(framing, BodyFraming::Chunked);
        assert_eq!(
            text,
            "POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let (text, framing) = head(&p, false, Some(3));
        assert_eq!(framing, BodyFraming::Length(3));
        assert_eq!(
            text,
            "POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\n"
        );
    }
}
