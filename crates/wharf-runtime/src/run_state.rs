//! Where a privileged server keeps its replicas' run directories: in memory, under
//! `/run/wharf/INSTANCE`, as runc keeps its state under `/run/runc`.
//!
//! A run directory holds a replica's launch spec, its init's identity, its handle and
//! its exit record: small files written and removed on every start and stop, and
//! meaningless after a reboot (the replicas are gone then). On a disk filesystem their
//! creation, journaled renames and removal cost about 0.5 ms of every sandboxed start,
//! and much more while other work writes to the disk. On a tmpfs they cost next to
//! nothing; a server crash keeps them (the tmpfs outlives the server, so re-adoption
//! works as before), a reboot empties them, as it empties the replicas.
//!
//! `/run` is a tmpfs on most distributions. Where it is not, the first server mounts one
//! tmpfs at `/run/wharf` (mode 0700), which every server of the machine then shares and
//! which stays until reboot, like `/run` itself; a lock file next to it keeps two
//! servers starting at once from mounting it twice.
//!
//! Invariants: the directory handed out is on a tmpfs, owned by root, mode 0700, named
//! for the data dir (see [`crate::sandbox::instance_name`]), so two data dirs never share
//! one; nothing is mounted unless the caller is root.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The machine's run-state root.
pub const ROOT: &str = "/run/wharf";

#[derive(Debug, thiserror::Error)]
pub enum RunStateError {
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot mount a tmpfs at {path}: {errno}")]
    Mount {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunStateError + '_ {
    move |source| RunStateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `dir` is on a tmpfs.
pub fn in_memory(dir: &Path) -> bool {
    use nix::sys::statfs::{statfs, TMPFS_MAGIC};
    statfs(dir).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC)
}

/// The run-state directory of the data dir named `instance`, under `root` (normally
/// [`ROOT`]), which is made a tmpfs first if it is not in memory already.
pub fn instance_dir(root: &Path, instance: &str) -> Result<PathBuf, RunStateError> {
    let mut dirs = std::fs::DirBuilder::new();
    dirs.recursive(true).mode(0o700);
    dirs.create(root).map_err(io(root))?;
    if !in_memory(root) {
        // Two servers starting at once: one mounts, the other sees the tmpfs.
        let lock_path = root.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io(&lock_path)(e.into()))?;
        if !in_memory(root) {
            nix::mount::mount(
                Some("tmpfs"),
                root,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                Some("mode=700"),
            )
            .map_err(|errno| RunStateError::Mount {
                path: root.to_path_buf(),
                errno,
            })?;
        }
    }
    let dir = root.join(instance);
    dirs.create(&dir).map_err(io(&dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
    Ok(dir)
}

/// The run-state directory of the data dir `data_dir`, under [`ROOT`].
pub fn of_data_dir(data_dir: &Path) -> Result<PathBuf, RunStateError> {
    instance_dir(Path::new(ROOT), &crate::sandbox::instance_name(data_dir))
}

/// Removes `dir` (from [`instance_dir`]) and the empty directories under it; what still
/// holds a file (a replica's run directory) stays.
pub fn release(dir: &Path) {
    fn prune(d: &Path) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    prune(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(d);
    }
    prune(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mount points at `path` in this process's mount table.
    fn mounts_at(path: &Path) -> usize {
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let p = path.to_str().unwrap();
        table
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(p))
            .count()
    }

    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            while mounts_at(&self.0) > 0 {
                if nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH).is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn the_root_becomes_one_tmpfs_and_instances_get_private_dirs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("wharf");
        let _guard = Unmount(root.clone());
        let parent_in_memory = in_memory(tmp.path());
        let a = instance_dir(&root, "d1").unwrap();
        assert!(in_memory(&a));
        assert_eq!(a, root.join("d1"));
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let b = instance_dir(&root, "d2").unwrap();
        assert_ne!(a, b);
        // Again (another server, a restart): the same tmpfs, not one more on top.
        std::fs::write(a.join("kept"), "x").unwrap();
        let again = instance_dir(&root, "d1").unwrap();
        assert!(
            again.join("kept").exists(),
            "nothing hidden by a second mount"
        );
        assert_eq!(mounts_at(&root), usize::from(!parent_in_memory));

        std::fs::create_dir_all(b.join("run/app/web-1")).unwrap();
        std::fs::write(b.join("run/app/web-1/launch.json"), "{}").unwrap();
        std::fs::create_dir_all(b.join("oneoff/app")).unwrap();
        release(&b);
        assert!(
            b.join("run/app/web-1/launch.json").exists(),
            "a live run dir stays"
        );
        assert!(!b.join("oneoff").exists(), "empty dirs go");
        std::fs::remove_file(b.join("run/app/web-1/launch.json")).unwrap();
        release(&b);
        assert!(!b.exists());
    }

    #[test]
    fn a_root_already_in_memory_is_used_as_it_is() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("wharf");
        std::fs::create_dir(&root).unwrap();
        let _guard = Unmount(root.clone());
        nix::mount::mount(
            Some("tmpfs"),
            &root,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        instance_dir(&root, "d1").unwrap();
        assert_eq!(mounts_at(&root), 1);
    }
}
