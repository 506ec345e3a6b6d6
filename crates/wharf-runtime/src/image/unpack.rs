//! Unpacking one layer blob into a directory overlayfs can stack, verifying its digest.
//!
//! OCI whiteouts become overlayfs ones: `.wh.NAME` is a character device 0:0 named
//! `NAME`, and `.wh..wh..opq` marks its directory opaque (`trusted.overlay.opaque=y`).
//! Both need root (`mknod`, `trusted.*` xattrs), as the sandbox does.
//!
//! Invariants: nothing is written outside `dest` (the tar crate refuses entries that
//! would leave it, and whiteout paths are checked the same way); the whole blob is read
//! and its sha256 compared before the caller may use `dest`, so a corrupt or tampered
//! blob is an error, never a layer.

use super::oci::Compression;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Reads through, hashing every byte.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks `blob` into `dest` (which must exist and be empty); fails unless the blob's
/// sha256 is `expected_hex`.
pub fn unpack(
    blob: &Path,
    expected_hex: &str,
    compression: Compression,
    dest: &Path,
) -> Result<(), String> {
    let file =
        std::fs::File::open(blob).map_err(|e| format!("cannot open {}: {e}", blob.display()))?;
    let mut hashing = Hashing {
        inner: std::io::BufReader::new(file),
        hasher: Sha256::new(),
    };
    {
        let reader: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut hashing),
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(&mut hashing)),
        };
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_overwrite(true);
        let entries = archive
            .entries()
            .map_err(|e| format!("{} is not a tar layer: {e}", blob.display()))?;
        for entry in entries {
            let mut entry =
                entry.map_err(|e| format!("a broken entry in {}: {e}", blob.display()))?;
            let path = entry
                .path()
                .map_err(|e| format!("a bad path in {}: {e}", blob.display()))?
                .into_owned();
            match whiteout(&path) {
                Some(Whiteout::Opaque(dir)) => make_opaque(&inside(dest, &dir)?)?,
                Some(Whiteout::Remove(name)) => make_whiteout(&inside(dest, &name)?)?,
                None => {
                    entry.unpack_in(dest).map_err(|e| {
                        format!(
                            "cannot unpack {} from {}: {}",
                            path.display(),
                            blob.display(),
                            describe(&e)
                        )
                    })?;
                }
            }
        }
    }
    // The tar end marker may come before the end of the blob: hash the rest too.
    std::io::copy(&mut hashing, &mut std::io::sink())
        .map_err(|e| format!("cannot read {}: {e}", blob.display()))?;
    let got = crate::hex(&hashing.hasher.finalize());
    if got != expected_hex {
        return Err(format!(
            "layer {} does not match its digest sha256:{expected_hex} (got sha256:{got}); the image is corrupt",
            blob.display()
        ));
    }
    Ok(())
}

/// An I/O error of the tar crate with the cause it wraps.
fn describe(e: &std::io::Error) -> String {
    let Some(inner) = e.get_ref() else {
        return e.to_string();
    };
    let mut text = inner.to_string();
    let mut cause = inner.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// What a whiteout entry asks for, as a path relative to the layer root.
#[derive(Debug, PartialEq, Eq)]
enum Whiteout {
    /// Hide everything below this directory from lower layers.
    Opaque(PathBuf),
    /// Hide this path of lower layers.
    Remove(PathBuf),
}

fn whiteout(path: &Path) -> Option<Whiteout> {
    let name = path.file_name()?.to_str()?;
    let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
    if name == OPAQUE {
        Some(Whiteout::Opaque(parent))
    } else {
        name.strip_prefix(WHITEOUT)
            .filter(|n| !n.is_empty())
            .map(|n| Whiteout::Remove(parent.join(n)))
    }
}

/// `dest` joined with the normal components of `rel`; `..` is refused.
fn inside(dest: &Path, rel: &Path) -> Result<PathBuf, String> {
    let mut out = dest.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("a whiteout leaves the layer: {}", rel.display()))
            }
        }
    }
    // No symlink may lead out of the layer either.
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let real = parent
            .canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", parent.display()))?;
        let root = dest
            .canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", dest.display()))?;
        if !real.starts_with(&root) {
            return Err(format!("a whiteout leaves the layer: {}", rel.display()));
        }
    }
    Ok(out)
}

