//! The launcher: a fork server for replica inits.
//!
//! Starting a replica's init by spawning this binary again costs an `execve` of the
//! whole platform (mapping and faulting in its pages, the dynamic loader, the standard
//! library's start-up): about 0.8 ms on the benchmark machine, the largest single part
//! of a sandboxed replica's start after the sandbox itself. The server instead forks,
//! while it is still single-threaded, a small process that only waits for requests on
//! a socket; for each replica the runtime sends the run directory, the launcher forks,
//! and the child runs [`crate::init::run`] in its place: a fork of a small process, no
//! exec.
//!
//! ```text
//! wharf server ── launcher (forked before any thread; dies with the server)
//!                    ├─ init RUN_DIR (forked per replica; outlives the launcher)
//!                    └─ init RUN_DIR
//! ```
//!
//! The inits are the launcher's children, so the launcher reaps them: before it answers
//! any request it collects the status of every child that ended, and `wait PID` hands
//! one over ([`Launcher::wait`]), so that `ps` can still say "killed by signal 9" of an
//! init that was killed before it could record its app's exit.
//!
//! Invariants: [`Launcher::start`] is called before the process starts a thread (the
//! launcher and every init it forks may then allocate freely); the launcher never
//! starts a thread and holds no descriptor but its socket and the standard streams; a
//! status it collected is kept until asked for, or until a new init gets the same pid
//! (so a status is never mixed up with a later process's), or until [`KEPT`] newer ones
//! were collected (the runtime asks only about inits that recorded no exit). An init
//! forked here is what an exec'd one is: the same `init::run`, stdin and stdout on
//! `/dev/null`, stderr in `RUN_DIR/init.err`, a session of its own. A launcher that is
//! gone makes [`Launcher::launch`] fail, and the runtime falls back to spawning.

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::unistd::{ForkResult, Pid};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::Mutex;

/// Longest run directory path a request carries.
const MAX_REQUEST: usize = 4096;

/// The server's end of the launcher.
pub struct Launcher {
    sock: Mutex<OwnedFd>,
    pid: Pid,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher").field("pid", &self.pid).finish()
    }
}

impl Launcher {
    /// Forks the launcher, without the environment variables named in `scrub` (the
    /// inits it forks never see them). Call while this process has a single thread
    /// (before an async runtime or anything else starts one).
    pub fn start(scrub: &[&str]) -> std::io::Result<Launcher> {
        // Built here, once, and inherited by every init (an error shows when one starts).
        let _ = crate::sandbox::seccomp::filters();
        let (ours, theirs) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // SAFETY: the caller guarantees a single thread, so the child may run any code.
        #[allow(unsafe_code)]
        match unsafe { nix::unistd::fork() }? {
            ForkResult::Child => {
                drop(ours);
                for name in scrub {
                    std::env::remove_var(name);
                }
                serve(&theirs)
            }
            ForkResult::Parent { child } => Ok(Launcher {
                sock: Mutex::new(ours),
                pid: child,
            }),
        }
    }

    /// The launcher's pid.
    pub fn pid(&self) -> u32 {
        u32::try_from(self.pid.as_raw()).unwrap_or(0)
    }

    /// Starts the init of `run_dir`; returns its pid.
    pub fn launch(&self, run_dir: &Path) -> std::io::Result<u32> {
        let mut request = b"start ".to_vec();
        request.extend_from_slice(run_dir.as_os_str().as_bytes());
        if request.len() > MAX_REQUEST {
            return Err(std::io::Error::other(format!(
                "run directory path too long for the launcher: {}",
                run_dir.display()
            )));
        }
        decode_reply(&self.ask(&request)?)
    }

    /// How the launcher's child `pid` ended, once it has (`None` while it runs, or when
    /// it is not a child of this launcher or its status was handed over already).
    pub fn wait(&self, pid: u32) -> std::io::Result<Option<ExitStatus>> {
        let reply = self.ask(format!("wait {pid}").as_bytes())?;
        let text = String::from_utf8_lossy(&reply);
        match text.split_once(' ') {
            Some(("status", raw)) => raw
                .parse()
                .map(|raw| Some(ExitStatus::from_raw(raw)))
                .map_err(|_| std::io::Error::other(format!("bad reply from the launcher: {text}"))),
            _ if text == "none" => Ok(None),
            _ => Err(decode_reply(&reply).err().unwrap_or_else(|| {
                std::io::Error::other(format!("bad reply from the launcher: {text}"))
            })),
        }
    }

    /// One request, one reply.
    fn ask(&self, request: &[u8]) -> std::io::Result<Vec<u8>> {
        let sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        let fd = sock.as_raw_fd();
        socket::send(fd, request, MsgFlags::MSG_NOSIGNAL)?;
        let mut buf = [0u8; 512];
        let n = loop {
            match socket::recv(fd, &mut buf, MsgFlags::empty()) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other?,
            }
        };
        Ok(buf[..n].to_vec())
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Closing our end is the launcher's signal to exit; reap it.
        if let Ok(sock) = self.sock.get_mut() {
            let _ = socket::shutdown(sock.as_raw_fd(), socket::Shutdown::Both);
        }
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// `ok PID` or `err MESSAGE`, as the launcher answers.
fn decode_reply(reply: &[u8]) -> std::io::Result<u32> {
    let text = String::from_utf8_lossy(reply);
    match text.split_once(' ') {
        Some(("ok", pid)) => pid
            .parse()
            .map_err(|_| std::io::Error::other(format!("bad reply from the launcher: {text}"))),
        Some(("err", message)) => Err(std::io::Error::other(message.to_string())),
        _ if reply.is_empty() => Err(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "the launcher is gone",
        )),
        _ => Err(std::io::Error::other(format!(
            "bad reply from the launcher: {text}"
        ))),
    }
}

