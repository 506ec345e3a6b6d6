//! Rolling out releases: v2 over v1, rollbacks, and releases that fail (crash, never
//! ready, broken build) while the previous release keeps serving.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use wharf_e2e::{Server, TestApp};

/// GETs `/` through the router in a loop until stopped; collects every answer that is not
/// a 200 whose body contains `expect`.
struct Poller {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(usize, Vec<String>)>,
}

impl Poller {
    fn start(router: &str, host: &str, expect: &str) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let (router, host, expect) = (router.to_string(), host.to_string(), expect.to_string());
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let (mut n, mut bad) = (0, Vec::new());
            while !flag.load(Ordering::SeqCst) {
                n += 1;
                match wharf_e2e::http_get(&router, &host, "/", &[]) {
                    Ok(r) if r.status == 200 && r.body.contains(&expect) => {}
                    Ok(r) => bad.push(format!("{} {:?}", r.status, r.body)),
                    Err(e) => bad.push(format!("transport error: {e}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (n, bad)
        });
        Poller { stop, handle }
    }

    /// Stops polling; returns (requests, failures).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("poller thread")
    }
}

#[track_caller]
fn assert_serves(s: &Server, host: &str, path: &str, body: &str) {
    let r = s.get(host, path);
    assert_eq!((r.status, r.body.as_str()), (200, body), "GET {host}{path}");
}

#[test]
fn second_release_replaces_the_first_and_rollback_restores_config() {
    let s = Server::start();
    let app = "roll";
    let host = "roll.localhost";
    let v1 = TestApp::new(app).replicas(2).env("MARK", "one").write();
    s.deploy(v1.path()).ok("deploy v1");
    assert_serves(&s, host, "/env/MARK", "one");

    let v2 = TestApp::new(app).replicas(2).env("MARK", "two").write();
    let poller = Poller::start(s.router(), host, "Hello from testapp");
    let out = s.deploy(v2.path());
    let (n, failures) = poller.finish();
    out.ok("deploy v2");
    assert!(
        failures.is_empty(),
        "requests failed during the v1 -> v2 rollout ({} of {n}): {failures:?}",
        failures.len()
    );

    // Only v2 serves, on every replica.
    for _ in 0..10 {
        let r = s.get(host, "/");
        assert_eq!(r.status, 200);
        assert!(
            r.body.contains("release=2 "),
            "GET / after v2: {:?}",
            r.body
        );
    }
    let ps = s.wait_ready(app, 2, Duration::from_secs(10));
    assert!(
        ps.iter().all(|r| r["release"] == 2),
        "all replicas should run v2: {ps:#?}"
    );
    assert_serves(&s, host, "/env/MARK", "two");

    let rel = s.releases(app);
    assert_eq!(rel.len(), 2, "releases --json: {rel:#?}");
    let current: Vec<_> = rel.iter().filter(|r| r["current"] == true).collect();
    assert_eq!(current.len(), 1, "exactly one current release: {rel:#?}");
    assert_eq!(current[0]["version"], 2, "{rel:#?}");

    // Rollback to the previous release: v1 is the target again (no new release), with
    // its artifact and config, rolled out like a deploy.
    s.wharf(&["rollback", app]).ok("rollback");
    assert_serves(&s, host, "/env/MARK", "one");
    let rel = s.releases(app);
    assert_eq!(
        rel.len(),
        2,
        "rollback re-targets an existing release: {rel:#?}"
    );
    let current: Vec<_> = rel.iter().filter(|r| r["current"] == true).collect();
    assert_eq!(current.len(), 1, "{rel:#?}");
    assert_eq!(current[0]["version"], 1, "{rel:#?}");
    s.wait_ready(app, 2, Duration::from_secs(10));
    for _ in 0..6 {
        let r = s.get(host, "/");
        assert!(
            r.body.contains("release=1 "),
            "GET / after rollback: {:?}",
            r.body
        );
    }
    // Again: back to the release that served before (v2), like `cd -`.
    s.wharf(&["rollback", app]).ok("rollback again");
    assert_serves(&s, host, "/env/MARK", "two");

    // Explicit targets, with or without the `v`.
    s.wharf(&["rollback", app, "v1"]).ok("rollback v1");
    assert_serves(&s, host, "/env/MARK", "one");
    s.wharf(&["rollback", app, "2"]).ok("rollback 2");
    assert_serves(&s, host, "/env/MARK", "two");
    let rel = s.releases(app);
    assert_eq!(rel.len(), 2, "{rel:#?}");
    let out = s.wharf(&["rollback", app, "v2"]);
    out.expect_code(2, "rollback to the running release");

    // A release that does not exist.
    let out = s.wharf(&["rollback", app, "v42"]);
    out.expect_code(2, "rollback to an unknown release");
    assert!(out.stderr.contains("42"), "{}", out.stderr);
    assert_serves(&s, host, "/env/MARK", "two");
}

