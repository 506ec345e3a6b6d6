//! `wharf logs`: history, JSON records, following, filters, and persistence.

use serde_json::Value;
use std::time::Duration;
use wharf_e2e::{wait_for, wait_until, Server, TestApp};

fn records(s: &Server, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["logs", "--json"];
    all.extend_from_slice(args);
    let out = s.wharf_quiet(&all);
    out.ok("logs --json");
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("logs --json line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// A fixture with a `web` testapp and a `worker` that prints one marker line and sleeps.
fn app_with_worker() -> TestApp {
    TestApp::new("chatty").extra(
        "\n[process.worker]\ncommand = \"sh -c 'echo worker-marker-line; exec sleep 1000'\"\nstop_timeout = \"1s\"\n",
    )
}

#[test]
fn logs_show_history_json_fields_and_survive_a_restart() {
    let mut s = Server::start();
    let app = app_with_worker().write();
    s.deploy(app.path()).ok("deploy");

    let has_startup = |s: &Server| {
        s.wharf_quiet(&["logs", "chatty"])
            .stdout
            .contains("testapp listening on 127.0.0.1:")
    };
    assert!(
        wait_until(Duration::from_secs(5), || has_startup(&s)),
        "logs should contain testapp's startup line:\n{}",
        s.wharf(&["logs", "chatty"]).stdout
    );

    let r = s.get("chatty.localhost", "/json-log?msg=hello-json");
    assert_eq!(r.status, 200);
    let rec = wait_for(Duration::from_secs(5), || {
        records(&s, &["chatty"])
            .into_iter()
            .find(|r| r["msg"] == "hello-json")
    })
    .unwrap_or_else(|| {
        panic!(
            "no record with msg hello-json:\n{}",
            s.wharf(&["logs", "--json", "chatty"]).stdout
        )
    });
    assert_eq!(rec["fields"]["level"], "info", "{rec:#}");
    assert_eq!(rec["app"], "chatty", "{rec:#}");
    assert_eq!(rec["process"], "web", "{rec:#}");
    assert_eq!(rec["release"], 1, "{rec:#}");
    assert_eq!(rec["stream"], "stdout", "{rec:#}");
    assert!(
        rec["replica"].as_str().is_some_and(|r| !r.is_empty()),
        "{rec:#}"
    );
    assert!(rec["ts"].as_str().is_some_and(|t| t.len() >= 20), "{rec:#}");

    // --process filters by process type.
    assert!(
        wait_until(Duration::from_secs(5), || records(
            &s,
            &["--process", "worker", "chatty"]
        )
        .iter()
        .any(|r| r["msg"] == "worker-marker-line")),
        "the worker's line should be in its logs"
    );
    let web = records(&s, &["--process", "web", "chatty"]);
    assert!(web.iter().any(|r| r["msg"] == "hello-json"), "{web:#?}");
    assert!(web.iter().all(|r| r["process"] == "web"), "{web:#?}");
    let worker = records(&s, &["--process", "worker", "chatty"]);
    assert!(
        worker.iter().all(|r| r["process"] == "worker"),
        "{worker:#?}"
    );

    // --since: everything of the last hour; nothing older than a moment ago.
    let recent = records(&s, &["--since", "1h", "chatty"]);
    assert!(
        recent.iter().any(|r| r["msg"] == "hello-json"),
        "{recent:#?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let marker = "/log?msg=after-the-pause";
    assert_eq!(s.get("chatty.localhost", marker).status, 200);
    let fresh = wait_for(Duration::from_secs(5), || {
        let v = records(&s, &["--since", "1s", "chatty"]);
        v.iter().any(|r| r["msg"] == "after-the-pause").then_some(v)
    })
    .expect("--since 1s should show the line just logged");
    assert!(
        fresh.iter().all(|r| r["msg"] != "hello-json"),
        "--since 1s should not show a line from 1.5 s ago: {fresh:#?}"
    );

    // -n limits the number of lines.
    let two = records(&s, &["-n", "2", "chatty"]);
    assert_eq!(two.len(), 2, "{two:#?}");

    // Logs are kept across a server restart.
    s.restart_same_data_dir();
    let after = records(&s, &["chatty"]);
    assert!(
        after.iter().any(|r| r["msg"] == "hello-json"),
        "logs should survive a server restart: {after:#?}"
    );
    assert!(has_startup(&s));

    let out = s.wharf(&["logs", "nosuchapp"]);
    out.expect_code(2, "logs of an unknown app");
}

#[test]
fn logs_follow_prints_new_lines() {
    let s = Server::start();
    let app = TestApp::new("followed").write();
    s.deploy(app.path()).ok("deploy");
    let mut f = s.spawn_wharf(&["logs", "-f", "followed"]);
    // Once the history is printed the stream is established.
    assert!(
        wait_until(Duration::from_secs(10), || f
            .stdout()
            .contains("testapp listening on")),
        "logs -f should first print the history; stdout: {:?} stderr: {:?}",
        f.stdout(),
        f.stderr()
    );
    assert!(!f.stdout().contains("followed-marker"));
    let r = s.get("followed.localhost", "/log?msg=followed-marker");
    assert_eq!(r.status, 200);
    assert!(
        wait_until(Duration::from_secs(10), || f
            .stdout()
            .contains("followed-marker")),
        "logs -f should print a line logged after it started: {:?}",
        f.stdout()
    );
    assert!(f.running(), "logs -f should keep running");

    // It also shows a new replica's lines (scale up) as they come.
    s.wharf(&["scale", "followed", "web=2"]).ok("scale");
    assert!(
        wait_until(Duration::from_secs(10), || f
            .stdout()
            .matches("testapp listening on")
            .count()
            >= 2),
        "logs -f should show the new replica's startup line: {:?}",
        f.stdout()
    );
    let out = f.kill();
    assert!(out.contains("followed-marker"));
}
