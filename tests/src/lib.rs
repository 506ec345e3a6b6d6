//! The end-to-end test harness for wharf.
//!
//! Every test starts its own `wharf server` on a temporary data directory with the router on
//! port 0 ([`Server::start`]), drives it through the real CLI ([`Server::wharf`]), talks HTTP
//! to the router with a tiny std-only client ([`Server::get`]), and deploys fixture apps
//! written into temporary directories ([`TestApp`]). Dropping a [`Server`] stops it and kills
//! every replica it left behind, even when the test panicked.

mod app;
mod http;
pub mod isolation;
mod load;
pub mod oci;
mod procs;
mod server;

pub use app::{app_with_file, AppDir, TestApp, TESTAPP_COMMAND};
pub use http::{http_get, http_post, Response};
pub use load::Load;
pub use procs::{descendants, host_pid, is_gone, kill9, process_alive};
pub use server::{Follower, Out, Server};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The binaries under test, built once per test executable.
#[derive(Debug)]
pub struct Bins {
    pub wharf: PathBuf,
    pub testapp: PathBuf,
    /// The workspace root (for `examples/`).
    pub workspace: PathBuf,
}

/// Builds `wharf` and `testapp` (once per test executable) and returns their paths.
///
/// `cargo test -p wharf-e2e` does not build other packages' binaries, so this runs
/// `cargo build -p wharf -p testapp` in the workspace: a no-op when they are fresh.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the e2e package lives inside the workspace")
            .to_path_buf();
        // target/<profile>/deps/<test-exe> -> target/<profile>
        let exe = std::env::current_exe().expect("current_exe");
        let target = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable lives in target/<profile>/deps")
            .to_path_buf();
        let cargo = std::env::var_os("CARGO")
            .or_else(|| option_env!("CARGO").map(Into::into))
            .unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "wharf", "-p", "testapp"])
            .current_dir(&workspace);
        // Build where this test executable was built, even under --target-dir.
        if let Some(target_dir) = target.parent() {
            cmd.arg("--target-dir").arg(target_dir);
        }
        if target.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("cannot run cargo build");
        assert!(
            out.status.success(),
            "cargo build -p wharf -p testapp failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bins = Bins {
            wharf: target.join("wharf"),
            testapp: target.join("testapp"),
            workspace,
        };
        for b in [&bins.wharf, &bins.testapp] {
            assert!(b.is_file(), "{} was not built", b.display());
        }
        bins
    })
}

/// The directory of an example app, `examples/NAME`.
pub fn example(name: &str) -> PathBuf {
    bins().workspace.join("examples").join(name)
}

/// Polls `cond` every 25 ms until it holds (true) or `deadline` passes (false).
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Polls `f` every 25 ms until it returns `Some` or `deadline` passes.
pub fn wait_for<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let mut found = None;
    wait_until(deadline, || {
        found = f();
        found.is_some()
    });
    found
}

/// The fields of a JSON value, for assertion messages.
pub fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}
