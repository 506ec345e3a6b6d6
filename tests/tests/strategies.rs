//! Zero-downtime deploys with each strategy under continuous load, automatic rollback of
//! bad releases, canary analysis on 5xx answers, and the instant blue-green rollback.

use std::path::Path;
use std::time::{Duration, Instant};
use wharf_e2e::{example, Load, Server, TestApp};

const CANARY: &str =
    "[process.web.deploy.canary]\nsteps = [10, 50, 100]\ninterval = \"300ms\"\nmin_requests = 3\n";

/// The book's Node sample app with 3 replicas and a VERSION variable.
fn sample_app(dir: &Path, version: u32) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(example("sample-app").join("app.js"), dir.join("app.js")).unwrap();
    let manifest = format!(
        "app = \"sample\"\n[env]\nVERSION = \"{version}\"\n[process.web]\ncommand = \"node app.js\"\nreplicas = 3\nstop_timeout = \"5s\"\ndrain_timeout = \"5s\"\n[process.web.readiness]\nhttp = \"/\"\ninterval = \"500ms\"\n[process.web.deploy]\ntimeout = \"30s\"\nkeep_previous = \"2s\"\n{CANARY}"
    );
    std::fs::write(dir.join("wharf.toml"), manifest).unwrap();
}

fn twenty_deploys_without_a_failed_request(strategy: &str) {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let (v1, v2) = (tmp.path().join("v1/sample"), tmp.path().join("v2/sample"));
    sample_app(&v1, 1);
    sample_app(&v2, 2);
    s.wharf(&["deploy", v1.to_str().unwrap(), "--strategy", strategy])
        .ok("first deploy");
    s.wait_ready("sample", 3, Duration::from_secs(20));
    let load = Load::start(s.router(), "sample.localhost", 2);
    let mut times = Vec::new();
    for i in 0..20 {
        let dir = if i % 2 == 0 { &v2 } else { &v1 };
        let before = load.ok();
        let t = Instant::now();
        s.wharf(&["deploy", dir.to_str().unwrap(), "--strategy", strategy])
            .ok(&format!("deploy #{i} ({strategy})"));
        times.push(t.elapsed());
        assert!(
            load.failures().is_empty(),
            "deploy #{i} ({strategy}): failed requests {:?}",
            load.failures()
        );
        assert!(
            load.ok() > before,
            "the load kept flowing during deploy #{i}"
        );
    }
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{strategy}: {} failed of {}: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    assert!(ok > 200, "{strategy}: only {ok} requests went through");
    let status = s.wharf(&["status", "--json", "sample"]);
    status.ok("status");
    assert_eq!(status.json()["release"], 21, "{}", status.stdout);
    eprintln!("{strategy}: 20 deploys, {ok} requests, 0 failed; deploy times {times:?}");
}

#[test]
fn rolling_deploys_drop_no_request() {
    twenty_deploys_without_a_failed_request("rolling");
}

#[test]
fn blue_green_deploys_drop_no_request() {
    twenty_deploys_without_a_failed_request("blue-green");
}

#[test]
fn canary_deploys_drop_no_request() {
    twenty_deploys_without_a_failed_request("canary");
}

/// A release that never becomes ready is rolled back with every strategy, and the
/// clients of the good release see no failure.
#[test]
fn never_ready_release_is_rolled_back_with_every_strategy() {
    let s = Server::start();
    let good = TestApp::new("fickle")
        .replicas(2)
        .deploy_timeout("4s")
        .env("MARK", "good")
        .write();
    s.deploy(good.path()).ok("v1");
    s.wait_ready("fickle", 2, Duration::from_secs(10));
    let bad = TestApp::new("fickle")
        .replicas(2)
        .deploy_timeout("4s")
        .env("TESTAPP_FAIL_READINESS", "1")
        .write();
    let load = Load::start(s.router(), "fickle.localhost", 2);
    for strategy in ["rolling", "blue-green", "canary"] {
        let out = s.wharf(&["deploy", bad.arg(), "--strategy", strategy]);
        out.expect_code(1, &format!("bad release with {strategy}"));
        assert!(
            out.stderr.contains("not ready") && out.stderr.contains("rolled back to v1"),
            "{strategy}: {}",
            out.stderr
        );
        let status = s.wharf(&["status", "--json", "fickle"]);
        assert_eq!(status.json()["release"], 1, "{strategy}");
    }
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "clients of v1 saw failures: {failures:?}"
    );
    assert!(ok > 50);
}

