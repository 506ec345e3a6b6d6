//! Where things live under the data directory.

use std::path::{Path, PathBuf};
use wharf_types::AppName;

/// The data directory's layout. Deleting the directory resets the platform.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    /// Where run directories live when not under `root` (see [`crate::run_state`]).
    run_state: Option<PathBuf>,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            run_state: None,
        }
    }
    /// Keeps run directories (replicas' and one-offs') under `dir` instead of the data
    /// dir: a tmpfs (see [`crate::run_state`]).
    pub fn with_run_state(self, dir: impl Into<PathBuf>) -> Self {
        Self {
            run_state: Some(dir.into()),
            ..self
        }
    }
    /// Where run directories live: the run-state dir, or the data dir.
    pub fn run_state(&self) -> &Path {
        self.run_state.as_deref().unwrap_or(&self.root)
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The embedded store.
    pub fn store(&self) -> PathBuf {
        self.root.join("wharf.redb")
    }
    /// The API's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("wharf.sock")
    }
    /// Built, content-addressed release artifacts.
    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }
    pub fn artifact(&self, hash: &str) -> PathBuf {
        self.artifacts().join(hash)
    }
    /// Scratch space for builds in progress.
    pub fn builds(&self) -> PathBuf {
        self.root.join("builds")
    }
    /// Build output of a release, kept next to its artifact.
    pub fn build_log(&self, app: &AppName, release: u32) -> PathBuf {
        self.root
            .join("logs")
            .join(app.as_str())
            .join(format!("build-v{release}.log"))
    }
    /// Per-replica run directories (launch spec, handle, exit record).
    pub fn run(&self) -> PathBuf {
        self.run_state().join("run")
    }
    pub fn run_dir(&self, app: &AppName, id: &str) -> PathBuf {
        self.run().join(app.as_str()).join(id)
    }
    /// OCI images: unpacked layers and archives (see [`crate::image`]).
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    /// Run directories of one-off processes (`wharf run`, rotate commands), apart from
    /// the replicas' so that re-adoption never mistakes one for a replica.
    pub fn oneoffs(&self) -> PathBuf {
        self.run_state().join("oneoff")
    }
    pub fn oneoff_dir(&self, app: &AppName, id: &str) -> PathBuf {
        self.oneoffs().join(app.as_str()).join(id)
    }
    /// One JSON-lines log file per app, appended by every replica's init.
    pub fn app_log(&self, app: &AppName) -> PathBuf {
        self.root.join("logs").join(app.as_str()).join("app.log")
    }
    pub fn app_logs_dir(&self, app: &AppName) -> PathBuf {
        self.root.join("logs").join(app.as_str())
    }
}
