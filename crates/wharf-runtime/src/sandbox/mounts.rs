//! The root filesystem of a replica, as a plan: a list of mount operations, built by pure
//! functions and recorded in the replica's launch file.
//!
//! The root is an overlay whose lower layer is the host's `/` (read-only: node, python
//! and friends installed on the host work) and whose upper layer is `RUN_DIR/upper` on
//! a tmpfs mounted over the run dir in the replica's mount namespace only, so writes are
//! ephemeral, per replica and in memory (like `/tmp`, they count against the replica's
//! memory limit), and nothing of the layer is left on disk when the namespace ends. Other host filesystems (a separate `/home`,
//! `/srv`...) are bound read-only at their place. The data dir is masked by an empty
//! read-only tmpfs (no replica sees another app's artifacts, logs or run dirs). The
//! release artifact is bound read-only at `/app`, the working dir. `/tmp` and `/dev/shm`
//! are private tmpfs, and so is `/run/secrets` (secrets delivered as files); `/dev` is a tmpfs with its own `null`, `zero`, `full`,
//! `random`, `urandom` and `tty` nodes and a private `devpts`; `/proc` is fresh (the
//! replica's PID namespace); `/sys` is read-only. Directories on the app's `PATH` that
//! the app's uid could not traverse (pyenv under `/root`) get `o+x` in the overlay only.
//! Finally `pivot_root` makes the overlay `/` and detaches the host's tree.
//!
//! Invariants: planning never touches the filesystem (it takes the host's mount table and
//! a mode lookup as inputs) and is unit-tested; the plan always starts by cutting mount
//! propagation to the host (`PrivatizeRoot`) and ends with `PivotRoot`. Executing it is
//! [`super::mount_apply`]'s job.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One step of a replica's root filesystem setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Stops mount events propagating between the replica and the host.
    PrivatizeRoot,
    Overlay {
        target: PathBuf,
        /// The bottom layer: the host's `/`, or an image's first layer.
        lower: PathBuf,
        /// Image layers above `lower`, top first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        above: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
    },
    /// A bind mount, read-only when asked; a file when the source is one.
    Bind {
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
    },
    Tmpfs {
        target: PathBuf,
        mode: u32,
        readonly: bool,
        noexec: bool,
    },
    Proc {
        target: PathBuf,
    },
    Sysfs {
        target: PathBuf,
    },
    Devpts {
        target: PathBuf,
    },
    /// The replica's `/dev`: a tmpfs (no set-uid, no exec) holding the character
    /// devices of [`DEVICES`], made with `mknod` (the app, without `CAP_MKNOD`, cannot
    /// make more).
    Devices {
        target: PathBuf,
    },
    Symlink {
        to: PathBuf,
        link: PathBuf,
    },
    /// Adds `o+x` to a directory (in the overlay: the host keeps its mode).
    AllowTraverse {
        path: PathBuf,
    },
    /// Adds `o+wx` to a directory (in the overlay: the host keeps its mode).
    AllowWrite {
        path: PathBuf,
    },
    /// Makes `new_root` the root and detaches the old one.
    PivotRoot {
        new_root: PathBuf,
    },
}

/// One line of the host's mount table, as far as planning cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMount {
    pub mount_point: PathBuf,
    pub fstype: String,
}