/// A crash-looping release is rolled back with every strategy.
#[test]
fn crashing_release_is_rolled_back_with_every_strategy() {
    let s = Server::start();
    let good = TestApp::new("crashy").replicas(2).write();
    s.deploy(good.path()).ok("v1");
    s.wait_ready("crashy", 2, Duration::from_secs(10));
    let bad = TestApp::new("crashy")
        .replicas(2)
        .env("TESTAPP_CRASH_ON_START", "1")
        .write();
    let load = Load::start(s.router(), "crashy.localhost", 2);
    for strategy in ["rolling", "blue-green", "canary"] {
        let out = s.wharf(&["deploy", bad.arg(), "--strategy", strategy]);
        out.expect_code(1, &format!("crashing release with {strategy}"));
        assert!(
            out.stderr.contains("crashing on purpose"),
            "{strategy}: the failing replica's logs: {}",
            out.stderr
        );
    }
    let (_, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "clients of v1 saw failures: {failures:?}"
    );
}

/// A canary answering 5xx on 20% of its requests fails analysis and is rolled back;
/// clients see failures only from the canary's share of the traffic.
#[test]
fn canary_with_errors_fails_analysis_and_is_rolled_back() {
    let s = Server::start();
    let canary = "[process.web.deploy.canary]\nsteps = [10, 50, 100]\ninterval = \"1s\"\nmin_requests = 5\nmax_failed_checks = 2\n";
    let good = TestApp::new("shop").replicas(2).extra(canary).write();
    s.deploy(good.path()).ok("v1");
    s.wait_ready("shop", 2, Duration::from_secs(10));
    let bad = TestApp::new("shop")
        .replicas(2)
        .env("TESTAPP_ERROR_RATE", "20")
        .extra(canary)
        .write();
    let load = Load::start(s.router(), "shop.localhost", 2);
    let out = s.wharf(&["deploy", bad.arg(), "--strategy", "canary"]);
    out.expect_code(1, "erroring canary");
    assert!(
        out.stderr.contains("canary v2 failed") && out.stderr.contains("success rate"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("canary v2 takes 10% of traffic"),
        "{}",
        out.stdout
    );
    // After the rollback, every request succeeds again.
    let before = load.failures().len();
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, failures) = load.finish();
    assert_eq!(
        failures.len(),
        before,
        "failures after the rollback: {:?}",
        &failures[before..]
    );
    let share = failures.len() as f64 / (ok + failures.len()) as f64;
    assert!(
        share < 0.05,
        "failures beyond the canary's share: {share:.3} ({} of {})",
        failures.len(),
        ok + failures.len()
    );
    let status = s.wharf(&["status", "--json", "shop"]).json();
    assert_eq!(status["release"], 1);
    assert_eq!(status["last_outcome"]["succeeded"], false);
    let v2_gone = wharf_e2e::wait_until(Duration::from_secs(10), || {
        s.ps("shop").iter().all(|r| r["release"] == 1)
    });
    assert!(
        v2_gone,
        "the canary replicas are stopped: {:?}",
        s.ps("shop")
    );
}