fn make_whiteout(path: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        nix::sys::stat::makedev(0, 0),
    )
    .map_err(|e| {
        format!(
            "cannot make the whiteout {}: {e} (unpacking images needs root)",
            path.display()
        )
    })
}

fn make_opaque(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("a NUL byte in {}", dir.display()))?;
    let name = c"trusted.overlay.opaque";
    let value = b"y";
    // SAFETY: both strings are NUL-terminated and outlive the call; the value pointer
    // and length describe `value`.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(format!(
            "cannot mark {} opaque: {} (unpacking images needs root)",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn whiteout_names() {
        assert_eq!(
            whiteout(Path::new("etc/.wh.passwd")),
            Some(Whiteout::Remove("etc/passwd".into()))
        );
        assert_eq!(
            whiteout(Path::new("./var/cache/.wh..wh..opq")),
            Some(Whiteout::Opaque("./var/cache".into()))
        );
        assert_eq!(
            whiteout(Path::new(".wh.top")),
            Some(Whiteout::Remove("top".into()))
        );
        assert_eq!(whiteout(Path::new("etc/passwd")), None);
        assert_eq!(whiteout(Path::new("etc/.wh.")), None);
    }

    #[test]
    fn whiteouts_never_leave_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        assert!(inside(dir.path(), Path::new("../x")).is_err());
        assert!(inside(dir.path(), Path::new("a/../../x")).is_err());
        std::os::unix::fs::symlink("/etc", dir.path().join("escape")).unwrap();
        assert!(inside(dir.path(), Path::new("escape/passwd")).is_err());
        assert_eq!(
            inside(dir.path(), Path::new("/a/b")).unwrap(),
            dir.path().join("a/b")
        );
    }

    /// A gzipped tar with `files` (path, contents) and its sha256.
    pub(crate) fn layer(files: &[(&str, &[u8])]) -> (Vec<u8>, String) {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            tar.append_data(&mut h, path, *data).unwrap();
        }
        let raw = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let blob = gz.finish().unwrap();
        let hex = crate::hex(&Sha256::digest(&blob));
        (blob, hex)
    }

    #[test]
    fn a_layer_unpacks_only_with_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let (blob, hex) = layer(&[("etc/motd", b"hello"), ("bin/tool", b"#!/bin/sh\n")]);
        let path = dir.path().join("blob");
        std::fs::write(&path, &blob).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        unpack(&path, &hex, Compression::Gzip, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("etc/motd")).unwrap(), b"hello");

        let wrong = "0".repeat(64);
        let dest2 = dir.path().join("out2");
        std::fs::create_dir(&dest2).unwrap();
        let e = unpack(&path, &wrong, Compression::Gzip, &dest2).unwrap_err();
        assert!(e.contains("does not match its digest"), "{e}");
        let e = unpack(&path, &hex, Compression::None, &dest2).unwrap_err();
        assert!(!e.is_empty());
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts_as_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: whiteouts need root (mknod, trusted xattrs)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (blob, hex) = layer(&[("etc/.wh.passwd", b""), ("var/cache/.wh..wh..opq", b"")]);
        let path = dir.path().join("blob");
        std::fs::write(&path, &blob).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        unpack(&path, &hex, Compression::Gzip, &dest).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::symlink_metadata(dest.join("etc/passwd")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        assert!(!dest.join("etc/.wh.passwd").exists());
        let mut value = [0u8; 4];
        let c =
            std::ffi::CString::new(dest.join("var/cache").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: test-only getxattr into a buffer of the given length.
        #[allow(unsafe_code)]
        let n = unsafe {
            libc::getxattr(
                c.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert_eq!(n, 1);
        assert_eq!(value[0], b'y');
    }
}
