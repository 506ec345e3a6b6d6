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
//! - `Transfer-Encoding` never comes from the client's headers (it is hop-by-hop);
//!   request trailers are not forwarded (nor is `Trailer`).
//!
//! The head is written in one buffer straight from the client's head (no header map):
//! the request line (origin-form target, authority-form for CONNECT), every field of
//! the client's that crosses the proxy (not hop-by-hop, not named by `Connection`; not
//! `Expect`, answered by the router itself) in the client's order, then the forwarding
//! fields: `Host` when the client sent none (the target's authority, else the replica's
//! address; an absolute-form target's authority replaces the client's `Host`), `X-Forwarded-For` (the client's values, then the client's address),
//! `X-Forwarded-Proto` (of the connection the request came on), `X-Forwarded-Host`
//! (the host, unless a proxy in front set it), `X-Request-Id`, a `traceparent` of the
//! router's when the client's is missing or invalid, `Connection: upgrade` and
//! `Upgrade` when the client asked for an upgrade, and the body's framing.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use http::Method;

use crate::codec::fields::{put_field, Known};
use crate::codec::framing::content_length;
use crate::downstream::head::RequestHead;

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// Nothing is sent.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
}

/// What the proxy adds to a request on its way to a replica.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forward<'a> {
    /// The client's address.
    pub client: IpAddr,
    /// The request came over TLS.
    pub secure: bool,
    pub request_id: &'a [u8],
    /// The router's `traceparent`, for a request without a valid one.
    pub traceparent: Option<&'a [u8]>,
}

/// The framing of a request, and whether the head must carry a `Content-Length` of
/// its own (`Some`) instead of the client's.
fn framing(
    method: &Method,
    given: Result<Option<u64>, ()>,
    end_stream: bool,
    exact: Option<u64>,
) -> (BodyFraming, Option<u64>) {
    if end_stream {
        return (BodyFraming::Empty, None);
    }
    match (given, exact) {
        (Ok(Some(n)), _) => (BodyFraming::Length(n), None),
        (_, Some(n)) => (BodyFraming::Length(n), Some(n)),
        (_, None) if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) => {
            (BodyFraming::Empty, None)
        }
        (_, None) => (BodyFraming::Chunked, None),
    }
}

