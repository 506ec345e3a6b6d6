//! The response head of a replica: parsed with `httparse` from the connection's read
//! buffer, and how its body is delimited (RFC 9112 §6.3).
//!
//! The replica is untrusted input: a head with obsolete line folding, an invalid or
//! conflicting `Content-Length`, `Transfer-Encoding` together with `Content-Length`,
//! `Transfer-Encoding` in an HTTP/1.0 response, or `chunked` anywhere but last is an
//! error (the proxy answers 502), never a guess at where the body ends.
//!
//! Invariant: a parsed head is removed from the buffer; what follows it (body bytes
//! already read) stays there. The head keeps a copy of its bytes, with its fields
//! located in them (`codec::fields`): no header map unless one is asked for.

use bytes::{Buf as _, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Version};

use crate::codec::fields::{Fields, Known};
use crate::codec::framing::{content_length, transfer_coding, Coding};

/// Header fields accepted in one response head (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Header fields parsed on a first try; a head with more is parsed again with room
/// for [`MAX_HEADERS`]. Small, because the slots are initialized on every parse.
const FEW_HEADERS: usize = 24;
/// Largest response head accepted, in bytes.
pub(crate) const MAX_HEAD: usize = 256 * 1024;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: HEAD, 1xx, 204, 304, a 2xx to CONNECT.
    Empty,
    /// No body, and the connection now speaks another protocol: `101`.
    Switch,
    Length(u64),
    Chunked,
    /// Until the replica closes the connection.
    Close,
}

/// A response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub status: StatusCode,
    bytes: Vec<u8>,
    pub fields: Fields,
    pub framing: Framing,
    /// The connection may carry another request once this response ended: HTTP/1.1,
    /// no `Connection: close`, a body not delimited by the close, not a tunnel.
    pub keep_alive: bool,
}

/// Why a response (head or body) from a replica was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtocolError {
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid header in the response head")]
    Header,
    #[error("invalid or conflicting Content-Length in the response")]
    ContentLength,
    #[error("response has both Transfer-Encoding and Content-Length")]
    LengthAndCoding,
    #[error("invalid Transfer-Encoding in the response (chunked must be last, once)")]
    Coding,
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    CodingInHttp10,
    #[error("malformed chunked body: {0}")]
    Chunk(&'static str),
    #[error("101 Switching Protocols to a request that asked for no upgrade")]
    UnaskedSwitch,
}

impl Head {
    /// The head's bytes, which its fields point into.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The fields as a header map: all of them, or only those [`Head::crossing`].
    pub(crate) fn header_map(&self, crossing_only: bool) -> Result<HeaderMap, ProtocolError> {
        let mut map = HeaderMap::with_capacity(self.fields.list.len());
        for field in &self.fields.list {
            if crossing_only && !self.fields.crosses(&self.bytes, field) {
                continue;
            }
            let name = HeaderName::from_bytes(field.name.get(&self.bytes))
                .map_err(|_| ProtocolError::Header)?;
            let value = HeaderValue::from_bytes(field.value.get(&self.bytes))
                .map_err(|_| ProtocolError::Header)?;
            map.append(name, value);
        }
        Ok(map)
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        spare::give(
            std::mem::take(&mut self.bytes),
            std::mem::take(&mut self.fields),
        );
    }
}

/// The buffers of heads that were dropped, for the next heads parsed on this thread
/// (a router worker parses and drops heads on its own thread): no allocation per
/// response once a worker is warm.
mod spare {
    use std::cell::RefCell;

    use crate::codec::fields::Fields;

    /// Buffers kept per thread.
    const KEPT: usize = 256;

    thread_local! {
        static SPARE: RefCell<Vec<(Vec<u8>, Fields)>> = const { RefCell::new(Vec::new()) };
    }

    /// Empty buffers for a head.
    pub(super) fn take() -> (Vec<u8>, Fields) {
        SPARE
            .with(|spare| spare.borrow_mut().pop())
            .unwrap_or_default()
    }

