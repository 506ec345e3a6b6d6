//! Running one probe: TCP connect, HTTP GET, or a command.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_types::Check;

/// Runs `check` against a replica listening on `addr`; true when it passes.
pub(crate) async fn run(
    check: &Check,
    addr: SocketAddr,
    timeout: Duration,
    dir: &Path,
    env: &BTreeMap<String, String>,
) -> bool {
    let attempt = async {
        match check {
            Check::Tcp => TcpStream::connect(addr).await.is_ok(),
            Check::Http { path, status } => http(addr, path, *status).await.unwrap_or(false),
            Check::Exec { command } => exec(command, dir, env).await,
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

async fn http(addr: SocketAddr, path: &str, expected: Option<u16>) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: wharf-probe\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(status_ok(&buf[..n], expected))
}

/// Parses `HTTP/1.x NNN` and checks it: the expected status, else any 2xx or 3xx.
pub(crate) fn status_ok(head: &[u8], expected: Option<u16>) -> bool {
    let text = String::from_utf8_lossy(head);
    let code = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|c| c.parse::<u16>().ok());
    match (code, expected) {
        (Some(c), Some(e)) => c == e,
        (Some(c), None) => (200..400).contains(&c),
        (None, _) => false,
    }
}

async fn exec(command: &str, dir: &Path, env: &BTreeMap<String, String>) -> bool {
    let status = shell(command, dir, env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    matches!(status.await, Ok(s) if s.success())
}

/// `/bin/sh -c COMMAND` in `dir` with exactly `env`, no stdin, killed when dropped: how
/// the controller runs an app's helper commands (exec probes, secret rotation).
pub(crate) fn shell(
    command: &str,
    dir: &Path,
    env: &BTreeMap<String, String>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(dir)
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert!(status_ok(b"HTTP/1.1 200 OK\r\n", None));
        assert!(status_ok(b"HTTP/1.0 302 Found", None));
        assert!(!status_ok(b"HTTP/1.1 503 Service Unavailable", None));
        assert!(status_ok(b"HTTP/1.1 503 x", Some(503)));
        assert!(!status_ok(b"HTTP/1.1 200 x", Some(204)));
        assert!(!status_ok(b"garbage", None));
        assert!(!status_ok(b"", None));
    }

    #[tokio::test]
    async fn tcp_http_and_exec_checks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /ok ");
                let resp: &[u8] = if ok {
                    b"HTTP/1.1 200 OK\r\n\r\n"
                } else {
                    b"HTTP/1.1 500 no\r\n\r\n"
                };
                let _ = s.write_all(resp).await;
            }
        });
        let t = Duration::from_secs(2);
        let dir = std::env::temp_dir();
        let env = BTreeMap::from([(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        )]);
        assert!(run(&Check::Tcp, port, t, &dir, &env).await);
        assert!(
            run(
                &Check::Http {
                    path: "/ok".into(),
                    status: None
                },
                port,
                t,
                &dir,
                &env
            )
            .await
        );
        assert!(
            !run(
                &Check::Http {
                    path: "/bad".into(),
                    status: None
                },
                port,
                t,
                &dir,
                &env
            )
            .await
        );
        assert!(
            run(
                &Check::Exec {
                    command: "true".into()
                },
                port,
                t,
                &dir,
                &env
            )
            .await
        );
        assert!(
            !run(
                &Check::Exec {
                    command: "exit 1".into()
                },
                port,
                t,
                &dir,
                &env
            )
            .await
        );
        assert!(
            !run(
                &Check::Exec {
                    command: "sleep 5".into()
                },
                port,
                Duration::from_millis(100),
                &dir,
                &env
            )
            .await
        );
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(!run(&Check::Tcp, closed, t, &dir, &env).await);
    }
}
