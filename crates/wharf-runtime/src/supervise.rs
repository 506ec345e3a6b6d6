//! The init's watch over its app, in one thread: the app's stdout and stderr pipes cut
//! into lines for the log, and the app's end (a pidfd), in one `poll` loop; signals the
//! init receives meanwhile are passed on to the app.
//!
//! One thread instead of a reader thread per pipe: a replica's init creates no threads,
//! so nothing of it competes for a CPU with the sandbox's start.
//!
//! Invariants: every byte the app wrote before its pipes closed reaches `line` (cut at
//! newlines, or at [`crate::logs::MAX_LINE`] bytes, and the rest at the end of the
//! stream); once the app is reaped, the pipes get at most [`DRAIN`] more (a grandchild
//! may still hold them open); the app is reaped exactly once.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// How long the pipes are read after the app ended.
pub const DRAIN: Duration = Duration::from_secs(1);
/// How often the app is checked when no pidfd could be opened (kernels before 5.3).
const FALLBACK_TICK: u16 = 20;

/// How the app ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
    /// `waitpid` failed: the app is no longer this process's child.
    Lost(nix::errno::Errno),
}

/// Splits one stream into lines.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// Takes `bytes`, hands every complete line (without its newline) to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut dyn FnMut(&str)) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            let cut = match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i < crate::logs::MAX_LINE => i + 1,
                _ if rest.len() >= crate::logs::MAX_LINE => crate::logs::MAX_LINE,
                _ => break,
            };
            out(&String::from_utf8_lossy(&rest[..cut]));
            start += cut;
        }
        self.buf.drain(..start);
    }

    /// The stream ended: whatever is left is the last line.
    pub fn finish(&mut self, out: &mut dyn FnMut(&str)) {
        if !self.buf.is_empty() {
            out(&String::from_utf8_lossy(&self.buf));
            self.buf.clear();
        }
    }
}

