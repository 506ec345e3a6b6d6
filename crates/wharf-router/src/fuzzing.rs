//! Entry points for fuzzers (`fuzz/`, cargo fuzz) and for the corpus test that runs the
//! same checks in plain `cargo test`. Each `check_*` takes arbitrary bytes and panics
//! when an invariant of the router fails; it never panics otherwise.
//!
//! - [`check_request_head`]: a request head, parsed by the router's own HTTP/1.1 server
//!   (`downstream::head`), goes through the router's normalization and is written out
//!   as the upstream request: the routing host, the path, the forwarded headers
//!   ([`request_head`]); the upstream request must parse again.
//! - [`check_routing`]: a route table and requests decoded from the bytes; the lookup
//!   ([`Lookup`]) must agree with a naive reference model of the precedence rules.

use std::net::{IpAddr, Ipv4Addr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;
use wharf_types::route_options::check_prefix;

use crate::downstream::head::RequestHead;
use crate::headers::normalize_host;
use crate::lookup::Lookup;
use crate::upstream::Forward;

/// What the router makes of one request head.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    /// The normalized host the request is routed by.
    pub host: String,
    /// The path it is routed by (and sends upstream unchanged).
    pub path: String,
    /// The headers as they would go upstream.
    pub headers: HeaderMap,
}

/// Parses `bytes` as a request head as the router does and writes the request that
/// would go upstream; `None` when the router refuses the head (incomplete or invalid).
/// Panics when the upstream request it wrote does not parse.
pub fn request_head(bytes: &[u8]) -> Option<Head> {
    let mut request = RequestHead::default();
    request.parse(bytes).ok()??;
    let forward = Forward {
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        secure: false,
        request_id: b"0123456789abcdef0123456789abcdef",
        traceparent: None,
    };
    let mut upstream = Vec::new();
    let addr = (Ipv4Addr::LOCALHOST, 8080).into();
    crate::upstream::encode_head(&request, &forward, addr, &mut upstream);
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(&upstream) else {
        panic!(
            "the upstream request does not parse: {:?}",
            String::from_utf8_lossy(&upstream)
        );
    };
    let mut headers = HeaderMap::new();
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).expect("upstream header name");
        let value = HeaderValue::from_bytes(h.value).expect("upstream header value");
        headers.append(name, value);
    }
    Some(Head {
        method: request.method().clone(),
        host: request.host().into_owned(),
        path: request.path().to_owned(),
        headers,
    })
}

/// Invariants of [`request_head`] on any input.
pub fn check_request_head(bytes: &[u8]) {
    let Some(head) = request_head(bytes) else {
        return;
    };
    assert!(
        !head.host.bytes().any(|b| b.is_ascii_uppercase()),
        "host not lowercased: {:?}",
        head.host
    );
    assert!(
        head.path.is_empty() || head.path == "*" || head.path.starts_with('/'),
        "path {:?}",
        head.path
    );
    let named_in_connection: Vec<String> = request_head_connection(bytes);
    // An upgrade goes on with exactly the two fields it needs.
    let upgrade = head.headers.get_all("connection").iter().count() == 1
        && head
            .headers
            .get("connection")
            .is_some_and(|v| v == "upgrade")
        && head.headers.get_all("upgrade").iter().count() == 1;
    for hop in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(named_in_connection)
    {
        let kept_for_upgrade = upgrade && (hop == "connection" || hop == "upgrade");
        assert!(
            !head.headers.contains_key(hop.as_str())
                || is_forwarding_header(&hop)
                || kept_for_upgrade,
            "hop-by-hop header {hop:?} would go upstream"
        );
    }
    let xff = head
        .headers
        .get("x-forwarded-for")
        .map(HeaderValue::as_bytes);
    assert!(
        xff.is_some_and(|v| v.ends_with(b"127.0.0.1")),
        "X-Forwarded-For must end with the client: {xff:?}"
    );
    assert_eq!(
        head.headers
            .get("x-forwarded-proto")
            .map(HeaderValue::as_bytes),
        Some(&b"http"[..])
    );
    let mut table = Lookup::default();
    table.insert("a.localhost", "/", 0);
    table.insert("*.localhost", "/api", 1);
    let _ = table.find(&head.host, &head.path);
}

/// The headers the router sets itself, which a `Connection` header cannot remove.
fn is_forwarding_header(name: &str) -> bool {
    matches!(
        name,
        "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "host"
    )
}

