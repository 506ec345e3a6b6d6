//! RED metrics per app and release: requests, 5xx answers, latency histogram.
//!
//! Counters are created when a table first names an (app, release) pair and live as long
//! as the router: they only grow, so readers take differences between snapshots (the
//! canary analysis does exactly that).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wharf_types::route::{ReleaseStats, LATENCY_BOUNDS_MS};

use crate::shard::{self, Padded, SHARDS};

/// The counters of one release of one app: one shard per router worker (`shard`).
#[derive(Debug, Default)]
pub(crate) struct ReleaseCounters {
    shards: [Padded<Counts>; SHARDS],
}

#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
}

impl ReleaseCounters {
    /// Counts one answer with its time to response headers.
    pub(crate) fn record(&self, status: u16, elapsed: Duration) {
        let counts = &self.shards[shard::index()].0;
        counts.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
        let ms = elapsed.as_millis() as u64;
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        counts.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self, release: u32) -> ReleaseStats {
        let sum = |of: &dyn Fn(&Counts) -> &AtomicU64| {
            self.shards
                .iter()
                .map(|shard| of(&shard.0).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        ReleaseStats {
            release,
            requests: sum(&|c| &c.requests),
            errors: sum(&|c| &c.errors),
            latency: (0..=LATENCY_BOUNDS_MS.len())
                .map(|i| sum(&|c| &c.buckets[i]))
                .collect(),
        }
    }
}

/// (app, release).
type Key = (Arc<str>, u32);

/// Every release's counters, by app.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    by: Mutex<HashMap<Key, Arc<ReleaseCounters>>>,
}

impl Stats {
    pub(crate) fn counters(&self, app: &Arc<str>, release: u32) -> Arc<ReleaseCounters> {
        let mut by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        by.entry((app.clone(), release)).or_default().clone()
    }

    /// Snapshots of every release of `app`, by release number.
    pub(crate) fn of(&self, app: &str) -> Vec<ReleaseStats> {
        let by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<ReleaseStats> = by
            .iter()
            .filter(|((a, _), _)| &**a == app)
            .map(|((_, r), c)| c.snapshot(*r))
            .collect();
        v.sort_by_key(|s| s.release);
        v
    }

    /// Snapshots of everything, by app then release.
    pub(crate) fn all(&self) -> Vec<(String, ReleaseStats)> {
        let by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, ReleaseStats)> = by
            .iter()
            .map(|((a, r), c)| (a.to_string(), c.snapshot(*r)))
            .collect();
        v.sort_by(|a, b| (&a.0, a.1.release).cmp(&(&b.0, b.1.release)));
        v
    }
}

/// Prometheus text for the router's RED metrics.
pub(crate) fn prometheus(all: &[(String, ReleaseStats)]) -> String {
    let mut out = String::new();
    out.push_str("# HELP wharf_router_requests_total Requests answered by the router, by app, release and status class.\n");
    out.push_str("# TYPE wharf_router_requests_total counter\n");
    for (app, s) in all {
        let ok = s.requests - s.errors.min(s.requests);
        out.push_str(&format!(
            "wharf_router_requests_total{{app=\"{app}\",release=\"{}\",class=\"non5xx\"}} {ok}\n",
            s.release
        ));
        out.push_str(&format!(
            "wharf_router_requests_total{{app=\"{app}\",release=\"{}\",class=\"5xx\"}} {}\n",
            s.release, s.errors
        ));
    }
    out.push_str(
        "# HELP wharf_router_latency_seconds Time to response headers, by app and release.\n",
    );
    out.push_str("# TYPE wharf_router_latency_seconds histogram\n");
    for (app, s) in all {
        let mut cumulative = 0;
        for (i, n) in s.latency.iter().enumerate() {
            cumulative += n;
            let le = LATENCY_BOUNDS_MS
                .get(i)
                .map_or("+Inf".to_string(), |ms| format!("{}", *ms as f64 / 1000.0));
            out.push_str(&format!("wharf_router_latency_seconds_bucket{{app=\"{app}\",release=\"{}\",le=\"{le}\"}} {cumulative}\n", s.release));
        }
        out.push_str(&format!(
            "wharf_router_latency_seconds_count{{app=\"{app}\",release=\"{}\"}} {cumulative}\n",
            s.release
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_release_and_exports() {
        let stats = Stats::default();
        let app: Arc<str> = Arc::from("shop");
        let v1 = stats.counters(&app, 1);
        v1.record(200, Duration::from_millis(3));
        v1.record(503, Duration::from_millis(700));
        stats.counters(&app, 2).record(200, Duration::from_secs(60));
        let of = stats.of("shop");
        assert_eq!(of.len(), 2);
        assert_eq!((of[0].requests, of[0].errors), (2, 1));
        assert_eq!(of[0].latency[2], 1, "3 ms lands in the 5 ms bucket");
        assert_eq!(of[0].latency[9], 1, "700 ms lands in the 1 s bucket");
        assert_eq!(*of[1].latency.last().unwrap(), 1, "60 s overflows");
        assert!(stats.of("other").is_empty());
        let text = prometheus(&stats.all());
        assert!(
            text.contains(
                "wharf_router_requests_total{app=\"shop\",release=\"1\",class=\"5xx\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("le=\"+Inf\"} 2"), "{text}");
        // Workers count in shards of their own; a snapshot sums them.
        let counters = stats.counters(&app, 3);
        std::thread::scope(|scope| {
            for worker in 0..3 {
                let counters = &counters;
                scope.spawn(move || {
                    shard::set_worker(worker);
                    counters.record(200, Duration::from_millis(1));
                    counters.record(500, Duration::from_millis(1));
                });
            }
        });
        let v3 = stats.of("shop").pop().expect("release 3");
        assert_eq!((v3.requests, v3.errors, v3.latency[0]), (6, 3, 6));
    }
}
