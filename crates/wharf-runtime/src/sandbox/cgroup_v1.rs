//! cgroup v1 (and hybrid hosts): one hierarchy per controller.
//!
//! Limits: `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` to the same value
//! where swap is accounted, so the limit is hard), `cpu.shares` = CPU units (1024 = one
//! core, the kernel's own default weight), a hard CPU limit as `cpu.cfs_period_us` (100
//! ms) and `cpu.cfs_quota_us` (the period times the cores), `pids.max`. The OOM count is the `oom_kill`
//! line of `memory.oom_control` (Linux 4.13+).
//!
//! Invariant: only the files of the given directory are touched, so tests drive these
//! functions against a fake tree.

use super::cgroup::{cpu_quota_us, keyed, write, CgroupError, Limits, CPU_PERIOD_US};
use std::path::Path;

/// Smallest `cpu.shares` the kernel accepts.
const MIN_SHARES: u32 = 2;

/// `cpu.shares` of a new cgroup.
const DEFAULT_SHARES: u32 = 1024;

/// Writes the limits `controller` enforces into its leaf `dir`.
pub fn set_limits(controller: &str, dir: &Path, l: &Limits) -> Result<(), CgroupError> {
    match controller {
        "memory" => {
            if let Some(bytes) = l.memory {
                write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &bytes.to_string())?;
                }
            }
        }
        "cpu" => {
            // A new cgroup has the default 1024 shares already: one write less per start.
            if let Some(units) = l
                .cpu_units
                .filter(|u| (*u).max(MIN_SHARES) != DEFAULT_SHARES)
            {
                write(&dir.join("cpu.shares"), &units.max(MIN_SHARES).to_string())?;
            }
            if let Some(millicores) = l.cpu_limit {
                // The period first: the kernel checks the quota against it.
                write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(
                    &dir.join("cpu.cfs_quota_us"),
                    &cpu_quota_us(millicores).to_string(),
                )?;
            }
        }
        "pids" => {
            if let Some(n) = l.pids {
                write(&dir.join("pids.max"), &n.to_string())?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Processes the OOM killer killed in the memory cgroup `dir`.
pub fn oom_kills(dir: &Path) -> u64 {
    keyed(&dir.join("memory.oom_control"), "oom_kill").unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::cgroup::{detect, Tree};
    use super::*;

    /// A fake hybrid host: v1 memory, cpu and pids hierarchies under `root`.
    fn fake_host(root: &Path) -> (String, String) {
        let mut mountinfo = String::new();
        for (i, c) in ["memory", "cpu", "pids"].iter().enumerate() {
            let m = root.join(c);
            std::fs::create_dir_all(m.join("srv")).unwrap();
            mountinfo.push_str(&format!(
                "{} 31 0:{i} / {} rw - cgroup cgroup rw,{c}\n",
                40 + i,
                m.display()
            ));
        }
        mountinfo.push_str(&format!(
            "50 31 0:9 / {} rw - cgroup2 cgroup2 rw\n",
            root.join("unified").display()
        ));
        (
            mountinfo,
            "4:memory:/srv\n1:cpu:/srv\n8:pids:/srv\n0::/\n".into(),
        )
    }

    #[test]
    fn creates_a_leaf_with_limits_in_every_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let (mi, me) = fake_host(tmp.path());
        let d = detect(&mi, &me).unwrap();
        let tree = Tree::new(&d, "wharf", "inst");
        tree.prepare().unwrap();
        let mem = tmp.path().join("memory/srv/wharf/inst/app.web-1");
        let limits = Limits {
            memory: Some(64 << 20),
            cpu_units: Some(256),
            cpu_limit: Some(500),
            pids: Some(512),
        };
        let leaf = tree.create("app.web-1", &limits).unwrap();
        let read = |p: &str| std::fs::read_to_string(tmp.path().join(p)).unwrap();
        let base = "srv/wharf/inst/app.web-1";
        assert_eq!(
            read(&format!("memory/{base}/memory.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(read(&format!("cpu/{base}/cpu.shares")), "256");
        assert_eq!(read(&format!("cpu/{base}/cpu.cfs_period_us")), "100000");
        assert_eq!(
            read(&format!("cpu/{base}/cpu.cfs_quota_us")),
            "50000",
            "half a core: 50 ms per 100 ms"
        );
        assert!(
            !tmp.path()
                .join(format!("memory/{base}/cpu.cfs_quota_us"))
                .exists(),
            "cpu files only in the cpu hierarchy"
        );
        assert_eq!(read(&format!("pids/{base}/pids.max")), "512");
        assert_eq!(tree.leaves(), ["app.web-1"]);

        leaf.join(4242).unwrap();
        assert_eq!(read(&format!("pids/{base}/cgroup.procs")), "4242");
        std::fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(leaf.oom_kills(), 1);

        // Emptied (the fake kernel "moved" the process out), then removed everywhere.
        for c in ["memory", "cpu", "pids"] {
            std::fs::write(tmp.path().join(c).join(base).join("cgroup.procs"), "").unwrap();
        }
        leaf.remove().unwrap();
        assert!(!leaf.exists());
        assert!(tree.leaves().is_empty());

        // A leaf left in one hierarchy only (a crash mid-creation) is still found.
        std::fs::create_dir_all(tmp.path().join("pids/srv/wharf/inst/app.web-2")).unwrap();
        assert_eq!(tree.leaves(), ["app.web-2"]);
        tree.leaf("app.web-2").remove().unwrap();
        assert!(tree.leaves().is_empty());
        tree.remove_base();
        assert!(!tmp.path().join("pids/srv/wharf/inst").exists());
        assert!(
            tmp.path().join("pids/srv/wharf").exists(),
            "the shared parent stays"
        );
    }

    #[test]
    fn swap_is_limited_too_where_the_kernel_accounts_it() {
        let tmp = tempfile::tempdir().unwrap();
        // The kernel creates the control files with the cgroup; here the test does.
        std::fs::write(tmp.path().join("memory.memsw.limit_in_bytes"), "").unwrap();
        let l = Limits {
            memory: Some(1 << 20),
            ..Limits::default()
        };
        set_limits("memory", tmp.path(), &l).unwrap();
        let read = |f: &str| std::fs::read_to_string(tmp.path().join(f)).unwrap();
        assert_eq!(read("memory.limit_in_bytes"), "1048576");
        assert_eq!(read("memory.memsw.limit_in_bytes"), "1048576");
    }

    #[test]
    fn tiny_cpu_units_are_raised_to_the_kernel_minimum() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Limits {
            cpu_units: Some(1),
            ..Limits::default()
        };
        set_limits("cpu", tmp.path(), &l).unwrap();
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("cpu.shares")).unwrap(),
            "2"
        );
        assert!(
            !tmp.path().join("memory.limit_in_bytes").exists(),
            "no memory limit, no write"
        );
        assert!(
            !tmp.path().join("cpu.cfs_quota_us").exists(),
            "no hard limit unless asked: the kernel's default stays unlimited"
        );
    }

    #[test]
    fn hard_cpu_limits_become_cfs_quotas() {
        let tmp = tempfile::tempdir().unwrap();
        let quota = |millicores: u32| {
            let l = Limits {
                cpu_limit: Some(millicores),
                ..Limits::default()
            };
            set_limits("cpu", tmp.path(), &l).unwrap();
            std::fs::read_to_string(tmp.path().join("cpu.cfs_quota_us")).unwrap()
        };
        assert_eq!(quota(200), "20000");
        assert_eq!(quota(1000), "100000", "one core: the whole period");
        assert_eq!(quota(2500), "250000", "several cores: more than the period");
        assert_eq!(quota(1), "1000", "raised to the kernel's smallest quota");
        assert!(
            !tmp.path().join("cpu.shares").exists(),
            "a hard limit without units leaves the share alone"
        );
    }
}
