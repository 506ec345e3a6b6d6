//! A server that is not root says so at start and never isolates silently less than
//! asked: `auto` runs plain processes and says so, `sandbox` refuses to start. As root,
//! the test drops to uid 65534 with `setpriv`; otherwise it runs as the current user.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wharf_e2e::{bins, descendants, kill9, wait_until};

const NOBODY: u32 = 65_534;

/// `wharf ARGS` as an unprivileged user.
fn unprivileged(args: &[&str]) -> Command {
    let root = nix::unistd::geteuid().is_root();
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .arg(&bins().wharf);
        c
    } else {
        Command::new(&bins().wharf)
    };
    cmd.args(args)
        .env_remove("WHARF_ISOLATION")
        .env_remove("WHARF_DATA_DIR")
        .env("HOME", "/tmp");
    cmd
}

/// A temp dir the unprivileged user owns.
fn owned_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    dir
}

/// Kills the server and everything it started when the test ends, however it ends.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            for p in descendants(c.id()) {
                kill9(p);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn server(data: &Path, isolation: &str, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    unprivileged(&["--data-dir", data.to_str().unwrap(), "server"])
        .args(["--listen", "127.0.0.1:0", "--isolation", isolation])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start wharf server")
}

#[test]
fn an_unprivileged_server_says_replicas_run_as_plain_processes() {
    let tmp = owned_dir();
    let data = tmp.path().join("data");
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut guard = Guard(Some(server(&data, "auto", log.path())));
    let up = wait_until(Duration::from_secs(15), || {
        data.join("server.json").exists()
    });
    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(up, "the server did not start:\n{text}");
    assert!(
        text.contains("not running as root: replicas run as plain processes, without isolation or resource limits"),
        "{text}"
    );
    let apps = unprivileged(&["--data-dir", data.to_str().unwrap(), "apps"])
        .output()
        .unwrap();
    assert!(apps.status.success(), "{apps:?}");
    let child = guard.0.as_mut().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(10), || matches!(
        child.try_wait(),
        Ok(Some(_))
    )));
}

#[test]
fn an_unprivileged_server_refuses_to_promise_a_sandbox() {
    let tmp = owned_dir();
    let data = tmp.path().join("data");
    let out = unprivileged(&["--data-dir", data.to_str().unwrap(), "server"])
        .args(["--listen", "127.0.0.1:0", "--isolation", "sandbox"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("needs root") && stderr.contains("--isolation none"),
        "{stderr}"
    );
}
