//! A published route table, indexed for lookup (host, then path prefix: see
//! `lookup`), and backend balancing.
//!
//! Balancing: least outstanding requests, ties broken round-robin (the default), or
//! plain round-robin (`[route] balance = "round-robin"`); both within the release the
//! route's weights choose, skipping ejected replicas while others remain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use wharf_types::route::{Route, RouteTable};
use wharf_types::route_options::Balance;

use crate::inflight::{Counters, InflightGuard, Slot};
use crate::limits::Limits;
use crate::lookup::Lookup;
use crate::outlier::Policy;
use crate::stats::{ReleaseCounters, Stats};
use crate::RouterConfig;

/// One route table, with its lookup index built once at publish time.
#[derive(Debug, Default)]
pub(crate) struct Table {
    routes: Vec<Arc<RouteEntry>>,
    lookup: Lookup,
}

#[derive(Debug)]
pub(crate) struct RouteEntry {
    pub(crate) app: Arc<str>,
    /// `[route] https_only`: plaintext is redirected, HTTPS answers get HSTS.
    pub(crate) https_only: bool,
    backends: Vec<Arc<BackendEntry>>,
    next: AtomicUsize,
    /// (release, percent) shares; empty: every backend alike.
    weights: Vec<(u32, u32)>,
    weight_next: AtomicUsize,
    balance: Balance,
    pub(crate) limits: Limits,
}

/// One replica of a route, with what a request to it updates. Shared by the requests
/// that chose it as one `Arc` (one reference count written per request, not one per
/// field: the count's cache line is shared by the worker threads).
#[derive(Debug)]
pub(crate) struct BackendEntry {
    pub(crate) app: Arc<str>,
    pub(crate) replica: Arc<str>,
    pub(crate) release: u32,
    pub(crate) addr: SocketAddr,
    /// The replica's in-flight counter and passive health.
    pub(crate) slot: Arc<Slot>,
    /// The RED counters of the replica's release.
    pub(crate) stats: Arc<ReleaseCounters>,
}

/// The backend chosen for one request, counted in flight while `guard` lives.
#[derive(Debug)]
pub(crate) struct Pick {
    pub(crate) backend: Arc<BackendEntry>,
    /// Whether the route has another backend to retry on.
    pub(crate) others: bool,
    pub(crate) guard: InflightGuard,
    /// The route is `https_only` (its HTTPS answers get HSTS).
    pub(crate) https_only: bool,
}

/// What building a table needs besides the table.
pub(crate) struct Env<'a> {
    pub counters: &'a Counters,
    pub stats: &'a Stats,
    pub defaults: &'a RouterConfig,
}

impl Table {
    /// Index `table`, taking each replica's counter from `env.counters`. When two routes
    /// claim the same host and path prefix, the first one in the table wins.
    pub(crate) fn build(table: RouteTable, env: &Env<'_>) -> Table {
        let mut built = Table::default();
        for (index, route) in table.routes.into_iter().enumerate() {
            for host in &route.hosts {
                for prefix in route.options.prefixes() {
                    if !built.lookup.insert(host, prefix, index) {
                        tracing::warn!(
                            host,
                            prefix,
                            app = route.app,
                            "host and path claimed twice, ignored"
                        );
                    }
                }
            }
            built.routes.push(Arc::new(RouteEntry::new(route, env)));
        }
        env.counters.prune();
        built
    }

    /// The route serving `host` (normalized: lowercase, no port, no trailing dot) and
    /// `path` (as sent).
    pub(crate) fn find(&self, host: &str, path: &str) -> Option<&Arc<RouteEntry>> {
        self.routes.get(self.lookup.find(host, path)?)
    }

    /// Whether some route serves `host`, whatever the path.
    pub(crate) fn serves(&self, host: &str) -> bool {
        self.lookup.serves(host)
    }
}

