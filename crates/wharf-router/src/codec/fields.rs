//! The header fields of a parsed head, located by offset in the head's bytes (no copy,
//! no allocation once the lists grew), each name classified once so that the proxy's
//! rules compare an enum, not strings: hop-by-hop fields (RFC 9110 §7.6.1) and those a
//! `Connection` header names never cross the proxy.

/// Where a part of a head lies in the head's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    len: u32,
}

impl Span {
    /// The span of `part`, a slice of `base`. Heads are far below 4 GiB.
    pub(crate) fn of(base: &[u8], part: &[u8]) -> Span {
        Span {
            start: (part.as_ptr() as usize - base.as_ptr() as usize) as u32,
            len: part.len() as u32,
        }
    }

    /// `start..start + len` of `base`.
    pub(crate) fn at(start: usize, len: usize) -> Span {
        Span {
            start: start as u32,
            len: len as u32,
        }
    }

    pub(crate) fn get(self, bytes: &[u8]) -> &[u8] {
        &bytes[self.start as usize..(self.start + self.len) as usize]
    }
}

/// Header names the proxy treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XRequestId,
    Traceparent,
    StrictTransportSecurity,
}

impl Known {
    /// The class of header `name` (any case).
    pub(crate) fn of(name: &[u8]) -> Known {
        let candidates: &[(&[u8], Known)] = match name.len() {
            2 => &[(b"te", Known::Te)],
            4 => &[(b"host", Known::Host)],
            6 => &[(b"expect", Known::Expect)],
            7 => &[(b"trailer", Known::Trailer), (b"upgrade", Known::Upgrade)],
            10 => &[
                (b"connection", Known::Connection),
                (b"keep-alive", Known::KeepAlive),
            ],
            11 => &[(b"traceparent", Known::Traceparent)],
            12 => &[(b"x-request-id", Known::XRequestId)],
            14 => &[(b"content-length", Known::ContentLength)],
            15 => &[(b"x-forwarded-for", Known::XForwardedFor)],
            16 => &[
                (b"proxy-connection", Known::ProxyConnection),
                (b"x-forwarded-host", Known::XForwardedHost),
            ],
            17 => &[
                (b"transfer-encoding", Known::TransferEncoding),
                (b"x-forwarded-proto", Known::XForwardedProto),
            ],
            25 => &[(b"strict-transport-security", Known::StrictTransportSecurity)],
            _ => &[],
        };
        candidates
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map_or(Known::Other, |(_, class)| *class)
    }

    /// Fields a `Connection` header cannot have removed: the hop-by-hop ones (gone
    /// anyway) and those that frame or route the message. A `Connection:
    /// content-length` that took the length away would leave the next hop reading the
    /// body as the next message (request smuggling).
    fn unnameable(self) -> bool {
        self.hop_by_hop() || matches!(self, Known::ContentLength | Known::Host)
    }

    /// Describes one hop only: never forwarded.
    pub(crate) fn hop_by_hop(self) -> bool {
        matches!(
            self,
            Known::Connection
                | Known::KeepAlive
                | Known::ProxyConnection
                | Known::Te
                | Known::Trailer
                | Known::TransferEncoding
                | Known::Upgrade
        )
    }
}

/// One header field.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub name: Span,
    pub value: Span,
    pub known: Known,
}

