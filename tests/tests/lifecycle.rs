//! Scaling, config changes, graceful stops and destroy.

use std::time::{Duration, Instant};
use wharf_e2e::{descendants, host_pid, is_gone, process_alive, wait_until, Server, TestApp};

/// Every process of a replica: its init (the pid `ps` shows) and what runs under it.
fn replica_processes(init_pids: &[u32]) -> Vec<u32> {
    let mut all = init_pids.to_vec();
    for &p in init_pids {
        all.extend(descendants(p));
    }
    all
}

/// `processes[*].desired` of APP as `apps --json` shows it.
fn desired(s: &Server, app: &str) -> Vec<(String, u64)> {
    let apps = s.apps();
    let a = apps
        .iter()
        .find(|a| a["name"] == app)
        .unwrap_or_else(|| panic!("{app} missing from apps --json: {apps:#?}"));
    a["processes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["process"].as_str().unwrap_or_default().to_string(),
                p["desired"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

#[test]
fn scale_up_down_and_refuse_unknown_process_type() {
    let s = Server::start();
    let app = TestApp::new("scaly").write();
    s.deploy(app.path()).ok("deploy");
    s.wait_ready("scaly", 1, Duration::from_secs(5));

    s.wharf(&["scale", "scaly", "web=3"]).ok("scale web=3");
    let ps = s.wait_ready("scaly", 3, Duration::from_secs(15));
    assert!(ps.iter().all(|r| r["release"] == 1), "{ps:#?}");
    assert_eq!(desired(&s, "scaly"), vec![("web".to_string(), 3)]);
    for _ in 0..6 {
        let r = s.get("scaly.localhost", "/");
        assert_eq!(r.status, 200, "{r:?}");
    }

    s.wharf(&["scale", "scaly", "web=1"]).ok("scale web=1");
    let ps = s.wait_ready("scaly", 1, Duration::from_secs(15));
    assert_eq!(desired(&s, "scaly"), vec![("web".to_string(), 1)]);
    let r = s.get("scaly.localhost", "/");
    assert_eq!(r.status, 200, "{r:?}");

    let out = s.wharf(&["scale", "scaly", "worker=2"]);
    out.expect_code(2, "scale of a process type the release does not have");
    assert!(
        out.stderr.contains("worker"),
        "the message should name the process type:\n{}",
        out.stderr
    );
    assert_eq!(desired(&s, "scaly"), vec![("web".to_string(), 1)]);
    let after = s.ps("scaly");
    assert_eq!(
        after.iter().map(|r| r["pid"].clone()).collect::<Vec<_>>(),
        ps.iter().map(|r| r["pid"].clone()).collect::<Vec<_>>(),
        "a refused scale must not touch the replicas"
    );

    let out = s.wharf(&["scale", "scaly", "web=many"]);
    out.expect_code(2, "scale with a count that is not a number");
    let out = s.wharf(&["scale", "nosuchapp", "web=1"]);
    out.expect_code(2, "scale of an unknown app");
    assert!(out.stderr.contains("nosuchapp"), "{}", out.stderr);
}

#[test]
fn config_set_and_unset_make_new_releases() {
    let s = Server::start();
    let app = TestApp::new("cfg").env("FROM_MANIFEST", "m").write();
    s.deploy(app.path()).ok("deploy");
    let host = "cfg.localhost";
    let r = s.get(host, "/env/GREETING");
    assert_eq!(r.status, 404, "GREETING is not set yet: {r:?}");

    s.wharf(&["config", "set", "cfg", "GREETING=hi", "OTHER=x=y"])
        .ok("config set");
    let rel = s.releases("cfg");
    assert_eq!(rel.len(), 2, "a config change is a new release: {rel:#?}");
    assert!(
        rel.iter()
            .any(|r| r["version"] == 2 && r["current"] == true),
        "{rel:#?}"
    );
    let r = s.get(host, "/env/GREETING");
    assert_eq!((r.status, r.body.as_str()), (200, "hi"));
    let r = s.get(host, "/env/OTHER");
    assert_eq!((r.status, r.body.as_str()), (200, "x=y"));
    let r = s.get(host, "/env/FROM_MANIFEST");
    assert_eq!((r.status, r.body.as_str()), (200, "m"));
    let ps = s.wait_ready("cfg", 1, Duration::from_secs(10));
    assert_eq!(ps[0]["release"], 2, "{ps:#?}");

    let out = s.wharf(&["config", "cfg"]);
    out.ok("config");
    assert!(out.stdout.contains("GREETING=hi"), "{}", out.stdout);
    let out = s.wharf(&["config", "--json", "cfg"]);
    out.ok("config --json");
    assert_eq!(out.json()["GREETING"], "hi", "{}", out.stdout);

    s.wharf(&["config", "unset", "cfg", "GREETING"])
        .ok("config unset");
    let r = s.get(host, "/env/GREETING");
    assert_eq!(r.status, 404, "GREETING was unset: {r:?}");
    let r = s.get(host, "/env/OTHER");
    assert_eq!((r.status, r.body.as_str()), (200, "x=y"));
    assert_eq!(s.releases("cfg").len(), 3);
    let out = s.wharf(&["config", "cfg"]);
    out.ok("config");
    assert!(!out.stdout.contains("GREETING"), "{}", out.stdout);

    let out = s.wharf(&["config", "set", "cfg", "NOEQUALS"]);
    out.expect_code(2, "config set without =");
    assert_eq!(
        s.releases("cfg").len(),
        3,
        "a refused change makes no release"
    );
}

#[test]
fn replica_ignoring_sigterm_is_killed_after_stop_timeout() {
    let s = Server::start();
    let app = TestApp::new("stubborn")
        .replicas(2)
        .env("TESTAPP_IGNORE_SIGTERM", "1")
        .stop_timeout("1s")
        .drain_timeout("1s")
        .write();
    s.deploy(app.path()).ok("deploy");
    let before = s.pids("stubborn");
    assert_eq!(before.len(), 2);
    let procs_before: Vec<(u32, Vec<u32>)> = before
        .iter()
        .map(|&p| (p, replica_processes(&[p])))
        .collect();
    assert!(
        procs_before.iter().all(|(_, all)| all.len() >= 2),
        "each replica should have its init and the app: {procs_before:?}"
    );

    let t0 = Instant::now();
    s.wharf(&["scale", "stubborn", "web=1"]).ok("scale web=1");
    let after = s.wait_ready("stubborn", 1, Duration::from_secs(15));
    let kept = after[0]["pid"].as_u64().unwrap() as u32;
    let (_, stopped) = procs_before
        .iter()
        .find(|(p, _)| *p != kept)
        .expect("one replica was stopped");
    assert!(
        wait_until(Duration::from_secs(10), || stopped
            .iter()
            .all(|&p| is_gone(p))),
        "the replica that ignores SIGTERM should be killed after stop_timeout; still alive: {:?}",
        stopped
            .iter()
            .filter(|&&p| process_alive(p))
            .collect::<Vec<_>>()
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "it ignores SIGTERM, so it cannot be gone before stop_timeout (1s): {took:?}"
    );
    // It did get the SIGTERM first.
    assert!(
        wait_until(Duration::from_secs(5), || s
            .wharf_quiet(&["logs", "stubborn"])
            .stdout
            .contains("ignoring SIGTERM")),
        "the app should have received SIGTERM before the kill"
    );
    let r = s.get("stubborn.localhost", "/");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn child_processes_do_not_survive_their_replica() {
    let s = Server::start();
    let app = TestApp::new("parent").write();
    s.deploy(app.path()).ok("deploy");
    let r = s.get("parent.localhost", "/spawn-child");
    assert_eq!(r.status, 200, "{r:?}");
    let reported: u32 = r.body.trim().parse().expect("/spawn-child answers a pid");
    let replica = s.pids("parent");
    let all = replica_processes(&replica);
    // A sandboxed app reports pids of its own PID namespace.
    let child = host_pid(reported, &all).unwrap_or(reported);
    assert!(process_alive(child), "the spawned child {child} should run");
    assert!(
        all.contains(&child),
        "{child} should run under the replica {all:?}"
    );

    s.wharf(&["scale", "parent", "web=0"]).ok("scale web=0");
    assert!(
        wait_until(Duration::from_secs(10), || all.iter().all(|&p| is_gone(p))),
        "every process of the stopped replica should be gone; alive: {:?}",
        all.iter()
            .filter(|&&p| process_alive(p))
            .collect::<Vec<_>>()
    );
}

#[test]
fn in_flight_request_completes_while_its_replica_is_replaced() {
    let s = Server::start();
    let v1 = TestApp::new("slowpoke").drain_timeout("10s").write();
    s.deploy(v1.path()).ok("deploy v1");
    let router = s.router().to_string();
    let slow = std::thread::spawn(move || {
        wharf_e2e::http_get(&router, "slowpoke.localhost", "/slow?ms=2500", &[])
    });
    // Let the request reach the v1 replica before the rollout starts.
    std::thread::sleep(Duration::from_millis(300));
    let v2 = TestApp::new("slowpoke")
        .drain_timeout("10s")
        .env("MARK", "two")
        .write();
    s.deploy(v2.path()).ok("deploy v2");
    let r = slow
        .join()
        .expect("request thread")
        .expect("the in-flight request should complete");
    assert_eq!((r.status, r.body.as_str()), (200, "slow 2500\n"));
    let r = s.get("slowpoke.localhost", "/env/MARK");
    assert_eq!((r.status, r.body.as_str()), (200, "two"));
}

#[test]
fn destroy_stops_everything_and_forgets_the_app() {
    let s = Server::start();
    let app = TestApp::new("doomed").replicas(2).write();
    s.deploy(app.path()).ok("deploy");
    let keep = TestApp::new("keeper").write();
    s.deploy(keep.path()).ok("deploy keeper");
    let pids = s.pids("doomed");
    assert_eq!(pids.len(), 2);
    let all = replica_processes(&pids);
    assert!(all.len() >= 4, "inits and apps: {all:?}");

    // Without --yes and nothing typed: refused, nothing changes.
    let out = s.wharf(&["destroy", "doomed"]);
    out.expect_code(2, "destroy without confirmation");
    assert_eq!(s.pids("doomed"), pids);

    s.wharf(&["destroy", "doomed", "--yes"]).ok("destroy --yes");
    let apps = s.apps();
    assert!(
        apps.iter().all(|a| a["name"] != "doomed"),
        "destroyed app still listed: {apps:#?}"
    );
    assert!(apps.iter().any(|a| a["name"] == "keeper"), "{apps:#?}");
    assert!(
        wait_until(Duration::from_secs(15), || all.iter().all(|&p| is_gone(p))),
        "replica processes left after destroy: {:?}",
        all.iter()
            .filter(|&&p| process_alive(p))
            .collect::<Vec<_>>()
    );
    let run_dir = s.data_dir().join("run").join("doomed");
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_dir(&run_dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)),
        "run dir not cleaned: {}",
        run_dir.display()
    );
    let r = s.get("doomed.localhost", "/");
    assert_eq!(r.status, 404, "a destroyed app is an unknown host: {r:?}");
    let r = s.get("keeper.localhost", "/");
    assert_eq!(r.status, 200, "other apps are untouched: {r:?}");

    s.wharf(&["destroy", "doomed", "--yes"])
        .expect_code(2, "destroy of an app that is gone");
    let out = s.wharf(&["destroy", "nosuchapp", "--yes"]);
    out.expect_code(2, "destroy of an unknown app");
    assert!(out.stderr.contains("nosuchapp"), "{}", out.stderr);

    // The name can be used again.
    s.deploy(app.path()).ok("deploy after destroy");
    let r = s.get("doomed.localhost", "/");
    assert_eq!(r.status, 200, "{r:?}");
}

/// A command without shell syntax starts without a shell (one process start fewer per
/// replica); a script without a `#!` line still runs (a shell takes it, as it would
/// have), and a program that is not there is named, with the shell's exit code 127.
#[test]
fn commands_start_directly_or_through_a_shell_as_they_need() {
    let s = Server::start();
    let app = wharf_e2e::app_with_file("direct", "Procfile", "web: ./no-shebang\n");
    let script = app.path().join("no-shebang");
    std::fs::write(&script, "exec ./testapp\n").expect("write the script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    s.deploy(app.path())
        .ok("deploy a web process whose command is a script without #!");
    s.wait_ready("direct", 1, Duration::from_secs(10));
    let r = s.get("direct.localhost", "/health");
    assert_eq!(r.status, 200, "{r:?}");

    let out = s.wharf(&["run", "direct", "--", "no-such-program", "--flag"]);
    out.expect_code(127, "a program that is not there");
    assert!(
        out.stderr.contains("no-such-program: command not found"),
        "{}",
        out.all()
    );
    let out = s.wharf(&["run", "direct", "--", "/bin/echo", "a b", "c"]);
    out.ok("a program with arguments, no shell");
    assert_eq!(out.stdout, "a b c\n", "{}", out.all());
}
