//! The replica init: `wharf init RUN_DIR`, PID 1 of a replica's world.
//!
//! Forked by the server's launcher (or spawned as `wharf init RUN_DIR`), it makes itself
//! the leader of a new session, reads `launch.json` from its run directory, starts the
//! app (directly, or through `/bin/sh -c "exec COMMAND"` when the command needs a shell:
//! see [`crate::shell`]), appends each stdout and stderr line to the app's log file as a
//! JSON record and forwards SIGTERM/SIGINT/SIGHUP to the app (all in one thread: see
//! [`crate::supervise`]), and when the app exits records how in `exit.json` and exits
//! itself. It never talks to the server, so it outlives a server crash.
//!
//! When the launch file carries a [`SandboxSpec`], the init first joins the replica's
//! cgroup, then starts the app in its namespaces under a tiny PID 1 (see
//! [`crate::sandbox::pid1`]); the exit it records is the app's, marked `oom_killed` when
//! the replica's memory cgroup counted an OOM kill.
//!
//! A one-off process (`wharf run`, a secret's rotate command) runs under the same init
//! with `attached` set: the app uses the init's stdin, stdout and stderr (whoever started
//! the init reads them), the platform's notes go to stderr instead of the app log, and
//! the init's exit code is the app's.

use crate::logs::{self, Source};
use crate::sandbox::pid1::{self, AppStatus};
use crate::sandbox::SandboxSpec;
use crate::supervise::Ended;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// What the init needs to start the app; written by the runtime into the run directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchFile {
    pub source: Source,
    pub command: String,
    pub dir: PathBuf,
    pub env: BTreeMap<String, String>,
    pub log: PathBuf,
    /// Present when the replica runs sandboxed (see [`crate::sandbox`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxSpec>,
    /// A one-off process: the app gets the init's own stdin, stdout and stderr instead
    /// of log pipes, and the init exits with the app's status (see [`exit_code`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attached: bool,
    /// The working dir is writable and owned by the app's user while the process runs
    /// (a build); given back to root when it ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writable_dir: bool,
}

/// How the app ended; written by the init as `exit.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitFile {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at_ms: u64,
    /// The kernel's OOM killer killed a process of the replica (its memory cgroup says).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
}

impl ExitFile {
    /// "exited with code 3", "killed by signal 9 (SIGKILL)", "OOM killed (...)".
    pub fn reason(&self) -> String {
        if self.oom_killed {
            return match (self.code, self.signal) {
                (None, Some(9)) | (None, None) => {
                    "OOM killed: the replica exceeded its memory limit".to_string()
                }
                _ => format!(
                    "{} after the OOM killer killed one of its processes (memory limit)",
                    ExitFile {
                        oom_killed: false,
                        ..self.clone()
                    }
                    .reason()
                ),
            };
        }
        match (self.code, self.signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => {
                let name = Signal::try_from(s).map(|s| s.as_str()).unwrap_or("unknown");
                format!("killed by signal {s} ({name})")
            }
            (None, None) => "exited".to_string(),
        }
    }
}

pub const LAUNCH_FILE: &str = "launch.json";
/// Written by the init before it starts the app, so that a server that crashed right
/// after spawning it can still find (and adopt or stop) it.
pub const INIT_FILE: &str = "init.json";

/// The init's own identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InitFile {
    pub pid: u32,
    pub start_time: u64,
    pub started_at_ms: u64,
}
pub const EXIT_FILE: &str = "exit.json";

static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember_signal(sig: i32) {
    PENDING_SIGNAL.store(sig, Ordering::SeqCst);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Writes a run-dir record that is written once and read only when complete: a new file
/// with one `write` (no temp file and rename, which cost a journaled directory change on
/// every replica start). Each reader treats a file it cannot parse as missing, which is
/// what a writer that died half-way leaves, as the rename scheme would; and each record is
/// read only after its writer finished: `launch.json` before the init starts, `init.json`
/// and `handle.json` once the init runs, `exit.json` once it ended.
pub fn write_json_once<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    std::fs::write(
        path,
        serde_json::to_vec(value).map_err(std::io::Error::other)?,
    )
}

/// Writes `value` as JSON to `path` atomically (temp file + rename).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(value).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

