//! Zero-downtime restarts and upgrades: `wharf server --takeover` takes the listening
//! sockets over from the running server while clients keep sending requests, on new
//! connections and on keep-alive ones; not one request may fail.

use std::time::Duration;
use wharf_e2e::{wait_until, Load, Server, TestApp};

#[test]
fn a_takeover_under_load_fails_no_request_and_keeps_replicas() {
    let mut s = Server::start_with(&["--api", "127.0.0.1:0"]);
    let app = TestApp::new("steady").replicas(2).write();
    s.deploy(app.path()).ok("deploy");
    let before = s.wait_ready("steady", 2, Duration::from_secs(10));
    let (router, api, old_pid) = (s.router().to_string(), s.api(), s.pid());

    let fresh = Load::start(&router, "steady.localhost", 4);
    let kept = Load::start_keepalive(&router, "steady.localhost", 4);
    assert!(
        wait_until(Duration::from_secs(10), || fresh.ok() > 20
            && kept.ok() > 20),
        "no traffic before the takeover"
    );
    for _ in 0..2 {
        let (ok_before, kept_before) = (fresh.ok(), kept.ok());
        s.takeover();
        assert_ne!(s.pid(), old_pid);
        assert_eq!(s.router(), router, "the router keeps its address");
        assert_eq!(s.api(), api, "the TCP API keeps its address");
        assert!(
            wait_until(Duration::from_secs(10), || fresh.ok() > ok_before + 20
                && kept.ok() > kept_before + 20),
            "traffic stalled after the takeover\n{}",
            s.log_tail(40)
        );
    }
    let (ok, failures) = fresh.finish();
    let (kept_ok, kept_failures) = kept.finish();
    assert!(
        failures.is_empty() && kept_failures.is_empty(),
        "{} + {} failed requests (of {ok} + {kept_ok}): {:?} {:?}\n{}",
        failures.len(),
        kept_failures.len(),
        failures.iter().take(5).collect::<Vec<_>>(),
        kept_failures.iter().take(5).collect::<Vec<_>>(),
        s.log_tail(60)
    );

    // The replicas were re-adopted, not restarted, and the new control plane works.
    let after = s.wait_ready("steady", 2, Duration::from_secs(10));
    let pids = |v: &[serde_json::Value]| {
        let mut p: Vec<u64> = v.iter().filter_map(|r| r["pid"].as_u64()).collect();
        p.sort_unstable();
        p
    };
    assert_eq!(pids(&before), pids(&after));
    s.wharf(&["scale", "steady", "web=1"])
        .ok("scale after takeover");
    s.wait_ready("steady", 1, Duration::from_secs(10));
}

#[test]
fn a_takeover_needs_a_running_server_and_a_second_server_is_told_about_it() {
    let s = Server::start();
    let out = s.wharf(&["server", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("--takeover"), "{}", out.all());

    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&wharf_e2e::bins().wharf)
        .args(["--data-dir"])
        .arg(empty.path())
        .args(["server", "--listen", "127.0.0.1:0", "--takeover"])
        .env("WHARF_ISOLATION", "none")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no running server offers its sockets"),
        "{stderr}"
    );
}