    pub(super) fn give(mut bytes: Vec<u8>, fields: Fields) {
        if bytes.capacity() == 0 || bytes.capacity() > 64 * 1024 {
            return;
        }
        bytes.clear();
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < KEPT {
                spare.push((bytes, fields));
            }
        });
    }
}

/// Parses the response head at the start of `buf` for a request with `method`:
/// `Ok(None)` while it is incomplete; once complete it is taken off `buf`.
pub(crate) fn parse(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, ProtocolError> {
    match parse_with::<FEW_HEADERS>(buf, method) {
        Err(ProtocolError::Head(httparse::Error::TooManyHeaders)) => {
            parse_with::<MAX_HEADERS>(buf, method)
        }
        parsed => parsed,
    }
}

/// [`parse`] with room for `N` header fields.
fn parse_with<const N: usize>(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<Head>, ProtocolError> {
    let mut slots = [httparse::EMPTY_HEADER; N];
    let (mut bytes, mut fields): (Vec<u8>, Fields);
    let (len, code, minor) = {
        let mut response = httparse::Response::new(&mut slots);
        let len = match response.parse(buf) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
            Ok(_) => return Err(ProtocolError::HeadTooLarge),
            Err(error) => return Err(ProtocolError::Head(error)),
        };
        (bytes, fields) = spare::take();
        fields.collect(buf, response.headers);
        // `parse` only completes with the code and version set.
        (
            len,
            response.code.unwrap_or(0),
            response.version.unwrap_or(0),
        )
    };
    bytes.extend_from_slice(&buf[..len]);
    buf.advance(len);
    let (mut lengths, mut codings) = (false, false);
    for field in &fields.list {
        lengths |= field.known == Known::ContentLength;
        codings |= field.known == Known::TransferEncoding;
    }
    let length = lengths.then(|| content_length(fields.values(&bytes, Known::ContentLength)));
    let coding = codings.then(|| transfer_coding(fields.values(&bytes, Known::TransferEncoding)));
    let version = match minor {
        1 => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let status =
        StatusCode::from_u16(code).map_err(|_| ProtocolError::Head(httparse::Error::Status))?;
    if coding.is_some() && length.is_some() {
        return Err(ProtocolError::LengthAndCoding);
    }
    if coding.is_some() && version == Version::HTTP_10 {
        return Err(ProtocolError::CodingInHttp10);
    }
    let coding = coding.transpose().map_err(|_| ProtocolError::Coding)?;
    let length = length
        .transpose()
        .map_err(|_| ProtocolError::ContentLength)?
        .flatten();
    let tunnel = *method == Method::CONNECT && status.is_success();
    let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
        Framing::Switch
    } else if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || tunnel
    {
        Framing::Empty
    } else {
        match (coding, length) {
            (Some(Coding::Chunked), _) => Framing::Chunked,
            (Some(Coding::Other), _) | (None, None) => Framing::Close,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    let keep_alive = version == Version::HTTP_11
        && !fields.close
        && !tunnel
        && !matches!(framing, Framing::Close | Framing::Switch);
    Ok(Some(Head {
        status,
        bytes,
        fields,
        framing,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_as(method: Method, text: &[u8]) -> Result<Option<Head>, ProtocolError> {
        let mut buf = BytesMut::from(text);
        parse(&mut buf, &method)
    }

    fn head(text: &str) -> Head {
        parse_as(Method::GET, text.as_bytes())
            .expect("valid")
            .expect("complete")
    }

    fn refused(text: &str) -> ProtocolError {
        parse_as(Method::GET, text.as_bytes()).expect_err(text)
    }

    #[test]
    fn parses_a_head_and_leaves_the_body_in_the_buffer() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello"[..],
        );
        let head = parse(&mut buf, &Method::POST)
            .expect("valid")
            .expect("complete");
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        let headers = head.header_map(false).expect("valid");
        let values: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn incomplete_heads_wait_for_more_at_any_split() {
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let end = whole.len() - 2;
        for cut in 0..end {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert!(
                parse(&mut buf, &Method::GET)
                    .expect("valid so far")
                    .is_none(),
                "complete at {cut}?"
            );
            assert_eq!(buf.len(), cut, "nothing consumed");
            buf.extend_from_slice(&whole[cut..]);
            let head = parse(&mut buf, &Method::GET)
                .expect("valid")
                .expect("complete");
            assert_eq!(head.framing, Framing::Length(2));
            assert_eq!(&buf[..], b"ok");
        }
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
                Framing::Length(7),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Framing::Close,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::Close, false),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Empty,
                true,
            ),
            ("HTTP/1.1 100 Continue\r\n\r\n", Framing::Empty, true),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                Framing::Switch,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\n",
                Framing::Length(7),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: keep-alive, Close\r\n\r\n",
                Framing::Length(7),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\n",
                Framing::Length(7),
                false,
            ),
            ("HTTP/1.0 200 OK\r\n\r\n", Framing::Close, false),
        ];
        for (text, framing, keep_alive) in cases {
            let head = head(text);
            assert_eq!(
                (head.framing, head.keep_alive),
                (framing, keep_alive),
                "{text}"
            );
        }
    }

    #[test]
    fn head_and_connect_answers_have_no_body() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n";
        let head = parse_as(Method::HEAD, text)
            .expect("valid")
            .expect("complete");
        assert_eq!((head.framing, head.keep_alive), (Framing::Empty, true));
        let head = parse_as(Method::CONNECT, text)
            .expect("valid")
            .expect("complete");
        assert_eq!(
            (head.framing, head.keep_alive),
            (Framing::Empty, false),
            "a tunnel, never pooled"
        );
        let refused = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\n";
        let head = parse_as(Method::CONNECT, refused)
            .expect("valid")
            .expect("complete");
        assert_eq!(head.framing, Framing::Length(7));
    }

    #[test]
    fn ambiguous_or_invalid_framing_is_refused() {
        let cases = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ProtocolError::LengthAndCoding),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", ProtocolError::LengthAndCoding),
            ("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", ProtocolError::LengthAndCoding),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", ProtocolError::ContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n", ProtocolError::ContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", ProtocolError::ContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n", ProtocolError::ContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", ProtocolError::ContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", ProtocolError::ContentLength),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", ProtocolError::Coding),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", ProtocolError::Coding),
            ("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", ProtocolError::CodingInHttp10),
        ];
        for (text, error) in cases {
            assert_eq!(refused(text), error, "{text}");
        }
    }

    #[test]
    fn malformed_heads_are_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX A: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A : 1\r\n\r\n",
            "HTTP/2.0 200 OK\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n",
            "NOTHTTP 200 OK\r\n\r\n",
        ] {
            assert!(
                matches!(refused(text), ProtocolError::Head(_)),
                "{text:?}: {:?}",
                parse_as(Method::GET, text.as_bytes())
            );
        }
    }

    #[test]
    fn many_header_fields_up_to_the_limit() {
        let head_with = |n: usize| {
            let mut text = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..n {
                text.push_str(&format!("x-{i}: {i}\r\n"));
            }
            text + "content-length: 0\r\n\r\n"
        };
        let many = head(&head_with(FEW_HEADERS + 5));
        let headers = many.header_map(false).expect("valid");
        assert_eq!(headers.len(), FEW_HEADERS + 6);
        assert_eq!(headers["x-28"], "28");
        assert_eq!(
            refused(&head_with(MAX_HEADERS)),
            ProtocolError::Head(httparse::Error::TooManyHeaders)
        );
    }

    #[test]
    fn oversized_heads_are_refused() {
        let mut text = b"HTTP/1.1 200 OK\r\n".to_vec();
        while text.len() <= MAX_HEAD {
            text.extend_from_slice(
                b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        assert!(matches!(
            parse_as(Method::GET, &text),
            Err(ProtocolError::HeadTooLarge | ProtocolError::Head(httparse::Error::TooManyHeaders))
        ));
        let mut long = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
        long.resize(MAX_HEAD + 10, b'a');
        assert_eq!(
            parse_as(Method::GET, &long).unwrap_err(),
            ProtocolError::HeadTooLarge
        );
    }
}
