//! Secrets: encrypted at rest, delivered only to starting replicas, never printed or
//! written in plaintext; master-key rotation; tamper detection; zero-downtime rollout
//! of a secret change. Tokens and roles on the TCP API, and the audit log.

use std::path::Path;
use std::time::Duration;
use wharf_e2e::{bins, http_get, wait_until, Load, Server, TestApp};

/// A value no file could hold by chance.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{nanos:x}-{}", std::process::id())
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                if let Ok(bytes) = std::fs::read(&p) {
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        hits.push(p.display().to_string());
                    }
                }
            }
        }
    }
    hits
}

#[track_caller]
fn assert_nowhere(s: &Server, secrets: &[&str]) {
    for v in secrets {
        let hits = files_containing(s.data_dir(), v.as_bytes());
        assert!(hits.is_empty(), "plaintext {v:?} found in {hits:?}");
        let log = s.log_text();
        assert!(
            !log.windows(v.len()).any(|w| w == v.as_bytes()),
            "plaintext {v:?} in the server log"
        );
    }
}

#[track_caller]
fn assert_env(s: &Server, host: &str, name: &str, value: &str) {
    let ok = wait_until(Duration::from_secs(10), || {
        s.try_get(host, &format!("/env/{name}"))
            .is_ok_and(|r| r.status == 200 && r.body == value)
    });
    assert!(
        ok,
        "{host} /env/{name} is not the secret's value\n{}",
        s.log_tail(40)
    );
}

#[test]
fn secrets_are_sealed_delivered_rotated_and_never_leak() {
    let s = Server::start();
    let app = TestApp::new("vault").replicas(2).write();
    let host = app.host();
    s.deploy(app.path()).ok("deploy");

    let db = unique("db-pass");
    let api = unique("api-key");
    let piped = unique("piped");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{api}\n")).unwrap();
    let from_file = format!("API_KEY=@{}", file.path().display());
    let db_pair = format!("DB_PASSWORD={db}");
    let out = s.wharf_with(
        &["secrets", "set", "vault", &db_pair, &from_file, "PIPED=-"],
        &[],
        Some(&format!("{piped}\n")),
    );
    out.ok("secrets set");
    for v in [&db, &api, &piped] {
        assert!(
            !out.all().contains(v.as_str()),
            "secrets set printed a value"
        );
    }
    assert_env(&s, &host, "DB_PASSWORD", &db);
    assert_env(&s, &host, "API_KEY", &api);
    assert_env(&s, &host, "PIPED", &piped);

    let list = s.wharf(&["secrets", "vault"]);
    list.ok("secrets");
    assert!(
        list.stdout.contains("DB_PASSWORD") && list.stdout.contains("live"),
        "{}",
        list.stdout
    );
    let json = s.wharf(&["secrets", "vault", "--json"]);
    json.ok("secrets --json");
    let names: Vec<String> = json
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["API_KEY", "DB_PASSWORD", "PIPED"]);
    for cmd in [
        vec!["secrets", "vault"],
        vec!["secrets", "vault", "--json"],
        vec!["config", "vault"],
        vec!["ps", "vault", "--json"],
        vec!["releases", "vault", "--json"],
        vec!["status", "vault", "--json"],
        vec!["audit", "--json"],
        vec!["logs", "vault"],
    ] {
        let out = s.wharf(&cmd);
        for v in [&db, &api, &piped] {
            assert!(
                !out.all().contains(v.as_str()),
                "`wharf {}` shows a secret value",
                cmd.join(" ")
            );
        }
    }

    // Master-key rotation: every secret stays readable; new replicas decrypt under the new key.
    let before = std::fs::read_to_string(s.data_dir().join("keys/master.key")).unwrap();
    s.wharf(&["secrets", "rotate-master-key"]).ok("rotate");
    let after = std::fs::read_to_string(s.data_dir().join("keys/master.key")).unwrap();
    assert_ne!(before, after, "a new master key");
    let old_key = before.lines().find(|l| !l.starts_with('#')).unwrap();
    assert!(!after.contains(old_key), "the old master key is dropped");
    s.wharf(&["config", "set", "vault", "AFTER_ROTATION=1"])
        .ok("config set after rotation");
    assert_env(&s, &host, "DB_PASSWORD", &db);
    assert_env(&s, &host, "AFTER_ROTATION", "1");
    s.deploy(app.path()).ok("redeploy");
    assert_env(&s, &host, "API_KEY", &api);
    assert_env(&s, &host, "PIPED", &piped);

    // Unset removes it from the next release.
    s.wharf(&["secrets", "unset", "vault", "PIPED"]).ok("unset");
    assert!(wait_until(Duration::from_secs(10), || s
        .get(&host, "/env/PIPED")
        .status
        == 404));

    // The audit log has the changes and the reads, with no value.
    let audit = s.wharf(&["audit", "--app", "vault"]);
    audit.ok("audit");
    assert!(
        audit.stdout.contains("POST /v1/apps/vault/secrets"),
        "{}",
        audit.stdout
    );
    assert!(audit.stdout.contains("secrets read"), "{}", audit.stdout);

    // The data dir and the server log never held a plaintext, before or after a restart.
    assert_nowhere(&s, &[&db, &api, &piped]);
    let mut s = s;
    s.restart_same_data_dir();
    assert_env(&s, &host, "DB_PASSWORD", &db);
    assert_nowhere(&s, &[&db, &api, &piped]);
}