/// The launcher's life: `start RUN_DIR` forks an init, `wait PID` hands over how one
/// ended; until the server's end closes.
fn serve(sock: &OwnedFd) -> ! {
    crate::sandbox::pid1::die_with_parent();
    let fd = sock.as_raw_fd();
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut ended = Ended::default();
    loop {
        let n = match socket::recv(fd, &mut buf, MsgFlags::empty()) {
            Ok(0) => std::process::exit(0),
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::process::exit(0),
        };
        reap(&mut ended);
        let request = &buf[..n];
        let reply = if let Some(dir) = request.strip_prefix(b"start ") {
            let run_dir = Path::new(OsStr::from_bytes(dir)).to_path_buf();
            // SAFETY: the launcher is single-threaded (see the module's invariants).
            #[allow(unsafe_code)]
            match unsafe { nix::unistd::fork() } {
                Ok(ForkResult::Child) => std::process::exit(become_init(sock, &run_dir)),
                Ok(ForkResult::Parent { child }) => {
                    // A status kept for an earlier init with this pid is stale now.
                    ended.remove(child.as_raw());
                    format!("ok {child}")
                }
                Err(e) => format!("err cannot fork a replica init: {e}"),
            }
        } else if let Some(pid) = request
            .strip_prefix(b"wait ")
            .and_then(|p| std::str::from_utf8(p).ok()?.parse::<i32>().ok())
        {
            match ended.remove(pid) {
                Some(raw) => format!("status {raw}"),
                None => "none".to_string(),
            }
        } else {
            "err unknown request".to_string()
        };
        if socket::send(fd, reply.as_bytes(), MsgFlags::MSG_NOSIGNAL).is_err() {
            std::process::exit(0);
        }
    }
}

/// Statuses kept for inits nobody asked about.
pub const KEPT: usize = 4096;

/// Statuses of ended inits by pid, the oldest dropped past [`KEPT`].
#[derive(Default)]
struct Ended {
    status: HashMap<i32, i32>,
    order: std::collections::VecDeque<i32>,
}

impl Ended {
    fn insert(&mut self, pid: i32, raw: i32) {
        if self.status.insert(pid, raw).is_none() {
            self.order.push_back(pid);
        }
        while self.status.len() > KEPT {
            match self.order.pop_front() {
                Some(old) => {
                    self.status.remove(&old);
                }
                None => break,
            }
        }
    }
    fn remove(&mut self, pid: i32) -> Option<i32> {
        let raw = self.status.remove(&pid)?;
        self.order.retain(|p| *p != pid);
        Some(raw)
    }
}

/// Collects the raw wait status of every child that ended.
fn reap(ended: &mut Ended) {
    loop {
        let mut raw = 0;
        // SAFETY: waitpid(2) writes the status into `raw`, which lives for the call.
        #[allow(unsafe_code)]
        let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        ended.insert(pid, raw);
    }
}

/// In the launcher's child: the standard streams an exec'd init gets, then the init.
fn become_init(sock: &OwnedFd, run_dir: &Path) -> i32 {
    // SAFETY: closes the launcher's socket in this child, which never uses it again
    // (its owner is never dropped here: the child leaves with `exit`).
    #[allow(unsafe_code)]
    unsafe {
        libc::close(sock.as_raw_fd());
    }
    let streams = || -> std::io::Result<()> {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        let err = std::fs::File::create(run_dir.join("init.err"))?;
        nix::unistd::dup2_stdin(&null)?;
        nix::unistd::dup2_stdout(&null)?;
        nix::unistd::dup2_stderr(&err)?;
        Ok(())
    };
    if let Err(e) = streams() {
        eprintln!(
            "wharf launcher: cannot set up the init of {}: {e}",
            run_dir.display()
        );
        return 2;
    }
    crate::init::run(run_dir)
}

#[cfg(test)]
mod tests {
    use super::{decode_reply, Ended, KEPT};

    #[test]
    fn statuses_are_kept_until_asked_replaced_or_too_old() {
        let mut e = Ended::default();
        e.insert(10, 9);
        assert_eq!(e.remove(10), Some(9));
        assert_eq!(e.remove(10), None, "handed over once");
        for pid in 0..(KEPT as i32 + 5) {
            e.insert(pid, pid);
        }
        assert_eq!(e.status.len(), KEPT);
        assert_eq!(e.remove(0), None, "the oldest went first");
        assert_eq!(e.remove(5), Some(5));
        e.insert(7, 1);
        assert_eq!(e.remove(7), Some(1), "a newer status of a reused pid wins");
        assert_eq!(e.status.len(), e.order.len());
    }

    #[test]
    fn replies_decode_to_a_pid_or_a_clear_error() {
        assert_eq!(decode_reply(b"ok 4242").unwrap(), 4242);
        let e = decode_reply(b"err cannot fork a replica init: EAGAIN").unwrap_err();
        assert_eq!(e.to_string(), "cannot fork a replica init: EAGAIN");
        let e = decode_reply(b"").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(decode_reply(b"ok x").is_err());
        assert!(decode_reply(b"hello").is_err());
    }
}