/// The header fields of one head, and what its `Connection` headers say.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    pub list: Vec<Field>,
    /// Names listed in `Connection` other than the hop-by-hop ones and the options below.
    named: Vec<Span>,
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Connection: upgrade`.
    pub upgrade: bool,
}

impl Fields {
    /// Takes the fields httparse found in `base` (the head's bytes), replacing any.
    pub(crate) fn collect(&mut self, base: &[u8], headers: &[httparse::Header<'_>]) {
        self.list.clear();
        self.named.clear();
        self.close = false;
        self.keep_alive = false;
        self.upgrade = false;
        for header in headers {
            let name = header.name.as_bytes();
            let known = Known::of(name);
            self.list.push(Field {
                name: Span::of(base, name),
                value: Span::of(base, header.value),
                known,
            });
            if known == Known::Connection {
                self.connection_tokens(base, header.value);
            }
        }
    }

    fn connection_tokens(&mut self, base: &[u8], value: &[u8]) {
        // Split bytes, not text: a value with one non-ASCII byte must still have its
        // ASCII tokens honoured (found by fuzzing).
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else if !token.is_empty() && !Known::of(token).unnameable() {
                self.named.push(Span::of(base, token));
            }
        }
    }

    /// The values of the fields of class `known`, in order.
    pub(crate) fn values<'a>(
        &'a self,
        bytes: &'a [u8],
        known: Known,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.list
            .iter()
            .filter(move |f| f.known == known)
            .map(move |f| f.value.get(bytes))
    }

    /// The first value of class `known`.
    pub(crate) fn first<'a>(&self, bytes: &'a [u8], known: Known) -> Option<&'a [u8]> {
        self.list
            .iter()
            .find(|f| f.known == known)
            .map(|f| f.value.get(bytes))
    }

    /// Whether `field` crosses the proxy: not hop-by-hop, not named by `Connection`.
    pub(crate) fn crosses(&self, bytes: &[u8], field: &Field) -> bool {
        if field.known.hop_by_hop() {
            return false;
        }
        if self.named.is_empty() {
            return true;
        }
        let name = field.name.get(bytes);
        !self
            .named
            .iter()
            .any(|token| token.get(bytes).eq_ignore_ascii_case(name))
    }
}

/// Writes the field `name: value` and its CRLF.
pub(crate) fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(head: &[u8]) -> Fields {
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let Ok(httparse::Status::Complete((_, headers))) =
            httparse::parse_headers(head, &mut slots)
        else {
            panic!("head");
        };
        let mut fields = Fields::default();
        fields.collect(head, headers);
        fields
    }

    /// The names of the fields of `head` that cross the proxy.
    fn crossing<'a>(f: &Fields, head: &'a [u8]) -> Vec<&'a [u8]> {
        f.list
            .iter()
            .filter(|field| f.crosses(head, field))
            .map(|field| field.name.get(head))
            .collect()
    }

    #[test]
    fn names_are_classified_in_any_case() {
        for (name, known) in [
            ("Host", Known::Host),
            ("CONTENT-LENGTH", Known::ContentLength),
            ("transfer-encoding", Known::TransferEncoding),
            ("Connection", Known::Connection),
            ("Keep-Alive", Known::KeepAlive),
            ("proxy-connection", Known::ProxyConnection),
            ("TE", Known::Te),
            ("trailer", Known::Trailer),
            ("Upgrade", Known::Upgrade),
            ("expect", Known::Expect),
            ("X-Forwarded-For", Known::XForwardedFor),
            ("x-forwarded-proto", Known::XForwardedProto),
            ("X-Forwarded-Host", Known::XForwardedHost),
            ("X-Request-ID", Known::XRequestId),
            ("Traceparent", Known::Traceparent),
            ("Strict-Transport-Security", Known::StrictTransportSecurity),
            ("hostx", Known::Other),
            ("x-forwarded-fox", Known::Other),
            ("", Known::Other),
        ] {
            assert_eq!(Known::of(name.as_bytes()), known, "{name}");
        }
        let hop: Vec<_> = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ]
        .iter()
        .map(|n| Known::of(n.as_bytes()))
        .collect();
        assert!(hop.iter().all(|k| k.hop_by_hop()));
        assert!(!Known::Host.hop_by_hop() && !Known::Other.hop_by_hop());
    }

    #[test]
    fn connection_options_and_named_fields() {
        let head = b"Connection: keep-alive, X-Secret\r\nconnection: Upgrade,close\r\nX-SECRET: 1\r\nX-Kept: 2\r\nKeep-Alive: 5\r\n\r\n";
        let f = fields(head);
        assert!(f.close && f.keep_alive && f.upgrade);
        assert_eq!(crossing(&f, head), [&b"X-Kept"[..]]);
        assert_eq!(
            f.first(head, Known::Connection),
            Some(&b"keep-alive, X-Secret"[..])
        );
        assert_eq!(f.values(head, Known::Connection).count(), 2);
    }

    #[test]
    fn connection_cannot_name_the_framing_or_the_host() {
        let head = b"Connection: Content-Length, host, transfer-encoding\r\nContent-Length: 4\r\nHost: a\r\n\r\n";
        let f = fields(head);
        assert_eq!(crossing(&f, head), [&b"Content-Length"[..], b"Host"]);
    }

    #[test]
    fn a_non_ascii_token_does_not_hide_the_others() {
        let head = b"Connection: keep\xd3\x9blive, X-Secret\r\nx-secret: 1\r\n\r\n";
        let f = fields(head);
        assert!(f.list.iter().all(|field| !f.crosses(head, field)));
    }
}
