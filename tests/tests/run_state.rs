//! Where a sandboxing server keeps its replicas' run directories: on a tmpfs under
//! `/run/wharf/INSTANCE`, found again by a restarted server; run directories an earlier
//! server left in the data dir stay in use there.

use std::path::{Path, PathBuf};
use std::time::Duration;
use wharf_e2e::isolation::{instance_from_log, root_or_skip};
use wharf_e2e::{Server, TestApp};

const ROOT: &str = "/run/wharf";

fn instance(s: &Server) -> String {
    let log = String::from_utf8_lossy(&s.log_text()).into_owned();
    instance_from_log(&log).unwrap_or_else(|| panic!("no instance in the server log:\n{log}"))
}

fn replica_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn on_tmpfs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

#[test]
fn run_directories_live_in_memory_and_outlast_a_server_restart() {
    if !root_or_skip("run_directories_live_in_memory_and_outlast_a_server_restart") {
        return;
    }
    let mut s = Server::start_with(&["--isolation", "sandbox"]);
    let app = TestApp::new("inmem").write();
    s.deploy(app.path()).ok("deploy");
    let before = s.wait_ready("inmem", 1, Duration::from_secs(20));
    let runs = Path::new(ROOT).join(instance(&s)).join("run/inmem");
    let dirs = replica_dirs(&runs);
    assert_eq!(
        dirs.len(),
        1,
        "one replica, one run dir in {}",
        runs.display()
    );
    assert!(on_tmpfs(&dirs[0]), "{} is in memory", dirs[0].display());
    assert!(dirs[0].join("handle.json").is_file());
    assert!(
        !s.data_dir().join("run").exists(),
        "nothing of it in the data dir"
    );

    s.restart_same_data_dir();
    let after = s.wait_ready("inmem", 1, Duration::from_secs(20));
    assert_eq!(
        after[0]["pid"], before[0]["pid"],
        "the replica was found again, not started anew"
    );
    assert_eq!(s.get("inmem.localhost", "/").status, 200);

    // Destroyed: its run dir goes; a server that ends prunes what is left empty.
    s.wharf(&["destroy", "inmem", "--yes"]).ok("destroy");
    assert!(replica_dirs(&runs).is_empty(), "{:?}", replica_dirs(&runs));
    let state = Path::new(ROOT).join(instance(&s));
    s.stop();
    assert!(
        !state.exists(),
        "{} is gone with the server",
        state.display()
    );
}

#[test]
fn run_directories_an_earlier_server_left_in_the_data_dir_stay_in_use() {
    if !root_or_skip("run_directories_an_earlier_server_left_in_the_data_dir_stay_in_use") {
        return;
    }
    let mut s = Server::start_with(&["--isolation", "sandbox"]);
    s.stop();
    // What a server of an earlier version leaves for a running replica: a run dir in
    // the data dir (here an incomplete one, which discovery removes).
    let legacy = s.data_dir().join("run/old/web-1-v1");
    std::fs::create_dir_all(&legacy).unwrap();
    s.restart_same_data_dir();
    let log = String::from_utf8_lossy(&s.log_text()).into_owned();
    assert!(
        log.contains("replicas of an earlier server have run directories in"),
        "{log}"
    );
    let app = TestApp::new("legacy").write();
    s.deploy(app.path()).ok("deploy");
    s.wait_ready("legacy", 1, Duration::from_secs(20));
    assert_eq!(
        replica_dirs(&s.data_dir().join("run/legacy")).len(),
        1,
        "this server keeps its run dirs where the earlier one had them"
    );
}
