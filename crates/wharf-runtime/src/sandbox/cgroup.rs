//! Cgroups of replicas: the tree wharf owns and one leaf per replica, on the layout
//! [`super::cgroup_detect`] found (v1, v2 or hybrid).
//!
//! Layout: `<own cgroup of the server>/<parent>/<instance>/<app>.<replica>` in every
//! hierarchy wharf uses (v1: `memory`, `cpu`, `pids`; v2: the unified tree), where
//! `parent` is configurable (default `wharf`; an absolute `/x` starts at the hierarchy's
//! root instead of the server's own cgroup) and `instance` is derived from the data dir,
//! so two servers with different data dirs never touch each other's replicas.
//!
//! Invariants: every file access goes through a root path taken as a parameter (the
//! `/proc/self/mountinfo` text and the mount points in it), so v1 and v2 are unit-tested
//! against fake trees in a temp dir; a leaf is removed only after everything in it was
//! killed; hybrid hosts (v1 controllers plus an empty unified tree) are driven as v1.

pub use super::cgroup_detect::{detect, Detected, Hierarchy, Mode, V1_CONTROLLERS};
use super::{cgroup_v1, cgroup_v2};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup filesystem is mounted (read {0}); mount cgroup2 at /sys/fs/cgroup or run with --isolation none")]
    NotMounted(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove cgroup {path}: {source}; see what still runs in its cgroup.procs")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup {path} still has processes after being killed")]
    Busy { path: PathBuf },
}

/// Resource limits of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Hard memory limit in bytes (swap included where the kernel accounts it).
    pub memory: Option<u64>,
    /// CPU units, 1024 = one core: a relative share under contention.
    pub cpu_units: Option<u32>,
    /// Hard CPU quota in millicores (1000 = one core): CFS bandwidth control.
    #[serde(default)]
    pub cpu_limit: Option<u32>,
    /// Most processes and threads at once.
    pub pids: Option<u64>,
}

/// CFS bandwidth period of a hard CPU limit (the kernel's default, 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel's smallest CFS quota (1 ms).
const MIN_QUOTA_US: u64 = 1_000;

/// The CFS quota per [`CPU_PERIOD_US`] of a limit in millicores: 500 -> 50000 us.
pub fn cpu_quota_us(millicores: u32) -> u64 {
    (u64::from(millicores) * CPU_PERIOD_US / 1000).max(MIN_QUOTA_US)
}

/// The part of the cgroup tree wharf owns for one data dir.
#[derive(Debug, Clone)]
pub struct Tree {
    pub mode: Mode,
    /// v1: controller -> `<own>/<parent>/<instance>` in its hierarchy; v2: one entry "".
    bases: BTreeMap<String, PathBuf>,
    /// v2: the directories from the server's own cgroup down to the base, whose
    /// `cgroup.subtree_control` must enable the controllers.
    v2_chain: Vec<PathBuf>,
}

impl Tree {
    /// The tree for `parent` (relative to the server's cgroup, or absolute with a leading
    /// `/`) and `instance` on the detected layout.
    pub fn new(d: &Detected, parent: &str, instance: &str) -> Tree {
        let base_of = |h: &Hierarchy| {
            let start = if parent.starts_with('/') {
                h.mount.clone()
            } else {
                h.own_dir()
            };
            start.join(parent.trim_start_matches('/')).join(instance)
        };
        match (d.mode, &d.v2) {
            (Mode::V2, Some(h)) => {
                let base = base_of(h);
                let start = if parent.starts_with('/') {
                    h.mount.clone()
                } else {
                    h.own_dir()
                };
                let mut chain = vec![start.clone()];
                let mut cur = start;
                for part in Path::new(parent.trim_start_matches('/'))
                    .components()
                    .chain(Path::new(instance).components())
                {
                    cur = cur.join(part);
                    chain.push(cur.clone());
                }
                Tree {
                    mode: Mode::V2,
                    bases: BTreeMap::from([(String::new(), base)]),
                    v2_chain: chain,
                }
            }
            _ => Tree {
                mode: d.mode,
                bases: d.v1.iter().map(|(c, h)| (c.clone(), base_of(h))).collect(),
                v2_chain: Vec::new(),
            },
        }
    }

    /// The controllers limits can be set with ("memory", "cpu", "pids").
    pub fn controllers(&self) -> Vec<String> {
        match self.mode {
            Mode::V2 => {
                let have = self
                    .v2_chain
                    .first()
                    .and_then(|d| std::fs::read_to_string(d.join("cgroup.controllers")).ok())
                    .unwrap_or_default();
                V1_CONTROLLERS
                    .iter()
                    .filter(|c| have.split_whitespace().any(|h| h == **c))
                    .map(|c| c.to_string())
                    .collect()
            }
            _ => self.bases.keys().cloned().collect(),
        }
    }

    /// Creates the base directories (and on v2 enables the controllers down to them).
    pub fn prepare(&self) -> Result<(), CgroupError> {
        match self.mode {
            Mode::V2 => cgroup_v2::prepare(&self.v2_chain),
            _ => {
                for base in self.bases.values() {
                    std::fs::create_dir_all(base).map_err(|source| CgroupError::Create {
                        path: base.clone(),
                        source,
                    })?;
                }
                Ok(())
            }
        }
    }

    /// The leaf of replica `name` (`app.id`); not created yet.
    pub fn leaf(&self, name: &str) -> Leaf {
        Leaf {
            v2: self.mode == Mode::V2,
            dirs: self.bases.values().map(|b| b.join(name)).collect(),
            memory: match self.mode {
                Mode::V2 => self.bases.values().next().map(|b| b.join(name)),
                _ => self.bases.get("memory").map(|b| b.join(name)),
            },
            controllers: self.bases.keys().cloned().collect(),
        }
    }