impl RouteEntry {
    fn new(route: Route, env: &Env<'_>) -> RouteEntry {
        let app: Arc<str> = Arc::from(route.app);
        let backends = route
            .backends
            .into_iter()
            .map(|backend| {
                let replica: Arc<str> = Arc::from(backend.replica);
                let slot = env.counters.slot(&replica);
                Arc::new(BackendEntry {
                    app: app.clone(),
                    replica,
                    release: backend.release,
                    addr: backend.addr,
                    slot,
                    stats: env.stats.counters(&app, backend.release),
                })
            })
            .collect();
        let limits = Limits::resolve(&route.options, env.defaults);
        RouteEntry {
            app,
            https_only: route.tls.https_only,
            backends,
            next: AtomicUsize::new(0),
            weights: route
                .weights
                .iter()
                .filter(|w| w.percent > 0)
                .map(|w| (w.release, w.percent))
                .collect(),
            weight_next: AtomicUsize::new(0),
            balance: route.options.balance,
            limits,
        }
    }

    /// The release the next request should go to, by the route's weights: position
    /// `61 * n mod total` walks every slot of a 100-slot cycle once, so any 100
    /// consecutive requests split exactly by percent, well interleaved.
    fn weighted_release(&self) -> Option<u32> {
        let total: u32 = self.weights.iter().map(|(_, p)| p).sum();
        if total == 0 {
            return None;
        }
        let n = self.weight_next.fetch_add(1, Ordering::Relaxed) as u64;
        let mut pos = (n.wrapping_mul(61) % u64::from(total)) as u32;
        for (release, percent) in &self.weights {
            if pos < *percent {
                return Some(*release);
            }
            pos -= percent;
        }
        None
    }

    /// A backend, skipping `exclude`, within the release the weights choose (any
    /// release when that one has no backend): by the route's balance, the one with the
    /// fewest requests in flight (among equals, the first one after a rotating start,
    /// so ties go round-robin), or simply the next in turn.
    pub(crate) fn pick(&self, exclude: Option<&str>, outlier: &Policy) -> Option<Pick> {
        if self.backends.is_empty() {
            return None;
        }
        // One backend: no turn to take (a write on a line the workers share).
        let turn = match self.backends.len() {
            1 => 0,
            _ => self.next.fetch_add(1, Ordering::Relaxed),
        };
        let usable = |b: &BackendEntry| exclude != Some(&*b.replica);
        let healthy = |b: &BackendEntry| usable(b) && !b.slot.health.ejected(outlier);
        let release = self.weighted_release();
        let in_release = |b: &BackendEntry| release.is_none_or(|r| b.release == r);
        let choose = |candidate: &dyn Fn(&BackendEntry) -> bool| match self.balance {
            Balance::LeastRequests => least_loaded(&self.backends, turn, candidate),
            Balance::RoundRobin => in_turn(&self.backends, turn, candidate),
        };
        let chosen = choose(&|b| healthy(b) && in_release(b))
            .or_else(|| choose(&healthy))
            .or_else(|| choose(&|b| usable(b) && in_release(b)))
            .or_else(|| choose(&usable))?;
        Some(Pick {
            backend: chosen.clone(),
            others: self.backends.len() > 1,
            guard: InflightGuard::new(chosen.slot.clone()),
            https_only: self.https_only,
        })
    }
}

/// The `turn`-th candidate (modulo their number), whatever its load.
fn in_turn<'a>(
    backends: &'a [Arc<BackendEntry>],
    turn: usize,
    candidate: &dyn Fn(&BackendEntry) -> bool,
) -> Option<&'a Arc<BackendEntry>> {
    let count = backends.iter().filter(|b| candidate(b)).count();
    let mut candidates = backends.iter().filter(|b| candidate(b));
    candidates.nth(turn.checked_rem(count)?)
}