#[test]
fn tampered_ciphertext_is_detected_reported_and_never_used() {
    let mut s = Server::start();
    let app = TestApp::new("tamper").replicas(1).write();
    let host = app.host();
    s.deploy(app.path()).ok("deploy");
    let value = unique("orig");
    s.wharf(&["secrets", "set", "tamper", &format!("SIGNING_KEY={value}")])
        .ok("set");
    assert_env(&s, &host, "SIGNING_KEY", &value);

    s.stop();
    {
        use wharf_core::ports::Store;
        let store = wharf_store::RedbStore::open(&s.data_dir().join("wharf.redb")).unwrap();
        let name = wharf_types::AppName::new("tamper").unwrap();
        let mut sealed = store.secrets(&name).unwrap();
        assert_eq!(sealed.len(), 1);
        let c = &mut sealed[0].ciphertext;
        let last = c.pop().unwrap();
        c.push(if last == '0' { '1' } else { '0' });
        store.put_secrets(&sealed).unwrap();
    }
    s.restart_same_data_dir();
    // Running replicas keep what they got at start; a new release must not start.
    assert_env(&s, &host, "SIGNING_KEY", &value);
    let out = s.wharf(&["config", "set", "tamper", "X=1"]);
    assert_eq!(
        out.code,
        1,
        "a release with a tampered secret must fail:\n{}",
        out.all()
    );
    assert!(
        out.all().contains("SIGNING_KEY") && out.all().contains("altered"),
        "{}",
        out.all()
    );
    assert!(
        s.log_tail(200).contains("SIGNING_KEY"),
        "the server log names the secret"
    );
    assert_env(&s, &host, "SIGNING_KEY", &value);
    assert_eq!(
        s.get(&host, "/env/X").status,
        404,
        "the old release keeps serving"
    );
    assert_nowhere(&s, &[&value]);
}

