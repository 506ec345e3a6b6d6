//! Sandboxed replicas: what each replica gets when wharf runs as root with isolation on.
//!
//! - its own PID, mount, IPC and UTS namespaces (hostname = replica id), with a tiny
//!   PID 1 that reaps zombies and forwards signals ([`pid1`]); the network namespace is
//!   the host's, so apps listen on `127.0.0.1:$PORT` as on Heroku, or, with
//!   `network = "isolated"`, one of its own on a host bridge ([`network`], [`netlink`]);
//! - a root filesystem: overlay of the host's `/` (read-only) with a per-replica upper
//!   layer in memory (a tmpfs in the replica's mount namespace), the artifact read-only at `/app`, private `/tmp`, `/dev/shm`, `/dev`, fresh
//!   `/proc`, the data dir masked ([`mounts`], [`mount_apply`]);
//! - a cgroup with its memory, CPU and pids limits, killed as a whole on stop
//!   ([`cgroup_detect`], [`cgroup`], [`cgroup_v1`], [`cgroup_v2`]);
//! - a uid/gid of its app ([`uids`]), no capabilities, `no_new_privs` ([`caps`]) and a
//!   seccomp filter ([`seccomp`]).
//!
//! The server side ([`Sandbox`]) decides everything at `start` and records it in the
//! replica's launch file as a [`SandboxSpec`]; the replica's init executes it without
//! the server. Invariants: the sandbox never silently degrades — [`Sandbox::new`] fails
//! (and the server says why) when a piece is missing; a replica's cgroup (and its veth
//! and address) is removed on cleanup, and leaves (and links) whose replica has no run
//! dir any more are swept at discovery.

pub mod bpf;
pub mod caps;
pub mod cgroup;
pub mod cgroup_detect;
pub mod cgroup_v1;
pub mod cgroup_v2;
pub mod host_mounts;
pub mod mount_apply;
pub mod mounts;
pub mod netlink;
pub mod network;
pub mod pid1;
pub mod seccomp;
pub mod uids;

use crate::layout::Layout;
use cgroup::{CgroupError, Leaf, Limits, Tree};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wharf_core::ports::Launch;

/// Settings of the sandbox (server flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Parent of wharf's cgroups: relative to the server's own cgroup, or absolute with a
    /// leading `/`.
    pub cgroup_parent: String,
    /// Most processes and threads a replica may have at once.
    pub pids_max: u64,
    /// First uid (and gid) given to apps, and how many there are.
    pub uid_base: u32,
    pub uid_count: u32,
    /// The bridge and subnet of replicas with `network = "isolated"`.
    pub network: network::NetworkConfig,
}

/// Default pids limit of a replica.
pub const DEFAULT_PIDS_MAX: u64 = 512;

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            cgroup_parent: "wharf".into(),
            pids_max: DEFAULT_PIDS_MAX,
            // Above the ranges Debian and shadow's subuid defaults hand out (< 65536 and
            // 100000..=165535 for the first user).
            uid_base: 900_000,
            uid_count: 65_536,
            network: network::NetworkConfig::default(),
        }
    }
}

