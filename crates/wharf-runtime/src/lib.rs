//! wharf-runtime: the kernel boundary. Starts, watches, signals and cleans up replica
//! processes; runs builds; writes and reads app logs.
//!
//! Every replica runs under a small init (forked by the server's [`launcher`], or this
//! binary re-executed in its `init` role; see [`init`]) that is the leader of its own session and process group, owns the app's
//! stdout/stderr pipes and appends them to the app's log file, and records how the app
//! exited. The init does not depend on the server: a server crash loses no replica and
//! no log line, and a restarted server re-adopts replicas from their run directories.
//!
//! Invariants: the only crate allowed `unsafe` (each block carries a `SAFETY:` comment);
//! a replica is signalled only after its recorded pid and kernel start time match, so a
//! reused pid is never hit; everything a replica leaves lives under its run directory
//! (plus, sandboxed, its cgroup and, with its own network, its veth and address), removed
//! by `cleanup`.
//!
//! [`ProcessRuntime`] runs replicas as supervised plain processes, or, given a
//! [`sandbox::Sandbox`] (root only), each in its own namespaces, root filesystem, cgroup,
//! uid, capability set, seccomp filter and optionally network namespace (see
//! [`sandbox`]).

pub mod affinity;
pub mod build;
pub mod enter;
pub mod fdpass;
pub mod image;
pub mod init;
pub mod launcher;
pub mod layout;
pub mod logs;
mod process;
pub mod procfs;
pub mod run_state;
pub mod sandbox;
pub mod shell;
pub mod supervise;

pub use layout::Layout;
pub use process::ProcessRuntime;

/// Lowercase hex of `bytes` (a digest).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
