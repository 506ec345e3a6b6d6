//! A uid/gid per app, allocated from a range and recorded in `DATA/uids.json`.
//!
//! Invariants: an app keeps its uid for the life of the data dir (also across
//! `destroy`: files it left with that owner can never reach another app); two apps never
//! share one; the file is rewritten atomically under a lock, so a crash loses at most an
//! allocation nobody used yet. gid = uid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum UidError {
    #[error("cannot read {path}: {message}; fix or remove the file (apps then get new uids)")]
    Read { path: PathBuf, message: String },
    #[error("cannot record the uid of {app} in {path}: {source}")]
    Write {
        app: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("all {count} uids from {base} are taken; start the server with a larger range")]
    Exhausted { base: u32, count: u32 },
}

/// The allocator.
pub struct Uids {
    path: PathBuf,
    base: u32,
    count: u32,
    /// Uids already read or allocated, which never change: a replica start of a known
    /// app reads no file. Held while the file is read and rewritten.
    known: Mutex<BTreeMap<String, u32>>,
}

impl Uids {
    pub fn new(path: PathBuf, base: u32, count: u32) -> Self {
        Self {
            path,
            base,
            count,
            known: Mutex::new(BTreeMap::new()),
        }
    }

    fn load(&self) -> Result<BTreeMap<String, u32>, UidError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| UidError::Read {
                path: self.path.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(UidError::Read {
                path: self.path.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// The uid of `app`, allocating the lowest free one the first time.
    pub fn uid_of(&self, app: &str) -> Result<u32, UidError> {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&uid) = known.get(app) {
            return Ok(uid);
        }
        let mut map = self.load()?;
        if let Some(&uid) = map.get(app) {
            known.insert(app.to_string(), uid);
            return Ok(uid);
        }
        let taken: std::collections::BTreeSet<u32> = map.values().copied().collect();
        let uid = (0..self.count)
            .map(|i| self.base.saturating_add(i))
            .find(|u| !taken.contains(u))
            .ok_or(UidError::Exhausted {
                base: self.base,
                count: self.count,
            })?;
        map.insert(app.to_string(), uid);
        let err = |source| UidError::Write {
            app: app.to_string(),
            path: self.path.clone(),
            source,
        };
        crate::init::write_json_atomic(&self.path, &map).map_err(err)?;
        known.insert(app.to_string(), uid);
        Ok(uid)
    }
}

/// Gives every file, directory and symlink under `root` (and `root`) to `uid:gid`,
/// without following symlinks.
pub fn chown_tree(root: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
        let meta = std::fs::symlink_metadata(&p)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&p)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_stable_distinct_uids_and_remembers_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uids.json");
        let u = Uids::new(path.clone(), 5000, 2);
        assert_eq!(u.uid_of("a").unwrap(), 5000);
        assert_eq!(u.uid_of("b").unwrap(), 5001);
        assert_eq!(u.uid_of("a").unwrap(), 5000, "stable");
        assert!(matches!(u.uid_of("c"), Err(UidError::Exhausted { .. })));
        let again = Uids::new(path.clone(), 5000, 10);
        assert_eq!(again.uid_of("b").unwrap(), 5001, "recorded across restarts");
        assert_eq!(again.uid_of("c").unwrap(), 5002);
        std::fs::write(&path, "not json").unwrap();
        let err = again.uid_of("d").unwrap_err().to_string();
        assert!(err.contains("uids.json"), "{err}");
    }
}
