//! wharf up: start a server if none answers, deploy, print the URL, follow logs.

use crate::client::{Client, Failure, Result};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

pub async fn up(
    c: &Client,
    data_dir: PathBuf,
    dir: &Path,
    listen: &str,
    listen_tls: &str,
) -> Result<ExitCode> {
    if !c.healthy().await {
        start_server(c, &data_dir, listen, listen_tls).await?;
    }
    let code = super::deploy::deploy(c, dir, None, None, false, false).await?;
    let manifest = wharf_controller::load_manifest(
        &std::fs::canonicalize(dir).map_err(|e| Failure::usage(e.to_string()))?,
        None,
    )
    .map_err(|e| Failure::usage(e.to_string()))?;
    let status: wharf_types::api::AppStatus = c.get(&format!("/v1/apps/{}", manifest.app)).await?;
    println!("{}", status.url);
    if let Some((addr, ca)) = https_of(&data_dir) {
        if status.url.starts_with("http:") {
            let port = addr.rsplit(':').next().unwrap_or("8443");
            println!("https://{}.localhost:{port} (trust {ca})", manifest.app);
        }
    }
    println!("following logs; Ctrl-C stops following (the app keeps running)");
    tokio::select! {
        r = super::logs::logs(c, &manifest.app, true, None, None, Some(10), false) => { r?; }
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(code)
}

async fn start_server(c: &Client, data_dir: &Path, listen: &str, listen_tls: &str) -> Result<()> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Failure::failed(format!("cannot create {}: {e}", data_dir.display())))?;
    let log_path = data_dir.join("server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Failure::failed(format!("cannot open {}: {e}", log_path.display())))?;
    let err = log
        .try_clone()
        .map_err(|e| Failure::failed(e.to_string()))?;
    let exe = std::env::current_exe().map_err(|e| Failure::failed(e.to_string()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(listen)
        .arg("--listen-tls")
        .arg(listen_tls);
    cmd.stdin(Stdio::null()).stdout(log).stderr(err);
    // Its own process group: Ctrl-C on `wharf up` must not stop the platform.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .spawn()
        .map_err(|e| Failure::failed(format!("cannot start the server: {e}")))?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if c.healthy().await {
            println!(
                "-----> started wharf server (pid {pid}, data dir {}, log {})",
                data_dir.display(),
                log_path.display()
            );
            println!("       stop it with `kill {pid}`");
            return Ok(());
        }
        if !crate::commands::up::alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: Vec<&str> = tail
        .lines()
        .rev()
        .take(10)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(Failure::failed(format!(
        "the server did not start; its log says:\n  {}",
        tail.join("\n  ")
    )))
}

/// The HTTPS address and local CA file of the running server, from `server.json`.
fn https_of(data_dir: &Path) -> Option<(String, String)> {
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("server.json")).ok()?).ok()?;
    Some((
        info["router_tls"].as_str()?.to_owned(),
        info["router_ca"].as_str()?.to_owned(),
    ))
}

fn alive(pid: u32) -> bool {
    // A child that exited is a zombie until reaped; read its state rather than probing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}
