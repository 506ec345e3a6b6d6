//! Fixture apps: temporary app directories whose `web` process is the testapp binary.

use crate::bins;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A written app directory; removed when dropped.
#[derive(Debug)]
pub struct AppDir {
    _tmp: TempDir,
    path: PathBuf,
    /// The app name the manifest declares (or the directory name for a Procfile app).
    pub name: String,
}

impl AppDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as a `&str`, for CLI arguments.
    pub fn arg(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }

    /// The app's default host, `NAME.localhost`.
    pub fn host(&self) -> String {
        format!("{}.localhost", self.name)
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// Builder for a `wharf.toml` whose `web` process runs testapp with HTTP readiness on
/// `/health` and short intervals and timeouts, so tests stay fast.
#[derive(Debug, Clone)]
pub struct TestApp {
    name: String,
    replicas: u32,
    env: Vec<(String, String)>,
    build: Option<String>,
    web_extra: Vec<String>,
    deploy_timeout: String,
    stop_timeout: String,
    drain_timeout: String,
    hosts: Vec<String>,
    extra: String,
}

impl TestApp {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            replicas: 1,
            env: Vec::new(),
            build: None,
            web_extra: Vec::new(),
            deploy_timeout: "30s".into(),
            stop_timeout: "2s".into(),
            drain_timeout: "2s".into(),
            hosts: Vec::new(),
            extra: String::new(),
        }
    }

    pub fn replicas(mut self, n: u32) -> Self {
        self.replicas = n;
        self
    }

    /// Adds `KEY = "VALUE"` to `[env]`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets `[build] command`.
    pub fn build(mut self, command: &str) -> Self {
        self.build = Some(command.into());
        self
    }

    /// Adds a raw `key = value` line to `[process.web]`.
    pub fn web(mut self, line: &str) -> Self {
        self.web_extra.push(line.into());
        self
    }

    /// `[process.web.deploy] timeout`.
    pub fn deploy_timeout(mut self, d: &str) -> Self {
        self.deploy_timeout = d.into();
        self
    }

    /// `[process.web] stop_timeout` (default here "2s").
    pub fn stop_timeout(mut self, d: &str) -> Self {
        self.stop_timeout = d.into();
        self
    }

    /// `[process.web] drain_timeout` (default here "2s").
    pub fn drain_timeout(mut self, d: &str) -> Self {
        self.drain_timeout = d.into();
        self
    }

    /// `[route] hosts`.
    pub fn host(mut self, h: &str) -> Self {
        self.hosts.push(h.into());
        self
    }

    /// Raw TOML appended at the end (e.g. another `[process.worker]` table).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// The manifest text.
    pub fn manifest(&self) -> String {
        let testapp = TESTAPP_COMMAND.to_string();
        let mut t = String::new();
        let _ = writeln!(t, "app = {}", quote(&self.name));
        if let Some(b) = &self.build {
            let _ = writeln!(t, "\n[build]\ncommand = {}", quote(b));
        }
        if !self.env.is_empty() {
            t.push_str("\n[env]\n");
            for (k, v) in &self.env {
                let _ = writeln!(t, "{k} = {}", quote(v));
            }
        }
        let _ = writeln!(t, "\n[process.web]\ncommand = {}", quote(&testapp));
        let _ = writeln!(t, "replicas = {}", self.replicas);
        let _ = writeln!(t, "stop_timeout = {}", quote(&self.stop_timeout));
        let _ = writeln!(t, "drain_timeout = {}", quote(&self.drain_timeout));
        for l in &self.web_extra {
            let _ = writeln!(t, "{l}");
        }
        t.push_str(
            "\n[process.web.readiness]\nhttp = \"/health\"\ninterval = \"250ms\"\ntimeout = \"1s\"\n",
        );
        let _ = writeln!(
            t,
            "\n[process.web.deploy]\ntimeout = {}",
            quote(&self.deploy_timeout)
        );
        if !self.hosts.is_empty() {
            let hosts: Vec<String> = self.hosts.iter().map(|h| quote(h)).collect();
            let _ = writeln!(t, "\n[route]\nhosts = [{}]", hosts.join(", "));
        }
        t.push_str(&self.extra);
        t
    }

    /// Writes the app into a new temporary directory.
    pub fn write(&self) -> AppDir {
        let tmp = tempfile::Builder::new()
            .prefix("wharf-e2e-app-")
            .tempdir()
            .expect("temp dir");
        let path = tmp.path().to_path_buf();
        std::fs::write(path.join("wharf.toml"), self.manifest()).expect("write wharf.toml");
        add_testapp(&path);
        AppDir {
            _tmp: tmp,
            path,
            name: self.name.clone(),
        }
    }
}

/// How manifests run the fixture app: a copy of the binary inside the app directory, so
/// that the release carries it (a sandboxed replica sees only its artifact at `/app`,
/// the host's `/` read-only, and a private `/tmp`, where test checkouts often live).
pub const TESTAPP_COMMAND: &str = "./testapp";

fn add_testapp(dir: &Path) {
    std::fs::copy(&bins().testapp, dir.join("testapp")).expect("copy the testapp binary");
}

/// An app directory named NAME holding `file` (e.g. a `Procfile`, or a broken
/// `wharf.toml`) with `text`, and the fixture app's binary.
pub fn app_with_file(name: &str, file: &str, text: &str) -> AppDir {
    let tmp = tempfile::Builder::new()
        .prefix("wharf-e2e-app-")
        .tempdir()
        .expect("temp dir");
    let path = tmp.path().join(name);
    std::fs::create_dir(&path).expect("app dir");
    std::fs::write(path.join(file), text).expect("write app file");
    add_testapp(&path);
    AppDir {
        _tmp: tmp,
        path,
        name: name.to_string(),
    }
}
