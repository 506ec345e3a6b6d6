//! The route table the control plane hands to the router: plain data, versioned.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A complete, immutable snapshot of where traffic may go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    pub version: u64,
    pub routes: Vec<Route>,
}

/// Hosts of one app and the ready replicas of its `web` process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub app: String,
    /// Exact host names (lowercase, no port) and `*.domain` wildcards.
    pub hosts: Vec<String>,
    pub backends: Vec<Backend>,
    /// How traffic splits between releases; empty: every backend alike.
    #[serde(default)]
    pub weights: Vec<Weight>,
    /// Paths, balancing, timeouts and body limit of `[route]`.
    #[serde(default)]
    pub options: crate::route_options::RouteOptions,
    /// HTTPS settings of the route (`[route] tls`, `https_only`).
    #[serde(default)]
    pub tls: RouteTls,
}

/// The `[route]` HTTPS settings of an app: in the manifest as written, in a release and
/// the route table with absolute, canonical paths (the router reads the files; the
/// private key never enters the store).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTls {
    /// `tls = { cert = "...", key = "..." }`: PEM certificate chain and private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<TlsFiles>,
    /// `https_only = true`: plain HTTP is redirected (308), HTTPS answers carry HSTS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_only: bool,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One ready replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub replica: String,
    pub release: u32,
    pub addr: SocketAddr,
}

/// Share of an app's traffic for one release, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weight {
    pub release: u32,
    pub percent: u32,
}

/// Upper bounds (milliseconds) of the router's latency histogram buckets; a last,
/// unbounded bucket follows.
pub const LATENCY_BOUNDS_MS: [u64; 14] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000,
];

/// Counters the router keeps per app and release, monotonic since the router started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStats {
    pub release: u32,
    pub requests: u64,
    /// Answers with a 5xx status, the router's own 502s included.
    pub errors: u64,
    /// Count per bucket of `LATENCY_BOUNDS_MS`, plus the overflow bucket.
    pub latency: Vec<u64>,
}

impl ReleaseStats {
    /// What happened between `earlier` and `self` (counters only grow).
    pub fn since(&self, earlier: &ReleaseStats) -> ReleaseStats {
        ReleaseStats {
            release: self.release,
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: self
                .latency
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.latency.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// Percent of answers that were not 5xx; `None` without requests.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| {
            100.0 * (self.requests - self.errors.min(self.requests)) as f64 / self.requests as f64
        })
    }

    /// The 99th percentile latency in milliseconds: the upper bound of the bucket holding
    /// it (the overflow bucket reports twice the last bound); `None` without requests.
    pub fn p99_ms(&self) -> Option<u64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = total.saturating_mul(99).div_ceil(100);
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(
                    LATENCY_BOUNDS_MS
                        .get(i)
                        .copied()
                        .unwrap_or(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1] * 2),
                );
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(requests: u64, errors: u64, latency: &[u64]) -> ReleaseStats {
        ReleaseStats {
            release: 1,
            requests,
            errors,
            latency: latency.to_vec(),
        }
    }

    #[test]
    fn rates_and_percentiles() {
        assert_eq!(stats(0, 0, &[]).success_rate(), None);
        assert_eq!(stats(200, 2, &[]).success_rate(), Some(99.0));
        // 100 requests: 98 under 1 ms, 2 in the 100 ms bucket: p99 is 100 ms.
        let mut buckets = vec![0; 15];
        buckets[0] = 98;
        buckets[6] = 2;
        assert_eq!(stats(100, 0, &buckets).p99_ms(), Some(100));
        buckets[6] = 1;
        buckets[14] = 0;
        buckets[0] = 99;
        assert_eq!(stats(100, 0, &buckets).p99_ms(), Some(1));
        let mut slow = vec![0; 15];
        slow[14] = 5;
        assert_eq!(stats(5, 0, &slow).p99_ms(), Some(60_000));
        assert_eq!(stats(0, 0, &[0; 15]).p99_ms(), None);
    }

    #[test]
    fn deltas() {
        let a = stats(10, 1, &[5, 5]);
        let b = stats(25, 4, &[10, 15]);
        assert_eq!(b.since(&a), stats(15, 3, &[5, 10]));
    }
}
