//! A client's request head: parsed with `httparse`, copied once into a buffer the
//! connection reuses, its fields located by offset (`codec::fields`), and checked
//! against request smuggling before anything is routed (RFC 9112 §6.3): obsolete line
//! folding, an invalid or conflicting `Content-Length`, `Transfer-Encoding` together with
//! `Content-Length`, a `Transfer-Encoding` that does not end in `chunked`,
//! `Transfer-Encoding` in HTTP/1.0, more than one `Host`, a target that is not ASCII or
//! not of a form this method allows: each is a 400, and the connection closes after it.
//!
//! HTTP/2 requests are written out as an HTTP/1.1 head and parsed here too (`h2`), so
//! that one set of rules (routing host, forwarding, hop-by-hop) serves both.

use std::borrow::Cow;

use http::{Method, StatusCode, Version};

use crate::codec::fields::{Fields, Known, Span};
use crate::codec::framing::{content_length, transfer_coding, Coding};
use crate::headers::normalize_host;

/// Largest request head accepted, in bytes (431 above).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Header fields accepted in one request head (431 above).
const MAX_FIELDS: usize = 100;
/// Fields parsed on a first try: the slots are initialized on every parse.
const FEW_FIELDS: usize = 24;

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Framing {
    #[default]
    None,
    Length(u64),
    Chunked,
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("malformed request head: {0}")]
    Malformed(httparse::Error),
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("more than {MAX_FIELDS} header fields")]
    TooManyFields,
    #[error("invalid request target")]
    Target,
    #[error("invalid or conflicting Content-Length")]
    ContentLength,
    #[error("Content-Length together with Transfer-Encoding")]
    LengthAndCoding,
    #[error("Transfer-Encoding must end in chunked, once")]
    Coding,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    CodingInHttp10,
    #[error("more than one Host header")]
    Hosts,
}

impl HeadError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            HeadError::TooLarge | HeadError::TooManyFields => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The path a request is routed by, when it is not a part of the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Path {
    /// `/`: an absolute-form target without a path.
    #[default]
    Root,
    /// Empty: authority-form (CONNECT).
    Empty,
    In(Span),
}

/// One request head. Reused by a connection from request to request.
#[derive(Debug, Default)]
pub(crate) struct RequestHead {
    bytes: Vec<u8>,
    method: Method,
    version: Version,
    /// The authority of an absolute-form or authority-form target.
    authority: Option<Span>,
    path: Path,
    /// The origin-form target (path and query) sent upstream; `None` sends `/`.
    origin: Option<Span>,
    /// `origin` is a query that needs a `/` before it (`http://host?query`).
    origin_slash: bool,
    pub(crate) fields: Fields,
    framing: Framing,
    expect_continue: bool,
}

impl RequestHead {
    /// Parses the head at the start of `buf`: `Ok(None)` while it is incomplete, else
    /// the bytes it took (its body, or the next request, follows).
    pub(crate) fn parse(&mut self, buf: &[u8]) -> Result<Option<usize>, HeadError> {
        match self.parse_with::<FEW_FIELDS>(buf) {
            Err(HeadError::TooManyFields) => self.parse_with::<MAX_FIELDS>(buf),
            parsed => parsed,
        }
    }

