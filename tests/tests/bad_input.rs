//! Bad input: exit code 2, a message naming file, line and field, and nothing changed.

use std::time::Duration;
use wharf_e2e::{app_with_file, Server, TESTAPP_COMMAND};

/// Deploys a directory holding only `wharf.toml` = `manifest`; expects exit 2 with every
/// string of `expect` in stderr, and no app created.
#[track_caller]
fn assert_refused(s: &Server, manifest: &str, expect: &[&str]) {
    let dir = app_with_file("bad", "wharf.toml", manifest);
    let before = s.apps();
    let out = s.deploy(dir.path());
    out.expect_code(2, &format!("deploy of\n{manifest}"));
    for e in expect {
        assert!(
            out.stderr.contains(e),
            "the message should contain {e:?}:\n{}\nmanifest:\n{manifest}",
            out.stderr
        );
    }
    assert_eq!(s.apps(), before, "a refused deploy must change nothing");
}

fn testapp() -> String {
    TESTAPP_COMMAND.to_string()
}

#[test]
fn manifest_errors_name_file_line_and_field() {
    let s = Server::start();
    let t = testapp();
    assert_refused(
        &s,
        &format!("app = \"bad\"\n[process.web]\ncomand = \"{t}\"\n"),
        &["wharf.toml:3", "comand"],
    );
    assert_refused(
        &s,
        &format!("app = \"bad\"\n[process.web]\ncommand = \"{t}\"\nreplicas = \"three\"\n"),
        &["wharf.toml:4", "process.web.replicas"],
    );
    assert_refused(
        &s,
        &format!("app = \"bad\"\n[process.web]\ncommand = \"{t}\"\nstop_timeout = \"soon\"\n"),
        &["wharf.toml:4", "process.web.stop_timeout", "soon"],
    );
    assert_refused(
        &s,
        &format!(
            "app = \"bad\"\n[process.web]\ncommand = \"{t}\"\n\n[process.web.readiness]\nhttp = \"/health\"\ninterval = \"1 fortnightish\"\n"
        ),
        &["wharf.toml:7", "process.web.readiness.interval"],
    );
    assert_refused(
        &s,
        &format!("app = \"bad\"\n[process.web]\ncommand = \"{t}\"\nmemory = \"lots\"\n"),
        &["wharf.toml:4", "process.web.memory", "lots"],
    );
    assert_refused(
        &s,
        &format!("app = \"Bad_Name!\"\n[process.web]\ncommand = \"{t}\"\n"),
        &["wharf.toml:1", "app"],
    );
    assert_refused(
        &s,
        "app = \"bad\"\n[process.web]\nreplicas = 2\n",
        &["wharf.toml:2", "process.web", "command"],
    );
    assert_refused(
        &s,
        &format!(
            "app = \"bad\"\n[process.web]\ncommand = \"{t}\"\nport = 5000\n[process.worker]\ncommand = \"{t}\"\nport = 5000\n"
        ),
        &["wharf.toml:7", "port", "5000"],
    );
    assert_refused(&s, "app = \"bad\"\n[process.web\n", &["wharf.toml:2"]);
    assert_eq!(s.apps(), Vec::<serde_json::Value>::new());
}

#[test]
fn directory_without_manifest_or_procfile_is_refused() {
    let s = Server::start();
    let dir = app_with_file("empty", "README", "nothing to run here\n");
    let out = s.deploy(dir.path());
    out.expect_code(2, "deploy of a dir with neither wharf.toml nor Procfile");
    assert!(
        out.stderr.contains("wharf.toml") && out.stderr.contains("Procfile"),
        "the message should say what is missing:\n{}",
        out.stderr
    );
    let out = s.wharf(&["deploy", "/nonexistent/wharf-e2e-dir"]);
    out.expect_code(2, "deploy of a missing dir");
    assert!(
        out.stderr.contains("/nonexistent/wharf-e2e-dir"),
        "{}",
        out.stderr
    );
    assert!(s.apps().is_empty());
}