    /// Creates the leaf of replica `name` with `limits`.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<Leaf, CgroupError> {
        let leaf = self.leaf(name);
        // A leftover of a crashed run with the same name goes first.
        if leaf.exists() {
            leaf.remove()?;
        }
        for dir in &leaf.dirs {
            std::fs::create_dir_all(dir).map_err(|source| CgroupError::Create {
                path: dir.clone(),
                source,
            })?;
        }
        let result = match self.mode {
            Mode::V2 => leaf
                .dirs
                .first()
                .map_or(Ok(()), |d| cgroup_v2::set_limits(d, limits)),
            _ => leaf
                .controllers
                .iter()
                .zip(&leaf.dirs)
                .try_for_each(|(c, d)| cgroup_v1::set_limits(c, d, limits)),
        };
        if let Err(e) = result {
            let _ = leaf.remove();
            return Err(e);
        }
        Ok(leaf)
    }

    /// The data dir's base directories, one per hierarchy.
    pub fn base_dirs(&self) -> Vec<PathBuf> {
        self.bases.values().cloned().collect()
    }

    /// Removes the data dir's base directories where they are empty (when a data dir
    /// is retired; a base that still holds leaves stays).
    pub fn remove_base(&self) {
        for base in self.bases.values() {
            let _ = std::fs::remove_dir(base);
        }
    }

    /// Names of the leaves that exist in any hierarchy (for sweeping what a crash left
    /// behind).
    pub fn leaves(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .bases
            .values()
            .filter_map(|base| std::fs::read_dir(base).ok())
            .flat_map(|rd| rd.flatten())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// One replica's cgroup, in every hierarchy wharf uses. Serialized into the replica's
/// launch file so its init can join it and read its OOM count without the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaf {
    pub v2: bool,
    pub dirs: Vec<PathBuf>,
    /// Where the memory controller's files are.
    pub memory: Option<PathBuf>,
    /// v1: the controller of each dir (same order); v2: empty name.
    pub controllers: Vec<String>,
}

impl Leaf {
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|d| d.is_dir())
    }

    /// Moves process `pid` (0 = the caller) into the leaf in every hierarchy.
    pub fn join(&self, pid: u32) -> Result<(), CgroupError> {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Processes in the leaf (in any hierarchy: a half-created leaf may lack some).
    pub fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// How many processes the kernel's OOM killer killed in this leaf.
    pub fn oom_kills(&self) -> u64 {
        let Some(d) = &self.memory else { return 0 };
        if self.v2 {
            cgroup_v2::oom_kills(d)
        } else {
            cgroup_v1::oom_kills(d)
        }
    }

    /// SIGKILLs everything in the leaf until it is empty (or `within` passes).
    pub fn kill(&self, within: Duration) -> Result<(), CgroupError> {
        if !self.exists() {
            return Ok(());
        }
        if let (true, Some(d)) = (self.v2, self.dirs.first()) {
            cgroup_v2::kill(d);
        }
        let end = Instant::now() + within;
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            for p in pids {
                if let Ok(p) = i32::try_from(p) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if Instant::now() >= end {
                return Err(CgroupError::Busy {
                    path: self.dirs.first().cloned().unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills what is left and removes the leaf from every hierarchy.
    pub fn remove(&self) -> Result<(), CgroupError> {
        self.kill(Duration::from_secs(2))?;
        for d in &self.dirs {
            remove_dir(d)?;
        }
        Ok(())
    }
}

/// `rmdir` of a cgroup, retried while exiting processes still hold it.
fn remove_dir(d: &Path) -> Result<(), CgroupError> {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // cgroupfs answers EBUSY while processes remain; only a directory on an
            // ordinary filesystem (the fake trees of the tests) is "not empty".
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                return std::fs::remove_dir_all(d).map_err(|source| CgroupError::Remove {
                    path: d.to_path_buf(),
                    source,
                });
            }
            Err(source) if Instant::now() >= end => {
                return Err(CgroupError::Remove {
                    path: d.to_path_buf(),
                    source,
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// Reads `key N` from a flat keyed file (`memory.events`, `memory.oom_control`).
pub(crate) fn keyed(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::super::cgroup_detect::tests::{HYBRID_MOUNTINFO, HYBRID_SELF};
    use super::*;

    #[test]
    fn detects_hybrid_with_own_cgroups() {
        let d = detect(HYBRID_MOUNTINFO, HYBRID_SELF).unwrap();
        assert_eq!(d.mode, Mode::Hybrid);
        assert_eq!(
            d.v1.keys().collect::<Vec<_>>(),
            ["cpu", "memory", "pids"],
            "cpuacct and name=systemd are not used"
        );
        assert_eq!(d.v1["memory"].own, "/process_api/abc");
        assert_eq!(d.v1["memory"].mount, Path::new("/sys/fs/cgroup/memory"));
        let t = Tree::new(&d, "wharf", "d123");
        let leaf = t.leaf("app.web-1");
        assert!(!leaf.v2);
        assert_eq!(
            leaf.memory.as_deref(),
            Some(Path::new(
                "/sys/fs/cgroup/memory/process_api/abc/wharf/d123/app.web-1"
            ))
        );
        let abs = Tree::new(&d, "/wharf", "d123").leaf("x");
        assert_eq!(
            abs.memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory/wharf/d123/x")),
            "an absolute parent starts at the hierarchy's root"
        );
    }

    #[test]
    fn keyed_files_are_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        std::fs::write(&f, "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n").unwrap();
        assert_eq!(keyed(&f, "oom_kill"), Some(1));
        assert_eq!(keyed(&f, "oom"), Some(2));
        assert_eq!(keyed(&f, "nope"), None);
    }
}
