//! cgroup v2: the unified tree.
//!
//! Preparing enables `memory`, `cpu` and `pids` in `cgroup.subtree_control` from the
//! server's own cgroup down to wharf's base. v2 forbids processes in a cgroup whose
//! subtree has controllers enabled, so when the server's own cgroup is not the root and
//! holds processes, they are first moved into a `wharf-server` leaf beside the base
//! (what container engines do with their own scope).
//!
//! Limits: `memory.max` and `memory.swap.max = 0` (a hard limit), `cpu.weight` from CPU
//! units with the same conversion as runc and Kubernetes (shares 2..262144 onto weight
//! 1..10000, so 1024 units = weight 39), a hard CPU limit as `cpu.max` = "QUOTA PERIOD"
//! (microseconds; period 100 ms), `pids.max`. Killing writes `cgroup.kill` where
//! the kernel has it (5.14+). The OOM count is `oom_kill` of `memory.events`.
//!
//! Invariant: only files under the given directories are touched (unit-tested against a
//! fake tree; this project's CI machine runs v1).

use super::cgroup::{cpu_quota_us, keyed, write, CgroupError, Limits, CPU_PERIOD_US};
use std::path::{Path, PathBuf};

const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// Enables the controllers along `chain` (server's own cgroup first, wharf's base last).
pub fn prepare(chain: &[PathBuf]) -> Result<(), CgroupError> {
    let Some(base) = chain.last() else {
        return Ok(());
    };
    for dir in chain {
        std::fs::create_dir_all(dir).map_err(|source| CgroupError::Create {
            path: dir.clone(),
            source,
        })?;
    }
    for (i, dir) in chain.iter().enumerate() {
        if dir == base {
            break;
        }
        if i == 0 {
            evacuate(dir)?;
        }
        let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let enable: Vec<String> = CONTROLLERS
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if !enable.is_empty() {
            write(&dir.join("cgroup.subtree_control"), &enable.join(" "))?;
        }
    }
    Ok(())
}