#[test]
fn secret_change_rolls_out_without_failed_requests_and_restarts_only_that_app() {
    let s = Server::start();
    let busy = TestApp::new("busy").replicas(2).write();
    let calm = TestApp::new("calm").replicas(2).write();
    s.deploy(busy.path()).ok("deploy busy");
    s.deploy(calm.path()).ok("deploy calm");
    let calm_pids = s.pids("calm");
    let busy_pids = s.pids("busy");

    let load = Load::start(s.router(), &busy.host(), 2);
    std::thread::sleep(Duration::from_millis(300));
    let v = unique("rolled");
    s.wharf(&["secrets", "set", "busy", &format!("ROLLED={v}")])
        .ok("set under load");
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 20, "the load ran ({ok} requests)");
    assert_env(&s, &busy.host(), "ROLLED", &v);
    assert_eq!(s.pids("calm"), calm_pids, "another app was restarted");
    let now = s.pids("busy");
    assert!(
        now.iter().all(|p| !busy_pids.contains(p)),
        "busy's replicas were replaced"
    );

    // --stage records without a release; the next release picks it up.
    let releases = s.releases("busy").len();
    let staged = unique("staged");
    s.wharf(&[
        "secrets",
        "set",
        "busy",
        &format!("LATER={staged}"),
        "--stage",
    ])
    .ok("stage");
    assert_eq!(
        s.releases("busy").len(),
        releases,
        "staging makes no release"
    );
    assert_eq!(s.get(&busy.host(), "/env/LATER").status, 404);
    let list = s.wharf(&["secrets", "busy"]);
    assert!(
        list.stdout.contains("LATER") && list.stdout.contains("staged"),
        "{}",
        list.stdout
    );
    s.wharf(&["config", "set", "busy", "NEXT=1"])
        .ok("next release");
    assert_env(&s, &busy.host(), "LATER", &staged);
    assert_nowhere(&s, &[&v, &staged]);
}

fn api_get(addr: &str, path: &str, token: Option<&str>) -> u16 {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http_get(addr, "wharf", path, &headers)
        .expect("api answers")
        .status
}

#[test]
fn tcp_api_needs_tokens_and_enforces_roles_and_apps() {
    let s = Server::start_with(&["--api", "127.0.0.1:0"]);
    let api = s.api().expect("server.json names the TCP API");
    let a = TestApp::new("alpha").replicas(1).write();
    let b = TestApp::new("beta").replicas(1).write();
    s.deploy(a.path()).ok("deploy alpha");
    s.deploy(b.path()).ok("deploy beta");

    let token = |args: &[&str]| {
        let out = s.wharf(args);
        out.ok("tokens create");
        out.stdout.trim().to_string()
    };
    let viewer = token(&["tokens", "create", "--role", "viewer"]);
    let deployer = token(&["tokens", "create", "--role", "deployer", "--app", "alpha"]);
    let admin = token(&["tokens", "create", "--role", "admin"]);

    assert_eq!(api_get(&api, "/healthz", None), 200);
    assert_eq!(api_get(&api, "/v1/apps", None), 401);
    assert_eq!(api_get(&api, "/v1/apps", Some("wharf_not-a-token")), 401);
    assert_eq!(api_get(&api, "/v1/apps", Some(&viewer)), 200);
    assert_eq!(api_get(&api, "/v1/apps/beta", Some(&deployer)), 403);
    assert_eq!(api_get(&api, "/v1/tokens", Some(&deployer)), 403);
    assert_eq!(api_get(&api, "/v1/tokens", Some(&admin)), 200);

    let remote = |t: &str, args: &[&str]| {
        s.wharf_with(
            &[&["--server", &api], args].concat(),
            &[("WHARF_TOKEN", t)],
            None,
        )
    };
    remote(&viewer, &["apps"]).ok("viewer reads");
    let out = remote(&viewer, &["deploy", a.arg()]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("needs deployer"),
        "viewer deploy -> 403: {}",
        out.all()
    );
    let out = remote(&viewer, &["scale", "alpha", "web=1"]);
    assert!(
        out.code != 0 && out.stderr.contains("needs deployer"),
        "{}",
        out.all()
    );

    remote(&deployer, &["scale", "alpha", "web=1"]).ok("deployer scales its app");
    remote(&deployer, &["secrets", "set", "alpha", "K=v1"]).ok("deployer sets secrets of its app");
    for args in [
        vec!["scale", "beta", "web=1"],
        vec!["secrets", "set", "beta", "K=v"],
        vec!["config", "set", "beta", "K=v"],
        vec!["deploy", b.arg()],
        vec!["destroy", "alpha", "--yes"],
    ] {
        let out = remote(&deployer, &args);
        assert_ne!(out.code, 0, "deployer of alpha: {args:?} must be refused");
        assert!(
            out.stderr.contains("limited to app alpha") || out.stderr.contains("needs admin"),
            "{args:?}: {}",
            out.all()
        );
    }
    assert_eq!(s.ps("beta").len(), 1, "beta untouched");
    let seen = remote(&deployer, &["apps", "--json"]);
    seen.ok("scoped apps");
    let names: Vec<_> = seen
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["alpha"], "a scoped token sees its app only");
    let ps = remote(&deployer, &["ps", "--json"]);
    assert!(
        ps.json()
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["app"] == "alpha"),
        "{}",
        ps.stdout
    );
    remote(&admin, &["ps", "beta"]).ok("admin reads everything");

    // Revoked -> 401.
    let list = s.wharf(&["tokens", "list", "--json"]);
    let id = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "viewer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.wharf(&["tokens", "revoke", &id]).ok("revoke");
    assert_eq!(api_get(&api, "/v1/apps", Some(&viewer)), 401);
    let out = remote(&viewer, &["apps"]);
    assert!(
        out.code != 0 && out.stderr.contains("revoked"),
        "{}",
        out.all()
    );

    // Tokens are stored hashed; the audit log has who and the outcome.
    for t in [&viewer, &deployer, &admin] {
        assert!(
            files_containing(s.data_dir(), t.as_bytes()).is_empty(),
            "a token in plaintext"
        );
    }
    s.wharf(&["audit", "--since", "soon"])
        .expect_code(2, "bad --since");
    let recent = s.wharf(&["audit", "--since", "10m", "--app", "beta", "--json"]);
    assert!(
        recent
            .json()
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["app"] == "beta"),
        "{}",
        recent.stdout
    );
    let audit = s.wharf(&["audit", "--json"]);
    let entries = audit.json();
    let entries = entries.as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["outcome"] == "denied (403)" && e["action"] == "POST /v1/apps/beta/scale"),
        "{entries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["who"] == "local" && e["action"] == "POST /v1/tokens"),
        "{entries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["who"].as_str().is_some_and(|w| w.starts_with("tok-"))
                && e["outcome"] == "ok"),
        "{entries:?}"
    );
}

