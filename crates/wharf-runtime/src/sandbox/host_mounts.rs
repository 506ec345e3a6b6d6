//! The host's mounts a replica's root binds in (see [`super::mounts::extra_host_mounts`]),
//! worked out once and kept until the host's mount table changes.
//!
//! Reading and parsing the mount table and resolving the data dir took 0.1-0.3 ms of
//! every replica start. The kernel says when a mount namespace's table changed: a
//! descriptor of `/proc/self/mountinfo` polls with `POLLPRI` once after each change (the
//! poll itself takes the news). So a start asks with a zero-timeout `poll` and reuses
//! the last answer when nothing changed.
//!
//! Invariants: the snapshot handed out was computed from a mount table at least as new
//! as the last change seen by a poll before the call; without a watch descriptor (it
//! could not be opened) every call reads the table afresh.

use super::mounts;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What a replica's mount plan needs from the host.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The data dir, symlinks resolved.
    pub data_dir: PathBuf,
    /// Host filesystems besides `/` to bind read-only, in mount order.
    pub extra: Vec<PathBuf>,
}

pub struct HostMounts {
    mountinfo: PathBuf,
    data_dir: PathBuf,
    watch: Option<File>,
    last: Mutex<Option<Arc<Snapshot>>>,
}

impl HostMounts {
    /// Watches `mountinfo` (the server's `/proc/self/mountinfo`) for `data_dir`.
    pub fn new(mountinfo: PathBuf, data_dir: &Path) -> Self {
        HostMounts {
            watch: File::open(&mountinfo).ok(),
            mountinfo,
            data_dir: data_dir.to_path_buf(),
            last: Mutex::new(None),
        }
    }

    /// The current snapshot: the last one unless the mount table changed since.
    pub fn current(&self) -> std::io::Result<Arc<Snapshot>> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        // Polled first, so that a change during the read below is seen next time.
        let changed = self.changed();
        if let (Some(s), false) = (last.as_ref(), changed) {
            return Ok(Arc::clone(s));
        }
        let text = std::fs::read_to_string(&self.mountinfo)?;
        let data_dir = self
            .data_dir
            .canonicalize()
            .unwrap_or_else(|_| self.data_dir.clone());
        let extra = mounts::extra_host_mounts(&mounts::parse_mountinfo(&text), &data_dir);
        let snap = Arc::new(Snapshot { data_dir, extra });
        *last = Some(Arc::clone(&snap));
        Ok(snap)
    }

    /// Whether the table changed since the last poll (true when it cannot tell).
    fn changed(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let Some(watch) = &self.watch else {
            return true;
        };
        let mut fds = [PollFd::new(watch.as_fd(), PollFlags::POLLPRI)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => false,
            Ok(_) => fds[0]
                .revents()
                .is_none_or(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)),
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts() -> HostMounts {
        HostMounts::new(PathBuf::from("/proc/self/mountinfo"), Path::new("/tmp"))
    }

    #[test]
    fn the_snapshot_is_kept_while_the_table_stays() {
        let m = mounts();
        let a = m.current().unwrap();
        let b = m.current().unwrap();
        assert!(Arc::ptr_eq(&a, &b), "nothing changed: the same snapshot");
        assert_eq!(a.data_dir, Path::new("/tmp").canonicalize().unwrap());
    }

    #[test]
    fn without_a_watch_every_call_reads_the_table() {
        let m = HostMounts {
            watch: None,
            ..mounts()
        };
        let (a, b) = (m.current().unwrap(), m.current().unwrap());
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(a, b);
    }

    #[test]
    fn a_mount_on_the_host_makes_a_new_snapshot() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let m = mounts();
        let before = m.current().unwrap();
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _guard = Unmount(dir.path());
        let after = m.current().unwrap();
        assert!(!Arc::ptr_eq(&before, &after), "the change was seen");
        let again = m.current().unwrap();
        assert!(Arc::ptr_eq(&after, &again), "and taken once");
    }
}