#[test]
fn bad_procfile_names_its_line() {
    let s = Server::start();
    let dir = app_with_file(
        "procbad",
        "Procfile",
        &format!("web: {}\nthis line has no colon\n", testapp()),
    );
    let out = s.deploy(dir.path());
    out.expect_code(2, "deploy of a broken Procfile");
    assert!(out.stderr.contains("Procfile:2"), "{}", out.stderr);
    assert!(s.apps().is_empty());
}

#[test]
fn bare_procfile_app_deploys() {
    let s = Server::start();
    let dir = app_with_file("procfile-app", "Procfile", &format!("web: {}\n", testapp()));
    s.deploy(dir.path()).ok("deploy of a bare Procfile app");
    let ps = s.wait_ready("procfile-app", 1, Duration::from_secs(10));
    assert_eq!(ps[0]["process"], "web");
    let r = s.get("procfile-app.localhost", "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.starts_with("Hello from testapp release=1 "), "{r:?}");
}

#[test]
fn bad_commands_and_unknown_things_exit_2() {
    let s = Server::start();
    let out = s.wharf(&["apps", "--no-such-flag"]);
    out.expect_code(2, "unknown flag");
    assert!(out.stderr.contains("--no-such-flag"), "{}", out.stderr);
    s.wharf(&["no-such-command"])
        .expect_code(2, "unknown command");

    let out = s.wharf(&["rollback", "ghost"]);
    out.expect_code(2, "rollback of an unknown app");
    assert!(out.stderr.contains("ghost"), "{}", out.stderr);
    s.wharf(&["rollback", "ghost", "vX"])
        .expect_code(2, "rollback to a malformed release");
    let out = s.wharf(&["status", "ghost"]);
    out.expect_code(2, "status of an unknown app");
    s.wharf(&["releases", "ghost"])
        .expect_code(2, "releases of an unknown app");
    s.wharf(&["scale", "ghost", "web=1"])
        .expect_code(2, "scale of an unknown app");
    s.wharf(&["config", "set", "ghost", "A=b"])
        .expect_code(2, "config set of an unknown app");
    s.wharf(&["ps", "Not_A_Name"])
        .expect_code(2, "an invalid app name");
    assert!(s.apps().is_empty(), "nothing was created");

    // With an app: rollback when there is nothing to roll back to.
    let dir = app_with_file("lonely", "Procfile", &format!("web: {}\n", testapp()));
    s.deploy(dir.path()).ok("deploy");
    let out = s.wharf(&["rollback", "lonely"]);
    out.expect_code(2, "rollback with no earlier release");
    s.wharf(&["scale", "lonely", "worker=2"])
        .expect_code(2, "scale of an unknown process type");
    let rel = s.releases("lonely");
    assert_eq!(rel.len(), 1, "{rel:#?}");
}

#[test]
fn an_image_without_the_sandbox_says_what_is_missing() {
    use wharf_e2e::oci::{write_layout, Entry};
    let s = Server::start_with(&["--isolation", "none"]);
    let app = tempfile::tempdir().unwrap();
    write_layout(
        &app.path().join("img"),
        &[vec![Entry::File {
            path: "etc/marker",
            data: b"x",
            mode: 0o644,
        }]],
        &[],
        "latest",
    );
    std::fs::write(
        app.path().join("wharf.toml"),
        "app = \"noimage\"\n[process.web]\ncommand = \"sleep 100\"\nimage = \"oci:img\"\n[process.web.deploy]\ntimeout = \"10s\"\n",
    )
    .unwrap();
    let out = s.deploy(app.path());
    out.expect_code(1, "an image needs the sandbox");
    assert!(
        out.stderr.contains("needs the sandbox") && out.stderr.contains("--isolation"),
        "{}",
        out.all()
    );
}