#[test]
fn tcp_api_without_tls_refuses_non_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&bins().wharf)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
}

#[test]
fn rotation_rolls_out_checked_values_and_a_failed_one_keeps_the_old_value() {
    let s = Server::start();
    let rotor = TestApp::new("rotor")
        .replicas(1)
        .extra("[secrets.rotate]\nTOKEN = { every = \"3s\", command = 'echo rot-$(date +%s%N)', check = 'test \"${TOKEN#rot-}\" != \"$TOKEN\"' }\n")
        .write();
    s.deploy(rotor.path()).ok("deploy rotor");
    let value = |s: &Server| {
        s.try_get(&rotor.host(), "/env/TOKEN")
            .ok()
            .filter(|r| r.status == 200 && r.body.starts_with("rot-"))
            .map(|r| r.body)
    };
    let first = wharf_e2e::wait_for(Duration::from_secs(30), || value(&s))
        .unwrap_or_else(|| panic!("no rotated value\n{}", s.log_tail(60)));
    let second = wharf_e2e::wait_for(Duration::from_secs(30), || {
        value(&s).filter(|v| *v != first)
    })
    .unwrap_or_else(|| panic!("the value did not rotate again\n{}", s.log_tail(60)));

    // Set before the first deploy; the check refuses every new value.
    let original = unique("orig");
    s.wharf(&["secrets", "set", "stuck", &format!("KEY={original}")])
        .ok("set before deploy");
    let stuck = TestApp::new("stuck")
        .replicas(1)
        .extra("[secrets.rotate]\nKEY = { every = \"1s\", command = 'echo replacement', check = 'false' }\n")
        .write();
    s.deploy(stuck.path()).ok("deploy stuck");
    assert_env(&s, &stuck.host(), "KEY", &original);
    let failed = wait_until(Duration::from_secs(20), || {
        s.wharf_quiet(&["audit", "--app", "stuck", "--json"])
            .json()
            .as_array()
            .is_some_and(|a| {
                a.iter().any(|e| {
                    e["action"] == "secrets rotate KEY"
                        && e["outcome"]
                            .as_str()
                            .is_some_and(|o| o.starts_with("failed"))
                })
            })
    });
    assert!(failed, "the failed rotation is audited\n{}", s.log_tail(40));
    assert_env(&s, &stuck.host(), "KEY", &original);
    assert_eq!(
        s.releases("stuck").len(),
        1,
        "a failed rotation makes no release"
    );
    assert!(s.log_tail(200).contains("rotation of secret KEY failed"));
    assert_nowhere(&s, &[&first, &second, &original]);
}

