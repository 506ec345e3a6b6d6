//! Running a command inside a running replica, as `docker exec` does: `wharf init
//! --exec COMMAND RUN_DIR`. Exec probes use it, so a probe sees what the app sees.
//!
//! The command gets the app's own environment (read from `/proc/APP/environ`, so the
//! secrets it was started with are there too, and nothing is decrypted again) and, for
//! a sandboxed replica, its world: its cgroup, its PID, mount, IPC and UTS namespaces
//! (and its network namespace when it has its own)
//! (entered with `setns` from the namespaces of the replica's PID 1), working dir
//! `/app`, the app's uid without capabilities, `no_new_privs` and the seccomp filter.
//! A plain replica's command runs as a plain child in the release's directory.
//!
//! Invariants: this runs single-threaded (before any runtime starts), because a
//! process with threads cannot enter a mount namespace; the command dies with this
//! process (`PR_SET_PDEATHSIG`), so a probe timeout that kills this process ends it;
//! the exit code is the command's (128 + signal), 126 when it could not be started.

use crate::init::{InitFile, LaunchFile, INIT_FILE, LAUNCH_FILE};
use crate::sandbox::{caps, mounts, pid1, seccomp, SandboxSpec};
use crate::{procfs, shell};
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;
use std::ffi::CString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;

/// Exit code when the command could not be started at all.
pub const CANNOT_ENTER: i32 = 126;

/// Runs `command` in the replica of `run_dir`; returns the exit code for the process.
pub fn run(run_dir: &Path, command: &str) -> i32 {
    match enter(run_dir, command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wharf exec: {e}");
            CANNOT_ENTER
        }
    }
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("cannot parse {}: {e}", path.display()))
}

/// The oldest child of `pid`: the app (or the sandbox's PID 1), not an orphan adopted
/// later.
fn first_child(proc_root: &Path, pid: u32) -> Option<u32> {
    procfs::children(proc_root, pid)
        .into_iter()
        .min_by_key(|&c| procfs::stat(proc_root, c).map_or(u64::MAX, |(_, t)| t))
}

fn enter(run_dir: &Path, command: &str) -> Result<i32, String> {
    let launch: LaunchFile = read(&run_dir.join(LAUNCH_FILE))?;
    let init: InitFile = read(&run_dir.join(INIT_FILE))?;
    let proc_root = Path::new("/proc");
    if !procfs::is_same_live_process(proc_root, init.pid, init.start_time) {
        return Err("the replica is not running".into());
    }
    let not_running = || "the replica's app is not running".to_string();
    let top = first_child(proc_root, init.pid).ok_or_else(not_running)?;
    match &launch.sandbox {
        None => {
            let env = procfs::environ(proc_root, top).ok_or_else(not_running)?;
            let mut cmd = std::process::Command::new("/bin/sh");
            cmd.arg("-c")
                .arg(shell::line(command))
                .current_dir(&launch.dir)
                .env_clear()
                .envs(env);
            // SAFETY: only prctl(2) runs between fork and exec.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(|| {
                    pid1::die_with_parent();
                    Ok(())
                });
            }
            let status = cmd
                .status()
                .map_err(|e| format!("cannot run /bin/sh: {e}"))?;
            Ok(status.code().unwrap_or_else(|| {
                128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
            }))
        }
        Some(spec) => {
            let app = first_child(proc_root, top).ok_or_else(not_running)?;
            let env = procfs::environ(proc_root, app).ok_or_else(not_running)?;
            sandboxed(proc_root, top, spec, command, &env)
        }
    }
}

/// Joins the replica's cgroup and namespaces (those of its PID 1, `pid1`), then forks
/// the command into them.
fn sandboxed(
    proc_root: &Path,
    pid1: u32,
    spec: &SandboxSpec,
    command: &str,
    env: &[(String, String)],
) -> Result<i32, String> {
    let cstring = |s: String| CString::new(s).map_err(|_| "a NUL byte in the command".to_string());
    let argv = [
        cstring("/bin/sh".into())?,
        cstring("-c".into())?,
        cstring(shell::line(command))?,
    ];
    let envp: Vec<CString> = env
        .iter()
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect();
    let filters = seccomp::filters().map_err(|e| e.to_string())?;
    // Opened before any is entered: the mount namespace changes what /proc shows.
    let mut kinds = vec![
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("pid", CloneFlags::CLONE_NEWPID),
    ];
    if spec.net.is_some() {
        kinds.push(("net", CloneFlags::CLONE_NEWNET));
    }
    kinds.push(("mnt", CloneFlags::CLONE_NEWNS));
    let namespaces = kinds
        .into_iter()
        .map(|(name, flag)| {
            let path = proc_root.join(pid1.to_string()).join("ns").join(name);
            File::open(&path)
                .map(|f| (f, flag, name))
                .map_err(|e| format!("cannot open {}: {e}", path.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    spec.cgroup
        .join(0)
        .map_err(|e| format!("cannot enter the replica's cgroup: {e}"))?;
    for (file, flag, name) in &namespaces {
        nix::sched::setns(file, *flag)
            .map_err(|e| format!("cannot enter the replica's {name} namespace: {e}"))?;
    }
    // SAFETY: this process is single-threaded (see the module's invariant), so the
    // child may run any code; it only makes syscalls and execs.
    #[allow(unsafe_code)]
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Child => exec_command(spec, filters, &argv, &envp),
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(format!("lost the command: {e}")),
            }
        },
    }
}

/// The forked command: dies with its parent, the app's privileges and filter, exec.
fn exec_command(
    spec: &SandboxSpec,
    filters: &[seccompiler::BpfProgram],
    argv: &[CString],
    envp: &[CString],
) -> ! {
    let fail = |what: String| -> ! {
        eprintln!("wharf exec: {what}");
        std::process::exit(CANNOT_ENTER)
    };
    pid1::die_with_parent();
    if let Err(e) = nix::unistd::chdir(mounts::APP_DIR) {
        fail(format!("cannot enter {}: {e}", mounts::APP_DIR));
    }
    if let Err(e) = caps::drop_to(spec.uid, spec.gid) {
        fail(e.to_string());
    }
    // Changing credentials cleared the parent-death signal: set it again.
    pid1::die_with_parent();
    if let Err(e) = seccomp::install(filters) {
        fail(e.to_string());
    }
    let Err(e) = nix::unistd::execve(&argv[0], argv, envp);
    fail(format!("cannot run /bin/sh: {e}"))
}