/// Runs the init role; returns the process exit code.
pub fn run(run_dir: &Path) -> i32 {
    let launch: LaunchFile = match std::fs::read(run_dir.join(LAUNCH_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "wharf init: cannot read {}: {e}",
                run_dir.join(LAUNCH_FILE).display()
            );
            return 2;
        }
    };
    if !launch.attached {
        // A replica's init leads a session of its own (no controlling terminal, a
        // process group the runtime signals as a whole). A one-off stays in its
        // caller's, whose terminal it uses.
        let _ = nix::unistd::setsid();
    }
    let log = if launch.attached {
        None
    } else {
        match logs::open_append(&launch.log) {
            Ok(f) => Some(Mutex::new(f)),
            Err(e) => {
                eprintln!("wharf init: cannot open log {}: {e}", launch.log.display());
                return 2;
            }
        }
    };
    let note = |msg: &str| match &log {
        Some(log) => write_line(log, &launch.source, "wharf", msg),
        None => eprintln!("wharf: {msg}"),
    };
    let me = std::process::id();
    let start_time = crate::procfs::stat(Path::new("/proc"), me).map_or(0, |(_, t)| t);
    let ident = InitFile {
        pid: me,
        start_time,
        started_at_ms: now_ms(),
    };
    if let Err(e) = write_json_once(&run_dir.join(INIT_FILE), &ident) {
        note(&format!("cannot record the init's identity: {e}"));
    }

    let handler = SigAction::new(
        SigHandler::Handler(remember_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe; it
        // is installed before any other thread exists. Handlers (unlike ignored signals)
        // are reset to the default by exec, so the app starts with default dispositions.
        #[allow(unsafe_code)]
        let installed = unsafe { signal::sigaction(sig, &handler) };
        if let Err(e) = installed {
            note(&format!("cannot install a {sig} handler: {e}"));
        }
    }

    let started = match start_app(&launch) {
        Ok(s) => s,
        Err(e) => {
            note(&e);
            let exit = ExitFile {
                code: Some(127),
                signal: None,
                at_ms: now_ms(),
                oom_killed: false,
            };
            let _ = write_json_once(&run_dir.join(EXIT_FILE), &exit);
            return if launch.attached { 127 } else { 1 };
        }
    };
    let Started {
        pid,
        stdout,
        stderr,
        mut status_pipe,
    } = started;
    let outputs = match (&log, stdout, stderr) {
        (Some(_), Some(out), Some(err)) => vec![(out, "stdout"), (err, "stderr")],
        _ => Vec::new(),
    };
    let ended = crate::supervise::supervise(pid, outputs, &PENDING_SIGNAL, &mut |stream, line| {
        if let Some(log) = &log {
            write_line(log, &launch.source, stream, line);
        }
    });
    let mut status = ExitFile {
        code: None,
        signal: None,
        at_ms: now_ms(),
        oom_killed: false,
    };
    match ended {
        Ended::Exited(code) => status.code = Some(code),
        Ended::Signaled(sig) => status.signal = Some(sig),
        Ended::Lost(e) => note(&format!("lost track of the app process: {e}")),
    }
    // A sandboxed app's own status comes from its PID 1 (which exits right after it).
    if let Some(pipe) = status_pipe.as_mut() {
        match AppStatus::read(pipe) {
            Some(Ok(AppStatus::Exited(code))) if status.code == Some(0) => {
                status.code = Some(code);
            }
            Some(Ok(AppStatus::Signaled(sig))) if status.code == Some(0) => {
                status.code = None;
                status.signal = Some(sig);
            }
            Some(Err(e)) => note(&format!("cannot start the sandbox: {e}")),
            _ => {}
        }
    }
    if let Some(spec) = &launch.sandbox {
        status.oom_killed = spec.cgroup.oom_kills() > 0;
    }
    if let Err(e) = write_json_once(&run_dir.join(EXIT_FILE), &status) {
        eprintln!("wharf init: cannot record the exit: {e}");
    }
    if launch.attached {
        if status.oom_killed {
            note(&status.reason());
        }
        return exit_code(&status);
    }
    note(&format!("process {}", status.reason()));
    0
}

/// A one-off's exit code, as a shell reports it: the app's code, or 128 + the signal
/// that killed it.
pub fn exit_code(status: &ExitFile) -> i32 {
    match (status.code, status.signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 1,
    }
}

/// The app as the init supervises it.
struct Started {
    /// The app itself, or the sandbox's PID 1.
    pid: Pid,
    /// The app's output, unless it is attached to the init's own.
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    /// Sandboxed: where PID 1 reports the app's exit.
    status_pipe: Option<File>,
}

/// Starts the app: in its sandbox when the launch file has one (joining the replica's
/// cgroup first, so everything started from here on is in it), else as a plain child.
fn start_app(launch: &LaunchFile) -> Result<Started, String> {
    if let Some(spec) = &launch.sandbox {
        spec.cgroup
            .join(0)
            .map_err(|e| format!("cannot enter the replica's cgroup: {e}"))?;
        let s = pid1::spawn(launch, spec).map_err(|e| e.to_string())?;
        return Ok(Started {
            pid: s.pid,
            stdout: s.stdout.map(OwnedFd::from),
            stderr: s.stderr.map(OwnedFd::from),
            status_pipe: Some(s.status),
        });
    }
    let direct = crate::shell::words(&launch.command);
    let mut child = match spawn_plain(launch, direct.as_deref()) {
        // A program without a `#!` line is a shell script to a shell: let one run it.
        Err(e) if direct.is_some() && e.raw_os_error() == Some(libc::ENOEXEC) => {
            spawn_plain(launch, None)
        }
        other => other,
    }
    .map_err(|e| match direct.as_deref() {
        Some([program, ..]) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("{program}: command not found (PATH is the app's)")
        }
        _ => format!("cannot start `{}`: {e}", launch.command),
    })?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    if !launch.attached && (stdout.is_none() || stderr.is_none()) {
        return Err("the app's output pipes are missing".into());
    }
    Ok(Started {
        pid: Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)),
        stdout: stdout.map(OwnedFd::from),
        stderr: stderr.map(OwnedFd::from),
        status_pipe: None,
    })
}

/// Starts the app as a plain child: `argv` directly, or else the command line through
/// `/bin/sh -c`.
fn spawn_plain(
    launch: &LaunchFile,
    argv: Option<&[String]>,
) -> std::io::Result<std::process::Child> {
    let mut cmd = match argv {
        Some([program, args @ ..]) => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
        _ => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(crate::shell::line(&launch.command));
            c
        }
    };
    let (stdin, out, err) = if launch.attached {
        (Stdio::inherit(), Stdio::inherit(), Stdio::inherit())
    } else {
        (Stdio::null(), Stdio::piped(), Stdio::piped())
    };
    // With PATH among the app's variables, a bare program name is looked up there.
    cmd.env_clear()
        .envs(&launch.env)
        .current_dir(&launch.dir)
        .stdin(stdin)
        .stdout(out)
        .stderr(err)
        .spawn()
}

fn write_line(log: &Mutex<File>, source: &Source, stream: &str, line: &str) {
    let rec = logs::record(source, stream, line);
    if let Ok(mut f) = log.lock() {
        let _ = logs::append(&mut f, &rec);
    }
}