#[test]
fn a_rotated_value_that_fails_its_rollout_is_not_kept() {
    let s = Server::start();
    let app = TestApp::new("rotcrash")
        .replicas(1)
        .deploy_timeout("10s")
        .extra(
            "[secrets.rotate]\nTESTAPP_CRASH_ON_START = { every = \"1h\", command = 'echo 1' }\n",
        )
        .write();
    s.deploy(app.path()).ok("deploy");
    let failed = wait_until(Duration::from_secs(40), || {
        s.wharf_quiet(&["audit", "--app", "rotcrash", "--json"])
            .json()
            .as_array()
            .is_some_and(|a| {
                a.iter().any(|e| {
                    e["action"] == "secrets rotate TESTAPP_CRASH_ON_START"
                        && e["outcome"]
                            .as_str()
                            .is_some_and(|o| o.starts_with("failed"))
                })
            })
    });
    assert!(failed, "the failed rollout is audited\n{}", s.log_tail(60));
    let r = s.get(&app.host(), "/");
    assert!(
        r.status == 200 && r.body.contains("release=1"),
        "v1 keeps serving: {r:?}"
    );
    let list = s.wharf(&["secrets", "rotcrash", "--json"]);
    assert_eq!(
        list.json(),
        serde_json::json!([]),
        "the bad value is not current"
    );
}

#[test]
fn tcp_api_over_tls_on_any_address_with_the_servers_ca() {
    use std::os::unix::fs::PermissionsExt;
    let s = Server::start_with(&["--api", "0.0.0.0:0", "--api-tls"]);
    let port = s
        .api()
        .expect("api address")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let addr = format!("127.0.0.1:{port}");
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.data_dir().join("server.json")).unwrap()).unwrap();
    assert_eq!(info["api_tls"], true);
    let ca = info["api_ca"]
        .as_str()
        .expect("server.json names the CA")
        .to_string();
    let key = s.data_dir().join("tls/api-key.pem");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the TLS key is private");

    let token = s.wharf(&["tokens", "create", "--role", "viewer"]);
    token.ok("token");
    let token = token.stdout.trim().to_string();
    let url = format!("https://{addr}");
    let out = s.wharf_with(
        &["--server", &url, "apps"],
        &[("WHARF_TOKEN", &token), ("WHARF_CA_CERT", &ca)],
        None,
    );
    out.ok("apps over TLS");
    let out = s.wharf_with(&["--server", &url, "apps"], &[("WHARF_CA_CERT", &ca)], None);
    assert!(
        out.code != 0 && out.stderr.contains("token"),
        "TLS does not replace the token: {}",
        out.all()
    );
    let out = s.wharf_with(
        &["--server", &url, "apps"],
        &[("WHARF_TOKEN", &token)],
        None,
    );
    assert!(
        out.code == 2 && out.stderr.contains("WHARF_CA_CERT"),
        "{}",
        out.all()
    );
    // A certificate the client does not trust is refused.
    let out = s.wharf_with(
        &["--server", &url, "apps"],
        &[
            ("WHARF_TOKEN", &token),
            (
                "WHARF_CA_CERT",
                s.data_dir().join("tls/api-cert.pem").to_str().unwrap(),
            ),
        ],
        None,
    );
    out.ok("the chain file holds the CA too");
    let other = tempfile::NamedTempFile::new().unwrap();
    let leaf_only: String = std::fs::read_to_string(s.data_dir().join("tls/api-cert.pem"))
        .unwrap()
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap()
        .to_string();
    std::fs::write(other.path(), leaf_only).unwrap();
    let out = s.wharf_with(
        &["--server", &url, "apps"],
        &[
            ("WHARF_TOKEN", &token),
            ("WHARF_CA_CERT", other.path().to_str().unwrap()),
        ],
        None,
    );
    assert!(
        out.code != 0 && out.stderr.contains("TLS"),
        "an untrusted certificate is refused: {}",
        out.all()
    );
    assert!(
        http_get(&addr, "wharf", "/healthz", &[]).map_or(true, |r| r.status != 200),
        "no plain HTTP on the TLS port"
    );
}

