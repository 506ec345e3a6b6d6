//! The default seccomp filter of replicas: compiled into one classic-BPF program that
//! finds a syscall by binary search ([`super::bpf`]), installed with `seccompiler`
//! (Firecracker's pure-Rust seccomp crate).
//!
//! A deny list in the spirit of Docker's default profile: everything is allowed except
//! syscalls that manage the machine rather than run an app — mounting, pivoting roots,
//! tracing other processes, loading kernels, modules or BPF programs, perf events, the
//! kernel keyring, rebooting, swap, joining namespaces, creating user namespaces (via
//! `unshare`, or `clone` with `CLONE_NEWUSER`), setting clocks, raw I/O ports. They fail
//! with `EPERM`. `clone3` fails with `ENOSYS` (its flags live in memory a filter cannot
//! read), so libc falls back to `clone`, whose flags are checked. On x86_64 the x32 ABI
//! (same architecture, numbers with bit 30 set) is denied whole, so the list cannot be
//! walked around through it; other ABIs (i386) kill the process.
//!
//! Invariants: the filter is compiled before the sandbox's PID 1 is cloned, and PID 1
//! installs it once its mounts are done, right before it forks the app, which inherits
//! it (see [`super::pid1`]); nothing either of them does afterwards (privilege drop,
//! `no_new_privs`, `execve`) is on the deny list.

use super::bpf::{self, Action, Policy, Rule};
use seccompiler::BpfProgram;
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
    /// What building the filter failed with the first time (see [`filters`]).
    #[error("{0}")]
    Earlier(String),
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

/// The `AUDIT_ARCH_*` value of this build's architecture, and whether it has the x32 ABI.
fn arch() -> Result<(u32, bool), SeccompError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok((0xC000_003E, true)),
        "aarch64" => Ok((0xC000_00B7, false)),
        other => Err(SeccompError::Arch(other.to_string())),
    }
}

/// The filter to install (see `build`), built once per process: the launcher builds it
/// before it forks, so every replica init it forks has it ready, and the server's
/// start-up check reuses it.
pub fn filters() -> Result<&'static [BpfProgram], SeccompError> {
    static BUILT: std::sync::OnceLock<Result<Vec<BpfProgram>, String>> = std::sync::OnceLock::new();
    match BUILT.get_or_init(|| build().map_err(|e| e.to_string())) {
        Ok(f) => Ok(f),
        Err(e) => Err(SeccompError::Earlier(e.clone())),
    }
}

/// The filter to install: the deny list (`EPERM`), `clone` with `CLONE_NEWUSER`
/// (`EPERM`), `clone3` (`ENOSYS`), and on x86_64 every x32 syscall (`EPERM`), compiled
/// by [`super::bpf`] into one program.
fn build() -> Result<Vec<BpfProgram>, SeccompError> {
    let (audit_arch, has_x32) = arch()?;
    let nr = |n: i64| u32::try_from(n).map_err(|e| SeccompError::Build(e.to_string()));
    let eperm = Action::Errno(libc::EPERM as u16);
    let mut rules = BTreeMap::new();
    for (_, n) in denied() {
        rules.insert(nr(n)?, Rule::Always(eperm));
    }
    rules.insert(
        nr(libc::SYS_clone)?,
        Rule::AnyBit {
            arg: 0,
            mask: libc::CLONE_NEWUSER as u32,
            then: eperm,
        },
    );
    rules.insert(
        nr(libc::SYS_clone3)?,
        Rule::Always(Action::Errno(libc::ENOSYS as u16)),
    );
    let policy = Policy {
        arch: audit_arch,
        x32: has_x32.then_some(eperm),
        rules,
    };
    let program = bpf::compile(&policy).map_err(|e| SeccompError::Build(e.to_string()))?;
    Ok(vec![program])
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

    /// The compiled program, run by `bpf::run` for every syscall number: the deny list,
    /// `clone` by its flags, `clone3`, x32 and foreign ABIs.
    #[test]
    fn the_program_answers_every_syscall_as_listed() {
        let progs = build().unwrap();
        assert_eq!(progs.len(), 1, "one program: one load per replica");
        let (audit, x32) = arch().unwrap();
        let run = |nr: u32, flags: u64| bpf::run(&progs[0], audit, nr, [flags, 0, 0, 0, 0, 0]);
        let eperm = Some(libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        let allow = Some(libc::SECCOMP_RET_ALLOW);
        let denied: Vec<u32> = denied().iter().map(|(_, n)| *n as u32).collect();
        for nr in 0..1024u32 {
            let want = if denied.contains(&nr) {
                eperm
            } else if nr == libc::SYS_clone3 as u32 {
                Some(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32)
            } else {
                allow
            };
            assert_eq!(run(nr, 0), want, "syscall {nr}");
        }
        let clone = libc::SYS_clone as u32;
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(run(clone, libc::SIGCHLD as u64), allow);
        assert_eq!(run(clone, newuser | libc::SIGCHLD as u64), eperm);
        if x32 {
            let mount = libc::SYS_mount as u32 | bpf::X32_SYSCALL_BIT;
            assert_eq!(run(mount, 0), eperm, "no way around the list through x32");
            assert_eq!(run(bpf::X32_SYSCALL_BIT, 0), eperm);
        }
        assert_eq!(
            bpf::run(&progs[0], audit ^ 1, 0, [0; 6]),
            Some(libc::SECCOMP_RET_KILL_PROCESS)
        );
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
