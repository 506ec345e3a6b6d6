//! Where a request goes: host, then path prefix. A pure index, built once per table.
//!
//! Precedence: the exact host wins over `*.domain` wildcards, the longest wildcard
//! suffix winning among those (`*.d` never matches `d` itself); the host chosen, the
//! longest of its path prefixes that covers the path on a segment boundary wins
//! (`/api` covers `/api` and `/api/x`, not `/apix`; `/` covers everything). There is no
//! fall-through: when the chosen host has no prefix covering the path, nothing matches,
//! even if a less specific host would have one (as nginx's server blocks and Envoy's
//! virtual hosts behave).
//!
//! Paths are compared as sent, byte for byte: no percent-decoding, no dot-segment
//! removal, case-sensitive; the replica receives the very same path.
//!
//! Invariant: each (host, prefix) pair maps to one route, the first inserted.

use std::collections::HashMap;

use wharf_types::route_options::prefix_matches;

use crate::headers::normalize_host;

/// Host and path prefix -> route index.
#[derive(Debug, Default, Clone)]
pub struct Lookup {
    /// Normalized host -> (prefix, route), longest prefix first.
    exact: HashMap<Box<str>, Vec<(Box<str>, usize)>>,
    /// `.domain` (a wildcard without its `*`) -> (prefix, route), longest prefix first.
    wildcard: HashMap<Box<str>, Vec<(Box<str>, usize)>>,
}

impl Lookup {
    /// Routes `host` (a name or `*.domain`, normalized here) with path `prefix` to
    /// `route`. Returns false, changing nothing, when the pair is taken already.
    pub fn insert(&mut self, host: &str, prefix: &str, route: usize) -> bool {
        let host = normalize_host(host);
        let (map, key) = match host.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
                (&mut self.wildcard, suffix)
            }
            _ => (&mut self.exact, &*host),
        };
        let prefixes = map.entry(key.into()).or_default();
        if prefixes.iter().any(|(p, _)| &**p == prefix) {
            return false;
        }
        let at = prefixes
            .iter()
            .position(|(p, _)| p.len() < prefix.len())
            .unwrap_or(prefixes.len());
        prefixes.insert(at, (prefix.into(), route));
        true
    }

    /// The route for `host` (normalized: lowercase, no port, no trailing dot) and
    /// `path` (as sent), by the precedence above.
    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        self.prefixes(host)?
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, route)| *route)
    }

    /// Whether some route serves `host` (normalized), whatever the path.
    pub fn serves(&self, host: &str) -> bool {
        self.prefixes(host).is_some()
    }

    fn prefixes(&self, host: &str) -> Option<&Vec<(Box<str>, usize)>> {
        self.exact.get(host).or_else(|| {
            // Suffixes starting at each dot, longest first.
            host.char_indices()
                .filter(|&(i, c)| c == '.' && i > 0)
                .find_map(|(i, _)| self.wildcard.get(&host[i..]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(entries: &[(&str, &str, usize)]) -> Lookup {
        let mut l = Lookup::default();
        for (host, prefix, route) in entries {
            l.insert(host, prefix, *route);
        }
        l
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let l = lookup(&[
            ("shop.test", "/", 0),
            ("shop.test", "/api", 1),
            ("shop.test", "/api/v2", 2),
        ]);
        assert_eq!(l.find("shop.test", "/"), Some(0));
        assert_eq!(
            l.find("shop.test", "/apix"),
            Some(0),
            "not a segment boundary"
        );
        assert_eq!(l.find("shop.test", "/api"), Some(1));
        assert_eq!(l.find("shop.test", "/api/"), Some(1));
        assert_eq!(l.find("shop.test", "/api/v1/x"), Some(1));
        assert_eq!(l.find("shop.test", "/api/v2"), Some(2));
        assert_eq!(l.find("shop.test", "/api/v2/x"), Some(2));
        assert_eq!(l.find("shop.test", "/API"), Some(0), "case-sensitive");
        assert_eq!(l.find("shop.test", "*"), Some(0), "/ covers any target");
    }

    #[test]
    fn host_precedence_then_prefix_without_fall_through() {
        let l = lookup(&[
            ("api.example.com", "/v1", 0),
            ("*.example.com", "/", 1),
            ("*.deep.example.com", "/", 2),
        ]);
        assert_eq!(l.find("api.example.com", "/v1/users"), Some(0));
        assert!(l.serves("api.example.com"));
        assert!(!l.serves("example.com"));
        assert_eq!(
            l.find("api.example.com", "/other"),
            None,
            "the exact host is chosen; its prefixes do not cover /other"
        );
        assert_eq!(l.find("www.example.com", "/other"), Some(1));
        assert_eq!(l.find("x.deep.example.com", "/"), Some(2));
        assert_eq!(l.find("deep.example.com", "/"), Some(1));
        assert_eq!(l.find("example.com", "/"), None);
    }

    #[test]
    fn a_pair_claimed_twice_keeps_the_first() {
        let mut l = Lookup::default();
        assert!(l.insert("A.Test", "/api", 0));
        assert!(!l.insert("a.test", "/api", 1));
        assert!(
            l.insert("a.test", "/", 1),
            "another prefix of the same host"
        );
        assert_eq!(l.find("a.test", "/api/x"), Some(0));
        assert_eq!(l.find("a.test", "/x"), Some(1));
    }
}
