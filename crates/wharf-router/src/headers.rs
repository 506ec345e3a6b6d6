//! Header rules of the proxy that are not about framing: the routing host, the W3C
//! trace context and request ids. (Hop-by-hop fields and the forwarding headers are
//! applied as heads are written: `upstream::request`, `downstream::respond`.)

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Whether `v` is a W3C trace context `traceparent` this proxy can pass on: version 00
/// (or a later one, not `ff`), a non-zero 32-hex trace id and 16-hex parent id, flags.
pub(crate) fn valid_traceparent(v: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(v) else {
        return false;
    };
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
    pub(crate) fn of(&self, given: Option<&[u8]>) -> RequestId {
        match given {
            Some(id) if !id.is_empty() => RequestId::Given(id.into()),
            _ => RequestId::Own(self.next()),
        }
    }

    /// A `traceparent` starting a new trace (sampled), for a request that carries
    /// none: its trace id is the request's `id` when the router made that one (as
    /// unpredictable, and one hash less per request), else a fresh one.
    pub(crate) fn traceparent(&self, id: &RequestId) -> [u8; 55] {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut tp = *b"00-................................-................-01";
        match id {
            RequestId::Own(id) => tp[3..35].copy_from_slice(id),
            RequestId::Given(_) => {
                hex(&mut tp[3..19], self.key.hash_one((n, 2u8)));
                hex(&mut tp[19..35], self.key.hash_one((n, 3u8)));
            }
        }
        hex(&mut tp[36..52], self.key.hash_one((n, 4u8)) | 1);
        tp
    }

    fn next(&self) -> [u8; 32] {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 32];
        hex(&mut id[..16], self.key.hash_one((n, 0u8)));
        hex(&mut id[16..], self.key.hash_one((n, 1u8)));
        id
    }
}

/// A request's id: the client's, or one of the router's (32 hex digits).
#[derive(Debug, Clone)]
pub(crate) enum RequestId {
    Own([u8; 32]),
    /// A valid header value (the client's).
    Given(Box<[u8]>),
}

impl RequestId {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Own(id) => id,
            RequestId::Given(id) => id,
        }
    }
}

/// `v` as 16 lowercase hex digits into `out`.
fn hex(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().take(16).enumerate() {
        *b = DIGITS[(v >> (60 - 4 * i)) as usize & 0xf];
    }
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
    fn traceparents() {
        let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(ok));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert!(!valid_traceparent(bad.as_bytes()), "{bad}");
        }
        let ids = RequestIds::new();
        let given = ids.of(Some(b"theirs"));
        let started = ids.traceparent(&given);
        assert!(valid_traceparent(&started), "{started:?}");
        assert_ne!(started, ids.traceparent(&given));
        let own = ids.of(None);
        let started = ids.traceparent(&own);
        assert!(valid_traceparent(&started), "{started:?}");
        assert_eq!(&started[3..35], own.as_bytes(), "the trace is the request");
    }

    #[test]
    fn request_ids_are_32_hex_and_distinct() {
        let ids = RequestIds::new();
        let a = ids.of(None);
        let b = ids.of(Some(b""));
        assert_ne!(a.as_bytes(), b.as_bytes());
        for id in [&a, &b] {
            let s = std::str::from_utf8(id.as_bytes()).expect("ascii");
            assert_eq!(s.len(), 32);
            assert!(s.bytes().all(|c| c.is_ascii_hexdigit()));
        }
        assert_eq!(ids.of(Some(b"abc")).as_bytes(), b"abc");
        // Workers count in ranges of their own: no id twice across them.
        let (w1, w2) = (ids.worker(), ids.worker());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            for w in [&ids, &w1, &w2] {
                assert!(seen.insert(w.of(None).as_bytes().to_vec()), "distinct");
            }
        }
    }
}
