//! Reading `/proc`: process identity (pid + start time) that survives pid reuse.

use std::path::Path;

/// State and start time (clock ticks since boot) of `pid`, from `/proc/PID/stat`.
pub fn stat(proc_root: &Path, pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&text)
}

/// Parses the state (field 3) and start time (field 22) of a stat line. The command
/// name (field 2) may contain spaces and parentheses, so parsing starts after the last ')'.
pub fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Process group (field 5) of a stat line.
fn parse_pgrp(text: &str) -> Option<u32> {
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// True when some live process is in process group `pgid`.
pub fn group_has_members(proc_root: &Path, pgid: u32) -> bool {
    // Signal 0 asks the kernel whether the group has any process at all; "none" (the
    // usual answer once a replica ended) needs no scan of every process's stat.
    if proc_root == Path::new("/proc") {
        if let Ok(g) = i32::try_from(pgid) {
            let group = nix::unistd::Pid::from_raw(g);
            if g > 0 && nix::sys::signal::killpg(group, None) == Err(nix::errno::Errno::ESRCH) {
                return false;
            }
        }
    }
    let Ok(rd) = std::fs::read_dir(proc_root) else {
        return false;
    };
    rd.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .any(|text| {
            parse_pgrp(&text) == Some(pgid) && parse_stat(&text).is_some_and(|(s, _)| s != 'Z')
        })
}

/// True when `pid` exists, is not a zombie, and started at `start_time`.
pub fn is_same_live_process(proc_root: &Path, pid: u32, start_time: u64) -> bool {
    matches!(stat(proc_root, pid), Some((state, start)) if start == start_time && state != 'Z' && state != 'X')
}

/// A descriptor that becomes readable when process `pid` ends (`pidfd_open(2)`, Linux
/// 5.3+); the caller checks that `pid` is still the process it means after opening it.
pub fn pidfd(pid: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor, owned by nothing else.
    #[allow(unsafe_code)]
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Waits up to `timeout` for the process behind `fd` (a [`pidfd`]) to end; true once
/// it has (a zombie has ended).
pub fn wait_pidfd(
    fd: &std::os::fd::OwnedFd,
    timeout: std::time::Duration,
) -> std::io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => return Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Children of `pid` (of any of its threads), from `/proc/PID/task/*/children`.
pub fn children(proc_root: &Path, pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(proc_root.join(pid.to_string()).join("task")) else {
        return Vec::new();
    };
    let mut out: Vec<u32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The environment `pid` was started with (`/proc/PID/environ`, NUL-separated).
pub fn environ(proc_root: &Path, pid: u32) -> Option<Vec<(String, String)>> {
    let bytes = std::fs::read(proc_root.join(pid.to_string()).join("environ")).ok()?;
    Some(parse_environ(&bytes))
}

/// `K=V` entries separated by NULs; entries without `=` are skipped.
pub fn parse_environ(bytes: &[u8]) -> Vec<(String, String)> {
    bytes
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry);
            let (k, v) = text.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environ_entries() {
        let env = parse_environ(b"A=1\0B=x=y\0junk\0=nokey\0C=\0");
        assert_eq!(
            env,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x=y".to_string()),
                ("C".to_string(), String::new()),
            ]
        );
    }

    #[test]
    fn children_of_this_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let kids = children(Path::new("/proc"), std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(kids.contains(&child.id()), "{kids:?}");
    }

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "1234 (my (weird) app) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 0";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_a_fake_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("42")).unwrap();
        std::fs::write(
            dir.path().join("42/stat"),
            "42 (sh) Z 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0 0",
        )
        .unwrap();
        assert_eq!(stat(dir.path(), 42), Some(('Z', 555)));
        assert!(
            !is_same_live_process(dir.path(), 42, 555),
            "zombies are dead"
        );
        std::fs::write(
            dir.path().join("42/stat"),
            "42 (sh) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0 0",
        )
        .unwrap();
        assert!(is_same_live_process(dir.path(), 42, 555));
        assert!(
            !is_same_live_process(dir.path(), 42, 556),
            "pid reused by another process"
        );
        assert!(!is_same_live_process(dir.path(), 43, 555));
        assert!(group_has_members(dir.path(), 42));
        assert!(!group_has_members(dir.path(), 41));
    }

    #[test]
    fn reads_the_real_proc_for_self() {
        let me = std::process::id();
        let (state, start) = stat(Path::new("/proc"), me).unwrap();
        assert!(state == 'R' || state == 'S');
        assert!(is_same_live_process(Path::new("/proc"), me, start));
    }
}
