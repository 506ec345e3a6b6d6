//! Starting the app in its sandbox, from the replica's init.
//!
//! Process tree of a sandboxed replica (host pids on the left):
//!
//! ```text
//! wharf init RUN_DIR          host namespaces, in the replica's cgroup; pumps the logs,
//! │                           writes exit.json (see crate::init)
//! └─ pid 1 (clone)            new PID, mount, IPC, UTS (and network) namespaces; root until the app
//!    │                        is forked (the seccomp filter loaded just before, for both),
//!    │                        then the app's uid without capabilities; reaps
//!    │                        every zombie, forwards SIGTERM/SIGINT/SIGHUP to the app,
//!    │                        reports the app's exit on a pipe, then exits (which kills
//!    │                        whatever is left in the namespace)
//!    └─ pid 2: COMMAND (or /bin/sh -c "exec COMMAND")   the app: its uid, no capabilities,
//!                             no_new_privs, seccomp filter (PID 1's), working dir /app;
//!                             started with CLONE_VM | CLONE_VFORK (PID 1's memory shared,
//!                             PID 1 suspended, until its execve), as posix_spawn does
//! ```
//!
//! The init itself cannot be PID 1 of the new namespace (a process cannot move into a
//! PID namespace), so the namespace gets this tiny PID 1 instead:
//! a copy of the init made with `clone(2)` that never executes anything else. It dies
//! with the init (`PR_SET_PDEATHSIG`), and with it the whole namespace.
//!
//! With `network = "isolated"` PID 1 also gets a new network namespace. The init then
//! creates the veth pair into it from the host side ([`network::plug`]) and writes one
//! byte on a pipe; PID 1 waits for that byte before anything else, then configures its
//! side ([`network::configure`]). If the init fails, the pipe closes unwritten and PID 1
//! gives up (it closed its own copy of the write end first).
//!
//! Invariants: everything the child needs (filters, argv, env, descriptors) is prepared
//! before `clone`, and the init is single-threaded at that point, so the child may
//! allocate; the app's descriptors are only its log pipes and `/dev/null`, everything
//! else the init holds is close-on-exec.

use super::{caps, mount_apply, mounts, network, seccomp, SandboxSpec};
use crate::init::LaunchFile;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Stack of the cloned PID 1 while it sets up the sandbox (it forks before it runs much).
const STACK: usize = 1 << 20;
/// Stack of the app child between its start and its `execve`.
const APP_STACK: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot prepare the sandbox: {0}")]
    Prepare(String),
    #[error("cannot create the replica's namespaces: {0} (the kernel must allow PID, mount, IPC, UTS and network namespaces; or run with --isolation none)")]
    Clone(nix::errno::Errno),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
}

/// The sandboxed app, as the init sees it.
pub struct Spawned {
    /// Host pid of the sandbox's PID 1.
    pub pid: Pid,
    /// The app's output pipes (none when the launch is attached to the init's stdio).
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    /// Where PID 1 reports how the app ended (see [`AppStatus`]).
    pub status: File,
}

/// How the app ended, as PID 1 reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppStatus {
    Exited(i32),
    Signaled(i32),
}

impl AppStatus {
    fn encode(self) -> String {
        match self {
            AppStatus::Exited(c) => format!("exit {c}\n"),
            AppStatus::Signaled(s) => format!("signal {s}\n"),
        }
    }

    /// Parses what PID 1 wrote; an `error ...` line comes back as `Err`.
    pub fn decode(text: &str) -> Option<Result<AppStatus, String>> {
        let line = text.lines().next()?;
        let (kind, rest) = line.split_once(' ')?;
        match kind {
            "exit" => rest.parse().ok().map(|c| Ok(AppStatus::Exited(c))),
            "signal" => rest.parse().ok().map(|s| Ok(AppStatus::Signaled(s))),
            "error" => Some(Err(rest.to_string())),
            _ => None,
        }
    }

    /// Reads PID 1's report (after PID 1 exited).
    pub fn read(status: &mut File) -> Option<Result<AppStatus, String>> {
        let mut text = String::new();
        status.read_to_string(&mut text).ok()?;
        Self::decode(&text)
    }
}

