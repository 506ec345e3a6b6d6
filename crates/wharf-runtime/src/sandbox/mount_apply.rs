//! Executing a [`super::mounts`] plan inside the replica's fresh mount namespace.
//!
//! Invariants: runs as root in PID 1 of the replica, in a mount namespace of its own
//! (so nothing mounted here is visible on, or left behind on, the host: it all goes when
//! the namespace's last process exits); mount points are created on demand inside the
//! new root (in the overlay's upper layer, or in the tmpfs mounted there).

use super::mounts::Op;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{op}: {errno}")]
    Sys {
        op: String,
        errno: nix::errno::Errno,
    },
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
    #[error("the path {0} cannot be used for an overlay layer (it contains ',', ':' or '\\'); use a data dir without them")]
    OverlayPath(PathBuf),
}

fn sys(op: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> MountError {
    let op = op.into();
    move |errno| MountError::Sys { op, errno }
}

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> MountError {
    let op = op.into();
    move |source| MountError::Io { op, source }
}

fn layer(p: &Path) -> Result<&str, MountError> {
    p.to_str()
        .filter(|s| !s.contains([',', ':', '\\']))
        .ok_or_else(|| MountError::OverlayPath(p.to_path_buf()))
}

const NONE: Option<&str> = None;

/// Executes `ops` in order. Must run as root in a mount namespace of its own.
pub fn apply(ops: &[Op]) -> Result<(), MountError> {
    for op in ops {
        apply_one(op)?;
    }
    Ok(())
}

fn mkdir(p: &Path) -> Result<(), MountError> {
    std::fs::create_dir_all(p).map_err(io(format!("create {}", p.display())))
}

/// Adds the mode `bits` to `path` (in the overlay: the host keeps its mode).
fn add_mode(path: &Path, bits: u32, allow: &str) -> Result<(), MountError> {
    use std::os::unix::fs::PermissionsExt;
    let what = format!("allow {allow} {}", path.display());
    let mode = std::fs::metadata(path)
        .map_err(io(&what))?
        .permissions()
        .mode();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | bits)).map_err(io(what))
}

fn apply_one(op: &Op) -> Result<(), MountError> {
    let common = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    match op {
        Op::PrivatizeRoot => mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
            .map_err(sys("make / private")),
        Op::Overlay {
            target,
            lower,
            above,
            upper,
            work,
        } => {
            for d in [target, upper, work] {
                mkdir(d)?;
            }
            let mut lowers = above
                .iter()
                .map(|p| layer(p))
                .collect::<Result<Vec<&str>, _>>()?;
            lowers.push(layer(lower)?);
            let data = format!(
                "lowerdir={},upperdir={},workdir={}",
                lowers.join(":"),
                layer(upper)?,
                layer(work)?
            );
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::MS_NOSUID,
                Some(data.as_str()),
            )
            .map_err(sys(format!(
                "mount the overlay root at {}",
                target.display()
            )))
        }
        Op::Bind {
            source,
            target,
            readonly,
        } => {
            if source.is_dir() {
                mkdir(target)?;
            } else {
                if let Some(parent) = target.parent() {
                    mkdir(parent)?;
                }
                if !target.exists() {
                    std::fs::File::create(target)
                        .map_err(io(format!("create {}", target.display())))?;
                }
            }
            let what = format!("bind {} at {}", source.display(), target.display());
            mount(Some(source), target, NONE, MsFlags::MS_BIND, NONE).map_err(sys(&what))?;
            if *readonly {
                mount(
                    NONE,
                    target,
                    NONE,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | common,
                    NONE,
                )
                .map_err(sys(format!("make {} read-only", target.display())))?;
            }
            Ok(())
        }
        Op::Tmpfs {
            target,
            mode,
            readonly,
            noexec,
        } => {
            mkdir(target)?;
            let mut flags = common;
            if *readonly {
                flags |= MsFlags::MS_RDONLY;
            }
            if *noexec {
                flags |= MsFlags::MS_NOEXEC;
            }
            let data = format!("mode={mode:o}");
            mount(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                flags,
                Some(data.as_str()),
            )
            .map_err(sys(format!("mount a tmpfs at {}", target.display())))
        }
        Op::Proc { target } => {
            mkdir(target)?;
            mount(
                Some("proc"),
                target,
                Some("proc"),
                common | MsFlags::MS_NOEXEC,
                NONE,
            )
            .map_err(sys(format!("mount /proc at {}", target.display())))
        }
        Op::Sysfs { target } => {
            mkdir(target)?;
            mount(
                Some("sysfs"),
                target,
                Some("sysfs"),
                common | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
                NONE,
            )
            .map_err(sys(format!("mount /sys at {}", target.display())))
        }
        Op::Devices { target } => {
            mkdir(target)?;
            mount(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("mode=755"),
            )
            .map_err(sys(format!("mount a tmpfs at {}", target.display())))?;
            for (name, major, minor) in super::mounts::DEVICES {
                let node = target.join(name);
                let what = format!("make the device {}", node.display());
                mknod(
                    &node,
                    SFlag::S_IFCHR,
                    Mode::from_bits_truncate(0o666),
                    makedev(major, minor),
                )
                .map_err(sys(&what))?;
                // mknod applies the umask; the nodes are for everyone, as on the host.
                std::fs::set_permissions(
                    &node,
                    <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o666),
                )
                .map_err(io(what))?;
            }
            Ok(())
        }
        Op::Devpts { target } => {
            mkdir(target)?;
            mount(
                Some("devpts"),
                target,
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=0620"),
            )
            .map_err(sys(format!("mount devpts at {}", target.display())))
        }
        Op::Symlink { to, link } => std::os::unix::fs::symlink(to, link).map_err(io(format!(
            "link {} to {}",
            link.display(),
            to.display()
        ))),
        Op::AllowTraverse { path } => add_mode(path, 0o001, "traversing"),
        Op::AllowWrite { path } => add_mode(path, 0o003, "writing"),
        Op::PivotRoot { new_root } => {
            nix::unistd::chdir(new_root).map_err(sys("enter the new root"))?;
            nix::unistd::pivot_root(".", ".").map_err(sys("pivot_root"))?;
            umount2(".", MntFlags::MNT_DETACH).map_err(sys("detach the host's root"))?;
            nix::unistd::chdir("/").map_err(sys("chdir /"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_layers_refuse_separators() {
        assert!(layer(Path::new("/a/b")).is_ok());
        assert!(matches!(
            layer(Path::new("/a,b")),
            Err(MountError::OverlayPath(_))
        ));
        assert!(layer(Path::new("/a:b")).is_err());
    }
}
