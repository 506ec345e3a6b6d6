//! Looking at and killing processes through /proc and nix.

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::path::Path;

fn pid(p: u32) -> Pid {
    Pid::from_raw(i32::try_from(p).unwrap_or(i32::MAX))
}

/// `(state, ppid, pgrp)` from /proc/PID/stat.
pub(crate) fn stat(p: u32) -> Option<(char, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let after = &text[text.rfind(')')? + 2..];
    let mut f = after.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Whether PID exists and is not a zombie.
pub fn process_alive(p: u32) -> bool {
    matches!(stat(p), Some((s, _, _)) if s != 'Z' && s != 'X')
}

/// Whether PID has exited (gone from /proc, or a zombie nobody reaped yet).
pub fn is_gone(p: u32) -> bool {
    !process_alive(p)
}

/// Every live descendant of `root` (children, grandchildren...), not `root` itself.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut all = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some((state, ppid, _)) = stat(p) {
                    if state != 'Z' {
                        all.push((p, ppid));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &all {
            if pp == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// The host pid, among `candidates`, of the process whose pid in its own (innermost) PID
/// namespace is `ns_pid` — what an app inside a sandbox reports as its own or a child's
/// pid. Without PID namespaces the two are the same.
pub fn host_pid(ns_pid: u32, candidates: &[u32]) -> Option<u32> {
    candidates.iter().copied().find(|&p| {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .and_then(|v| v.split_whitespace().last()?.parse::<u32>().ok())
            })
            == Some(ns_pid)
    })
}

/// SIGKILL to one process.
pub fn kill9(p: u32) {
    let _ = kill(pid(p), Signal::SIGKILL);
}

/// SIGKILL to the process group led by `leader` (a replica's init and everything it runs).
pub(crate) fn killpg9(leader: u32) {
    let _ = killpg(pid(leader), Signal::SIGKILL);
}

/// SIGTERM to one process.
pub(crate) fn term(p: u32) {
    let _ = kill(pid(p), Signal::SIGTERM);
}

/// Kills every process that belongs to the data dir `dir`: whose command line mentions it
/// (replica inits run as `wharf init DIR/run/APP/ID`) or whose working directory is inside
/// it (apps run in their release's artifact), with its whole process group unless that is
/// the test's own group.
pub(crate) fn kill_mentioning(dir: &Path) {
    let needle = dir.as_os_str().as_encoded_bytes();
    if needle.is_empty() {
        return;
    }
    let me = std::process::id();
    let my_group = u32::try_from(nix::unistd::getpgrp().as_raw()).unwrap_or(0);
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if p == me {
            continue;
        }
        let in_cmdline = std::fs::read(format!("/proc/{p}/cmdline"))
            .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle));
        let in_cwd = std::fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|c| c.starts_with(dir));
        if in_cmdline || in_cwd {
            match stat(p) {
                Some((_, _, pgrp)) if pgrp > 1 && pgrp != my_group => killpg9(pgrp),
                _ => kill9(p),
            }
        }
    }
}