fn cstring(s: impl Into<Vec<u8>>) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|e| SpawnError::Prepare(format!("a NUL byte in {e}")))
}

/// Starts the app of `launch` in the sandbox `spec`. Call from the single-threaded init,
/// with its signal handlers installed (PID 1 inherits them).
pub fn spawn(launch: &LaunchFile, spec: &SandboxSpec) -> Result<Spawned, SpawnError> {
    let prep = |e: &dyn std::fmt::Display| SpawnError::Prepare(e.to_string());
    let filters = seccomp::filters().map_err(|e| prep(&e))?;
    let program = Program::of(launch)?;
    let envp: Vec<CString> = launch
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| prep(&e));
    let (st_r, st_w) = pipe()?;
    // Attached: the app gets (close-on-exec copies of) the init's own descriptors, which
    // stay the caller's: they are not handed to the app's user.
    let (stdin, stdout, stderr, out_r, err_r) = if launch.attached {
        let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().map_err(|e| prep(&e));
        (
            dup(std::io::stdin().as_fd())?,
            dup(std::io::stdout().as_fd())?,
            dup(std::io::stderr().as_fd())?,
            None,
            None,
        )
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let devnull = File::open("/dev/null").map_err(|e| prep(&e))?;
        (
            OwnedFd::from(devnull),
            out_w,
            err_w,
            Some(File::from(out_r)),
            Some(File::from(err_r)),
        )
    };
    // Isolated network: PID 1 waits on this pipe until the init plugged its namespace in.
    let (net_r, net_w) = match &spec.net {
        Some(_) => {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    let child = Child {
        spec,
        filters,
        program: &program,
        envp: &envp,
        stdin,
        stdout,
        stderr,
        own_output: !launch.attached,
        status: st_w,
        net_ready: net_r,
        net_writer: net_w.as_ref().map(|w| w.as_raw_fd()),
    };
    let mut stack = vec![0u8; STACK];
    let mut flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if spec.net.is_some() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    // SAFETY: the child gets a copy of this single-threaded process (no CLONE_VM), runs
    // the callback on `stack`, which outlives the call in the parent, and exits with the
    // callback's value without returning into the parent's frames.
    #[allow(unsafe_code)]
    let pid = unsafe {
        nix::sched::clone(
            Box::new(|| child.run()),
            &mut stack,
            flags,
            Some(Signal::SIGCHLD as i32),
        )
    }
    .map_err(SpawnError::Clone)?;
    drop(child);
    if let (Some(net), Some(ready)) = (&spec.net, net_w) {
        // On failure the pipe closes unwritten: PID 1 gives up, and the error is ours.
        network::plug(u32::try_from(pid.as_raw()).unwrap_or(0), net)?;
        File::from(ready).write_all(b"1").map_err(|e| {
            prep(&format!(
                "cannot tell the sandbox its network is ready: {e}"
            ))
        })?;
    }
    Ok(Spawned {
        pid,
        stdout: out_r,
        stderr: err_r,
        status: File::from(st_r),
    })
}

/// What the app child executes, prepared before `clone` (the child only calls
/// `execve`): the command's own argv, tried at each place its program may be, or the
/// shell's.
struct Program {
    /// Where the program may be, in the order to try (inside the sandbox's root).
    paths: Vec<CString>,
    argv: Vec<CString>,
    /// `/bin/sh -c LINE`: for a command that needs a shell, and for a program without a
    /// `#!` line (`ENOEXEC`), which a shell runs as a script.
    shell: [CString; 3],
    direct: bool,
}

impl Program {
    fn of(launch: &LaunchFile) -> Result<Program, SpawnError> {
        let shell = [
            cstring(SHELL)?,
            cstring("-c")?,
            cstring(crate::shell::line(&launch.command))?,
        ];
        let Some(words) = crate::shell::words(&launch.command) else {
            return Ok(Program {
                paths: vec![cstring(SHELL)?],
                argv: shell.to_vec(),
                shell,
                direct: false,
            });
        };
        let path = launch.env.get("PATH").map(String::as_str);
        Ok(Program {
            paths: crate::shell::candidates(&words[0], path)
                .into_iter()
                .map(cstring)
                .collect::<Result<_, _>>()?,
            argv: words.into_iter().map(cstring).collect::<Result<_, _>>()?,
            shell,
            direct: true,
        })
    }
}

const SHELL: &str = "/bin/sh";

/// What the cloned PID 1 works with.
struct Child<'a> {
    spec: &'a SandboxSpec,
    filters: &'a [seccompiler::BpfProgram],
    program: &'a Program,
    envp: &'a [CString],
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    /// stdout and stderr are the replica's log pipes, which the app may own.
    own_output: bool,
    status: OwnedFd,
    /// Isolated network: readable once the init created the veth pair.
    net_ready: Option<OwnedFd>,
    /// The init's end of that pipe, which PID 1's copy of the descriptor table holds too:
    /// closed there first, so that an init that gives up is seen as end-of-file.
    net_writer: Option<std::os::fd::RawFd>,
}