/// What the init needs to build a replica's sandbox; part of its launch file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    pub cgroup: Leaf,
    pub mounts: Vec<mounts::Op>,
    /// Its own network namespace (`network = "isolated"`); `None`: the host's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<network::NetSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the sandbox needs root (namespaces, mounts, cgroups); run `wharf server` as root, or pass --isolation none to run replicas as plain processes")]
    NotRoot,
    #[error("no usable cgroup hierarchy was found in {0}; mount cgroup2 at /sys/fs/cgroup (or the v1 memory, cpu and pids controllers), or pass --isolation none")]
    NoCgroups(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot give {path} to the app's user: {source}")]
    Own {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Uid(#[from] uids::UidError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
}

/// The server side of the sandbox: cgroup tree, uid allocation, mount plans.
pub struct Sandbox {
    layout: Layout,
    cfg: SandboxConfig,
    tree: Tree,
    uids: uids::Uids,
    proc_root: PathBuf,
    network: network::Network,
    host_mounts: host_mounts::HostMounts,
    /// The platform's own binary (replicas run it: `wharf secret-env`), and whether it
    /// is on the host's root filesystem.
    exe: Option<(PathBuf, bool)>,
}

/// A short name for the data dir, so servers with different data dirs keep apart.
pub fn instance_name(data_dir: &Path) -> String {
    let canonical = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("d{hex}")
}

fn leaf_name(app: &str, id: &str) -> String {
    format!("{app}.{id}")
}

impl Sandbox {
    /// Detects and prepares everything a sandbox needs; fails with what is missing.
    pub fn new(layout: &Layout, cfg: SandboxConfig) -> Result<Sandbox, SandboxError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(SandboxError::NotRoot);
        }
        seccomp::filters()?;
        let proc_root = PathBuf::from("/proc");
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).map_err(|source| SandboxError::Read { path: p, source })
        };
        let mountinfo = read(proc_root.join("self/mountinfo"))?;
        let me = read(proc_root.join("self/cgroup"))?;
        let detected = cgroup::detect(&mountinfo, &me)
            .ok_or_else(|| SandboxError::NoCgroups(proc_root.join("self/mountinfo")))?;
        let tree = Tree::new(&detected, &cfg.cgroup_parent, &instance_name(layout.root()));
        tree.prepare()?;
        let network = network::Network::new(cfg.network.clone())?;
        let exe = std::env::current_exe().ok().map(|exe| {
            use std::os::unix::fs::MetadataExt;
            let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
            let on_root_fs = dev(&exe).is_some() && dev(&exe) == dev(Path::new("/"));
            (exe, on_root_fs)
        });
        Ok(Sandbox {
            exe,
            network,
            host_mounts: host_mounts::HostMounts::new(
                proc_root.join("self/mountinfo"),
                layout.root(),
            ),
            layout: layout.clone(),
            uids: uids::Uids::new(layout.root().join("uids.json"), cfg.uid_base, cfg.uid_count),
            cfg,
            tree,
            proc_root,
        })
    }

    /// What replicas get, for the server's start-up notice.
    pub fn notice(&self) -> String {
        let ctrls = self.tree.controllers();
        let missing: Vec<&str> = ["memory", "cpu", "pids"]
            .into_iter()
            .filter(|c| !ctrls.iter().any(|h| h == c))
            .collect();
        let mut s = format!(
            "isolation: sandbox — pid, mount, ipc and uts namespaces; overlay root with the app at /app; \
             a uid per app from {}; no capabilities, no_new_privs, seccomp; cgroups {} ({}) under {}/{}, \
             pids limit {}; network shared with the host, or {}",
            self.cfg.uid_base,
            self.tree.mode,
            ctrls.join(", "),
            self.cfg.cgroup_parent,
            instance_name(self.layout.root()),
            self.cfg.pids_max,
            self.network.notice(),
        );
        if !missing.is_empty() {
            s.push_str(&format!(
                "\nwarning: the cgroup controllers {} are not available: those limits are NOT enforced",
                missing.join(", ")
            ));
        }
        s
    }

    /// Allocates, creates and plans everything the replica of `l` needs.
    pub fn prepare(&self, l: &Launch, run_dir: &Path) -> Result<SandboxSpec, SandboxError> {
        let uid = self.uids.uid_of(l.app.as_str())?;
        let limits = Limits {
            memory: l.memory,
            cpu_units: l.cpu,
            cpu_limit: l.cpu_limit,
            pids: Some(self.cfg.pids_max),
        };
        let leaf = self
            .tree
            .create(&leaf_name(l.app.as_str(), &l.id), &limits)?;
        let host = self
            .host_mounts
            .current()
            .map_err(|source| SandboxError::Read {
                path: self.proc_root.join("self/mountinfo"),
                source,
            })?;
        let mode_of = |p: &Path| std::fs::metadata(p).ok().map(|m| m.permissions().mode());
        // The platform's own binary runs inside replicas (`wharf secret-env`): it must be
        // there wherever it was installed, even under /tmp (bound in unless the overlay
        // shows it anyway), and reachable by the app's uid.
        let exposed: Vec<PathBuf> = self
            .exe
            .iter()
            .filter(|(exe, on_root)| {
                !l.image.is_empty() || mounts::needs_binding(exe, *on_root, &host.data_dir)
            })
            .map(|(exe, _)| exe.clone())
            .collect();
        let mut search = l.env.get("PATH").cloned().unwrap_or_default();
        for dir in self.exe.iter().filter_map(|(e, _)| e.parent()) {
            search.push(':');
            search.push_str(&dir.to_string_lossy());
        }
        let traverse = mounts::untraversable(&search, &mode_of);
        let writable = if l.writable_dir {
            mounts::private_path_dirs(&search, &traverse)
        } else {
            Vec::new()
        };
        // Last, so that nothing after it can fail and leak the address.
        let net = match l.network {
            wharf_types::Network::Isolated => Some(self.network.plan().inspect_err(|_| {
                let _ = leaf.remove();
            })?),
            wharf_types::Network::Host => None,
        };
        let plan = mounts::plan(&mounts::PlanInput {
            run_dir,
            artifact: &l.dir,
            data_dir: &host.data_dir,
            host_mounts: &host.extra,
            traverse: &traverse,
            exposed: &exposed,
            writable_app: l.writable_dir,
            writable: &writable,
            secret_files: l.secret_files,
            image: &l.image,
        });
        Ok(SandboxSpec {
            hostname: l.id.clone(),
            uid,
            gid: uid,
            cgroup: leaf,
            mounts: plan,
            net,
        })
    }

    /// Gives the tree at `dir` to `app`'s user (a build writes its scratch copy).
    pub fn own_tree(&self, app: &str, dir: &Path) -> Result<(), SandboxError> {
        let uid = self.uids.uid_of(app)?;
        uids::chown_tree(dir, uid, uid).map_err(|source| SandboxError::Own {
            path: dir.to_path_buf(),
            source,
        })
    }

    /// The cgroup of replica `id` of `app` (which may not exist).
    pub fn leaf(&self, app: &str, id: &str) -> Leaf {
        self.tree.leaf(&leaf_name(app, id))
    }

    /// SIGKILLs everything in the replica's cgroup.
    pub fn kill(&self, app: &str, id: &str) {
        if let Err(e) = self.leaf(app, id).kill(Duration::from_secs(2)) {
            tracing::warn!(replica = %id, "{e}");
        }
    }

    /// Kills what is left in the replica's cgroup and removes it; unplugs its network
    /// and releases its address (`addr`) when it had its own.
    pub fn remove(&self, app: &str, id: &str, addr: Option<Ipv4Addr>) {
        if let Err(e) = self.leaf(app, id).remove() {
            tracing::warn!(replica = %id, "{e}");
        }
        if let Some(a) = addr {
            self.network.unplug(a);
        }
    }

    /// The host's address on the bridge of isolated replicas, creating the bridge if
    /// needed (for listeners those replicas must reach).
    pub fn network_gateway(&self) -> Result<Ipv4Addr, SandboxError> {
        self.network.ensure_bridge()?;
        Ok(self.network.config().subnet.gateway())
    }

    /// Takes back the addresses of replicas found after a restart (`addrs`) and deletes
    /// the network links of this subnet no such replica holds.
    pub fn adopt_network(&self, addrs: &HashSet<Ipv4Addr>) {
        for a in addrs {
            if !self.network.reserve(*a) {
                tracing::warn!(
                    "the address {a} of a found replica is not free in {}",
                    self.network.config().subnet
                );
            }
        }
        self.network.sweep(&network::host_links(), addrs);
    }

    /// Removes every leaf of this data dir not named in `keep` (`app.id`): what a crash
    /// between a replica's end and its cleanup left behind.
    pub fn sweep(&self, keep: &HashSet<String>) {
        for name in self.tree.leaves() {
            if keep.contains(&name) {
                continue;
            }
            tracing::info!("removing the cgroup {name} of a replica that is gone");
            if let Err(e) = self.tree.leaf(&name).remove() {
                tracing::warn!("{e}");
            }
        }
    }

    /// This data dir's cgroup directories (one per hierarchy), under which each replica
    /// has its own.
    pub fn base_dirs(&self) -> Vec<PathBuf> {
        self.tree.base_dirs()
    }

    /// Removes this data dir's (empty) cgroup directories, once no replica is left.
    pub fn retire(&self) {
        self.sweep(&HashSet::new());
        self.tree.remove_base();
    }

    /// `app.id` of a replica, as [`Sandbox::sweep`] expects it.
    pub fn key(app: &str, id: &str) -> String {
        leaf_name(app, id)
    }
}
