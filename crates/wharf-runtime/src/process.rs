//! [`ProcessRuntime`]: replicas as supervised processes, each under its own init; plain,
//! or sandboxed when built [`ProcessRuntime::sandboxed`].

use crate::init::{self, ExitFile, InitFile, LaunchFile, EXIT_FILE, INIT_FILE, LAUNCH_FILE};
use crate::launcher::Launcher;
use crate::layout::Layout;
use crate::logs::{self, Source};
use crate::procfs;
use crate::sandbox::Sandbox;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use wharf_core::ports::{Handle, Launch, Liveness, OneOff, Runtime, RuntimeError, StopSignal};
use wharf_core::Exit;
use wharf_types::{AppName, Network};

/// Why a replica with `network = "isolated"` cannot start with plain processes.
const ISOLATED_NEEDS_SANDBOX: &str = "network = \"isolated\" needs the sandbox: run `wharf server` as root with --isolation auto or sandbox, or remove `network` from the process";

const HANDLE_FILE: &str = "handle.json";

/// Runs each replica under its own init: forked by the launcher when given one, else
/// spawned as `INIT... RUN_DIR`; the init makes its own session.
pub struct ProcessRuntime {
    layout: Layout,
    init: Vec<OsString>,
    proc_root: PathBuf,
    children: Mutex<HashMap<u32, Child>>,
    sandbox: Option<Sandbox>,
    /// Forks replica inits instead of spawning the binary (see [`crate::launcher`]);
    /// set aside for good once it is gone.
    launcher: Option<Launcher>,
    launcher_gone: AtomicBool,
    /// Inits the launcher forked and nobody has seen end yet.
    forked: Mutex<HashSet<u32>>,
}

impl ProcessRuntime {
    /// `init` is the command that runs [`init::run`] with the run directory appended,
    /// normally `[current_exe, "init"]`.
    pub fn new(layout: Layout, init: Vec<OsString>) -> Self {
        Self {
            layout,
            init,
            proc_root: PathBuf::from("/proc"),
            children: Mutex::new(HashMap::new()),
            sandbox: None,
            launcher: None,
            launcher_gone: AtomicBool::new(false),
            forked: Mutex::new(HashSet::new()),
        }
    }

    /// Starts replica inits through `launcher` (forked, not spawned), falling back to
    /// spawning `init` if the launcher is gone.
    pub fn with_launcher(self, launcher: Launcher) -> Self {
        Self {
            launcher: Some(launcher),
            ..self
        }
    }

    /// Like [`ProcessRuntime::new`], with every replica in `sandbox`.
    pub fn sandboxed(layout: Layout, init: Vec<OsString>, sandbox: Sandbox) -> Self {
        Self {
            sandbox: Some(sandbox),
            ..Self::new(layout, init)
        }
    }

    /// Where this runtime keeps its run directories.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The sandbox replicas run in, if any.
    pub fn sandbox(&self) -> Option<&Sandbox> {
        self.sandbox.as_ref()
    }

    fn run_dir(&self, h: &Handle) -> PathBuf {
        self.layout.run_dir(&h.app, &h.id)
    }

    /// The exit the init of `h` recorded, if it did.
    fn recorded_exit(&self, h: &Handle) -> Option<Exit> {
        read_json::<ExitFile>(&self.run_dir(h).join(EXIT_FILE)).map(|e| Exit {
            at: e.at_ms,
            code: e.code,
            signal: e.signal,
            reason: e.reason(),
        })
    }

    fn exit_of(&self, h: &Handle, fallback: &str) -> Exit {
        self.recorded_exit(h)
            .unwrap_or_else(|| unrecorded(fallback))
    }

    fn alive(&self, h: &Handle) -> bool {
        procfs::is_same_live_process(&self.proc_root, h.pid, h.start_time)
    }

    /// Blocks until the init of `h` has ended or `timeout` passed; true when it ended
    /// (then [`Runtime::poll`] reports the exit). Woken by the kernel (a pidfd), not by
    /// polling, for callers that wait on one replica, as `runc run` waits on its child.
    pub fn wait_exit(&self, h: &Handle, timeout: Duration) -> bool {
        if !self.alive(h) {
            return true;
        }
        match procfs::pidfd(h.pid) {
            // The pid might have been reused between the check and the open: the
            // descriptor is only good if it still names the replica's init.
            Ok(fd) if self.alive(h) => procfs::wait_pidfd(&fd, timeout).unwrap_or(false),
            Ok(_) => true,
            Err(_) => {
                std::thread::sleep(timeout.min(Duration::from_millis(1)));
                !self.alive(h)
            }
        }
    }
}