/// Parses `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<HostMount> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            let fstype = post.split(' ').next()?;
            Some(HostMount {
                mount_point: PathBuf::from(super::cgroup_detect::unescape(mount_point)),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

/// Filesystems that are not files of the host: never bound into a replica.
const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "nsfs",
    "rpc_pipefs",
    "efivarfs",
    "selinuxfs",
    "ramfs",
];
/// Host paths whose mounts a replica gets its own version of.
const PRIVATE_TREES: &[&str] = &["/proc", "/sys", "/dev", "/run", "/tmp", "/var/run"];

/// Host filesystems besides `/` to bind read-only into the replica, in mount order.
pub fn extra_host_mounts(host: &[HostMount], data_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for m in host {
        let p = &m.mount_point;
        if p == Path::new("/")
            || PSEUDO.contains(&m.fstype.as_str())
            || PRIVATE_TREES.iter().any(|t| p.starts_with(t))
            || p.starts_with(data_dir)
            || out.contains(p)
        {
            continue;
        }
        out.push(p.clone());
    }
    out
}

/// Whether a host file at `path` must be bound into replicas to be seen there: unless it
/// is on the host's root filesystem (`on_root_fs`, which the overlay shows) outside the
/// trees a replica gets its own version of and outside the data dir (masked). Binding a
/// file that shows anyway costs every replica a mount and its unmount.
pub fn needs_binding(path: &Path, on_root_fs: bool, data_dir: &Path) -> bool {
    !on_root_fs || PRIVATE_TREES.iter().any(|t| path.starts_with(t)) || path.starts_with(data_dir)
}

/// Directories on `path_var` below one of `traverse` (private tool managers such as
/// pyenv or nvm under `/root`): a build may need to write there (pyenv rehashes its
/// shims after `pip install`), which the overlay allows without touching the host.
pub fn private_path_dirs(path_var: &str, traverse: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for entry in path_var.split(':').filter(|e| e.starts_with('/')) {
        let entry = PathBuf::from(entry);
        if traverse.iter().any(|t| entry.starts_with(t)) && !out.contains(&entry) {
            out.push(entry);
        }
    }
    out
}

/// Directories on `path_var` (a `PATH` value) and their ancestors that others cannot
/// traverse, given `mode_of` (the host's mode bits of a path, `None` when missing).
pub fn untraversable(path_var: &str, mode_of: &dyn Fn(&Path) -> Option<u32>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for entry in path_var.split(':').filter(|e| e.starts_with('/')) {
        let entry = Path::new(entry);
        if mode_of(entry).is_none() {
            continue;
        }
        let mut ancestors: Vec<&Path> = entry.ancestors().collect();
        ancestors.reverse();
        for a in ancestors {
            if a == Path::new("/") || out.iter().any(|o| o == a) {
                continue;
            }
            if mode_of(a).is_some_and(|m| m & 0o001 == 0) {
                out.push(a.to_path_buf());
            }
        }
    }
    out
}

/// What a replica's root filesystem is made of.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The replica's run dir: covered by a tmpfs in the replica's mount namespace, in
    /// which `root/`, `upper/` and `work/` are made.
    pub run_dir: &'a Path,
    pub artifact: &'a Path,
    /// Masked inside the replica.
    pub data_dir: &'a Path,
    /// From [`extra_host_mounts`].
    pub host_mounts: &'a [PathBuf],
    /// From [`untraversable`].
    pub traverse: &'a [PathBuf],
    /// Host files bound read-only at their own path, even where the replica has a
    /// private tree (`/tmp`): the platform's own binary, for the helpers it runs inside.
    pub exposed: &'a [PathBuf],
    /// `/app` is writable (a build in its scratch copy), not the read-only artifact.
    pub writable_app: bool,
    /// From [`private_path_dirs`], for builds: writable in the overlay only.
    pub writable: &'a [PathBuf],
    /// Secrets delivered as files: a private tmpfs at [`SECRETS_DIR`].
    pub secret_files: bool,
    /// An OCI image's layer directories, top first: the root is made of them instead
    /// of the host's `/` (and no other host filesystem is bound).
    pub image: &'a [PathBuf],
}

/// A private tmpfs for secrets delivered as files.
pub const SECRETS_DIR: &str = "/run/secrets";

/// `HOME` of a sandboxed app that its config does not set: the replica's private, writable
/// `/tmp` (the host's `/root` is neither its own nor writable).
pub const APP_HOME: &str = "/tmp";

/// Where the artifact appears inside the replica (and its working dir).
pub const APP_DIR: &str = "/app";