#[test]
fn crashing_release_is_rolled_back_and_v1_keeps_serving() {
    let s = Server::start();
    let app = "crashy";
    let host = "crashy.localhost";
    let v1 = TestApp::new(app).replicas(2).write();
    s.deploy(v1.path()).ok("deploy v1");

    let v2 = TestApp::new(app)
        .replicas(2)
        .env("TESTAPP_CRASH_ON_START", "1")
        .deploy_timeout("10s")
        .write();
    let poller = Poller::start(s.router(), host, "release=1 ");
    let out = s.deploy(v2.path());
    let (n, failures) = poller.finish();
    out.expect_code(1, "deploy of a release that crashes on start");
    assert!(
        out.stderr.contains("crashing on purpose"),
        "the failing replica's log lines should be shown:\n{}",
        out.stderr
    );
    let reason = out.stderr.lines().next().unwrap_or_default().to_lowercase();
    assert!(
        reason.contains("exit") || reason.contains("crash"),
        "the first line should give the reason (the replica exits):\n{}",
        out.stderr
    );
    assert!(
        failures.is_empty(),
        "v1 should keep answering during the failed rollout ({} of {n} failed): {failures:?}",
        failures.len()
    );

    let ps = s.wait_ready(app, 2, Duration::from_secs(10));
    assert!(ps.iter().all(|r| r["release"] == 1), "{ps:#?}");
    for _ in 0..6 {
        let r = s.get(host, "/");
        assert_eq!(r.status, 200);
        assert!(r.body.contains("release=1 "), "{:?}", r.body);
    }
    let apps = s.apps();
    assert_eq!(
        apps[0]["release"], 1,
        "the app's current release: {apps:#?}"
    );
}

#[test]
fn never_ready_release_times_out_and_v1_keeps_serving() {
    let s = Server::start();
    let app = "unready";
    let host = "unready.localhost";
    let v1 = TestApp::new(app).write();
    s.deploy(v1.path()).ok("deploy v1");

    let v2 = TestApp::new(app)
        .env("TESTAPP_FAIL_READINESS", "1")
        .deploy_timeout("5s")
        .write();
    let poller = Poller::start(s.router(), host, "release=1 ");
    let out = s.deploy(v2.path());
    let (n, failures) = poller.finish();
    out.expect_code(1, "deploy of a release that never gets ready");
    assert!(
        out.all().to_lowercase().contains("readiness"),
        "the reason should mention readiness:\n{}",
        out.all()
    );
    assert!(
        failures.is_empty(),
        "v1 should keep answering during the failed rollout ({} of {n} failed): {failures:?}",
        failures.len()
    );
    let ps = s.wait_ready(app, 1, Duration::from_secs(10));
    assert_eq!(ps[0]["release"], 1, "{ps:#?}");
    let r = s.get(host, "/");
    assert!(r.status == 200 && r.body.contains("release=1 "), "{r:?}");
}

#[test]
fn failed_build_changes_nothing() {
    let s = Server::start();
    let app = "badbuild";
    let host = "badbuild.localhost";
    let v1 = TestApp::new(app).write();
    s.deploy(v1.path()).ok("deploy v1");
    let before = s.releases(app);

    let v2 = TestApp::new(app).build("echo boom-marker; exit 3").write();
    let out = s.deploy(v2.path());
    out.expect_code(1, "deploy with a failing build");
    assert!(
        out.all().contains("boom-marker"),
        "the build output should be shown:\n{}",
        out.all()
    );
    assert_eq!(
        s.releases(app),
        before,
        "a failed build must not add a release"
    );
    let r = s.get(host, "/");
    assert!(r.status == 200 && r.body.contains("release=1 "), "{r:?}");
    let ps = s.wait_ready(app, 1, Duration::from_secs(5));
    assert_eq!(ps[0]["release"], 1);
}