/// Secrets as files need the sandbox's tmpfs: with plain processes the replica does not
/// start, and says why.
#[test]
fn secrets_as_files_without_the_sandbox_say_what_is_missing() {
    let s = Server::start_with(&["--isolation", "none"]);
    let app = TestApp::new("nofiles")
        .extra("[secrets]\nas = \"files\"\n")
        .write();
    s.wharf(&["secrets", "set", "nofiles", "K=v"]).ok("stage");
    let out = s.deploy(app.path());
    out.expect_code(1, "deploy of files-delivered secrets without a sandbox");
    assert!(
        out.stderr.contains("tmpfs") && out.stderr.contains("--isolation"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_one_off_gets_config_and_secrets_and_passes_on_its_exit_code() {
    let s = Server::start();
    let app = TestApp::new("chore").env("GREETING", "hello").write();
    let token = unique("oneoff");
    s.wharf(&["secrets", "set", "chore", &format!("TOKEN={token}")])
        .ok("set before deploy");
    s.deploy(app.path()).ok("deploy chore");
    let out = s.wharf(&[
        "run",
        "chore",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING $WHARF_APP $WHARF_PROCESS token=$TOKEN\"; echo oops >&2; exit 7",
    ]);
    out.expect_code(7, "the one-off's own exit code");
    assert!(
        out.stdout
            .contains(&format!("hello chore run token={token}")),
        "{}",
        out.all()
    );
    assert!(out.stderr.contains("oops"), "{}", out.all());
    // Its run directory (and, sandboxed, its cgroup) is gone once it ended.
    let left: Vec<_> = std::fs::read_dir(s.data_dir().join("oneoff"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "one-off leftovers: {left:?}");
    s.wharf(&["run", "chore", "--", "true"]).ok("exit 0");
    s.wharf(&["run", "chore"])
        .expect_code(2, "a command is required");
    s.wharf(&["run", "nobody", "--", "true"])
        .expect_code(2, "unknown app");
    assert_nowhere(&s, &[&token]);
}

#[test]
fn exec_probes_run_inside_the_replica_with_its_environment_and_secrets() {
    let s = Server::start();
    let token = unique("probe");
    s.wharf(&["secrets", "set", "probed", &format!("TOKEN={token}")])
        .ok("set before deploy");
    // The startup check passes only with the secret in the probe's environment; the
    // liveness check fails once after the app itself (not the test) leaves a file.
    let app = TestApp::new("probed")
        .extra(&format!(
            concat!(
                "[process.web.startup]\n",
                "exec = 'test ${{#TOKEN}} -eq {len} && case \"$TOKEN\" in probe-*) true;; *) false;; esac'\n",
                "interval = \"250ms\"\n",
                "[process.web.liveness]\n",
                "exec = 'if [ -f /tmp/probe-die-$WHARF_REPLICA ]; then rm -f /tmp/probe-die-$WHARF_REPLICA; exit 1; fi'\n",
                "interval = \"250ms\"\n",
                "failure_threshold = 1\n",
            ),
            len = token.len()
        ))
        .write();
    s.deploy(app.path()).ok("startup check with the secret");
    let before = s.wait_ready("probed", 1, Duration::from_secs(10));
    assert_eq!(before[0]["restarts"], 0, "{:#}", before[0]);
    let r = s.get(
        "probed.localhost",
        &format!(
            "/sh?c={}",
            wharf_e2e::isolation::encode("touch /tmp/probe-die-$WHARF_REPLICA")
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let restarted = wait_until(Duration::from_secs(20), || {
        s.ps("probed")
            .first()
            .is_some_and(|p| p["restarts"].as_u64() >= Some(1) && p["state"] == "ready")
    });
    assert!(
        restarted,
        "the liveness check did not see the replica's file\n{}",
        s.log_tail(40)
    );
}
