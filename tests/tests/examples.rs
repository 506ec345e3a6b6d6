//! The example apps of `examples/` deploy and answer, builds included.

use std::time::Duration;
use wharf_e2e::{example, process_alive, Server};

#[test]
fn sample_app_runs_three_ready_replicas() {
    let s = Server::start();
    let dir = example("sample-app");
    let out = s.deploy(&dir);
    out.ok("deploy examples/sample-app");
    let url = format!("http://sample-app.localhost:{}", s.port());
    assert!(
        out.all().contains(&url),
        "deploy output should mention {url}:\n{}",
        out.all()
    );

    let r = s.get("sample-app.localhost", "/");
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!\n"));

    let ps = s.ps("sample-app");
    assert_eq!(ps.len(), 3, "ps --json: {ps:#?}");
    let mut ids = Vec::new();
    for r in &ps {
        let id = r["id"].as_str().expect("id is a string");
        ids.push(id.to_string());
        assert_eq!(r["process"], "web", "{r:#}");
        assert_eq!(r["release"], 1, "{r:#}");
        assert_eq!(r["state"], "ready", "{r:#}");
        assert_eq!(r["restarts"], 0, "{r:#}");
        let pid = r["pid"].as_u64().expect("pid is a number");
        assert!(
            process_alive(u32::try_from(pid).unwrap()),
            "pid {pid} is not alive"
        );
        let addr = r["address"].as_str().expect("address is a string");
        let port = addr
            .strip_prefix("127.0.0.1:")
            .and_then(|p| p.parse::<u16>().ok());
        assert!(
            port.is_some_and(|p| p > 0),
            "address {addr:?} is not 127.0.0.1:N"
        );
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "replica ids are not unique: {ps:#?}");

    // Every replica gets traffic-worthy: all of them answer through the router.
    for _ in 0..9 {
        let r = s.get("sample-app.localhost", "/");
        assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!\n"));
    }
}

#[test]
fn express_app_builds_with_npm_and_answers() {
    let dir = example("express-app");
    let had_node_modules = dir.join("node_modules").exists();
    let s = Server::start();
    let out = s.deploy(&dir);
    out.ok("deploy examples/express-app");
    // npm ci's summary line ("added 69 packages ... in 2s") is streamed as build output.
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("added") && l.contains("package")),
        "deploy output should show npm's output:\n{}",
        out.stdout
    );
    let r = s.get("express-app.localhost", "/");
    assert_eq!((r.status, r.body.as_str()), (200, "Hello from Express!\n"));
    s.wait_ready("express-app", 2, Duration::from_secs(10));
    if !had_node_modules {
        assert!(
            !dir.join("node_modules").exists(),
            "the build must run in a copy of the app dir, not in examples/express-app"
        );
    }
}

#[test]
fn python_app_builds_with_pip_and_answers() {
    let dir = example("python-app");
    let had_vendor = dir.join("vendor").exists();
    let s = Server::start();
    let out = s.deploy(&dir);
    out.ok("deploy examples/python-app");
    assert!(
        out.stdout.lines().any(|l| l.contains("six")),
        "deploy output should show pip's output:\n{}",
        out.stdout
    );
    let r = s.get("python-app.localhost", "/");
    assert_eq!((r.status, r.body.as_str()), (200, "Hello from Python!\n"));
    s.wait_ready("python-app", 2, Duration::from_secs(10));
    if !had_vendor {
        assert!(
            !dir.join("vendor").exists(),
            "the build must run in a copy of the app dir, not in examples/python-app"
        );
    }
}
