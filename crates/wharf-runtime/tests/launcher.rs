//! The launcher forks replica inits: an init it forks runs the app and records its exit
//! like a spawned one, in a session of its own; how a killed init ended is still known;
//! it outlives the launcher; and once the launcher is gone the runtime spawns inits
//! instead.
//!
//! No test harness (`harness = false`): the launcher must be forked while the process
//! has a single thread, which the harness's test threads would break.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};
use wharf_core::ports::{Handle, Launch, Liveness, Runtime, StopSignal};
use wharf_runtime::launcher::Launcher;
use wharf_runtime::{procfs, Layout, ProcessRuntime};
use wharf_types::{AppName, ProcessType};

fn launch(dir: &Path, id: &str, command: &str) -> Launch {
    Launch {
        app: AppName::new("forked".to_string()).expect("name"),
        process: ProcessType::new("web".to_string()).expect("process"),
        release: 1,
        id: id.into(),
        command: command.into(),
        dir: dir.to_path_buf(),
        env: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
        port: 1,
        network: wharf_types::Network::Host,
        cpu: None,
        cpu_limit: None,
        memory: None,
        writable_dir: false,
        secret_files: false,
        image: Vec::new(),
    }
}

fn wait_exit(rt: &ProcessRuntime, h: &Handle) -> wharf_core::Exit {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rt.poll(h) {
            Liveness::Exited(e) => return e,
            Liveness::Running if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Liveness::Running => panic!("{} did not exit within 10 s", h.id),
        }
    }
}

/// Session id of `pid`, from its stat line (the field after the process group).
fn session_of(pid: u32) -> Option<u32> {
    stat_field(pid, 3)
}

/// Field `n` after the command name of `/proc/PID/stat` (0 = state, 1 = parent, 3 = session).
fn stat_field(pid: u32, n: usize) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(n)?.parse().ok()
}

/// Kills the launcher (by its pid, which this test started) if a check fails midway.
struct KillOnDrop(u32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.0).unwrap_or(i32::MAX)),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn main() {
    let launcher = Launcher::start(&["WHARF_TEST_SECRET"]).expect("start the launcher");
    let launcher_pid = launcher.pid();
    let _guard = KillOnDrop(launcher_pid);
    let data = tempfile::tempdir().expect("temp dir");
    let app_dir = data.path().join("app");
    std::fs::create_dir_all(&app_dir).expect("app dir");
    // The init command is only the fallback: /bin/false proves which path ran.
    let rt = ProcessRuntime::new(Layout::new(data.path()), vec![OsString::from("/bin/false")])
        .with_launcher(launcher);

    // A forked init runs the app, records its exit code, and leads its own session.
    let h = rt
        .start(&launch(&app_dir, "web-1", "sh -c 'sleep 0.2; exit 3'"))
        .expect("start through the launcher");
    assert_eq!(
        procfs::stat(Path::new("/proc"), h.pid).map(|(_, t)| t),
        Some(h.start_time),
        "the handle names the forked init"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while session_of(h.pid) != Some(h.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        session_of(h.pid),
        Some(h.pid),
        "the init makes its own session"
    );
    assert_eq!(
        stat_field(h.pid, 1),
        Some(launcher_pid),
        "forked by the launcher"
    );
    let exit = wait_exit(&rt, &h);
    assert_eq!(exit.code, Some(3), "{}", exit.reason);
    rt.cleanup(&h);

    // An init killed before it recorded anything: the launcher saw how it ended.
    let h = rt
        .start(&launch(&app_dir, "web-k", "sleep 30"))
        .expect("start one to kill");
    rt.signal(&h, StopSignal::Kill).expect("kill");
    let exit = wait_exit(&rt, &h);
    assert!(
        exit.reason.contains("SIGKILL"),
        "the launcher's status says how: {}",
        exit.reason
    );
    rt.cleanup(&h);

    // An init outlives the launcher; the runtime still stops it.
    let h = rt
        .start(&launch(&app_dir, "web-2", "sleep 30"))
        .expect("start a long one");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(launcher_pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    );
    let gone = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{launcher_pid}")).exists()
        && procfs::stat(Path::new("/proc"), launcher_pid).is_some_and(|(s, _)| s != 'Z')
        && Instant::now() < gone
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        matches!(rt.poll(&h), Liveness::Running),
        "the init survives its launcher"
    );
    rt.signal(&h, StopSignal::Kill).expect("kill");
    let exit = wait_exit(&rt, &h);
    assert!(exit.reason.contains("gone"), "killed: {}", exit.reason);
    rt.cleanup(&h);

    // With the launcher gone, inits are spawned (here the fallback /bin/false, which
    // records nothing).
    let h = rt
        .start(&launch(&app_dir, "web-3", "true"))
        .expect("start by spawning");
    let exit = wait_exit(&rt, &h);
    assert!(
        exit.reason.contains("without recording an exit"),
        "spawned /bin/false: {}",
        exit.reason
    );
    rt.cleanup(&h);
    println!("launcher: 4 checks passed");
}
