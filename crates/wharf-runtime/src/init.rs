//! The replica init: `wharf init RUN_DIR`, PID 1 of a replica's world.
//!
//! Started by the runtime as the leader of a new session, it reads `launch.json` from its
//! run directory, starts the app with `/bin/sh -c "exec COMMAND"`, appends each stdout and
//! stderr line to the app's log file as a JSON record, forwards SIGTERM/SIGINT/SIGHUP to
//! the app, and when the app exits records how in `exit.json` and exits itself. It never
//! talks to the server, so it outlives a server crash.

use crate::logs::{self, Source};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// What the init needs to start the app; written by the runtime into the run directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchFile {
    pub source: Source,
    pub command: String,
    pub dir: PathBuf,
    pub env: BTreeMap<String, String>,
    pub log: PathBuf,
}

/// How the app ended; written by the init as `exit.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitFile {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at_ms: u64,
}

impl ExitFile {
    /// "exited with code 3", "killed by signal 9 (SIGKILL)".
    pub fn reason(&self) -> String {
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
    let log = match logs::open_append(&launch.log) {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => {
            eprintln!("wharf init: cannot open log {}: {e}", launch.log.display());
            return 2;
        }
    };
    let note = |msg: &str| write_line(&log, &launch.source, "wharf", msg);
    let me = std::process::id();
    let start_time = crate::procfs::stat(Path::new("/proc"), me).map_or(0, |(_, t)| t);
    let ident = InitFile {
        pid: me,
        start_time,
        started_at_ms: now_ms(),
    };
    if let Err(e) = write_json_atomic(&run_dir.join(INIT_FILE), &ident) {
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

    let mut child = match Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {}", launch.command))
        .env_clear()
        .envs(&launch.env)
        .current_dir(&launch.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            note(&format!("cannot start `{}`: {e}", launch.command));
            let exit = ExitFile {
                code: Some(127),
                signal: None,
                at_ms: now_ms(),
            };
            let _ = write_json_atomic(&run_dir.join(EXIT_FILE), &exit);
            return 1;
        }
    };
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>)
            .map(|s| (s, "stdout")),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>)
            .map(|s| (s, "stderr")),
    ]
    .into_iter()
    .flatten()
    .map(|(stream, name)| {
        let log = Arc::clone(&log);
        let source = launch.source.clone();
        std::thread::spawn(move || pump(stream, &log, &source, name))
    })
    .collect();

    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let status = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => {
                break ExitFile {
                    code: Some(code),
                    signal: None,
                    at_ms: now_ms(),
                }
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                break ExitFile {
                    code: None,
                    signal: Some(sig as i32),
                    at_ms: now_ms(),
                }
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {
                let sig = PENDING_SIGNAL.swap(0, Ordering::SeqCst);
                if let Ok(sig) = Signal::try_from(sig) {
                    let _ = signal::kill(pid, sig);
                }
            }
            Err(e) => {
                note(&format!("lost track of the app process: {e}"));
                break ExitFile {
                    code: None,
                    signal: None,
                    at_ms: now_ms(),
                };
            }
        }
    };
    // Let the readers drain what the app wrote last, but not forever: a grandchild may
    // still hold the pipes open.
    let deadline = Instant::now() + Duration::from_secs(1);
    for r in readers {
        while !r.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    note(&format!("process {}", status.reason()));
    if let Err(e) = write_json_atomic(&run_dir.join(EXIT_FILE), &status) {
        eprintln!("wharf init: cannot record the exit: {e}");
    }
    0
}

fn write_line(log: &Mutex<File>, source: &Source, stream: &str, line: &str) {
    let rec = logs::record(source, stream, line);
    if let Ok(mut f) = log.lock() {
        let _ = logs::append(&mut f, &rec);
    }
}

fn pump(stream: Box<dyn Read + Send>, log: &Mutex<File>, source: &Source, name: &str) {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader
            .by_ref()
            .take(logs::MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => write_line(log, source, name, &String::from_utf8_lossy(&buf)),
        }
    }
}