/// Writes the head of `request` for the replica at `addr` into `out` and returns how
/// the body follows it. `end_stream` and `exact` describe the body (its size hint).
pub(crate) fn encode(
    request: &RequestHead,
    forward: &Forward<'_>,
    addr: SocketAddr,
    end_stream: bool,
    exact: Option<u64>,
    out: &mut Vec<u8>,
) -> BodyFraming {
    let bytes = request.bytes();
    let fields = &request.fields;
    let method = request.method();
    let given = content_length(fields.values(bytes, Known::ContentLength)).map_err(|_| ());
    let (framing, own_length) = framing(method, given, end_stream, exact);
    // The client's Content-Length stays unless the head gets its own, or goes chunked.
    let drop_length = own_length.is_some() || framing == BodyFraming::Chunked;
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    if *method == Method::CONNECT {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{addr}");
    } else {
        out.extend_from_slice(&request.origin_target());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let (mut host, mut forwarded_host, mut forwarded_for) = (None, false, false);
    for field in &fields.list {
        if !fields.crosses(bytes, field) {
            continue;
        }
        match field.known {
            Known::ContentLength if drop_length => continue,
            Known::XForwardedProto | Known::XRequestId | Known::Expect => continue,
            Known::Traceparent if forward.traceparent.is_some() => continue,
            Known::XForwardedFor => {
                forwarded_for = true;
                continue;
            }
            // An absolute-form target's authority replaces `Host` (RFC 9112 §3.2.2).
            Known::Host if request.authority().is_some() => continue,
            Known::Host => host = Some(field.value.get(bytes)),
            Known::XForwardedHost => forwarded_host = true,
            _ => {}
        }
        put_field(out, field.name.get(bytes), field.value.get(bytes));
    }
    let host = match (request.authority(), host) {
        (Some(authority), _) => {
            put_field(out, b"host", authority);
            Some(authority)
        }
        (None, Some(host)) => Some(host),
        (None, None) => {
            let _ = write!(out, "host: {addr}\r\n");
            None
        }
    };
    out.extend_from_slice(b"x-forwarded-for: ");
    if forwarded_for {
        for field in fields
            .list
            .iter()
            .filter(|f| f.known == Known::XForwardedFor)
        {
            if fields.crosses(bytes, field) {
                out.extend_from_slice(field.value.get(bytes));
                out.extend_from_slice(b", ");
            }
        }
    }
    ip(out, forward.client.to_canonical());
    out.extend_from_slice(match forward.secure {
        true => b"\r\nx-forwarded-proto: https\r\n",
        false => b"\r\nx-forwarded-proto: http\r\n",
    });
    if let (false, Some(host)) = (forwarded_host, host) {
        put_field(out, b"x-forwarded-host", host);
    }
    put_field(out, b"x-request-id", forward.request_id);
    if let Some(traceparent) = forward.traceparent {
        put_field(out, b"traceparent", traceparent);
    }
    if let Some(upgrade) = request.upgrade() {
        out.extend_from_slice(b"connection: upgrade\r\n");
        put_field(out, b"upgrade", upgrade);
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

/// An IP address in text; IPv4 without the formatting machinery (every request).
fn ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = "10.0.0.7:8080";
    const ID: &[u8] = b"0123456789abcdef0123456789abcdef";
    const TAIL: &str = "x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n";

    fn request(text: &str) -> RequestHead {
        let mut head = RequestHead::default();
        head.parse(text.as_bytes())
            .expect("valid")
            .expect("complete");
        head
    }

    fn forward() -> Forward<'static> {
        Forward {
            client: [127, 0, 0, 1].into(),
            secure: false,
            request_id: ID,
            traceparent: None,
        }
    }

    fn encoded(
        text: &str,
        forward: &Forward<'_>,
        end_stream: bool,
        exact: Option<u64>,
    ) -> (String, BodyFraming) {
        let mut out = Vec::new();
        let head = request(text);
        let framing = encode(
            &head,
            forward,
            ADDR.parse().expect("addr"),
            end_stream,
            exact,
            &mut out,
        );
        (String::from_utf8(out).expect("text"), framing)
    }

    fn head(text: &str, end_stream: bool, exact: Option<u64>) -> (String, BodyFraming) {
        encoded(text, &forward(), end_stream, exact)
    }

    /// The forwarding fields every request ends with, for host `host`.
    fn tail(host: &str) -> String {
        let id = std::str::from_utf8(ID).expect("ascii");
        format!("{TAIL}x-forwarded-host: {host}\r\nx-request-id: {id}\r\n")
    }

    #[test]
    fn bodiless_get_is_origin_form_with_the_headers_in_order() {
        let (text, framing) = head(
            "GET http://a.example/x/y?q=1 HTTP/1.1\r\nhost: a.example\r\nx-b: 2\r\nx-a: 1\r\n\r\n",
            true,
            Some(0),
        );
        assert_eq!(
            text,
            format!(
                "GET /x/y?q=1 HTTP/1.1\r\nx-b: 2\r\nx-a: 1\r\nhost: a.example\r\n{}\r\n",
                tail("a.example")
            )
        );
        assert_eq!(framing, BodyFraming::Empty);
    }

    #[test]
    fn host_defaults_to_the_authority_then_the_replica_address() {
        let (text, _) = head("GET / HTTP/1.1\r\n\r\n", true, Some(0));
        let id = std::str::from_utf8(ID).expect("ascii");
        assert_eq!(
            text,
            format!("GET / HTTP/1.1\r\nhost: {ADDR}\r\n{TAIL}x-request-id: {id}\r\n\r\n"),
            "no X-Forwarded-Host made up from the replica's address"
        );
        let (text, _) = head("GET http://b.example:8080/ HTTP/1.1\r\n\r\n", true, Some(0));
        assert!(text.contains("host: b.example:8080\r\n"), "{text}");
        assert!(
            text.contains("x-forwarded-host: b.example:8080\r\n"),
            "{text}"
        );
        let (text, _) = head("OPTIONS * HTTP/1.1\r\nhost: h\r\n\r\n", true, Some(0));
        assert!(text.starts_with("OPTIONS / HTTP/1.1\r\n"), "{text}");
        let (text, _) = head(
            "CONNECT a.example:443 HTTP/1.1\r\nhost: h\r\n\r\n",
            true,
            Some(0),
        );
        assert!(
            text.starts_with(&format!("CONNECT {ADDR} HTTP/1.1\r\n")),
            "{text}"
        );
    }

    #[test]
    fn forwarding_fields() {
        let proxied = "GET / HTTP/1.1\r\nHost: shop.localhost:8080\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-proto: ftp\r\nX-Forwarded-For: 10.0.0.2\r\nX-Forwarded-Host: edge.example.com\r\nX-Request-Id: theirs\r\n\r\n";
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let theirs = Forward {
            client: "::ffff:192.168.10.200".parse().expect("ip"),
            secure: true,
            request_id: b"theirs",
            traceparent: Some(tp),
        };
        let (text, _) = encoded(proxied, &theirs, true, Some(0));
        assert_eq!(
            text,
            "GET / HTTP/1.1\r\nHost: shop.localhost:8080\r\nX-Forwarded-Host: edge.example.com\r\n\
             x-forwarded-for: 10.0.0.1, 10.0.0.2, 192.168.10.200\r\nx-forwarded-proto: https\r\n\
             x-request-id: theirs\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n"
        );
        let (text, _) = encoded(
            "GET / HTTP/1.1\r\nhost: h\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
            &Forward { client: "2001:db8::1".parse().expect("ip"), ..forward() },
            true,
            Some(0),
        );
        assert!(
            text.contains("traceparent: 00-4bf9"),
            "the client's is kept: {text}"
        );
        assert!(text.contains("x-forwarded-for: 2001:db8::1\r\n"), "{text}");
    }

    #[test]
    fn hop_by_hop_and_named_fields_stay_behind() {
        let (text, _) = head(
            "GET / HTTP/1.1\r\nhost: h\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: x\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nExpect: 100-continue\r\nx-kept: 1\r\n\r\n",
            true,
            Some(0),
        );
        assert_eq!(
            text,
            format!(
                "GET / HTTP/1.1\r\nhost: h\r\nx-kept: 1\r\n{}\r\n",
                tail("h")
            )
        );
    }

    #[test]
    fn connection_cannot_take_the_length_away() {
        let (text, framing) = head(
            "POST / HTTP/1.1\r\nhost: h\r\nConnection: content-length\r\ncontent-length: 4\r\n\r\n",
            false,
            Some(4),
        );
        assert_eq!(framing, BodyFraming::Length(4));
        assert!(text.contains("content-length: 4\r\n"), "{text}");
    }

    #[test]
    fn an_absolute_form_authority_replaces_host() {
        let (text, _) = head(
            "GET http://victim.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n",
            true,
            Some(0),
        );
        assert!(!text.contains("evil"), "{text}");
        assert!(text.contains("host: victim.example\r\n"), "{text}");
        assert!(
            text.contains("x-forwarded-host: victim.example\r\n"),
            "{text}"
        );
    }

    #[test]
    fn an_upgrade_keeps_its_two_fields() {
        let (text, _) = head(
            "GET /ws HTTP/1.1\r\nhost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
            true,
            Some(0),
        );
        assert!(
            text.ends_with("connection: upgrade\r\nupgrade: websocket\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn content_length_bodies_keep_their_length() {
        let (text, framing) = head(
            "POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\n",
            false,
            Some(5),
        );
        assert_eq!(
            text,
            format!(
                "POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n{}\r\n",
                tail("h")
            )
        );
        assert_eq!(framing, BodyFraming::Length(5));
        // A bodiless request keeps the client's `Content-Length: 0`.
        let (text, framing) = head(
            "POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n",
            true,
            Some(0),
        );
        assert!(text.contains("content-length: 0\r\n"), "{text}");
        assert_eq!(framing, BodyFraming::Empty);
    }

    #[test]
    fn streamed_bodies_go_chunked_except_for_get_head_connect() {
        for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            let (text, framing) = head(
                &format!("{method} / HTTP/1.1\r\nhost: h\r\n\r\n"),
                false,
                None,
            );
            assert_eq!(framing, BodyFraming::Chunked, "{method}");
            assert!(
                text.ends_with("transfer-encoding: chunked\r\n\r\n"),
                "{text}"
            );
        }
        for method in ["GET", "HEAD"] {
            let (text, framing) = head(
                &format!("{method} / HTTP/1.1\r\nhost: h\r\n\r\n"),
                false,
                None,
            );
            assert_eq!(framing, BodyFraming::Empty, "{method}");
            assert!(!text.contains("transfer-encoding"), "{text}");
        }
    }

    #[test]
    fn chunked_uploads_go_chunked_and_coding_never_passes_through() {
        let (text, framing) = head(
            "POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            false,
            None,
        );
        assert_eq!(framing, BodyFraming::Chunked);
        assert_eq!(text.matches("transfer-encoding").count(), 1, "{text}");
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{text}"
        );
        // An HTTP/2 body of known size without a Content-Length gets one.
        let (text, framing) = head("POST / HTTP/1.1\r\nhost: h\r\n\r\n", false, Some(3));
        assert_eq!(framing, BodyFraming::Length(3));
        assert!(text.ends_with("content-length: 3\r\n\r\n"), "{text}");
    }
}
