//! The default seccomp filter of replicas, built with `seccompiler` (Firecracker's
//! pure-Rust BPF compiler).
//!
//! A deny list in the spirit of Docker's default profile: everything is allowed except
//! syscalls that manage the machine rather than run an app — mounting, pivoting roots,
//! tracing other processes, loading kernels, modules or BPF programs, perf events, the
//! kernel keyring, rebooting, swap, joining namespaces, creating user namespaces (via
//! `unshare`, or `clone` with `CLONE_NEWUSER`), setting clocks, raw I/O ports. They fail
//! with `EPERM`. `clone3` fails with `ENOSYS` (its flags live in memory a filter cannot
//! read), so libc falls back to `clone`, whose flags are checked.
//!
//! Invariants: the filter is compiled before the sandbox's PID 1 is cloned, and PID 1
//! installs it once its mounts are done, right before it forks the app, which inherits
//! it (see [`super::pid1`]); nothing either of them does afterwards (privilege drop,
//! `no_new_privs`, `execve`) is on the deny list.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error(
        "seccomp filters are not built for this architecture ({0}); run with --isolation none"
    )]
    Arch(String),
    #[error("cannot build the seccomp filter: {0}")]
    Build(String),
    #[error("cannot install the seccomp filter: {0}")]
    Install(String),
}

/// Syscalls replicas may not make, by name (for messages and tests) and number.
pub fn denied() -> Vec<(&'static str, i64)> {
    let mut v = vec![
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("pivot_root", libc::SYS_pivot_root),
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("bpf", libc::SYS_bpf),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("reboot", libc::SYS_reboot),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("setns", libc::SYS_setns),
        ("unshare", libc::SYS_unshare),
        ("acct", libc::SYS_acct),
        ("quotactl", libc::SYS_quotactl),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("fsopen", libc::SYS_fsopen),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fspick", libc::SYS_fspick),
        ("move_mount", libc::SYS_move_mount),
        ("open_tree", libc::SYS_open_tree),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("syslog", libc::SYS_syslog),
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("adjtimex", libc::SYS_adjtimex),
        ("sethostname", libc::SYS_sethostname),
        ("setdomainname", libc::SYS_setdomainname),
        ("vhangup", libc::SYS_vhangup),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        ("iopl", libc::SYS_iopl),
        ("ioperm", libc::SYS_ioperm),
        ("uselib", libc::SYS_uselib),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ]);
    v
}

fn arch() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH.to_string()))
}

/// The filters to install, in order: the `EPERM` deny list, then `clone3` -> `ENOSYS`.
pub fn build() -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = arch()?;
    let b = |e: seccompiler::BackendError| SeccompError::Build(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = denied()
        .into_iter()
        .map(|(_, nr)| (nr, Vec::new()))
        .collect();
    let new_user_ns =
        u64::try_from(libc::CLONE_NEWUSER).map_err(|e| SeccompError::Build(e.to_string()))?;
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(new_user_ns),
            new_user_ns,
        )
        .map_err(b)?])
        .map_err(b)?],
    );
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(b)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(b)?;
    [deny, clone3]
        .into_iter()
        .map(|f| BpfProgram::try_from(f).map_err(b))
        .collect()
}

/// Installs `filters` on the calling thread. Needs `no_new_privs` (or CAP_SYS_ADMIN).
/// Async-signal-safe: only the `seccomp`/`prctl` syscalls run.
pub fn install(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for f in filters {
        seccompiler::apply_filter(f).map_err(|e| SeccompError::Install(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn denies_what_docker_denies() {
        let names: Vec<&str> = denied().iter().map(|(n, _)| *n).collect();
        for must in [
            "mount",
            "umount2",
            "pivot_root",
            "ptrace",
            "kexec_load",
            "init_module",
            "finit_module",
            "delete_module",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "reboot",
            "swapon",
            "swapoff",
            "setns",
            "unshare",
        ] {
            assert!(names.contains(&must), "{must} must be denied");
        }
        let mut nrs: Vec<i64> = denied().iter().map(|(_, nr)| *nr).collect();
        nrs.sort_unstable();
        nrs.dedup();
        assert_eq!(nrs.len(), names.len(), "no syscall listed twice");
        for allowed in [
            libc::SYS_read,
            libc::SYS_execve,
            libc::SYS_clone,
            libc::SYS_socket,
        ] {
            assert!(!nrs.contains(&allowed), "{allowed} must stay allowed");
        }
    }

    #[test]
    fn compiles_two_programs() {
        let progs = build().unwrap();
        assert_eq!(progs.len(), 2);
        assert!(
            progs[0].len() > denied().len(),
            "one jump per denied syscall at least"
        );
        assert!(!progs[1].is_empty());
    }

    /// Runs `sh -c SCRIPT` with the filter installed (no root needed: no_new_privs
    /// allows unprivileged filters) and returns its exit code.
    fn sandboxed(script: &str) -> i32 {
        let progs = build().unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        // SAFETY: between fork and exec only prctl(2) and seccomp(2) run, on memory
        // (the compiled programs) allocated before the fork.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                super::super::caps::no_new_privs().map_err(std::io::Error::other)?;
                install(&progs).map_err(std::io::Error::other)
            });
        }
        cmd.status().unwrap().code().unwrap_or(-1)
    }

    #[test]
    fn the_filter_blocks_user_namespaces_and_allows_ordinary_work() {
        if Command::new("unshare").arg("--version").output().is_err() {
            eprintln!("skipped: util-linux unshare is not installed");
            return;
        }
        assert_eq!(sandboxed("echo hi > /dev/null && ls / > /dev/null"), 0);
        assert_ne!(
            sandboxed("unshare -U true 2>/dev/null"),
            0,
            "user namespaces are denied"
        );
        assert_ne!(
            sandboxed("unshare -U -f true 2>/dev/null"),
            0,
            "also when forking first"
        );
    }
}