    fn parse_with<const N: usize>(&mut self, buf: &[u8]) -> Result<Option<usize>, HeadError> {
        let mut slots = [httparse::EMPTY_HEADER; N];
        let mut request = httparse::Request::new(&mut slots);
        let len = match request.parse(buf) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
            Ok(_) => return Err(HeadError::TooLarge),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
            Err(error) => return Err(HeadError::Malformed(error)),
        };
        // `parse` completes only with method, path and version set.
        let method = request.method.unwrap_or("");
        let target = request.path.unwrap_or("").as_bytes();
        self.method = match method {
            "GET" => Method::GET,
            other => Method::from_bytes(other.as_bytes())
                .map_err(|_| HeadError::Malformed(httparse::Error::Token))?,
        };
        self.version = match request.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        self.fields.collect(buf, request.headers);
        let target_span = Span::of(buf, target);
        self.bytes.clear();
        self.bytes.extend_from_slice(&buf[..len]);
        self.read_target(target_span)?;
        self.check_fields()?;
        Ok(Some(len))
    }

    /// Splits the target into what routing and the upstream request need.
    fn read_target(&mut self, span: Span) -> Result<(), HeadError> {
        let target = span.get(&self.bytes);
        if !target.is_ascii() || target.is_empty() {
            return Err(HeadError::Target);
        }
        let start = span_start(&self.bytes, target);
        self.origin_slash = false;
        let path_end = |from: usize| {
            target[from..]
                .iter()
                .position(|b| *b == b'?')
                .map_or(target.len(), |q| from + q)
        };
        (self.authority, self.path, self.origin) = if target[0] == b'/' {
            let path = Span::at(start, path_end(0));
            (None, Path::In(path), Some(span))
        } else if target == b"*" {
            (None, Path::In(span), None)
        } else if let Some(after) = scheme_end(target) {
            let authority_end = target[after..]
                .iter()
                .position(|b| matches!(b, b'/' | b'?'))
                .map_or(target.len(), |end| after + end);
            let authority = &target[after..authority_end];
            if authority.is_empty() || authority.contains(&b'@') {
                return Err(HeadError::Target);
            }
            let (path, origin) = match target.get(authority_end) {
                Some(b'/') => (
                    Path::In(Span::at(
                        start + authority_end,
                        path_end(authority_end) - authority_end,
                    )),
                    Some(Span::at(
                        start + authority_end,
                        target.len() - authority_end,
                    )),
                ),
                // `http://host?q`: the path is `/`, the query goes along.
                Some(_) => {
                    self.origin_slash = true;
                    let query = Span::at(start + authority_end, target.len() - authority_end);
                    (Path::Root, Some(query))
                }
                None => (Path::Root, None),
            };
            let authority = Span::at(start + after, authority.len());
            (Some(authority), path, origin)
        } else if self.method == Method::CONNECT && !target.contains(&b'/') {
            (Some(span), Path::Empty, None)
        } else {
            return Err(HeadError::Target);
        };
        Ok(())
    }

    /// Framing and the other rules on the fields.
    fn check_fields(&mut self) -> Result<(), HeadError> {
        let bytes = &self.bytes;
        let fields = &self.fields;
        let (mut lengths, mut codings, mut hosts) = (false, false, 0);
        let mut expect_continue = false;
        for field in &fields.list {
            match field.known {
                Known::ContentLength => lengths = true,
                Known::TransferEncoding => codings = true,
                Known::Host => hosts += 1,
                Known::Expect => {
                    expect_continue |= field.value.get(bytes).eq_ignore_ascii_case(b"100-continue");
                }
                _ => {}
            }
        }
        if hosts > 1 {
            return Err(HeadError::Hosts);
        }
        self.framing = match (lengths, codings) {
            (true, true) => return Err(HeadError::LengthAndCoding),
            (_, true) if self.version == Version::HTTP_10 => return Err(HeadError::CodingInHttp10),
            (_, true) => match transfer_coding(fields.values(bytes, Known::TransferEncoding)) {
                Ok(Coding::Chunked) => Framing::Chunked,
                _ => return Err(HeadError::Coding),
            },
            (true, false) => match content_length(fields.values(bytes, Known::ContentLength)) {
                Ok(Some(0)) | Ok(None) => Framing::None,
                Ok(Some(n)) => Framing::Length(n),
                Err(_) => return Err(HeadError::ContentLength),
            },
            (false, false) => Framing::None,
        };
        // An HTTP/1.0 client's `Expect` is ignored (RFC 9110 §10.1.1).
        self.expect_continue =
            expect_continue && self.framing != Framing::None && self.version == Version::HTTP_11;
        Ok(())
    }

    /// The head's bytes, which every [`Span`] of it points into.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn method(&self) -> &Method {
        &self.method
    }

    pub(crate) fn version(&self) -> Version {
        self.version
    }

    /// Marks a head written out from an HTTP/2 request as such.
    pub(crate) fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    pub(crate) fn framing(&self) -> Framing {
        self.framing
    }

    /// The client sent `Expect: 100-continue` with a body.
    pub(crate) fn expect_continue(&self) -> bool {
        self.expect_continue
    }

    /// The path the request is routed by (the target's, without the query).
    pub(crate) fn path(&self) -> &str {
        match self.path {
            Path::Root => "/",
            Path::Empty => "",
            // The target was checked to be ASCII.
            Path::In(span) => std::str::from_utf8(span.get(&self.bytes)).unwrap_or("/"),
        }
    }

    /// The target as it goes upstream (origin-form): path and query.
    pub(crate) fn origin_target(&self) -> Cow<'_, [u8]> {
        match self.origin {
            None => Cow::Borrowed(b"/"),
            Some(query) if self.origin_slash => {
                Cow::Owned([&b"/"[..], query.get(&self.bytes)].concat())
            }
            Some(span) => Cow::Borrowed(span.get(&self.bytes)),
        }
    }

    /// The authority of an absolute-form (or CONNECT's authority-form) target.
    pub(crate) fn authority(&self) -> Option<&[u8]> {
        self.authority.map(|span| span.get(&self.bytes))
    }

    /// The value of the first field of class `known`.
    pub(crate) fn first(&self, known: Known) -> Option<&[u8]> {
        self.fields.first(&self.bytes, known)
    }

    /// The normalized host the request is routed by: the target's authority (RFC 9112
    /// §3.2.2), else `Host`; empty when there is neither.
    pub(crate) fn host(&self) -> Cow<'_, str> {
        let raw = self
            .authority()
            .or_else(|| self.first(Known::Host))
            .unwrap_or(b"");
        normalize_host(std::str::from_utf8(raw).unwrap_or(""))
    }

    /// The connection may carry another request after this one (as far as the client
    /// is concerned).
    pub(crate) fn keep_alive(&self) -> bool {
        match self.version {
            Version::HTTP_10 => self.fields.keep_alive && !self.fields.close,
            _ => !self.fields.close,
        }
    }

    /// The `Upgrade` value of a request that asks for one (`Connection: upgrade`).
    pub(crate) fn upgrade(&self) -> Option<&[u8]> {
        self.fields
            .upgrade
            .then(|| self.first(Known::Upgrade))
            .flatten()
    }
}