impl ProcessRuntime {
    /// Writes the run directory `dir` of `l` (sandbox, launch file); returns the
    /// replica's own address when it has its own network.
    fn write_launch(
        &self,
        l: &Launch,
        dir: &Path,
        attached: bool,
    ) -> Result<Option<std::net::Ipv4Addr>, RuntimeError> {
        let fail = |message: String| RuntimeError::Start {
            id: l.id.clone(),
            message,
        };
        if !l.image.is_empty() && self.sandbox.is_none() {
            return Err(fail(
                "this process runs on an OCI image, which needs the sandbox; run the server as root with --isolation auto or sandbox, or remove `image`".into(),
            ));
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        let sandbox = match &self.sandbox {
            Some(sb) => Some(sb.prepare(l, dir).map_err(|e| fail(e.to_string()))?),
            None if l.network == Network::Isolated => {
                return Err(fail(ISOLATED_NEEDS_SANDBOX.into()));
            }
            None => None,
        };
        let addr = sandbox
            .as_ref()
            .and_then(|s| s.net.as_ref())
            .map(|n| n.addr);
        let launch = LaunchFile {
            source: Source {
                app: l.app.to_string(),
                process: l.process.to_string(),
                replica: l.id.clone(),
                release: l.release,
            },
            command: l.command.clone(),
            dir: l.dir.clone(),
            env: app_env(&l.env, sandbox.is_some(), addr),
            log: self.layout.app_log(&l.app),
            sandbox,
            attached,
            writable_dir: l.writable_dir,
        };
        if let Err(e) = init::write_json_once(&dir.join(LAUNCH_FILE), &launch) {
            if let Some(sb) = &self.sandbox {
                sb.remove(l.app.as_str(), &l.id, addr);
            }
            return Err(fail(e.to_string()));
        }
        Ok(addr)
    }

    /// The init command, without the run directory.
    fn init_command(&self, id: &str) -> Result<(&OsString, &[OsString]), RuntimeError> {
        self.init.split_first().ok_or_else(|| RuntimeError::Start {
            id: id.to_string(),
            message: "no init command configured".into(),
        })
    }

    /// Starts the replica's init for `dir`: forked by the launcher when there is one,
    /// else spawned. The child handle comes back when this process is its parent.
    fn start_init(&self, l: &Launch, dir: &Path) -> Result<(u32, Option<Child>), RuntimeError> {
        if let Some(launcher) = self
            .launcher
            .as_ref()
            .filter(|_| !self.launcher_gone.load(Ordering::Relaxed))
        {
            match launcher.launch(dir) {
                Ok(pid) => return Ok((pid, None)),
                Err(e) => {
                    let gone = matches!(
                        e.kind(),
                        std::io::ErrorKind::BrokenPipe
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::NotConnected
                    );
                    self.launcher_gone.store(gone, Ordering::Relaxed);
                    tracing::warn!(replica = %l.id, "the replica launcher failed ({e}); spawning the init instead");
                }
            }
        }
        let child = self.spawn_init(l, dir)?;
        Ok((child.id(), Some(child)))
    }

    /// Spawns the replica's init for `dir`.
    fn spawn_init(&self, l: &Launch, dir: &Path) -> Result<Child, RuntimeError> {
        let fail = |message: String| RuntimeError::Start {
            id: l.id.clone(),
            message,
        };
        let init_err =
            std::fs::File::create(dir.join("init.err")).map_err(|e| fail(e.to_string()))?;
        let (program, args) = self.init_command(&l.id)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(init_err);
        // No pre-exec step, so the standard library spawns with posix_spawn(3) (a vfork,
        // cheap in a large server) instead of fork(2): the init makes itself the leader
        // of a new session as its first step (see `init::run`).
        cmd.spawn().map_err(|e| {
            fail(format!(
                "cannot run the replica init {}: {e}",
                program.to_string_lossy()
            ))
        })
    }

    /// One-offs whose init still runs (their cgroups stay); the run directories of the
    /// others are removed.
    fn live_oneoffs(&self) -> Vec<String> {
        let mut live = Vec::new();
        for app_dir in read_dirs(&self.layout.oneoffs()) {
            for dir in read_dirs(&app_dir) {
                let init: Option<InitFile> = read_json(&dir.join(INIT_FILE));
                let launch: Option<LaunchFile> = read_json(&dir.join(LAUNCH_FILE));
                match (init, launch) {
                    (Some(i), Some(l))
                        if procfs::is_same_live_process(&self.proc_root, i.pid, i.start_time) =>
                    {
                        live.push(Sandbox::key(&l.source.app, &l.source.replica));
                    }
                    _ => {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
            }
            let _ = std::fs::remove_dir(&app_dir);
        }
        live
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The exit of an init that recorded none, for `reason`.
fn unrecorded(reason: &str) -> Exit {
    Exit {
        at: now_ms(),
        code: None,
        signal: None,
        reason: reason.to_string(),
    }
}

/// What an init that recorded no exit is known to have ended with.
fn ended_without_record(status: std::process::ExitStatus) -> String {
    format!("replica init ended without recording an exit ({status})")
}

fn pid_of(h: &Handle) -> Pid {
    Pid::from_raw(i32::try_from(h.pid).unwrap_or(i32::MAX))
}

impl Runtime for ProcessRuntime {
    fn start(&self, l: &Launch) -> Result<Handle, RuntimeError> {
        let fail = |message: String| RuntimeError::Start {
            id: l.id.clone(),
            message,
        };
        let dir = self.layout.run_dir(&l.app, &l.id);
        let addr = self.write_launch(l, &dir, false)?;
        let (pid, child) = self.start_init(l, &dir).inspect_err(|_| {
            if let Some(sb) = &self.sandbox {
                sb.remove(l.app.as_str(), &l.id, addr);
            }
        })?;
        let start_time = procfs::stat(&self.proc_root, pid)
            .map(|(_, t)| t)
            .unwrap_or(0);
        let handle = Handle {
            app: l.app.clone(),
            process: l.process.clone(),
            release: l.release,
            id: l.id.clone(),
            pid,
            start_time,
            port: l.port,
            started_at: now_ms(),
            addr,
        };
        match child {
            Some(child) => {
                if let Ok(mut children) = self.children.lock() {
                    children.insert(pid, child);
                }
            }
            None => {
                if let Ok(mut forked) = self.forked.lock() {
                    forked.insert(pid);
                }
            }
        }
        init::write_json_once(&dir.join(HANDLE_FILE), &handle).map_err(|e| fail(e.to_string()))?;
        Ok(handle)
    }
    fn poll(&self, h: &Handle) -> Liveness {
        let mut children = match self.children.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if let Some(child) = children.get_mut(&h.pid) {
            return match child.try_wait() {
                Ok(None) => Liveness::Running,
                Ok(Some(status)) => {
                    children.remove(&h.pid);
                    Liveness::Exited(self.exit_of(h, &ended_without_record(status)))
                }
                Err(e) => {
                    children.remove(&h.pid);
                    Liveness::Exited(self.exit_of(h, &format!("lost the replica init: {e}")))
                }
            };
        }
        drop(children);
        if self.alive(h) {
            return Liveness::Running;
        }
        let forked = self
            .forked
            .lock()
            .map(|mut f| f.remove(&h.pid))
            .unwrap_or(false);
        // The init recorded how the app ended: nothing to ask the launcher (which drops
        // statuses nobody asks for).
        if let Some(exit) = self.recorded_exit(h) {
            return Liveness::Exited(exit);
        }
        // The launcher reaped it: how it ended is known even if it recorded nothing.
        let status = forked
            .then(|| self.launcher.as_ref()?.wait(h.pid).ok().flatten())
            .flatten();
        Liveness::Exited(unrecorded(&status.map_or_else(
            || "replica init is gone (killed or machine restarted)".to_string(),
            ended_without_record,
        )))
    }

    fn signal(&self, h: &Handle, sig: StopSignal) -> Result<(), RuntimeError> {
        let is_child = self
            .children
            .lock()
            .map(|c| c.contains_key(&h.pid))
            .unwrap_or(false)
            || self
                .forked
                .lock()
                .map(|f| f.contains(&h.pid))
                .unwrap_or(false);
        let res = match sig {
            // SIGTERM goes to the init, which forwards it to the app exactly once.
            StopSignal::Term if is_child || self.alive(h) => {
                signal::kill(pid_of(h), Signal::SIGTERM)
            }
            StopSignal::Term => Ok(()),
            // SIGKILL goes to the whole session's process group: whatever the app forked
            // dies with it, even after the init itself is gone. A group id cannot be
            // reused while the group has members, so this never hits a stranger.
            StopSignal::Kill
                if is_child
                    || self.alive(h)
                    || procfs::group_has_members(&self.proc_root, h.pid) =>
            {
                // The init itself too: one killed right after its start may not have
                // made its session (and group) yet.
                if is_child || self.alive(h) {
                    let _ = signal::kill(pid_of(h), Signal::SIGKILL);
                }
                signal::killpg(pid_of(h), Signal::SIGKILL)
            }
            StopSignal::Kill => Ok(()),
        };
        // Sandboxed: the cgroup holds everything the replica ever started, whatever
        // process group or session it moved to.
        if let (StopSignal::Kill, Some(sb)) = (sig, &self.sandbox) {
            sb.kill(h.app.as_str(), &h.id);
        }
        match res {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(RuntimeError::Signal {
                id: h.id.clone(),
                message: e.to_string(),
            }),
        }
    }

    fn cleanup(&self, h: &Handle) {
        // Whatever the app left running in its process group (the app itself when only
        // the init was killed, or children it forked) goes with it. Sandboxed, the
        // cgroup knows exactly what is left (and is killed below), so /proc is not
        // scanned.
        if self.sandbox.is_none() && procfs::group_has_members(&self.proc_root, h.pid) {
            if let Err(e) = signal::killpg(pid_of(h), Signal::SIGKILL) {
                tracing::warn!(replica = %h.id, "cannot kill what replica left running: {e}");
            }
        }
        // The cgroup goes before the run dir: a crash in between leaves a run dir, which
        // the next discovery reports and cleans up again.
        if let Some(sb) = &self.sandbox {
            sb.remove(h.app.as_str(), &h.id, h.addr);
        }
        remove_run_dir(&self.run_dir(h), &h.id);
    }

    fn discover(&self) -> Vec<(Handle, Liveness)> {
        let mut out = Vec::new();
        for app_dir in read_dirs(&self.layout.run()) {
            for dir in read_dirs(&app_dir) {
                let recorded =
                    read_json::<Handle>(&dir.join(HANDLE_FILE)).or_else(|| handle_from_init(&dir));
                match recorded {
                    Some(h) => {
                        let live =
                            if self.alive(&h) {
                                Liveness::Running
                            } else {
                                Liveness::Exited(self.exit_of(
                                    &h,
                                    "replica init is gone (killed or machine restarted)",
                                ))
                            };
                        out.push((h, live));
                    }
                    None => {
                        tracing::warn!("removing incomplete replica directory {}", dir.display());
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
            }
        }
        let oneoffs = self.live_oneoffs();
        if let Some(sb) = &self.sandbox {
            let keep = out
                .iter()
                .map(|(h, _)| Sandbox::key(h.app.as_str(), &h.id))
                .chain(oneoffs)
                .collect();
            sb.sweep(&keep);
            sb.adopt_network(&out.iter().filter_map(|(h, _)| h.addr).collect());
        }
        out
    }

    fn tail(&self, app: &AppName, id: &str, n: usize) -> Vec<String> {
        let filter = logs::Filter {
            replica: Some(id.to_string()),
            ..logs::Filter::default()
        };
        match logs::read(&self.layout.app_log(app), &filter, Some(n)) {
            Ok((recs, _)) => recs
                .into_iter()
                .map(|r| format!("{} {}[{}]: {}", r.ts, r.replica, r.stream, r.msg))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn oneoff(&self, l: &Launch) -> Result<OneOff, RuntimeError> {
        let dir = self.layout.oneoff_dir(&l.app, &l.id);
        let mut l = l.clone();
        if let Some(sb) = &self.sandbox {
            if l.writable_dir {
                // A build's environment carries the server's HOME, which is not the
                // app user's: it gets the private /tmp like replicas.
                l.env.remove("HOME");
                sb.own_tree(l.app.as_str(), &l.dir)
                    .map_err(|e| RuntimeError::Start {
                        id: l.id.clone(),
                        message: e.to_string(),
                    })?;
            }
        }
        self.write_launch(&l, &dir, true)?;
        let (program, args) = self.init_command(&l.id)?;
        let mut args = args.to_vec();
        args.push(dir.into_os_string());
        Ok(OneOff {
            id: l.id.clone(),
            program: PathBuf::from(program),
            args,
        })
    }

    fn exec(&self, h: &Handle, command: &str) -> Result<OneOff, RuntimeError> {
        let (program, args) = self.init_command(&h.id)?;
        let mut args = args.to_vec();
        args.push(format!("--exec={command}").into());
        args.push(self.run_dir(h).into_os_string());
        Ok(OneOff {
            id: h.id.clone(),
            program: PathBuf::from(program),
            args,
        })
    }

    fn finish_oneoff(&self, app: &AppName, id: &str, pgid: Option<u32>) {
        if let Some(pgid) = pgid {
            if procfs::group_has_members(&self.proc_root, pgid) {
                let pgid = Pid::from_raw(i32::try_from(pgid).unwrap_or(i32::MAX));
                if let Err(e) = signal::killpg(pgid, Signal::SIGKILL) {
                    tracing::warn!(oneoff = %id, "cannot kill what the one-off left running: {e}");
                }
            }
        }
        let dir = self.layout.oneoff_dir(app, id);
        if let Some(sb) = &self.sandbox {
            sb.kill(app.as_str(), id);
            sb.remove(app.as_str(), id, None);
            // A build's tree goes back to the platform before it becomes an artifact.
            match read_json::<LaunchFile>(&dir.join(LAUNCH_FILE)) {
                Some(l) if l.writable_dir => {
                    if let Err(e) = crate::sandbox::uids::chown_tree(&l.dir, 0, 0) {
                        tracing::warn!(oneoff = %id, "cannot give {} back to root: {e}", l.dir.display());
                    }
                }
                _ => {}
            }
        }
        remove_run_dir(&dir, id);
    }
}

/// The app's environment: the launch's, with a writable `HOME` when it has none (the
/// replica's private `/tmp` in the sandbox, the server's own otherwise: same user), and
/// `WHARF_ADDR`, its address, when it has its own network.
fn app_env(
    env: &BTreeMap<String, String>,
    sandboxed: bool,
    addr: Option<std::net::Ipv4Addr>,
) -> BTreeMap<String, String> {
    let mut env = env.clone();
    if let Some(addr) = addr {
        env.insert("WHARF_ADDR".into(), addr.to_string());
    }
    if !env.contains_key("HOME") {
        let home = if sandboxed {
            Some(crate::sandbox::mounts::APP_HOME.to_string())
        } else {
            std::env::var("HOME").ok()
        };
        if let Some(home) = home {
            env.insert("HOME".into(), home);
        }
    }
    env
}

/// Removes the run directory `dir` of `id`, and its app's directory once empty.
fn remove_run_dir(dir: &Path, id: &str) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(replica = %id, "cannot remove {}: {e}", dir.display());
        }
    }
    if let Some(app_dir) = dir.parent() {
        let _ = std::fs::remove_dir(app_dir); // only succeeds when empty
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The handle of a replica whose server died between spawning its init and recording
/// the handle: rebuilt from the launch spec and the init's own record.
fn handle_from_init(dir: &Path) -> Option<Handle> {
    let launch: LaunchFile = read_json(&dir.join(LAUNCH_FILE))?;
    let init: InitFile = read_json(&dir.join(INIT_FILE))?;
    Some(Handle {
        app: wharf_types::AppName::new(launch.source.app).ok()?,
        process: wharf_types::ProcessType::new(launch.source.process).ok()?,
        release: launch.source.release,
        id: launch.source.replica,
        pid: init.pid,
        start_time: init.start_time,
        port: launch.env.get("PORT")?.parse().ok()?,
        started_at: init.started_at_ms,
        addr: launch
            .sandbox
            .as_ref()
            .and_then(|s| s.net.as_ref())
            .map(|n| n.addr),
    })
}

fn read_dirs(path: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_gets_a_writable_home_unless_its_config_sets_one() {
        let env = BTreeMap::from([("PORT".to_string(), "1".to_string())]);
        assert_eq!(
            app_env(&env, true, None)["HOME"],
            "/tmp",
            "the sandbox's private /tmp"
        );
        assert_eq!(
            app_env(&env, false, None).get("HOME"),
            std::env::var("HOME").ok().as_ref(),
            "plain processes run as the server's user, in its HOME"
        );
        let mut own = env.clone();
        own.insert("HOME".into(), "/app/home".into());
        assert_eq!(
            app_env(&own, true, None)["HOME"],
            "/app/home",
            "config wins"
        );
        assert!(!app_env(&env, true, None).contains_key("WHARF_ADDR"));
        let isolated = app_env(&env, true, Some(std::net::Ipv4Addr::new(10, 89, 0, 2)));
        assert_eq!(isolated["WHARF_ADDR"], "10.89.0.2", "its own address");
    }
}
