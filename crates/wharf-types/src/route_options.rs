//! How the router treats one app's traffic: `[route]` paths, balancing, timeouts and
//! the request body limit. Plain data; the manifest validates it, the router applies it.
//!
//! Invariants (upheld by the manifest parser): every path starts with `/`, has no
//! trailing `/` (but `/` itself), no empty, `.` or `..` segment, no query or fragment;
//! timeouts and `max_body` are non-zero. `None` means "the router's default".

use serde::{Deserialize, Serialize};

/// `[route]` settings besides the hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteOptions {
    /// Path prefixes served, matched on segment boundaries; empty means `["/"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default)]
    pub balance: Balance,
    /// Upper bound on connecting to a replica, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Upper bound on waiting for a replica's response headers, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout_ms: Option<u64>,
    /// Longest pause between two reads of a body (the client's request body, the
    /// replica's response body), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body: Option<u64>,
}

impl RouteOptions {
    /// The path prefixes served: the configured ones, or `/`.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        let root: &[&str] = if self.paths.is_empty() { &["/"] } else { &[] };
        self.paths
            .iter()
            .map(String::as_str)
            .chain(root.iter().copied())
    }
}

/// How requests are spread over an app's ready replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// The replica with the fewest requests in flight; ties go round-robin.
    #[default]
    LeastRequests,
    /// Each replica in turn, whatever its load.
    RoundRobin,
}

impl std::str::FromStr for Balance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "least-requests" => Ok(Balance::LeastRequests),
            "round-robin" => Ok(Balance::RoundRobin),
            other => Err(format!(
                "unknown balance {other:?}; use \"least-requests\" (the default) or \"round-robin\""
            )),
        }
    }
}

/// Whether `prefix` (a valid route path) covers `path`: equal, or followed by `/` in
/// `path` (`/api` covers `/api` and `/api/x`, not `/apix`); `/` covers everything.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Why `path` cannot be a route prefix, if it cannot.
pub fn check_prefix(path: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid path {path:?}: {why}"));
    if !path.starts_with('/') {
        return bad("it must start with '/', e.g. \"/api\"");
    }
    if path.len() > 1 && path.ends_with('/') {
        return bad("drop the trailing '/' (\"/api\" already covers \"/api/...\")");
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#' || b >= 0x80)
    {
        return bad("use printable ASCII without spaces, '?' or '#'");
    }
    if path.len() > 1
        && path[1..]
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("empty, '.' and '..' segments are not allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/"));
        assert!(prefix_matches("/api", "/api/v1/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(!prefix_matches("/api", "/ap"));
        assert!(!prefix_matches("/api/v1", "/api"));
    }

    #[test]
    fn prefix_rules() {
        for ok in ["/", "/api", "/api/v1", "/a-b_c.d~"] {
            assert_eq!(check_prefix(ok), Ok(()), "{ok}");
        }
        for bad in [
            "api", "/api/", "//", "/a//b", "/a/../b", "/.", "/a b", "/a?x", "",
        ] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn balance_and_defaults() {
        assert_eq!("round-robin".parse(), Ok(Balance::RoundRobin));
        assert!("random".parse::<Balance>().is_err());
        let o = RouteOptions::default();
        assert_eq!(o.prefixes().collect::<Vec<_>>(), ["/"]);
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(json, r#"{"balance":"least-requests"}"#);
        let back: RouteOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(back, o);
    }
}