/// PID 1's exit code when the sandbox could not be set up (the reason is on the pipe).
pub const SETUP_FAILED: isize = 126;

static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember(sig: i32) {
    PENDING.store(sig, Ordering::SeqCst);
}

/// PID 1 goes when the init goes, and the namespace with it.
pub(crate) fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG, SIGKILL) takes no pointers.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
}

impl Child<'_> {
    /// PID 1's life; the value is its exit code.
    fn run(&self) -> isize {
        let mut report = match self.status.try_clone() {
            Ok(fd) => File::from(fd),
            Err(_) => return 3,
        };
        match self.setup() {
            Ok(app) => {
                let status = self.reap(app);
                let _ = report.write_all(status.encode().as_bytes());
                0
            }
            Err(e) => {
                let _ = report.write_all(format!("error {e}\n").as_bytes());
                SETUP_FAILED
            }
        }
    }

    /// Namespaces' contents, the app, and PID 1's own privilege drop.
    fn setup(&self) -> Result<Pid, String> {
        die_with_parent();
        let handler = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(remember),
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            // SAFETY: the handler only stores into an atomic (async-signal-safe); this
            // process is single-threaded.
            #[allow(unsafe_code)]
            unsafe { nix::sys::signal::sigaction(sig, &handler) }
                .map_err(|e| format!("cannot handle {sig}: {e}"))?;
        }
        if let (Some(net), Some(ready)) = (&self.spec.net, &self.net_ready) {
            if let Some(w) = self.net_writer {
                let _ = nix::unistd::close(w);
            }
            let mut byte = [0u8; 1];
            let mut ready = File::from(
                ready
                    .try_clone()
                    .map_err(|e| format!("cannot wait for the network: {e}"))?,
            );
            if ready.read_exact(&mut byte).is_err() {
                return Err(
                    "the replica's network was not plugged in (see the error above)".into(),
                );
            }
            network::configure(net).map_err(|e| e.to_string())?;
        }
        nix::unistd::sethostname(&self.spec.hostname)
            .map_err(|e| format!("cannot set the hostname: {e}"))?;
        mount_apply::apply(&self.spec.mounts).map_err(|e| e.to_string())?;
        // Installed once, here, for PID 1 and the app it forks next (loading a filter
        // costs the kernel a compile and a pass over every syscall number). PID 1 still
        // holds CAP_SYS_ADMIN, which lets it install one without no_new_privs; what
        // either process does from here on is allowed by the filter.
        seccomp::install(self.filters).map_err(|e| e.to_string())?;
        // The app shares PID 1's memory until it execs (as posix_spawn does), on a stack
        // of its own: no copy of PID 1's page tables to make and then throw away.
        let mut stack = vec![0u8; APP_STACK];
        // SAFETY: CLONE_VM | CLONE_VFORK suspends this single-threaded process until the
        // child has exec'd or exited, so nothing else touches the shared memory
        // meanwhile; the child runs `exec_app` on `stack`, which outlives the call, and
        // never returns into this process's frames (it execs or `_exit`s).
        #[allow(unsafe_code)]
        let child = unsafe {
            nix::sched::clone(
                Box::new(|| self.exec_app()),
                &mut stack,
                CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
                Some(Signal::SIGCHLD as i32),
            )
        }
        .map_err(|e| format!("cannot start the app: {e}"))?;
        caps::drop_to(self.spec.uid, self.spec.gid).map_err(|e| e.to_string())?;
        // Changing credentials cleared the parent-death signal: set it again.
        die_with_parent();
        Ok(child)
    }

    /// The app child (under PID 1's seccomp filter): descriptors, privileges, exec.
    /// Never returns.
    fn exec_app(&self) -> ! {
        let fail = |what: &str| -> ! {
            let msg = format!("wharf sandbox: {what}\n");
            // SAFETY: write(2) to fd 2 of a buffer that lives for the call.
            #[allow(unsafe_code)]
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::_exit(127)
            }
        };
        for (fd, to) in [(&self.stdin, 0), (&self.stdout, 1), (&self.stderr, 2)] {
            // SAFETY: dup2(2) onto the standard descriptors, which this process owns.
            #[allow(unsafe_code)]
            if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(fd), to) } < 0 {
                fail("cannot attach stdin, stdout and stderr");
            }
        }
        // The log pipes become the app's own, so that it can open `/dev/stdout` and
        // `/dev/stderr` by path (nginx, many loggers) as well as write to fds 1 and 2.
        for fd in [1, 2].into_iter().filter(|_| self.own_output) {
            // SAFETY: fchown(2) of a descriptor this process owns; no memory is involved.
            #[allow(unsafe_code)]
            if unsafe { libc::fchown(fd, self.spec.uid, self.spec.gid) } < 0 {
                fail("cannot give the log pipes to the app's user");
            }
        }
        if let Err(e) = nix::unistd::chdir(mounts::APP_DIR) {
            fail(&format!("cannot enter {}: {e}", mounts::APP_DIR));
        }
        if let Err(e) = caps::drop_to(self.spec.uid, self.spec.gid) {
            fail(&e.to_string());
        }
        let p = self.program;
        let mut denied = None;
        for path in &p.paths {
            match nix::unistd::execve(path, &p.argv, self.envp) {
                Err(Errno::ENOENT | Errno::ENOTDIR) => {}
                Err(Errno::EACCES) => denied = denied.or(Some(path)),
                Err(Errno::ENOEXEC) if p.direct => {
                    let Err(e) = nix::unistd::execve(&p.shell[0], &p.shell, self.envp);
                    fail(&format!("cannot run {SHELL}: {e}"))
                }
                Err(e) => fail(&format!("cannot run {}: {e}", path.to_string_lossy())),
            }
        }
        match denied {
            Some(path) => fail(&format!(
                "cannot run {}: permission denied",
                path.to_string_lossy()
            )),
            None => fail(&format!(
                "{}: command not found (looked up in the sandbox's PATH)",
                p.argv[0].to_string_lossy()
            )),
        }
    }

    /// Reaps every child until the app is gone; forwards signals to it meanwhile.
    fn reap(&self, app: Pid) -> AppStatus {
        loop {
            // A signal that arrived before the wait began is forwarded now (one that
            // lands between this check and the wait waits for the next wake-up).
            if let Ok(sig) = Signal::try_from(PENDING.swap(0, Ordering::SeqCst)) {
                let _ = nix::sys::signal::kill(app, sig);
            }
            match waitpid(None, None) {
                Ok(WaitStatus::Exited(p, code)) if p == app => return AppStatus::Exited(code),
                Ok(WaitStatus::Signaled(p, sig, _)) if p == app => {
                    return AppStatus::Signaled(sig as i32)
                }
                Ok(_) => {} // an orphan adopted by PID 1, now reaped
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return AppStatus::Exited(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_round_trip() {
        for s in [
            AppStatus::Exited(0),
            AppStatus::Exited(3),
            AppStatus::Signaled(9),
        ] {
            assert_eq!(AppStatus::decode(&s.encode()), Some(Ok(s)));
        }
        assert_eq!(
            AppStatus::decode("error cannot mount\n"),
            Some(Err("cannot mount".to_string()))
        );
        assert_eq!(AppStatus::decode(""), None);
        assert_eq!(AppStatus::decode("garbage"), None);
    }
}
