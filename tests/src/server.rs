//! [`Server`]: one `wharf server` on a temporary data directory, and the CLI pointed at it.

use crate::http::{http_get, Response};
use crate::procs;
use crate::{bins, wait_until};
use serde_json::Value;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a server may take to publish `server.json` and answer the API.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// How long a CLI command may run before the test gives up on it.
const CLI_DEADLINE: Duration = Duration::from_secs(240);
/// How long a SIGTERM'd server may take to exit before it is SIGKILLed.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// The outcome of one CLI run.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Panics (showing the output) unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.code, code,
            "{what}: expected exit code {code}, got {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command succeeded.
    #[track_caller]
    pub fn ok(&self, what: &str) -> &Self {
        self.expect_code(0, what)
    }

    /// stdout parsed as JSON; panics with the output when it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n--- stderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// A running `wharf server` with its own temporary data dir and router on port 0.
pub struct Server {
    tmp: Option<TempDir>,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// The server being replaced during [`Server::takeover`] (killed on drop).
    previous: Option<Child>,
    router: String,
    /// Extra `wharf server` arguments.
    extra: Vec<String>,
}

impl Server {
    /// Starts a server on a fresh data dir and waits until its API answers.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Like [`Server::start`], with extra `wharf server` arguments (`--api 127.0.0.1:0`).
    pub fn start_with(extra: &[&str]) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("wharf-e2e-")
            .tempdir()
            .expect("temp dir");
        let data = tmp.path().join("data");
        let log = tmp.path().join("server.log");
        let mut s = Server {
            tmp: Some(tmp),
            data,
            log,
            child: None,
            previous: None,
            router: String::new(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn();
        s
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The router's address, `127.0.0.1:PORT`.
    pub fn router(&self) -> &str {
        &self.router
    }

    /// The router's port.
    pub fn port(&self) -> u16 {
        self.router
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// The server process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let b = bins();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        // The router on port 0, unless the test fixes it (to keep it across restarts).
        let fixed = self.extra.iter().any(|a| a == "--listen");
        let listen: &[&str] = if fixed {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let child = Command::new(&b.wharf)
            .arg("server")
            .arg("--data-dir")
            .arg(&self.data)
            .args(listen)
            .args(&self.extra)
            .env_remove("WHARF_DATA_DIR")
            .env_remove("WHARF_SERVER")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("cannot start wharf server");
        let pid = child.id();
        self.child = Some(child);
        let info_path = self.data.join("server.json");
        let start = Instant::now();
        let mut router = None;
        let healthy = wait_until(START_DEADLINE, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "wharf server exited during startup ({status})\n{}",
                    self.log_tail(60)
                );
            }
            if router.is_none() {
                router = std::fs::read(&info_path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    // A server killed with -9 leaves its server.json behind: wait for ours.
                    .filter(|v| v["pid"].as_u64() == Some(u64::from(pid)))
                    .and_then(|v| v["router"].as_str().map(str::to_string));
            }
            router.is_some() && self.wharf_quiet(&["apps"]).code == 0
        });
        assert!(
            healthy,
            "wharf server did not become healthy within {:?} (server.json: {:?})\n{}",
            start.elapsed(),
            std::fs::read_to_string(&info_path).ok(),
            self.log_tail(60)
        );
        self.router = router.unwrap_or_default();
    }

    /// Stops the server with SIGTERM (SIGKILL after a deadline); replicas keep running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            procs::term(child.id());
            let exited = wait_until(STOP_DEADLINE, || matches!(child.try_wait(), Ok(Some(_))));
            if !exited {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Kills the server with SIGKILL, leaving its replicas and files as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new server on the same data dir (stopping the current one gracefully if it
    /// still runs) and waits until its API answers. The router gets a new port.
    pub fn restart_same_data_dir(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Replaces the running server with a new one started with `--takeover`, which
    /// takes its listening sockets over; waits until the old one has exited by itself.
    /// The router keeps its address.
    pub fn takeover(&mut self) {
        self.previous = self.child.take();
        self.extra.push("--takeover".into());
        self.spawn();
        self.extra.pop();
        if let Some(mut old) = self.previous.take() {
            let exited = wait_until(STOP_DEADLINE, || matches!(old.try_wait(), Ok(Some(_))));
            if !exited {
                let _ = old.kill();
                let _ = old.wait();
                panic!(
                    "the old server did not exit after the takeover\n{}",
                    self.log_tail(60)
                );
            }
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&bins().wharf);
        cmd.arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .env_remove("WHARF_DATA_DIR")
            .env_remove("WHARF_SERVER");
        cmd
    }

    /// The TCP API address (`--api`), from `server.json`.
    pub fn api(&self) -> Option<String> {
        std::fs::read(self.data.join("server.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["api"].as_str().map(str::to_string))
    }

    /// The server's whole output so far.
    pub fn log_text(&self) -> Vec<u8> {
        std::fs::read(&self.log).unwrap_or_default()
    }

    /// Runs the CLI with extra environment variables and `stdin` as standard input.
    pub fn wharf_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Out {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        let out = run_with(cmd, CLI_DEADLINE, stdin);
        eprintln!(
            "$ wharf {} -> {}\n{}{}",
            args.join(" "),
            out.code,
            indent(&out.stdout),
            indent(&out.stderr)
        );
        out
    }

    /// Runs `wharf --data-dir D ARGS...` to completion.
    pub fn wharf(&self, args: &[&str]) -> Out {
        self.wharf_with(args, &[], None)
    }

    /// Like [`Server::wharf`] without echoing the output (for polling loops).
    pub fn wharf_quiet(&self, args: &[&str]) -> Out {
        run(self.command(args), CLI_DEADLINE)
    }

    /// Starts `wharf --data-dir D ARGS...` in the background, collecting its stdout.
    pub fn spawn_wharf(&self, args: &[&str]) -> Follower {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cannot spawn wharf");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = [
            pump(child.stdout.take(), Arc::clone(&stdout)),
            pump(child.stderr.take(), Arc::clone(&stderr)),
        ];
        Follower {
            child,
            stdout,
            stderr,
            readers: readers.into_iter().flatten().collect(),
        }
    }

    /// Deploys DIR; returns the CLI outcome.
    pub fn deploy(&self, dir: &Path) -> Out {
        let dir = dir.to_str().expect("utf-8 path");
        self.wharf(&["deploy", dir])
    }

    /// `ps --json APP`.
    pub fn ps(&self, app: &str) -> Vec<Value> {
        let out = self.wharf_quiet(&["ps", "--json", app]);
        out.ok("ps --json");
        out.json().as_array().cloned().unwrap_or_default()
    }

    /// `apps --json`.
    pub fn apps(&self) -> Vec<Value> {
        let out = self.wharf_quiet(&["apps", "--json"]);
        out.ok("apps --json");
        out.json().as_array().cloned().unwrap_or_default()
    }

    /// `releases --json APP`.
    pub fn releases(&self, app: &str) -> Vec<Value> {
        let out = self.wharf_quiet(&["releases", "--json", app]);
        out.ok("releases --json");
        out.json().as_array().cloned().unwrap_or_default()
    }

    /// Waits until `ps` lists exactly `n` replicas of APP, all ready, and returns them.
    #[track_caller]
    pub fn wait_ready(&self, app: &str, n: usize, deadline: Duration) -> Vec<Value> {
        let mut last = Vec::new();
        let ok = wait_until(deadline, || {
            last = self.ps(app);
            last.len() == n && last.iter().all(|r| r["state"] == "ready")
        });
        assert!(
            ok,
            "{app}: expected exactly {n} ready replicas within {deadline:?}; ps --json:\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default()
        );
        last
    }

    /// The pids `ps` shows for APP, sorted.
    pub fn pids(&self, app: &str) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .ps(app)
            .iter()
            .filter_map(|r| r["pid"].as_u64())
            .filter_map(|p| u32::try_from(p).ok())
            .collect();
        v.sort_unstable();
        v
    }

    /// `GET path` on the router with `Host: host`.
    #[track_caller]
    pub fn get(&self, host: &str, path: &str) -> Response {
        self.get_with(host, path, &[])
    }

    /// `GET path` with extra request headers.
    #[track_caller]
    pub fn get_with(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        http_get(&self.router, host, path, headers)
            .unwrap_or_else(|e| panic!("GET http://{host}{path} via {}: {e}", self.router))
    }

    /// `GET path` that may fail at the transport level.
    pub fn try_get(&self, host: &str, path: &str) -> std::io::Result<Response> {
        http_get(&self.router, host, path, &[])
    }

    /// The last `n` lines of the server's output.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n");
        format!("--- server log ({}):\n{tail}", self.log.display())
    }

    /// Replica handles (`run/APP/ID/handle.json`) present in the data dir.
    pub fn handles(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for app in read_dirs(&self.data.join("run")) {
            for id in read_dirs(&app) {
                if let Some(v) = std::fs::read(id.join("handle.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                {
                    out.push(v);
                }
            }
        }
        out
    }

    /// Kills every replica left behind: each handle's process group, then any process
    /// still naming the data dir on its command line; then removes their cgroups.
    fn kill_replicas(&self) {
        for h in self.handles() {
            if let Some(pid) = h["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
                procs::killpg9(pid);
            }
        }
        procs::kill_mentioning(&self.data);
        // Sandboxed replicas' cgroups would outlive the temporary data dir.
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        if let Some(instance) = crate::isolation::instance_from_log(&log) {
            crate::isolation::remove_instance_cgroups(&instance);
            // And their run directories, kept in memory outside the data dir.
            let _ = std::fs::remove_dir_all(Path::new("/run/wharf").join(&instance));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if let Some(mut old) = self.previous.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        self.stop();
        self.kill_replicas();
        if panicking {
            eprintln!("{}", self.log_tail(80));
            if let Some(tmp) = self.tmp.take() {
                eprintln!("kept the test's temp dir: {}", tmp.keep().display());
            }
        }
    }
}

fn read_dirs(p: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(p) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// Copies a child's pipe into a shared string, line by line.
fn pump(
    pipe: Option<impl Read + Send + 'static>,
    into: Arc<Mutex<String>>,
) -> Option<JoinHandle<()>> {
    let pipe = pipe?;
    Some(std::thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut line = String::new();
        while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
            if let Ok(mut s) = into.lock() {
                s.push_str(&line);
            }
            line.clear();
        }
    }))
}

/// Runs a command to completion (killing it after `deadline`).
fn run(cmd: Command, deadline: Duration) -> Out {
    run_with(cmd, deadline, None)
}

/// Runs a command to completion with `stdin` as its standard input.
fn run_with(mut cmd: Command, deadline: Duration, stdin: Option<&str>) -> Out {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cannot run wharf");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let readers: Vec<JoinHandle<()>> = [
        pump(child.stdout.take(), Arc::clone(&stdout)),
        pump(child.stderr.take(), Arc::clone(&stderr)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut status = None;
    let finished = wait_until(deadline, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
        for r in readers {
            let _ = r.join();
        }
        panic!(
            "{cmd:?} did not finish within {deadline:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            stdout.lock().map(|s| s.clone()).unwrap_or_default(),
            stderr.lock().map(|s| s.clone()).unwrap_or_default()
        );
    }
    for r in readers {
        let _ = r.join();
    }
    let take = |s: &Arc<Mutex<String>>| s.lock().map(|s| s.clone()).unwrap_or_default();
    Out {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: take(&stdout),
        stderr: take(&stderr),
    }
}

/// A CLI command running in the background (`logs -f`); killed when dropped.
pub struct Follower {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Follower {
    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it and returns everything it printed on stdout.
    pub fn kill(mut self) -> String {
        self.stop();
        self.stdout()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop();
    }
}