/// The candidate with the fewest requests in flight; among equals, the first from the
/// `turn`-th candidate on, so that ties go round-robin within the candidates.
fn least_loaded<'a>(
    backends: &'a [Arc<BackendEntry>],
    turn: usize,
    candidate: &dyn Fn(&BackendEntry) -> bool,
) -> Option<&'a Arc<BackendEntry>> {
    let count = backends.iter().filter(|b| candidate(b)).count();
    if count == 0 {
        return None;
    }
    let start = turn % count;
    backends
        .iter()
        .filter(|b| candidate(b))
        .cycle()
        .skip(start)
        .take(count)
        .min_by_key(|b| b.slot.load())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::normalize_host;
    use wharf_types::route::Backend;

    fn route(app: &str, hosts: &[&str], replicas: &[&str]) -> Route {
        Route {
            app: app.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            backends: replicas
                .iter()
                .enumerate()
                .map(|(i, r)| Backend {
                    replica: r.to_string(),
                    release: 1,
                    addr: ([127, 0, 0, 1], 9000 + i as u16).into(),
                })
                .collect(),
            weights: vec![],
            tls: Default::default(),
            options: Default::default(),
        }
    }

    fn policy() -> Policy {
        Policy {
            eject_after: 0,
            eject_for: std::time::Duration::ZERO,
            epoch: std::time::Instant::now(),
        }
    }

    fn table(routes: Vec<Route>) -> Table {
        Table::build(
            RouteTable { version: 1, routes },
            &Env {
                counters: &Counters::default(),
                stats: &Stats::default(),
                defaults: &RouterConfig::default(),
            },
        )
    }

    fn app_of<'t>(t: &'t Table, host: &str) -> Option<&'t str> {
        t.find(&normalize_host(host), "/").map(|r| &*r.app)
    }

    #[test]
    fn host_lookup() {
        let t = table(vec![
            route("a", &["a.localhost", "www.example.com"], &[]),
            route("wild", &["*.example.com"], &[]),
            route("deep", &["*.api.example.com"], &[]),
            route("shop", &["Shop.Example.ORG."], &[]),
        ]);
        // exact, and exact before wildcard
        assert_eq!(app_of(&t, "a.localhost"), Some("a"));
        assert_eq!(app_of(&t, "www.example.com"), Some("a"));
        // wildcard, any depth, never the bare domain
        assert_eq!(app_of(&t, "x.example.com"), Some("wild"));
        assert_eq!(app_of(&t, "x.y.example.com"), Some("wild"));
        assert_eq!(app_of(&t, "example.com"), None);
        // longest suffix wins
        assert_eq!(app_of(&t, "v1.api.example.com"), Some("deep"));
        assert_eq!(app_of(&t, "api.example.com"), Some("wild"));
        // port, case, trailing dot, on both sides
        assert_eq!(app_of(&t, "A.LocalHost:8080"), Some("a"));
        assert_eq!(app_of(&t, "a.localhost.:80"), Some("a"));
        assert_eq!(app_of(&t, "shop.example.org"), Some("shop"));
        // unknown
        assert_eq!(app_of(&t, "b.localhost"), None);
        assert_eq!(app_of(&t, "localhost"), None);
        assert_eq!(app_of(&t, ""), None);
    }

    #[test]
    fn first_route_wins_a_host_claimed_twice() {
        let t = table(vec![
            route("one", &["x.test"], &[]),
            route("two", &["x.test"], &[]),
        ]);
        assert_eq!(app_of(&t, "x.test"), Some("one"));
    }

    #[test]
    fn ties_go_round_robin() {
        let t = table(vec![route("a", &["a.test"], &["r0", "r1", "r2"])]);
        let r = t.find("a.test", "/").expect("route");
        let picked: Vec<String> = (0..6)
            .map(|_| {
                r.pick(None, &policy())
                    .expect("pick")
                    .backend
                    .replica
                    .to_string()
            })
            .collect();
        assert_eq!(picked, ["r0", "r1", "r2", "r0", "r1", "r2"]);
    }

    #[test]
    fn round_robin_ignores_load() {
        let mut r = route("a", &["a.test"], &["r0", "r1", "r2"]);
        r.options.balance = Balance::RoundRobin;
        let t = table(vec![r]);
        let r = t.find("a.test", "/").expect("route");
        let held = r.pick(None, &policy()).expect("pick");
        assert_eq!(&*held.backend.replica, "r0");
        // r0 is busy, but its turn comes anyway
        let picked: Vec<String> = (0..5)
            .map(|_| {
                r.pick(None, &policy())
                    .expect("pick")
                    .backend
                    .replica
                    .to_string()
            })
            .collect();
        assert_eq!(picked, ["r1", "r2", "r0", "r1", "r2"]);
        assert_eq!(
            &*r.pick(Some("r0"), &policy()).expect("pick").backend.replica,
            "r1"
        );
    }

    #[test]
    fn apps_share_a_host_by_path_prefix() {
        let mut api = route("api", &["shop.test"], &[]);
        api.options.paths = vec!["/api".into()];
        let mut admin = route("admin", &["shop.test", "*.shop.test"], &[]);
        admin.options.paths = vec!["/admin".into(), "/api/admin".into()];
        let t = table(vec![api, admin, route("web", &["shop.test"], &[])]);
        let app = |host: &str, path: &str| t.find(host, path).map(|r| r.app.to_string());
        assert_eq!(app("shop.test", "/").as_deref(), Some("web"));
        assert_eq!(app("shop.test", "/apix").as_deref(), Some("web"));
        assert_eq!(app("shop.test", "/api").as_deref(), Some("api"));
        assert_eq!(app("shop.test", "/api/x").as_deref(), Some("api"));
        assert_eq!(app("shop.test", "/api/admin/x").as_deref(), Some("admin"));
        assert_eq!(app("shop.test", "/admin").as_deref(), Some("admin"));
        assert_eq!(app("x.shop.test", "/admin/y").as_deref(), Some("admin"));
        assert_eq!(
            app("x.shop.test", "/"),
            None,
            "no prefix of the wildcard covers /"
        );
        assert!(t.serves("x.shop.test"));
    }

    #[test]
    fn busy_backend_is_avoided() {
        let t = table(vec![route("a", &["a.test"], &["r0", "r1"])]);
        let r = t.find("a.test", "/").expect("route");
        let held = r.pick(None, &policy()).expect("pick");
        assert_eq!(&*held.backend.replica, "r0");
        // r0 has one in flight: every pick goes to r1 (each released at once).
        for _ in 0..4 {
            assert_eq!(
                &*r.pick(None, &policy()).expect("pick").backend.replica,
                "r1"
            );
        }
        // once both have one in flight, ties rotate again
        let also = r.pick(None, &policy()).expect("pick");
        assert_eq!(&*also.backend.replica, "r1");
        let picked: Vec<String> = (0..4)
            .map(|_| {
                r.pick(None, &policy())
                    .expect("pick")
                    .backend
                    .replica
                    .to_string()
            })
            .collect();
        assert_eq!(picked, ["r0", "r1", "r0", "r1"]);
    }

    #[test]
    fn exclude_and_empty() {
        let t = table(vec![
            route("a", &["a.test"], &["r0", "r1"]),
            route("e", &["e.test"], &[]),
        ]);
        let r = t.find("a.test", "/").expect("route");
        for _ in 0..3 {
            assert_eq!(
                &*r.pick(Some("r0"), &policy()).expect("pick").backend.replica,
                "r1"
            );
        }
        assert!(t
            .find("e.test", "/")
            .expect("route")
            .pick(None, &policy())
            .is_none());
        let single = table(vec![route("s", &["s.test"], &["r0"])]);
        assert!(single
            .find("s.test", "/")
            .expect("route")
            .pick(Some("r0"), &policy())
            .is_none());
    }

    #[test]
    fn weights_split_traffic_between_releases_exactly() {
        use wharf_types::route::Weight;
        let mut r = route("a", &["a.localhost"], &["old-1", "old-2", "new-1"]);
        r.backends[2].release = 2;
        r.weights = vec![
            Weight {
                release: 2,
                percent: 10,
            },
            Weight {
                release: 1,
                percent: 90,
            },
        ];
        let t = table(vec![r]);
        let route = t.find("a.localhost", "/").unwrap();
        let picks: Vec<String> = (0..200)
            .map(|_| {
                route
                    .pick(None, &policy())
                    .unwrap()
                    .backend
                    .replica
                    .to_string()
            })
            .collect();
        assert_eq!(
            picks.iter().filter(|p| *p == "new-1").count(),
            20,
            "10% of 200"
        );
        assert!(
            picks[..100].iter().filter(|p| *p == "new-1").count() == 10,
            "exact within every 100"
        );
        let old1 = picks.iter().filter(|p| *p == "old-1").count();
        assert!(
            (85..=95).contains(&old1),
            "old replicas share the rest: {old1}"
        );
    }

    #[test]
    fn weight_on_a_release_without_backends_falls_back_to_any() {
        use wharf_types::route::Weight;
        let mut r = route("a", &["a.localhost"], &["old-1"]);
        r.weights = vec![Weight {
            release: 7,
            percent: 100,
        }];
        let t = table(vec![r]);
        assert_eq!(
            &*t.find("a.localhost", "/")
                .unwrap()
                .pick(None, &policy())
                .unwrap()
                .backend
                .replica,
            "old-1"
        );
    }
}