/// Where `part` (a slice of `base`) starts in it.
fn span_start(base: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - base.as_ptr() as usize
}

/// The index after `scheme://` at the start of an absolute-form target.
fn scheme_end(target: &[u8]) -> Option<usize> {
    let colon = target.iter().position(|b| *b == b':')?;
    let scheme = &target[..colon];
    let valid = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    (valid && target[colon..].starts_with(b"://")).then_some(colon + 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &[u8]) -> Result<RequestHead, HeadError> {
        let mut head = RequestHead::default();
        let len = head.parse(text)?.expect("complete");
        assert_eq!(&text[..len], head.bytes());
        Ok(head)
    }

    fn head(text: &str) -> RequestHead {
        parsed(text.as_bytes()).expect(text)
    }

    #[test]
    fn origin_form() {
        let h = head("GET /a/b?x=1 HTTP/1.1\r\nHost: Shop.LocalHost:8080\r\n\r\n");
        assert_eq!(h.method(), Method::GET);
        assert_eq!(h.version(), Version::HTTP_11);
        assert_eq!(h.path(), "/a/b");
        assert_eq!(&*h.origin_target(), b"/a/b?x=1");
        assert_eq!(h.host(), "shop.localhost");
        assert_eq!(h.authority(), None);
        assert_eq!(h.framing(), Framing::None);
        assert!(h.keep_alive());
        assert!(h.upgrade().is_none());
    }

    #[test]
    fn absolute_form_routes_by_its_authority() {
        let h = head("GET http://A.example:80/x?q HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(h.host(), "a.example");
        assert_eq!(h.path(), "/x");
        assert_eq!(&*h.origin_target(), b"/x?q");
        assert_eq!(h.authority(), Some(&b"A.example:80"[..]));
        let bare = head("GET https://a.example HTTP/1.1\r\n\r\n");
        assert_eq!((bare.path(), &*bare.origin_target()), ("/", &b"/"[..]));
        let query = head("GET http://a.example?q=1 HTTP/1.1\r\n\r\n");
        assert_eq!(query.path(), "/");
        assert_eq!(&*query.origin_target(), b"/?q=1", "the query goes along");
        let star = head("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((star.path(), &*star.origin_target()), ("*", &b"/"[..]));
        let connect = head("CONNECT a.example:443 HTTP/1.1\r\n\r\n");
        assert_eq!(
            (connect.host(), connect.path()),
            (Cow::from("a.example"), "")
        );
    }

    #[test]
    fn bad_targets_are_400() {
        for text in [
            "GET a.example:443 HTTP/1.1\r\n\r\n",
            "GET http://user@a.example/ HTTP/1.1\r\n\r\n",
            "GET http:///x HTTP/1.1\r\n\r\n",
            "GET 1http://a/ HTTP/1.1\r\n\r\n",
            "CONNECT a.example/x HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parsed(text.as_bytes()).unwrap_err(),
                HeadError::Target,
                "{text}"
            );
        }
        let err = parsed(b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(
            matches!(err, HeadError::Target | HeadError::Malformed(_)),
            "{err:?}"
        );
    }

    #[test]
    fn framing_and_smuggling_shapes() {
        let length = head("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(length.framing(), Framing::Length(5));
        let zero = head("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(zero.framing(), Framing::None);
        let chunked = head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(chunked.framing(), Framing::Chunked);
        for (text, error) in [
            ("POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", HeadError::LengthAndCoding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", HeadError::LengthAndCoding),
            ("POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", HeadError::ContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: 4, 5\r\n\r\n", HeadError::ContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n", HeadError::ContentLength),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", HeadError::Coding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", HeadError::Coding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", HeadError::Coding),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", HeadError::CodingInHttp10),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", HeadError::Hosts),
        ] {
            assert_eq!(parsed(text.as_bytes()).unwrap_err(), error, "{text}");
        }
        for text in [
            "GET / HTTP/1.1\r\nX-A: 1\r\n 2\r\n\r\n",
            "GET / HTTP/1.1\r\nX A: 1\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "G@T / HTTP/1.1\r\n\r\n",
        ] {
            let error = parsed(text.as_bytes()).unwrap_err();
            assert!(
                matches!(error, HeadError::Malformed(_)),
                "{text:?}: {error:?}"
            );
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn keep_alive_expect_and_upgrade() {
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        let expect = head("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
        assert!(expect.expect_continue());
        assert!(!head("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expect_continue());
        let up = head("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(up.upgrade(), Some(&b"websocket"[..]));
        assert!(head("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
            .upgrade()
            .is_none());
    }

    #[test]
    fn incomplete_heads_at_any_split_then_the_rest_follows() {
        let whole = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nokGET";
        let head_len = whole.len() - 5;
        let mut head = RequestHead::default();
        for cut in 0..head_len {
            assert_eq!(head.parse(&whole[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(head.parse(whole), Ok(Some(head_len)));
        assert_eq!(head.path(), "/x");
        assert_eq!(head.framing(), Framing::Length(2));
    }

    #[test]
    fn limits_are_431() {
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_FIELDS {
            many.push_str(&format!("x-{i}: {i}\r\n"));
        }
        many.push_str("\r\n");
        let error = parsed(many.as_bytes()).unwrap_err();
        assert_eq!(error, HeadError::TooManyFields);
        assert_eq!(error.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let mut some = String::from("GET / HTTP/1.1\r\n");
        for i in 0..FEW_FIELDS + 3 {
            some.push_str(&format!("x-{i}: {i}\r\n"));
        }
        assert_eq!(head(&(some + "\r\n")).fields.list.len(), FEW_FIELDS + 3);
        let mut long = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        long.resize(MAX_HEAD + 10, b'a');
        let mut h = RequestHead::default();
        assert_eq!(h.parse(&long), Err(HeadError::TooLarge));
    }
}