/// The header names listed in the head's `Connection` headers, lowercased.
fn request_head_connection(bytes: &[u8]) -> Vec<String> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut slots);
    if parsed.parse(bytes).is_err() {
        return Vec::new();
    }
    parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(header::CONNECTION.as_str()))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| HeaderName::from_bytes(t.as_bytes()).is_ok())
        .collect()
}

/// Reads small choices out of fuzzer bytes; zeros once they run out.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[usize::from(self.byte()) % from.len()]
    }
    fn more(&self) -> bool {
        !self.0.is_empty()
    }
}

const LABELS: [&str; 4] = ["a", "b", "api", "x"];
const SEGMENTS: [&str; 7] = ["api", "v1", "a", "apix", "", "..", "API"];

fn host(c: &mut Choices<'_>, query: bool) -> String {
    let depth = 1 + usize::from(c.byte() % 3);
    let mut labels: Vec<&str> = (0..depth).map(|_| c.pick(&LABELS)).collect();
    let shape = c.byte();
    if !query && shape.is_multiple_of(3) {
        labels.insert(0, "*");
    }
    let mut h = labels.join(".");
    if query {
        if shape & 4 != 0 {
            h = h.to_ascii_uppercase();
        }
        if shape & 8 != 0 {
            h.push_str(":8080");
        }
    }
    h
}

fn path(c: &mut Choices<'_>) -> String {
    let n = usize::from(c.byte() % 4);
    let mut p = String::new();
    for _ in 0..n {
        p.push('/');
        p.push_str(c.pick(&SEGMENTS));
    }
    if p.is_empty() {
        p.push('/');
    }
    p
}

/// The precedence rules, written as plainly as possible: exact host, else the longest
/// matching wildcard suffix; then the longest covering prefix; first claim wins.
fn model(entries: &[(String, String, usize)], host: &str, path: &str) -> Option<usize> {
    let host = normalize_host(host);
    let exact: Vec<_> = entries
        .iter()
        .filter(|(h, _, _)| normalize_host(h) == host)
        .collect();
    let chosen = if exact.is_empty() {
        let suffix_of = |h: &str| normalize_host(h).strip_prefix('*').map(str::to_owned);
        let best = entries
            .iter()
            .filter_map(|(h, _, _)| suffix_of(h))
            .filter(|s| s.len() > 1 && host.len() > s.len() && host.ends_with(s.as_str()))
            .max_by_key(String::len)?;
        entries
            .iter()
            .filter(|(h, _, _)| suffix_of(h).as_deref() == Some(best.as_str()))
            .collect()
    } else {
        exact
    };
    let covers = |prefix: &str| {
        prefix == "/"
            || path == prefix
            || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
    };
    chosen
        .iter()
        .filter(|(_, p, _)| covers(p))
        .max_by(|(_, a, ia), (_, b, ib)| a.len().cmp(&b.len()).then(ib.cmp(ia)))
        .map(|(_, _, route)| *route)
}

/// Decodes a route table and requests from `bytes`; the lookup must agree with the
/// reference model on every request.
pub fn check_routing(bytes: &[u8]) {
    let mut c = Choices(bytes);
    let routes = 1 + usize::from(c.byte() % 6);
    let mut entries = Vec::new();
    let mut lookup = Lookup::default();
    for route in 0..routes {
        for _ in 0..1 + c.byte() % 3 {
            let h = host(&mut c, false);
            let p = path(&mut c);
            if check_prefix(&p).is_err() {
                continue;
            }
            let first = !entries.iter().any(|(eh, ep, _): &(String, String, usize)| {
                normalize_host(eh) == normalize_host(&h) && *ep == p
            });
            assert_eq!(lookup.insert(&h, &p, route), first, "insert {h} {p}");
            if first {
                entries.push((h, p, route));
            }
        }
    }
    while c.more() {
        let h = host(&mut c, true);
        let p = path(&mut c);
        let want = model(&entries, &h, &p);
        let got = lookup.find(&normalize_host(&h), &p);
        assert_eq!(got, want, "host {h:?} path {p:?} table {entries:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_normalizes() {
        let head = request_head(
            b"GET /api/x?q=1 HTTP/1.1\r\nHost: A.LocalHost:8080\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n",
        )
        .expect("complete head");
        assert_eq!(
            (head.host.as_str(), head.path.as_str()),
            ("a.localhost", "/api/x")
        );
        assert!(!head.headers.contains_key("x-secret"));
        assert_eq!(head.headers["x-forwarded-for"], "127.0.0.1");
        assert!(
            request_head(b"GET / HTTP/1.1\r\nHost: a").is_none(),
            "incomplete"
        );
    }
}
