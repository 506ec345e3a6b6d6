//! Helpers for the sandbox tests: root detection, probing from inside a replica through
//! testapp's `/sh` route, and finding a replica's cgroup on the host.

use crate::Server;
use std::path::PathBuf;

/// Whether the tests run as root; prints why a test is skipped when not.
pub fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped {test}: the sandbox needs root (run the tests as root)");
    }
    root
}

/// Percent-encodes a query parameter value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `sh -c SCRIPT` inside a replica of the app at `host` (testapp's `/sh`); returns
/// the exit code and the output (stdout, then stderr).
#[track_caller]
pub fn sh(s: &Server, host: &str, script: &str) -> (i32, String) {
    let r = s.get(host, &format!("/sh?c={}", encode(script)));
    assert_eq!(r.status, 200, "GET /sh on {host}: {r:?}");
    let (first, rest) = r.body.split_once('\n').unwrap_or((r.body.as_str(), ""));
    let code = first
        .strip_prefix("exit=")
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("/sh answered {:?}", r.body));
    (code, rest.to_string())
}

/// The directory of `pid`'s cgroup for `controller` (v1), or its unified cgroup (v2,
/// when the controller has no v1 hierarchy), on the host.
pub fn cgroup_dir(pid: u32, controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        if ctrls.split(',').any(|c| c == controller) {
            let dir = PathBuf::from("/sys/fs/cgroup")
                .join(controller)
                .join(path.trim_start_matches('/'));
            return dir.is_dir().then_some(dir);
        }
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        }
    }
    let v2 = v2?;
    let base = if PathBuf::from("/sys/fs/cgroup/cgroup.controllers").exists() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/unified")
    };
    let dir = base.join(v2.trim_start_matches('/'));
    dir.is_dir().then_some(dir)
}

/// A number from a cgroup file (`pids.current`), or a `key N` line of a keyed one.
pub fn cgroup_value(dir: &std::path::Path, file: &str, key: Option<&str>) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    match key {
        None => text.trim().parse().ok(),
        Some(k) => text.lines().find_map(|l| {
            let (name, v) = l.split_once(' ')?;
            (name == k).then(|| v.trim().parse().ok()).flatten()
        }),
    }
}

/// CPU time used so far by the cgroup `dir`, in nanoseconds: v2's `usage_usec` of
/// `cpu.stat`, else (a v1 `cpu` hierarchy has no usage counter without `cpuacct`) the sum
/// of the run times in `/proc/PID/task/TID/schedstat` of the tasks in it now.
pub fn cgroup_cpu_ns(dir: &std::path::Path) -> u64 {
    if let Some(us) = cgroup_value(dir, "cpu.stat", Some("usage_usec")) {
        return us * 1000;
    }
    let tasks = std::fs::read_to_string(dir.join("tasks")).unwrap_or_default();
    tasks
        .lines()
        .filter_map(|t| t.trim().parse::<u32>().ok())
        .filter_map(|tid| {
            let text = std::fs::read_to_string(format!("/proc/{tid}/task/{tid}/schedstat")).ok()?;
            text.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// The data dir's cgroup instance (`dXXXXXXXXXX`) as the server's start-up notice names
/// it (`... under wharf/dXXXXXXXXXX, ...`), if it runs sandboxed.
pub fn instance_from_log(log: &str) -> Option<String> {
    let rest = &log[log.find(" under ")? + " under ".len()..];
    let path = rest.split([',', ' ', '\n']).next()?;
    let name = path.rsplit('/').next()?;
    (name.starts_with('d') && name.len() > 1).then(|| name.to_string())
}

/// Kills what is left in, and removes, every cgroup of `instance` under this process's
/// own cgroups (where a server started by the tests puts its replicas' cgroups).
pub fn remove_instance_cgroups(instance: &str) {
    let Ok(me) = std::fs::read_to_string("/proc/self/cgroup") else {
        return;
    };
    for line in me.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let mounts: Vec<PathBuf> = if ctrls.is_empty() {
            vec![
                PathBuf::from("/sys/fs/cgroup"),
                PathBuf::from("/sys/fs/cgroup/unified"),
            ]
        } else {
            ctrls
                .split(',')
                .map(|c| PathBuf::from("/sys/fs/cgroup").join(c))
                .collect()
        };
        for m in mounts {
            let base = m
                .join(path.trim_start_matches('/'))
                .join("wharf")
                .join(instance);
            let Ok(rd) = std::fs::read_dir(&base) else {
                continue;
            };
            let leaves: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            for leaf in &leaves {
                let procs = std::fs::read_to_string(leaf.join("cgroup.procs")).unwrap_or_default();
                for p in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                    crate::kill9(p);
                }
            }
            let mut dirs = leaves;
            dirs.push(base);
            for d in dirs {
                let _ = crate::wait_until(std::time::Duration::from_secs(2), || {
                    std::fs::remove_dir(&d).is_ok() || !d.exists()
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn instance_is_read_from_the_notice() {
        let log = "wharf: isolation: sandbox; cgroups hybrid (cpu, memory, pids) under wharf/d9799972508, pids limit 512\nwharf: router";
        assert_eq!(
            super::instance_from_log(log).as_deref(),
            Some("d9799972508")
        );
        assert_eq!(super::instance_from_log("wharf: not running as root"), None);
    }
}
