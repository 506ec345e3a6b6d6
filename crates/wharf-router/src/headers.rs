//! Header rules of the proxy: the routing host, hop-by-hop stripping, forwarding
//! headers and request ids.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Uri;

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1), besides
/// those named in `Connection`. Framing is redone on each side (hyper downstream, the
/// router's own client upstream).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `host` lowercased, without port and trailing dot. Borrows when nothing changes.
pub(crate) fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host.trim();
    let host = if host.starts_with('[') {
        // IPv6 literal: keep up to the closing bracket.
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rfind(':').map_or(host, |colon| &host[..colon])
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The normalized host a request is routed by: the authority of an absolute-form
/// target `uri` (RFC 9112 §3.2.2), else the `Host` header; empty when there is neither.
pub(crate) fn route_host<'a>(uri: &'a Uri, host: Option<&'a HeaderValue>) -> Cow<'a, str> {
    let raw = match uri.authority() {
        Some(authority) => authority.as_str(),
        None => host.and_then(|h| h.to_str().ok()).unwrap_or(""),
    };
    normalize_host(raw)
}

/// Remove hop-by-hop headers, including every header `Connection` names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Split bytes, not text: a value with one non-ASCII byte must still have its
    // ASCII tokens honoured (found by fuzzing). Tokens naming a header of the fixed
    // list (`keep-alive`) need no name of their own: no allocation for the usual
    // `Connection: keep-alive`.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| {
            !HOP_BY_HOP
                .iter()
                .any(|hop| hop.as_str().as_bytes().eq_ignore_ascii_case(token))
        })
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .collect();
    for name in &named {
        headers.remove(name);
    }
    // One pass over the names instead of a lookup per hop-by-hop header.
    if headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
    }
}

/// Prepare a request's headers for the upstream: hop-by-hop headers stripped, the
/// client IP appended to `X-Forwarded-For`, `X-Forwarded-Proto` set, `Host` present.
pub(crate) fn forward_request(
    headers: &mut HeaderMap,
    client: IpAddr,
    proto: &HeaderValue,
    host: Option<&str>,
) {
    strip_hop_by_hop(headers);
    let client = client.to_canonical();
    let mut forwarded = String::new();
    for previous in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(previous) = previous.to_str() {
            forwarded.push_str(previous);
            forwarded.push_str(", ");
        }
    }
    // Writing to a String cannot fail.
    let _ = write!(forwarded, "{client}");
    if let Ok(value) = HeaderValue::try_from(forwarded) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, proto.clone());
    if !headers.contains_key(header::HOST) {
        if let Some(value) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
            headers.insert(header::HOST, value);
        }
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
}

/// Whether `v` is a W3C trace context `traceparent` this proxy can pass on: version 00
/// (or a later one, not `ff`), a non-zero 32-hex trace id and 16-hex parent id, flags.
pub(crate) fn valid_traceparent(v: &HeaderValue) -> bool {
    let Ok(s) = v.to_str() else { return false };
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |p: &str| p.bytes().any(|b| b != b'0');
    parts.len() >= 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && (parts[0] != "00" || parts.len() == 4)
        && hex(parts[1], 32)
        && nonzero(parts[1])
        && hex(parts[2], 16)
        && nonzero(parts[2])
        && hex(parts[3], 2)
}

/// Generates request ids: 32 hex digits, unique within the process, unpredictable
/// without the process-random key. Each router worker takes its own generator
/// ([`RequestIds::worker`]): same key, its own range of the counter, so workers never
/// write a shared counter.
#[derive(Debug)]
pub(crate) struct RequestIds {
    key: RandomState,
    counter: AtomicU64,
    /// Ranges of the counter handed to workers so far.
    ranges: AtomicU64,
}

/// Bits of the counter a worker's generator counts through before reaching the next
/// worker's range.
const RANGE_BITS: u32 = 48;

impl RequestIds {
    pub(crate) fn new() -> Self {
        RequestIds {
            key: RandomState::new(),
            counter: AtomicU64::new(0),
            ranges: AtomicU64::new(1),
        }
    }

