//! Detection of the host's cgroup layout (v1, v2 or hybrid) and of the cgroups this
//! process is in, from the texts of `/proc/self/mountinfo` and `/proc/self/cgroup`.
//!
//! Invariant: pure functions over the texts the caller read, so every layout is
//! unit-tested; hybrid hosts (v1 controllers plus a cgroup2 tree without them) are
//! reported as such and driven as v1.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The v1 controllers wharf uses.
pub const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Only v1 hierarchies.
    V1,
    /// v1 controllers plus a cgroup2 tree without them (systemd's hybrid layout).
    Hybrid,
    /// The unified v2 tree only.
    V2,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::V1 => "v1",
            Mode::Hybrid => "hybrid (v1 controllers)",
            Mode::V2 => "v2",
        })
    }
}

/// A hierarchy: where it is mounted and which cgroup this process is in there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// The process's cgroup, relative to the hierarchy's root (`/` is the root).
    pub own: String,
}

impl Hierarchy {
    /// The directory of the process's own cgroup.
    pub(crate) fn own_dir(&self) -> PathBuf {
        self.mount.join(self.own.trim_start_matches('/'))
    }
}

/// What [`detect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub mode: Mode,
    /// v1 controller name -> hierarchy (only those in [`V1_CONTROLLERS`]).
    pub v1: BTreeMap<String, Hierarchy>,
    pub v2: Option<Hierarchy>,
}

/// Detects the cgroup layout from the texts of `/proc/self/mountinfo` and
/// `/proc/self/cgroup`. Pure: the caller reads the files.
pub fn detect(mountinfo: &str, self_cgroup: &str) -> Option<Detected> {
    let mut own_v1: BTreeMap<String, String> = BTreeMap::new();
    let mut own_v2 = None;
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            own_v2 = Some(path.to_string());
        } else {
            for c in ctrls.split(',') {
                own_v1.insert(c.to_string(), path.to_string());
            }
        }
    }
    let mut v1 = BTreeMap::new();
    let mut v2 = None;
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (Some(mount), Some(fstype)) = (pre.get(4), post.first()) else {
            continue;
        };
        let mount = PathBuf::from(unescape(mount));
        match *fstype {
            "cgroup2" => {
                v2 = Some(Hierarchy {
                    mount,
                    own: own_v2.clone().unwrap_or_else(|| "/".into()),
                });
            }
            "cgroup" => {
                let opts = post.get(2).copied().unwrap_or_default();
                for c in opts.split(',') {
                    if V1_CONTROLLERS.contains(&c) {
                        v1.insert(
                            c.to_string(),
                            Hierarchy {
                                mount: mount.clone(),
                                own: own_v1.get(c).cloned().unwrap_or_else(|| "/".into()),
                            },
                        );
                    }
                }
            }
            _ => {}
        }
    }
    let mode = match (v1.is_empty(), &v2) {
        (true, None) => return None,
        (true, Some(_)) => Mode::V2,
        (false, None) => Mode::V1,
        (false, Some(_)) => Mode::Hybrid,
    };
    Some(Detected { mode, v1, v2 })
}

/// Octal escapes of mountinfo (`\040` is a space).
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(n) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const HYBRID_MOUNTINFO: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    pub(crate) const HYBRID_SELF: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
1:cpu:/
0::/
";

    #[test]
    fn detects_pure_v1_and_v2_and_nothing() {
        let v1: String = HYBRID_MOUNTINFO
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(detect(&v1, HYBRID_SELF).unwrap().mode, Mode::V1);
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let d = detect(v2, "0::/user.slice/wharf.service\n").unwrap();
        assert_eq!(d.mode, Mode::V2);
        assert_eq!(d.v2.as_ref().unwrap().own, "/user.slice/wharf.service");
        assert!(detect("27 1 254:0 / / rw - ext4 /dev/vda rw\n", "").is_none());
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/end\"), r"/end\");
    }
}