/// The character devices in a replica's `/dev`: name, major and minor number (Linux's
/// fixed numbers for these), all read-write for everyone as on the host.
pub const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The steps that build a replica's root, in order.
pub fn plan(i: &PlanInput<'_>) -> Vec<Op> {
    let root = i.run_dir.join("root");
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let (lower, above, on_host) = match i.image.split_last() {
        Some((bottom, above)) => (bottom.clone(), above.to_vec(), false),
        None => (PathBuf::from("/"), Vec::new(), true),
    };
    let mut ops = vec![
        Op::PrivatizeRoot,
        // The writable layer lives in memory, in this mount namespace only: the run dir
        // (on the host's disk, where the init records the replica) is hidden here by a
        // tmpfs that holds `upper/`, `work/` and `root/`, and vanishes with the
        // namespace. Nothing of it is ever on disk to clean up.
        Op::Tmpfs {
            target: i.run_dir.to_path_buf(),
            mode: 0o700,
            readonly: false,
            noexec: false,
        },
        Op::Overlay {
            target: root.clone(),
            lower,
            above,
            upper: i.run_dir.join("upper"),
            work: i.run_dir.join("work"),
        },
    ];
    if on_host {
        ops.extend(i.host_mounts.iter().map(|m| Op::Bind {
            source: m.clone(),
            target: inside(m),
            readonly: true,
        }));
        ops.push(Op::Tmpfs {
            target: inside(i.data_dir),
            mode: 0o755,
            readonly: true,
            noexec: true,
        });
    }
    ops.push(Op::Bind {
        source: i.artifact.to_path_buf(),
        target: inside(Path::new(APP_DIR)),
        readonly: !i.writable_app,
    });
    ops.push(Op::Proc {
        target: inside(Path::new("/proc")),
    });
    ops.push(Op::Sysfs {
        target: inside(Path::new("/sys")),
    });
    let dev = inside(Path::new("/dev"));
    ops.push(Op::Devices {
        target: dev.clone(),
    });
    ops.push(Op::Devpts {
        target: dev.join("pts"),
    });
    ops.push(Op::Tmpfs {
        target: dev.join("shm"),
        mode: 0o1777,
        readonly: false,
        noexec: true,
    });
    for (to, link) in [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ] {
        ops.push(Op::Symlink {
            to: PathBuf::from(to),
            link: dev.join(link),
        });
    }
    ops.push(Op::Tmpfs {
        target: inside(Path::new("/tmp")),
        mode: 0o1777,
        readonly: false,
        noexec: false,
    });
    // Secrets delivered as files (`[secrets] as = "files"`) live here, in memory only.
    if i.secret_files {
        ops.push(Op::Tmpfs {
            target: inside(Path::new(SECRETS_DIR)),
            mode: 0o1777,
            readonly: false,
            noexec: true,
        });
    }
    ops.extend(i.exposed.iter().map(|f| Op::Bind {
        source: f.clone(),
        target: inside(f),
        readonly: true,
    }));
    if on_host {
        ops.extend(
            i.traverse
                .iter()
                .map(|p| Op::AllowTraverse { path: inside(p) }),
        );
        ops.extend(
            i.writable
                .iter()
                .map(|p| Op::AllowWrite { path: inside(p) }),
        );
    }
    ops.push(Op::PivotRoot { new_root: root });
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_bound_in_only_where_the_overlay_would_not_show_it() {
        let data = Path::new("/var/lib/wharf");
        assert!(!needs_binding(Path::new("/usr/bin/wharf"), true, data));
        assert!(!needs_binding(
            Path::new("/work/target/release/wharf"),
            true,
            data
        ));
        assert!(
            needs_binding(Path::new("/usr/bin/wharf"), false, data),
            "another fs"
        );
        assert!(
            needs_binding(Path::new("/tmp/x/wharf"), true, data),
            "own /tmp"
        );
        assert!(needs_binding(Path::new("/run/wharf/wharf"), true, data));
        assert!(
            needs_binding(Path::new("/var/lib/wharf/bin/wharf"), true, data),
            "masked"
        );
    }

    /// The tmpfs over the run dir that holds the overlay's upper layer.
    fn memory_layer(run: &Path) -> Op {
        Op::Tmpfs {
            target: run.to_path_buf(),
            mode: 0o700,
            readonly: false,
            noexec: false,
        }
    }

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
28 27 0:25 / /mnt/tools ro,nosuid - tmpfs none ro
29 27 254:1 / /home rw,relatime - ext4 /dev/vdb rw
30 27 254:2 / /srv/my\\040data rw - xfs /dev/vdc rw
31 27 254:3 / /var/lib/wharf/artifacts rw - ext4 /dev/vdd rw
32 27 254:1 /etc/hosts /etc/hosts rw - ext4 /dev/vdb rw
33 27 0:40 / /run/user/0 rw - tmpfs tmpfs rw
";

    #[test]
    fn extra_host_mounts_are_real_filesystems_outside_private_trees_and_the_data_dir() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 10);
        let extra = extra_host_mounts(&m, Path::new("/var/lib/wharf"));
        assert_eq!(
            extra,
            [
                PathBuf::from("/home"),
                PathBuf::from("/srv/my data"),
                PathBuf::from("/etc/hosts"),
            ]
        );
    }

    #[test]
    fn untraversable_finds_closed_ancestors_of_path_entries() {
        let modes = |p: &Path| match p.to_str()? {
            "/root" => Some(0o700),
            "/root/.pyenv" | "/root/.pyenv/shims" | "/usr" | "/usr/bin" => Some(0o755),
            "/opt" => Some(0o750),
            "/opt/tool" | "/opt/tool/bin" => Some(0o755),
            _ => None,
        };
        let found = untraversable(
            "/root/.pyenv/shims:/usr/bin:relative/bin:/missing/bin:/opt/tool/bin:/root/.pyenv/shims",
            &modes,
        );
        assert_eq!(found, [PathBuf::from("/root"), PathBuf::from("/opt")]);
    }

    #[test]
    fn an_image_replaces_the_hosts_root() {
        let run = Path::new("/data/run/app/web-1");
        let image = [
            PathBuf::from("/data/images/layers/sha256-top"),
            PathBuf::from("/data/images/layers/sha256-base"),
        ];
        let ops = plan(&PlanInput {
            run_dir: run,
            artifact: Path::new("/data/artifacts/sha256-ab"),
            data_dir: Path::new("/data"),
            host_mounts: &[PathBuf::from("/home")],
            traverse: &[PathBuf::from("/root")],
            exposed: &[PathBuf::from("/usr/local/bin/wharf")],
            writable_app: false,
            writable: &[PathBuf::from("/root/.pyenv/shims")],
            secret_files: false,
            image: &image,
        });
        assert_eq!(ops[1], memory_layer(run), "the writable layer is in memory");
        assert_eq!(
            ops[2],
            Op::Overlay {
                target: run.join("root"),
                lower: "/data/images/layers/sha256-base".into(),
                above: vec!["/data/images/layers/sha256-top".into()],
                upper: run.join("upper"),
                work: run.join("work"),
            }
        );
        let binds: Vec<&PathBuf> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Bind { source, .. } => Some(source),
                _ => None,
            })
            .collect();
        assert!(
            !binds.contains(&&PathBuf::from("/home")),
            "no host filesystem"
        );
        assert!(binds.contains(&&PathBuf::from("/data/artifacts/sha256-ab")));
        assert!(binds.contains(&&PathBuf::from("/usr/local/bin/wharf")));
        assert!(!ops
            .iter()
            .any(|o| matches!(o, Op::AllowTraverse { .. } | Op::AllowWrite { .. })));
        assert!(!ops.contains(&Op::Tmpfs {
            target: run.join("root/data"),
            mode: 0o755,
            readonly: true,
            noexec: true,
        }));
        assert_eq!(
            ops.last(),
            Some(&Op::PivotRoot {
                new_root: run.join("root")
            })
        );
    }

    #[test]
    fn builds_may_write_private_tool_dirs_on_path() {
        let traverse = [PathBuf::from("/root")];
        assert_eq!(
            private_path_dirs(
                "/root/.pyenv/shims:/usr/bin:/root/.pyenv/shims:relative:/root/.nvm/bin",
                &traverse
            ),
            [
                PathBuf::from("/root/.pyenv/shims"),
                PathBuf::from("/root/.nvm/bin")
            ]
        );
        assert!(private_path_dirs("/usr/bin:/bin", &traverse).is_empty());
        let run = Path::new("/data/oneoff/app/build-1");
        let writable = [PathBuf::from("/root/.pyenv/shims")];
        let ops = plan(&PlanInput {
            run_dir: run,
            artifact: Path::new("/data/builds/1/app"),
            data_dir: Path::new("/data"),
            host_mounts: &[],
            traverse: &traverse,
            exposed: &[],
            writable_app: true,
            writable: &writable,
            secret_files: false,
            image: &[],
        });
        assert!(ops.contains(&Op::Bind {
            source: "/data/builds/1/app".into(),
            target: run.join("root/app"),
            readonly: false,
        }));
        assert!(ops.contains(&Op::AllowWrite {
            path: run.join("root/root/.pyenv/shims")
        }));
    }

    #[test]
    fn secrets_get_their_tmpfs_only_when_delivered_as_files() {
        let run = Path::new("/data/run/app/web-1");
        let secrets_tmpfs = |secret_files| {
            plan(&PlanInput {
                run_dir: run,
                artifact: Path::new("/data/artifacts/sha256-ab"),
                data_dir: Path::new("/data"),
                host_mounts: &[],
                traverse: &[],
                exposed: &[],
                writable_app: false,
                writable: &[],
                secret_files,
                image: &[],
            })
            .iter()
            .filter(|o| {
                matches!(o, Op::Tmpfs { target, noexec: true, .. }
                    if *target == run.join("root").join(&SECRETS_DIR[1..]))
            })
            .count()
        };
        assert_eq!(secrets_tmpfs(true), 1);
        assert_eq!(secrets_tmpfs(false), 0, "no mount nobody uses");
    }

    #[test]
    fn plan_builds_the_root_in_a_safe_order() {
        let run = Path::new("/data/run/app/web-1");
        let extra = [PathBuf::from("/home")];
        let trav = [PathBuf::from("/root")];
        let ops = plan(&PlanInput {
            run_dir: run,
            artifact: Path::new("/data/artifacts/sha256-ab"),
            data_dir: Path::new("/data"),
            host_mounts: &extra,
            traverse: &trav,
            exposed: &[PathBuf::from("/tmp/checkout/target/debug/wharf")],
            writable_app: false,
            writable: &[],
            secret_files: false,
            image: &[],
        });
        assert_eq!(
            ops.first(),
            Some(&Op::PrivatizeRoot),
            "propagation is cut first"
        );
        assert_eq!(ops[1], memory_layer(run), "the writable layer is in memory");
        assert_eq!(
            ops[2],
            Op::Overlay {
                target: run.join("root"),
                lower: "/".into(),
                above: vec![],
                upper: run.join("upper"),
                work: run.join("work"),
            }
        );
        assert_eq!(
            ops.last(),
            Some(&Op::PivotRoot {
                new_root: run.join("root")
            })
        );
        let root = run.join("root");
        let pos = |want: &dyn Fn(&Op) -> bool| ops.iter().position(want).unwrap();
        let app = pos(
            &|o| matches!(o, Op::Bind { target, readonly: true, .. } if *target == root.join("app")),
        );
        let mask = pos(
            &|o| matches!(o, Op::Tmpfs { target, readonly: true, .. } if *target == root.join("data")),
        );
        let home = pos(
            &|o| matches!(o, Op::Bind { source, readonly: true, .. } if source == Path::new("/home")),
        );
        assert!(
            home < mask,
            "host mounts come before the data dir is masked"
        );
        assert!(
            mask < app,
            "the artifact is bound after the mask (it lives under the data dir)"
        );
        for p in ["proc", "sys", "dev", "dev/pts", "dev/shm", "tmp"] {
            let t = root.join(p);
            assert!(
                ops.iter().any(|o| match o {
                    Op::Proc { target }
                    | Op::Sysfs { target }
                    | Op::Devpts { target }
                    | Op::Devices { target } => *target == t,
                    Op::Tmpfs { target, .. } => *target == t,
                    _ => false,
                }),
                "{p} is mounted"
            );
        }
        assert!(
            !ops.iter()
                .any(|o| matches!(o, Op::Bind { source, .. } if source.starts_with("/dev"))),
            "no host device is bound: the replica's are its own nodes"
        );
        let dev = pos(&|o| matches!(o, Op::Devices { target } if *target == root.join("dev")));
        let pts = pos(&|o| matches!(o, Op::Devpts { target } if *target == root.join("dev/pts")));
        assert!(dev < pts, "/dev exists before devpts is mounted in it");
        let tmp = pos(&|o| matches!(o, Op::Tmpfs { target, .. } if *target == root.join("tmp")));
        let exe = pos(&|o| {
            matches!(o, Op::Bind { target, readonly: true, .. }
                if *target == root.join("tmp/checkout/target/debug/wharf"))
        });
        assert!(
            tmp < exe,
            "the platform's binary shows through the private /tmp"
        );
        assert!(ops.contains(&Op::AllowTraverse {
            path: root.join("root")
        }));
        let json = serde_json::to_string(&ops).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Op>>(&json).unwrap(), ops);
    }
}
