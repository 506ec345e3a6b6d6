//! Dropping privileges: the app's uid/gid, no supplementary groups, an empty capability
//! bounding set, empty capability sets, `no_new_privs`.
//!
//! Order matters and is fixed in [`drop_to`]: the bounding set is emptied while the
//! process still has CAP_SETPCAP, groups and gid change while it still has
//! CAP_SETGID, the uid last; changing every uid away from 0 clears the permitted and
//! effective sets, and the explicit `capset` afterwards also clears the inheritable set,
//! so nothing can come back through `execve`. `no_new_privs` keeps set-uid binaries from
//! regaining anything. (The seccomp filter is already in place: PID 1 loads it while it
//! still has CAP_SYS_ADMIN, before it forks the app; see `super::pid1`.)
//!
//! Invariant: every function here makes raw syscalls only (no allocation), so it is safe
//! between `fork` and `exec`.

use nix::unistd::{Gid, Uid};

/// Highest capability number to drop from the bounding set; the kernel's list ends
/// lower, and dropping an unknown one fails with EINVAL, which ends the loop.
const LAST_CAP: libc::c_ulong = 63;

#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("cannot {what}: {errno}")]
    Sys {
        what: &'static str,
        errno: nix::errno::Errno,
    },
}

fn sys(what: &'static str) -> impl FnOnce(nix::errno::Errno) -> PrivError {
    move |errno| PrivError::Sys { what, errno }
}

/// Sets `no_new_privs` on the calling thread (inherited by children and across exec).
pub fn no_new_privs() -> Result<(), PrivError> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes no pointers.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(PrivError::Sys {
            what: "set no_new_privs",
            errno: nix::errno::Errno::last(),
        });
    }
    Ok(())
}

/// Empties the capability bounding set (needs CAP_SETPCAP).
pub fn drop_bounding_set() -> Result<(), PrivError> {
    for cap in 0..=LAST_CAP {
        // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes no pointers.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc != 0 {
            let errno = nix::errno::Errno::last();
            if errno == nix::errno::Errno::EINVAL {
                break; // past the last capability this kernel knows
            }
            return Err(PrivError::Sys {
                what: "drop a capability from the bounding set",
                errno,
            });
        }
    }
    Ok(())
}

/// Clears the effective, permitted and inheritable capability sets.
pub fn clear_capabilities() -> Result<(), PrivError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset(2) reads one header and two data structs (version 3) from the valid
    // pointers given; both live on this stack frame for the duration of the call.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            std::ptr::addr_of_mut!(header),
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(PrivError::Sys {
            what: "clear the capability sets",
            errno: nix::errno::Errno::last(),
        });
    }
    // Ambient capabilities are cleared with the permitted set; be explicit anyway.
    // SAFETY: prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL) takes no pointers.
    #[allow(unsafe_code)]
    let _ = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    Ok(())
}

/// Becomes `uid`/`gid` with no supplementary groups and no capabilities at all, with
/// `no_new_privs` set. Must run as root (in the caller's user namespace).
pub fn drop_to(uid: u32, gid: u32) -> Result<(), PrivError> {
    drop_bounding_set()?;
    nix::unistd::setgroups(&[]).map_err(sys("clear the supplementary groups"))?;
    let g = Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).map_err(sys("set the gid"))?;
    let u = Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).map_err(sys("set the uid"))?;
    clear_capabilities()?;
    no_new_privs()
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn drop_to_leaves_a_plain_uid_without_any_capability() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: dropping privileges needs root");
            return;
        }
        let mut cmd = Command::new("/bin/cat");
        cmd.arg("/proc/self/status");
        // SAFETY: between fork and exec only raw syscalls run (see the module's invariant).
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| super::drop_to(65_534, 65_534).map_err(std::io::Error::other));
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let status = String::from_utf8_lossy(&out.stdout);
        for want in [
            "Uid:\t65534\t65534\t65534\t65534",
            "Gid:\t65534\t65534\t65534\t65534",
            "CapInh:\t0000000000000000",
            "CapPrm:\t0000000000000000",
            "CapEff:\t0000000000000000",
            "CapBnd:\t0000000000000000",
            "CapAmb:\t0000000000000000",
            "NoNewPrivs:\t1",
        ] {
            assert!(status.contains(want), "expected {want:?} in\n{status}");
        }
        assert!(
            status.lines().any(|l| l.trim_end() == "Groups:"),
            "no supplementary groups:\n{status}"
        );
    }
}