/// Blue-green keeps the previous set warm: a rollback inside the window starts nothing
/// and switches traffic back at once.
#[test]
fn blue_green_rollback_within_the_window_is_instant() {
    let s = Server::start();
    let v1 = TestApp::new("bg").replicas(2).env("MARK", "one").write();
    s.wharf(&["deploy", v1.arg(), "--strategy", "blue-green"])
        .ok("v1");
    s.wait_ready("bg", 2, Duration::from_secs(10));
    let v1_pids = s.pids("bg");
    let v2 = TestApp::new("bg").replicas(2).env("MARK", "two").write();
    s.wharf(&["deploy", v2.arg(), "--strategy", "blue-green"])
        .ok("v2");
    assert_eq!(s.get("bg.localhost", "/env/MARK").body, "two");
    let status = s.wharf(&["status", "--json", "bg"]).json();
    assert_eq!(status["warm"]["release"], 1, "v1 is kept warm: {status}");
    let all = s.pids("bg");
    assert!(
        v1_pids.iter().all(|p| all.contains(p)),
        "the warm v1 replicas still run"
    );
    let t = Instant::now();
    s.wharf(&["rollback", "bg"]).ok("rollback");
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "instant rollback took {took:?}"
    );
    for _ in 0..10 {
        assert_eq!(s.get("bg.localhost", "/env/MARK").body, "one");
    }
    let now: Vec<u32> = s
        .ps("bg")
        .iter()
        .filter(|r| r["release"] == 1)
        .filter_map(|r| r["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    let mut now_sorted = now.clone();
    now_sorted.sort_unstable();
    assert_eq!(
        now_sorted, v1_pids,
        "the same v1 processes serve again: nothing was started"
    );
}

/// A replica that stops answering is caught by its liveness check and restarted, and the
/// app keeps serving from the others meanwhile.
#[test]
fn hung_replica_is_restarted_by_liveness() {
    let s = Server::start();
    let app = TestApp::new("hangs")
        .replicas(2)
        .extra("[process.web.liveness]\nhttp = \"/health\"\ninterval = \"200ms\"\ntimeout = \"300ms\"\nfailure_threshold = 2\n")
        .write();
    s.deploy(app.path()).ok("deploy");
    let before = s.wait_ready("hangs", 2, Duration::from_secs(10));
    let addr = before[0]["address"].as_str().unwrap().to_string();
    let id = before[0]["id"].as_str().unwrap().to_string();
    let r = wharf_e2e::http_get(&addr, "localhost", "/hang", &[]).unwrap();
    assert_eq!(r.status, 200);
    let restarted = wharf_e2e::wait_until(Duration::from_secs(10), || {
        s.ps("hangs").iter().any(|r| {
            r["id"] == id.as_str() && r["restarts"].as_u64() >= Some(1) && r["state"] == "ready"
        })
    });
    let ps = s.ps("hangs");
    assert!(restarted, "the hung replica was not restarted: {ps:?}");
    let hung = ps.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert!(
        hung["last_exit"]
            .as_str()
            .unwrap_or("")
            .contains("liveness"),
        "{hung}"
    );
    assert_eq!(s.get("hangs.localhost", "/health").status, 200);
}

/// A server killed in the middle of a canary rollout resumes it after a restart, from
/// the persisted step, and the rollout completes.
#[test]
fn canary_rollout_resumes_after_a_server_crash() {
    let mut s = Server::start();
    let canary =
        "[process.web.deploy.canary]\nsteps = [50, 100]\ninterval = \"2s\"\nmin_requests = 3\n";
    let v1 = TestApp::new("resume")
        .replicas(2)
        .env("MARK", "one")
        .extra(canary)
        .write();
    s.deploy(v1.path()).ok("v1");
    s.wait_ready("resume", 2, Duration::from_secs(10));
    let load = Load::start(s.router(), "resume.localhost", 1);
    let v2 = TestApp::new("resume")
        .replicas(2)
        .env("MARK", "two")
        .extra(canary)
        .write();
    let deploy = s.spawn_wharf(&["deploy", v2.arg(), "--strategy", "canary"]);
    let at_step = wharf_e2e::wait_until(Duration::from_secs(15), || {
        let st = s.wharf_quiet(&["status", "--json", "resume"]);
        st.code == 0 && st.json()["canary"]["weight"] == 50
    });
    assert!(at_step, "the canary never reached its first step");
    s.kill9();
    let _ = deploy.kill();
    let _ = load.finish();
    s.restart_same_data_dir();
    let load = Load::start(s.router(), "resume.localhost", 1);
    let done = wharf_e2e::wait_until(Duration::from_secs(30), || {
        let st = s.wharf_quiet(&["status", "--json", "resume"]).json();
        st["release"] == 2 && st["status"] == "running" && st["last_outcome"]["succeeded"] == true
    });
    let (_, failures) = load.finish();
    assert!(
        done,
        "the rollout did not resume: {}",
        s.wharf(&["status", "--json", "resume"]).stdout
    );
    assert_eq!(s.get("resume.localhost", "/env/MARK").body, "two");
    assert!(
        failures.is_empty(),
        "failed requests after the restart: {failures:?}"
    );
}

/// A replica that keeps crashing after it was ready backs off exponentially and shows as
/// `crash-loop` in `ps`.
#[test]
fn crash_looping_replica_shows_in_ps_and_backs_off() {
    let s = Server::start();
    let app = TestApp::new("loopy")
        .env("TESTAPP_CRASH_AFTER_MS", "700")
        .write();
    s.deploy(app.path())
        .ok("deploy: ready before the first crash");
    let looping = wharf_e2e::wait_until(Duration::from_secs(20), || {
        s.ps("loopy").iter().any(|r| r["state"] == "crash-loop")
    });
    let ps = s.ps("loopy");
    assert!(looping, "never shown as crash-loop: {ps:?}");
    let r = &ps[0];
    assert!(r["restarts"].as_u64().unwrap_or(0) >= 2, "{r}");
    assert!(
        r["last_exit"]
            .as_str()
            .unwrap_or("")
            .contains("exited with code 1"),
        "{r}"
    );
    assert!(
        r["pid"].is_null(),
        "waiting out its backoff, no process: {r}"
    );
}