/// Watches `app` (a child of this process) until it ended and its `outputs` (stdout,
/// stderr) closed or [`DRAIN`] passed after its end; `line(stream, text)` gets each line.
/// A signal number found in `pending` when `poll` is interrupted is sent to the app.
pub fn supervise(
    app: Pid,
    outputs: Vec<(OwnedFd, &'static str)>,
    pending: &AtomicI32,
    line: &mut dyn FnMut(&str, &str),
) -> Ended {
    let pidfd = u32::try_from(app.as_raw())
        .ok()
        .and_then(|p| crate::procfs::pidfd(p).ok());
    let mut streams: Vec<(OwnedFd, &'static str, Lines)> = outputs
        .into_iter()
        .map(|(fd, name)| (fd, name, Lines::default()))
        .collect();
    let mut ended: Option<(Ended, Instant)> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if ended.is_none() {
            ended = reap(app).map(|e| (e, Instant::now() + DRAIN));
        }
        let left = match ended {
            Some((_, deadline)) => deadline.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        };
        if let Some((e, _)) = ended {
            if streams.is_empty() || left.is_zero() {
                return e;
            }
        }
        let mut fds: Vec<PollFd> = streams
            .iter()
            .map(|(fd, _, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let watching_app = ended.is_none();
        if let (Some(p), true) = (&pidfd, watching_app) {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        let timeout = if ended.is_some() {
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
        } else if pidfd.is_some() {
            PollTimeout::NONE
        } else {
            PollTimeout::from(FALLBACK_TICK)
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {
                let sig = pending.swap(0, Ordering::SeqCst);
                if let (Ok(sig), true) = (nix::sys::signal::Signal::try_from(sig), watching_app) {
                    let _ = nix::sys::signal::kill(app, sig);
                }
                continue;
            }
            Err(_) => {}
        }
        let ready: Vec<bool> = fds
            .iter()
            .take(streams.len())
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut closed = Vec::new();
        for (i, (fd, name, lines)) in streams.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            match nix::unistd::read(fd.as_fd(), &mut chunk) {
                Ok(0) | Err(_) => {
                    lines.finish(&mut |l| line(name, l));
                    closed.push(i);
                }
                Ok(n) => lines.push(&chunk[..n], &mut |l| line(name, l)),
            }
        }
        for i in closed.into_iter().rev() {
            streams.remove(i);
        }
    }
}

/// Reaps `app` if it ended.
fn reap(app: Pid) -> Option<Ended> {
    loop {
        return match waitpid(app, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some(Ended::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(Ended::Signaled(sig as i32)),
            Ok(WaitStatus::StillAlive) => None,
            Ok(_) => continue, // stopped or continued: not an end
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => Some(Ended::Lost(e)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let mut got = Vec::new();
        let mut l = Lines::default();
        for c in chunks {
            l.push(c, &mut |s| got.push(s.to_string()));
        }
        l.finish(&mut |s| got.push(s.to_string()));
        got
    }

    #[test]
    fn lines_are_cut_at_newlines_across_reads() {
        assert_eq!(
            lines_of(&[b"a\nb", b"c\n\nd"]),
            ["a\n", "bc\n", "\n", "d"],
            "the newline stays with its line, as the log record expects"
        );
        assert!(lines_of(&[]).is_empty());
    }

    #[test]
    fn a_line_longer_than_the_limit_is_cut_there() {
        let max = crate::logs::MAX_LINE;
        let long = vec![b'x'; max + 10];
        let got = lines_of(&[&long[..100], &long[100..], b"\n"]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), max);
        assert_eq!(got[1], format!("{}\n", "x".repeat(10)));
    }

    fn child(script: &str) -> (Pid, Vec<(OwnedFd, &'static str)>) {
        let mut c = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(c.id() as i32);
        let out = OwnedFd::from(c.stdout.take().unwrap());
        let err = OwnedFd::from(c.stderr.take().unwrap());
        // The std handle is dropped without waiting: `supervise` reaps the child.
        std::mem::forget(c);
        (pid, vec![(out, "stdout"), (err, "stderr")])
    }

    #[test]
    fn both_streams_and_the_exit_are_seen() {
        let (pid, outputs) = child("echo one; echo two >&2; printf tail; exit 3");
        let mut got = Vec::new();
        let pending = AtomicI32::new(0);
        let ended = supervise(pid, outputs, &pending, &mut |s, l| {
            got.push(format!("{s}:{l}"))
        });
        assert_eq!(ended, Ended::Exited(3));
        got.sort();
        assert_eq!(got, ["stderr:two\n", "stdout:one\n", "stdout:tail"]);
    }

    #[test]
    fn a_grandchild_holding_the_pipes_delays_the_end_by_the_drain_at_most() {
        let (pid, outputs) = child("sleep 30 & echo bye");
        let t = Instant::now();
        let mut got = Vec::new();
        let ended = supervise(pid, outputs, &AtomicI32::new(0), &mut |_, l| {
            got.push(l.to_string())
        });
        assert_eq!(ended, Ended::Exited(0));
        assert_eq!(got, ["bye\n"]);
        let took = t.elapsed();
        assert!(took >= DRAIN && took < DRAIN * 3, "{took:?}");
    }

    #[test]
    fn a_pending_signal_is_passed_to_the_app_when_poll_is_interrupted() {
        let (pid, outputs) = child("exec sleep 30");
        let pending = AtomicI32::new(libc::SIGTERM);
        // Interrupt the poll: a signal with a handler that does nothing (SA_RESTART off).
        extern "C" fn nothing(_: i32) {}
        let act = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(nothing),
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler does nothing, which is async-signal-safe.
        #[allow(unsafe_code)]
        unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGUSR2, &act) }.unwrap();
        let me = nix::unistd::gettid();
        let poke = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: tgkill(2) of this test's own thread with SIGUSR2, handled above.
            #[allow(unsafe_code)]
            unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    nix::unistd::getpid().as_raw(),
                    me.as_raw(),
                    libc::SIGUSR2,
                );
            }
        });
        let ended = supervise(pid, outputs, &pending, &mut |_, _| {});
        poke.join().unwrap();
        assert_eq!(ended, Ended::Signaled(libc::SIGTERM));
    }
}