/// Moves the processes of the non-root cgroup `dir` into `dir/wharf-server`, so that
/// controllers can be enabled for its children.
fn evacuate(dir: &Path) -> Result<(), CgroupError> {
    let is_root = dir.join("cgroup.procs").exists() && !dir.join("cgroup.type").exists();
    if is_root {
        return Ok(());
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let pids: Vec<&str> = procs
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if pids.is_empty() {
        return Ok(());
    }
    let leaf = dir.join("wharf-server");
    std::fs::create_dir_all(&leaf).map_err(|source| CgroupError::Create {
        path: leaf.clone(),
        source,
    })?;
    for p in pids {
        // A process that exited meanwhile cannot be moved; that is fine.
        match write(&leaf.join("cgroup.procs"), p) {
            Ok(()) => {}
            Err(CgroupError::Write { source, .. })
                if source.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// CPU units (1024 = one core) to `cpu.weight`, as runc converts shares.
pub fn weight(units: u32) -> u64 {
    let shares = u64::from(units).clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Writes the limits into the leaf `dir`.
pub fn set_limits(dir: &Path, l: &Limits) -> Result<(), CgroupError> {
    if let Some(bytes) = l.memory {
        write(&dir.join("memory.max"), &bytes.to_string())?;
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, "0")?;
        }
    }
    if let Some(units) = l.cpu_units {
        write(&dir.join("cpu.weight"), &weight(units).to_string())?;
    }
    if let Some(millicores) = l.cpu_limit {
        write(
            &dir.join("cpu.max"),
            &format!("{} {CPU_PERIOD_US}", cpu_quota_us(millicores)),
        )?;
    }
    if let Some(n) = l.pids {
        write(&dir.join("pids.max"), &n.to_string())?;
    }
    Ok(())
}

/// Processes the OOM killer killed in `dir`.
pub fn oom_kills(dir: &Path) -> u64 {
    keyed(&dir.join("memory.events"), "oom_kill").unwrap_or(0)
}

/// Kills everything in `dir` at once where the kernel supports `cgroup.kill`.
pub fn kill(dir: &Path) {
    let f = dir.join("cgroup.kill");
    if f.exists() {
        let _ = write(&f, "1");
    }
}

#[cfg(test)]
mod tests {
    use super::super::cgroup::{detect, Mode, Tree};
    use super::*;

    #[test]
    fn weight_matches_runc() {
        assert_eq!(weight(2), 1);
        assert_eq!(weight(1024), 39);
        assert_eq!(weight(262_144), 10_000);
        assert_eq!(weight(0), 1, "below the minimum is the minimum");
        assert_eq!(weight(u32::MAX), 10_000);
    }

    /// A fake v2 host: the unified tree at `root`, the server in `/system.slice/wharf`.
    fn fake_host(root: &Path) -> Tree {
        let own = root.join("system.slice/wharf");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(root.join("cgroup.controllers"), "cpuset cpu io memory pids").unwrap();
        std::fs::write(own.join("cgroup.controllers"), "cpu memory pids").unwrap();
        std::fs::write(own.join("cgroup.type"), "domain").unwrap();
        std::fs::write(own.join("cgroup.procs"), "100\n101\n").unwrap();
        let mi = format!("30 23 0:26 / {} rw - cgroup2 cgroup2 rw\n", root.display());
        let d = detect(&mi, "0::/system.slice/wharf\n").unwrap();
        assert_eq!(d.mode, Mode::V2);
        Tree::new(&d, "wharf", "inst")
    }

    #[test]
    fn prepare_moves_the_server_out_and_enables_controllers_down_the_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = fake_host(tmp.path());
        let own = tmp.path().join("system.slice/wharf");
        std::fs::create_dir_all(own.join("wharf")).unwrap();
        std::fs::write(own.join("wharf/cgroup.controllers"), "cpu memory pids").unwrap();
        tree.prepare().unwrap();
        assert_eq!(
            std::fs::read_to_string(own.join("wharf-server/cgroup.procs")).unwrap(),
            "101",
            "every server process was moved (the fake file keeps the last write)"
        );
        assert_eq!(
            std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
            "+memory +cpu +pids"
        );
        assert_eq!(
            std::fs::read_to_string(own.join("wharf/cgroup.subtree_control")).unwrap(),
            "+memory +cpu +pids"
        );
        assert!(own.join("wharf/inst").is_dir());
        assert!(
            !own.join("wharf/inst/cgroup.subtree_control").exists(),
            "the base only holds leaves; nothing to enable below them"
        );
        assert_eq!(tree.controllers(), ["memory", "cpu", "pids"]);
    }

    #[test]
    fn leaf_limits_oom_count_and_kill() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = fake_host(tmp.path());
        tree.prepare().unwrap();
        let dir = tmp.path().join("system.slice/wharf/wharf/inst/a.web-1");
        let leaf = tree
            .create(
                "a.web-1",
                &Limits {
                    memory: Some(1 << 30),
                    cpu_units: Some(512),
                    cpu_limit: Some(200),
                    pids: Some(64),
                },
            )
            .unwrap();
        assert!(leaf.v2);
        assert_eq!(leaf.dirs, std::slice::from_ref(&dir));
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), "1073741824");
        assert_eq!(read("cpu.weight"), weight(512).to_string());
        assert_eq!(
            read("cpu.max"),
            "20000 100000",
            "0.2 cores: 20 ms per 100 ms"
        );
        assert_eq!(read("pids.max"), "64");
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(leaf.oom_kills(), 1);
        // The kernel creates these with the cgroup; here the test does.
        std::fs::write(dir.join("memory.swap.max"), "max").unwrap();
        std::fs::write(dir.join("cgroup.kill"), "").unwrap();
        set_limits(
            &dir,
            &Limits {
                memory: Some(1 << 30),
                ..Limits::default()
            },
        )
        .unwrap();
        assert_eq!(read("memory.swap.max"), "0", "no swapping around the limit");
        set_limits(
            &dir,
            &Limits {
                cpu_limit: Some(3000),
                ..Limits::default()
            },
        )
        .unwrap();
        assert_eq!(read("cpu.max"), "300000 100000", "three cores");
        leaf.kill(std::time::Duration::ZERO).unwrap();
        assert_eq!(read("cgroup.kill"), "1");
        leaf.remove().unwrap();
        assert!(!dir.exists());
    }
}
