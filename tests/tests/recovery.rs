//! Healing: killed replicas are replaced; a crashed server re-adopts its replicas.

use std::time::{Duration, Instant};
use wharf_e2e::{descendants, is_gone, kill9, process_alive, wait_until, Server, TestApp};

fn pid_of(r: &serde_json::Value) -> u32 {
    r["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or_else(|| panic!("replica without a pid: {r:#}"))
}

#[track_caller]
fn assert_all_serve(s: &Server, host: &str, n: usize) {
    for _ in 0..n {
        let r = s.get(host, "/");
        assert_eq!(r.status, 200, "GET {host}/: {r:?}");
        assert!(r.body.starts_with("Hello from testapp"), "{r:?}");
    }
}

#[test]
fn killed_replica_is_replaced() {
    let s = Server::start();
    let app = TestApp::new("phoenix").replicas(2).write();
    s.deploy(app.path()).ok("deploy");
    let ps = s.wait_ready("phoenix", 2, Duration::from_secs(5));
    let victim = ps[0].clone();
    let victim_pid = pid_of(&victim);
    let victim_app = descendants(victim_pid);
    assert!(!victim_app.is_empty(), "the replica should run the app");

    kill9(victim_pid);
    let mut replaced = None;
    let healed = wait_until(Duration::from_secs(15), || {
        let ps = s.ps("phoenix");
        replaced = ps.iter().find(|r| r["id"] == victim["id"]).cloned();
        ps.len() == 2
            && ps.iter().all(|r| r["state"] == "ready")
            && replaced
                .as_ref()
                .is_some_and(|r| r["pid"] != victim["pid"] && r["restarts"].as_u64() >= Some(1))
    });
    assert!(
        healed,
        "the killed replica should be restarted and ready; ps --json: {:#?}",
        s.ps("phoenix")
    );
    let replaced = replaced.unwrap();
    let last_exit = replaced["last_exit"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        last_exit.contains("SIGKILL") || last_exit.contains("signal 9"),
        "last exit should say it was killed by SIGKILL: {replaced:#}"
    );
    // The app the killed init ran is not left behind, listening on its old port.
    assert!(
        wait_until(Duration::from_secs(5), || victim_app
            .iter()
            .all(|&p| is_gone(p))),
        "the killed replica's app processes survived: {victim_app:?}"
    );
    assert_all_serve(&s, "phoenix.localhost", 10);
    // The other replica was not touched.
    let other = s.ps("phoenix");
    let untouched = other.iter().find(|r| r["id"] == ps[1]["id"]).unwrap();
    assert_eq!(untouched["pid"], ps[1]["pid"]);
    assert_eq!(untouched["restarts"], 0);
}

#[test]
fn crashed_app_process_is_restarted() {
    let s = Server::start();
    let app = TestApp::new("crashes").write();
    s.deploy(app.path()).ok("deploy");
    let before = s.wait_ready("crashes", 1, Duration::from_secs(5));
    // The app process itself dies (not its init): SIGKILL.
    let app_pids = descendants(pid_of(&before[0]));
    assert!(!app_pids.is_empty());
    for &p in &app_pids {
        kill9(p);
    }
    let healed = wait_until(Duration::from_secs(15), || {
        let ps = s.ps("crashes");
        ps.len() == 1 && ps[0]["state"] == "ready" && ps[0]["restarts"].as_u64() >= Some(1)
    });
    let ps = s.ps("crashes");
    assert!(healed, "the app should be restarted: {ps:#?}");
    let last_exit = ps[0]["last_exit"].as_str().unwrap_or_default();
    assert!(
        last_exit.contains("SIGKILL") || last_exit.contains("signal 9"),
        "last exit should name the signal: {ps:#?}"
    );
    // An app that exits on its own (GET /crash) is restarted too.
    let _ = s.try_get("crashes.localhost", "/crash");
    let healed = wait_until(Duration::from_secs(15), || {
        let ps = s.ps("crashes");
        ps.len() == 1 && ps[0]["state"] == "ready" && ps[0]["restarts"].as_u64() >= Some(2)
    });
    let ps = s.ps("crashes");
    assert!(healed, "the app should be restarted after /crash: {ps:#?}");
    assert!(
        ps[0]["last_exit"]
            .as_str()
            .unwrap_or_default()
            .contains("code 1"),
        "{ps:#?}"
    );
    assert_all_serve(&s, "crashes.localhost", 3);
}

#[test]
fn restarted_server_readopts_running_replicas() {
    let mut s = Server::start();
    let app = TestApp::new("survivor").replicas(2).write();
    s.deploy(app.path()).ok("deploy");
    let before = s.pids("survivor");
    assert_eq!(before.len(), 2);
    let apps_before: Vec<u32> = before.iter().flat_map(|&p| descendants(p)).collect();

    s.kill9();
    // Replicas outlive the server.
    for &p in before.iter().chain(&apps_before) {
        assert!(process_alive(p), "replica process {p} died with the server");
    }

    s.restart_same_data_dir();
    let up = Instant::now();
    let serving = wait_until(Duration::from_secs(2), || {
        s.try_get("survivor.localhost", "/")
            .is_ok_and(|r| r.status == 200)
    });
    assert!(
        serving,
        "the app should serve within 2 s of the new server's API being up (waited {:?})",
        up.elapsed()
    );
    assert_eq!(
        s.pids("survivor"),
        before,
        "the new server should re-adopt the same replicas"
    );
    // No duplicates appear later either.
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        let ps = s.ps("survivor");
        assert_eq!(ps.len(), 2, "exactly the desired count: {ps:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ps = s.wait_ready("survivor", 2, Duration::from_secs(5));
    assert!(ps.iter().all(|r| r["restarts"] == 0), "{ps:#?}");
    assert_all_serve(&s, "survivor.localhost", 6);
    // Still manageable after the re-adoption.
    s.wharf(&["scale", "survivor", "web=1"])
        .ok("scale after re-adoption");
    s.wait_ready("survivor", 1, Duration::from_secs(15));
}

#[test]
fn replica_killed_while_server_is_down_is_restarted() {
    let mut s = Server::start();
    let app = TestApp::new("lazarus").replicas(2).write();
    s.deploy(app.path()).ok("deploy");
    let ps = s.wait_ready("lazarus", 2, Duration::from_secs(5));
    let victim = ps[0].clone();
    let survivor = ps[1].clone();
    let victim_all: Vec<u32> = std::iter::once(pid_of(&victim))
        .chain(descendants(pid_of(&victim)))
        .collect();

    s.kill9();
    for &p in &victim_all {
        kill9(p);
    }
    assert!(wait_until(Duration::from_secs(5), || victim_all
        .iter()
        .all(|&p| is_gone(p))));

    s.restart_same_data_dir();
    let mut now = Vec::new();
    let healed = wait_until(Duration::from_secs(15), || {
        now = s.ps("lazarus");
        now.len() == 2
            && now.iter().all(|r| r["state"] == "ready")
            && now
                .iter()
                .any(|r| r["id"] == victim["id"] && r["pid"] != victim["pid"])
    });
    assert!(
        healed,
        "the replica killed while the server was down should be restarted: {now:#?}"
    );
    let kept = now.iter().find(|r| r["id"] == survivor["id"]);
    assert_eq!(
        kept.map(|r| r["pid"].clone()),
        Some(survivor["pid"].clone()),
        "the live replica should be re-adopted, not restarted: {now:#?}"
    );
    assert_all_serve(&s, "lazarus.localhost", 6);
}

#[test]
fn app_orphaned_by_an_init_killed_while_the_server_was_down_is_cleaned_up() {
    let mut s = Server::start();
    let app = TestApp::new("orphan").write();
    s.deploy(app.path()).ok("deploy");
    let ps = s.wait_ready("orphan", 1, Duration::from_secs(5));
    let init = pid_of(&ps[0]);
    let app_pids = descendants(init);
    assert!(!app_pids.is_empty(), "the replica should run the app");

    s.kill9();
    // Only the init dies; the app it ran keeps running, orphaned.
    kill9(init);
    assert!(wait_until(Duration::from_secs(5), || is_gone(init)));

    s.restart_same_data_dir();
    let now = s.wait_ready("orphan", 1, Duration::from_secs(15));
    assert_ne!(pid_of(&now[0]), init, "a new replica should be started");
    assert!(
        wait_until(Duration::from_secs(5), || app_pids
            .iter()
            .all(|&p| is_gone(p))),
        "the app of the dead init should not survive it: {:?} still running",
        app_pids
            .iter()
            .filter(|&&p| process_alive(p))
            .collect::<Vec<_>>()
    );
    assert_all_serve(&s, "orphan.localhost", 3);
}
