//! Builds: copy the app directory, run the build command in the copy, and store the
//! result as a content-addressed artifact under the data dir.
//!
//! How the command starts is the [`Runner`]'s business: the server runs it as a one-off
//! in the app's sandbox (the copy writable at `/app`, as the app's user); [`Plain`] runs
//! it on the host, in the copy, as the server's user.

use crate::layout::Layout;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

/// Lines of output a failed build reports.
pub const FAILURE_TAIL: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot copy {path}: {source}")]
    Copy {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run the build command `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("build command `{command}` failed ({status})")]
    Failed {
        command: String,
        status: String,
        tail: Vec<String>,
    },
    #[error("cannot store the artifact: {0}")]
    Store(std::io::Error),
}

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// `sha256-<hex>` of the tree's paths, modes and contents.
    pub hash: String,
    pub path: PathBuf,
}

/// What to build.
pub struct BuildSpec<'a> {
    pub src: &'a Path,
    pub command: Option<&'a str>,
    /// Environment of the build command (on top of PATH, HOME and LANG of the server).
    pub env: &'a BTreeMap<String, String>,
    /// Where the build output is kept.
    pub log: &'a Path,
}

/// Starts build commands.
pub trait Runner {
    /// The process that runs `command` in `work` with exactly `env` (the caller sets
    /// its stdio).
    fn command(
        &self,
        command: &str,
        work: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Command, String>;
    /// Called once the process of [`Runner::command`] ended (`pid`: it, if it started),
    /// before the tree is stored.
    fn finish(&self, _pid: Option<u32>) {}
}

/// `/bin/sh -c COMMAND` on the host, in the copy, as the server's user.
pub struct Plain;

impl Runner for Plain {
    fn command(
        &self,
        command: &str,
        work: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Command, String> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(work)
            .env_clear()
            .envs(env);
        Ok(cmd)
    }
}

/// The environment of a build command: PATH, HOME, LANG, USER and TMPDIR of the server,
/// then `env`.
pub fn command_env(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = ["PATH", "HOME", "LANG", "USER", "TMPDIR"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    out.extend(env.clone());
    out
}

/// Builds and stores an artifact; `on_line` receives every line of build output.
pub fn build(
    layout: &Layout,
    spec: &BuildSpec<'_>,
    runner: &dyn Runner,
    on_line: &mut dyn FnMut(&str),
) -> Result<Artifact, BuildError> {
    let scratch = layout
        .builds()
        .join(format!("{}-{}", std::process::id(), unique()));
    let work = scratch.join("app");
    let result = (|| {
        copy_tree(spec.src, &work)?;
        if let Some(command) = spec.command {
            run_command(runner, command, &work, spec.env, spec.log, on_line)?;
        }
        make_readable(&work).map_err(BuildError::Store)?;
        let hash = hash_tree(&work).map_err(BuildError::Store)?;
        let dest = layout.artifact(&hash);
        if !dest.exists() {
            std::fs::create_dir_all(layout.artifacts()).map_err(BuildError::Store)?;
            std::fs::rename(&work, &dest).map_err(BuildError::Store)?;
        }
        Ok(Artifact { hash, path: dest })
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn run_command(
    runner: &dyn Runner,
    command: &str,
    dir: &Path,
    env: &BTreeMap<String, String>,
    log: &Path,
    on_line: &mut dyn FnMut(&str),
) -> Result<(), BuildError> {
    let mut cmd = runner
        .command(command, dir, &command_env(env))
        .map_err(|e| BuildError::Spawn {
            command: command.to_string(),
            source: std::io::Error::other(e),
        })?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(source) => {
            runner.finish(None);
            return Err(BuildError::Spawn {
                command: command.to_string(),
                source,
            });
        }
    };
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<String>();
    let pumps: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|s| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(tx);
    let mut log_file = crate::logs::open_append(log).ok();
    let mut tail = std::collections::VecDeque::new();
    for line in rx {
        on_line(&line);
        if let Some(f) = log_file.as_mut() {
            let _ = writeln!(f, "{line}");
        }
        tail.push_back(line);
        if tail.len() > FAILURE_TAIL {
            tail.pop_front();
        }
    }
    for p in pumps {
        let _ = p.join();
    }
    let status = child.wait();
    runner.finish(Some(pid));
    let status = status.map_err(|source| BuildError::Spawn {
        command: command.to_string(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Failed {
            command: command.to_string(),
            status: status.to_string(),
            tail: tail.into(),
        })
    }
}

/// Copies a directory tree (files, directories, symlinks as links), skipping `.git`.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), BuildError> {
    let copy_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Copy { path, source }
    };
    std::fs::create_dir_all(dst).map_err(copy_err(dst))?;
    for entry in std::fs::read_dir(src).map_err(copy_err(src))? {
        let entry = entry.map_err(copy_err(src))?;
        let from = entry.path();
        if entry.file_name() == ".git" {
            continue;
        }
        let to = dst.join(entry.file_name());
        let ft = entry.file_type().map_err(copy_err(&from))?;
        if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&from).map_err(copy_err(&from))?;
            std::os::unix::fs::symlink(target, &to).map_err(copy_err(&to))?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to).map_err(copy_err(&from))?;
        }
    }
    Ok(())
}

/// Makes an artifact readable by every app's uid (`a+r` on files, `a+rx` on directories
/// and executables): sandboxed replicas run as their app's own uid, not as the owner of
/// the files. On the host the data dir (mode 0700) keeps artifacts private; inside a
/// replica only its own artifact is mounted. Modes are not part of the hash.
pub fn make_readable(root: &Path) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_symlink() {
                continue;
            }
            let mode = e.metadata()?.permissions().mode();
            let want = if ft.is_dir() || mode & 0o100 != 0 {
                mode | 0o555
            } else {
                mode | 0o444
            };
            if want != mode {
                std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(want))?;
            }
            if ft.is_dir() {
                stack.push(e.path());
            }
        }
    }
    let mode = std::fs::metadata(root)?.permissions().mode();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode | 0o555))
}

/// Hashes a tree: sorted relative paths, kinds, executable bits, contents, link targets.
pub fn hash_tree(root: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(&rel))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            let path = rel.join(e.file_name());
            let ft = e.file_type()?;
            hasher.update(path.to_string_lossy().as_bytes());
            hasher.update([0]);
            if ft.is_dir() {
                hasher.update(b"d");
                subdirs.push(path);
            } else if ft.is_symlink() {
                hasher.update(b"l");
                hasher.update(std::fs::read_link(e.path())?.to_string_lossy().as_bytes());
            } else {
                let exec = e.metadata()?.permissions().mode() & 0o111 != 0;
                hasher.update(if exec { b"x" } else { b"f" });
                let mut f = std::fs::File::open(e.path())?;
                let mut buf = vec![0; 64 * 1024];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
            }
            hasher.update([0]);
        }
        subdirs.reverse();
        stack.extend(subdirs);
    }
    Ok(format!("sha256-{}", crate::hex(&hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("app.js"), "console.log(1)").unwrap();
        std::fs::create_dir_all(d.path().join("lib")).unwrap();
        std::fs::write(d.path().join("lib/x.txt"), "x").unwrap();
        std::fs::create_dir_all(d.path().join(".git")).unwrap();
        std::fs::write(d.path().join(".git/HEAD"), "ref").unwrap();
        d
    }

    #[test]
    fn same_content_same_artifact() {
        let data = tempfile::tempdir().unwrap();
        let layout = Layout::new(data.path());
        let src = app_dir();
        let env = BTreeMap::new();
        let log = data.path().join("b.log");
        let spec = BuildSpec {
            src: src.path(),
            command: None,
            env: &env,
            log: &log,
        };
        let a = build(&layout, &spec, &Plain, &mut |_| {}).unwrap();
        let b = build(&layout, &spec, &Plain, &mut |_| {}).unwrap();
        assert_eq!(a, b);
        assert!(a.path.join("lib/x.txt").exists());
        assert!(
            !a.path.join(".git").exists(),
            ".git is not part of a release"
        );
        std::fs::write(src.path().join("lib/x.txt"), "y").unwrap();
        let c = build(&layout, &spec, &Plain, &mut |_| {}).unwrap();
        assert_ne!(a.hash, c.hash);
        assert_eq!(
            std::fs::read_dir(layout.builds()).unwrap().count(),
            0,
            "scratch space is cleaned"
        );
    }

    #[test]
    fn artifacts_are_readable_by_every_uid() {
        let data = tempfile::tempdir().unwrap();
        let layout = Layout::new(data.path());
        let src = app_dir();
        std::fs::set_permissions(
            src.path().join("app.js"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::set_permissions(
            src.path().join("lib"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let env = BTreeMap::new();
        let log = data.path().join("b.log");
        let spec = BuildSpec {
            src: src.path(),
            command: Some("printf '#!/bin/sh\\n' > run.sh && chmod 700 run.sh"),
            env: &env,
            log: &log,
        };
        let a = build(&layout, &spec, &Plain, &mut |_| {}).unwrap();
        let mode = |p: &str| {
            std::fs::metadata(a.path.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("app.js"), 0o644);
        assert_eq!(mode("lib"), 0o755);
        assert_eq!(mode("run.sh"), 0o755);
        assert_eq!(mode("") & 0o555, 0o555);
    }

    #[test]
    fn build_command_output_is_streamed_kept_and_part_of_the_artifact() {
        let data = tempfile::tempdir().unwrap();
        let layout = Layout::new(data.path());
        let src = app_dir();
        let env = BTreeMap::from([("GREETING".to_string(), "hi".to_string())]);
        let log = data.path().join("logs/b.log");
        let spec = BuildSpec {
            src: src.path(),
            command: Some("echo $GREETING; echo oops >&2; echo built > out.txt"),
            env: &env,
            log: &log,
        };
        let mut lines = Vec::new();
        let a = build(&layout, &spec, &Plain, &mut |l| lines.push(l.to_string())).unwrap();
        lines.sort();
        assert_eq!(lines, ["hi", "oops"]);
        assert_eq!(
            std::fs::read_to_string(a.path.join("out.txt")).unwrap(),
            "built\n"
        );
        assert!(std::fs::read_to_string(&log).unwrap().contains("oops"));
        assert!(
            !src.path().join("out.txt").exists(),
            "the build never touches the source"
        );
    }

    #[test]
    fn failing_build_reports_its_output_and_stores_nothing() {
        let data = tempfile::tempdir().unwrap();
        let layout = Layout::new(data.path());
        let src = app_dir();
        let env = BTreeMap::new();
        let log = data.path().join("b.log");
        let spec = BuildSpec {
            src: src.path(),
            command: Some("echo npm ERR! missing; exit 7"),
            env: &env,
            log: &log,
        };
        match build(&layout, &spec, &Plain, &mut |_| {}) {
            Err(BuildError::Failed { status, tail, .. }) => {
                assert!(status.contains('7'), "{status}");
                assert_eq!(tail, ["npm ERR! missing"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            !layout.artifacts().exists()
                || std::fs::read_dir(layout.artifacts()).unwrap().count() == 0
        );
    }
}