    /// A generator for one worker: same key, a counter range of its own.
    pub(crate) fn worker(&self) -> Self {
        let range = self.ranges.fetch_add(1, Ordering::Relaxed);
        RequestIds {
            key: self.key.clone(),
            counter: AtomicU64::new(range << RANGE_BITS),
            ranges: AtomicU64::new(0),
        }
    }

    /// The client's `X-Request-Id` if it sent a non-empty one, else a fresh id.
    pub(crate) fn of(&self, headers: &HeaderMap) -> HeaderValue {
        match headers.get(X_REQUEST_ID) {
            Some(id) if !id.is_empty() => id.clone(),
            _ => self.next(),
        }
    }

    /// A `traceparent` starting a new trace (sampled), for requests that carry none.
    pub(crate) fn traceparent(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut tp = *b"00-................................-................-01";
        hex(&mut tp[3..19], self.key.hash_one((n, 2u8)));
        hex(&mut tp[19..35], self.key.hash_one((n, 3u8)));
        hex(&mut tp[36..52], self.key.hash_one((n, 4u8)) | 1);
        header_value(&tp)
    }

    fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 32];
        hex(&mut id[..16], self.key.hash_one((n, 0u8)));
        hex(&mut id[16..], self.key.hash_one((n, 1u8)));
        header_value(&id)
    }
}

/// `v` as 16 lowercase hex digits into `out`.
fn hex(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().take(16).enumerate() {
        *b = DIGITS[(v >> (60 - 4 * i)) as usize & 0xf];
    }
}

/// Hex digits and dashes are always a valid header value.
fn header_value(text: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_hosts() {
        assert_eq!(normalize_host("A.LocalHost:8080"), "a.localhost");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("example.com.:443"), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert!(matches!(normalize_host("plain.test"), Cow::Borrowed(_)));
    }

    #[test]
    fn strips_hop_by_hop_and_named() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
        let mut odd = HeaderMap::new();
        odd.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"keep\xd3\x9blive, X-Secret").unwrap(),
        );
        odd.insert("x-secret", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut odd);
        assert!(odd.is_empty(), "a non-ASCII token does not hide the others");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2"));
        let proto = HeaderValue::from_static("https");
        forward_request(&mut h, [127, 0, 0, 1].into(), &proto, Some("a.test"));
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[header::HOST], "a.test");
        assert_eq!(h[X_FORWARDED_HOST], "a.test");
        let mut kept = HeaderMap::new();
        kept.insert(
            header::HOST,
            HeaderValue::from_static("shop.localhost:8080"),
        );
        kept.insert(
            X_FORWARDED_HOST,
            HeaderValue::from_static("edge.example.com"),
        );
        forward_request(&mut kept, [127, 0, 0, 1].into(), &proto, None);
        assert_eq!(
            kept[X_FORWARDED_HOST], "edge.example.com",
            "set by a proxy in front: kept"
        );
    }

    #[test]
    fn traceparents() {
        let ok =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(valid_traceparent(&ok));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert!(!valid_traceparent(&HeaderValue::from_static(bad)), "{bad}");
        }
        let ids = RequestIds::new();
        let started = ids.traceparent();
        assert!(valid_traceparent(&started), "{started:?}");
        assert_ne!(started, ids.traceparent());
    }

    #[test]
    fn request_ids_are_32_hex_and_distinct() {
        let ids = RequestIds::new();
        let a = ids.of(&HeaderMap::new());
        let b = ids.of(&HeaderMap::new());
        assert_ne!(a, b);
        for id in [&a, &b] {
            let s = id.to_str().expect("ascii");
            assert_eq!(s.len(), 32);
            assert!(s.bytes().all(|c| c.is_ascii_hexdigit()));
        }
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(ids.of(&h), "abc");
        // Workers count in ranges of their own: no id twice across them.
        let (w1, w2) = (ids.worker(), ids.worker());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            for w in [&ids, &w1, &w2] {
                assert!(seen.insert(w.of(&HeaderMap::new())), "distinct");
            }
        }
    }
}
