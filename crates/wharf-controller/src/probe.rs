//! Running one probe: TCP connect, HTTP GET, or a command inside the replica.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_core::ports::OneOff;
use wharf_types::Check;

/// Runs `check` against a replica listening on `addr`; an exec check runs `exec`
/// (the runtime's way into the replica). True when it passes.
pub(crate) async fn run(
    check: &Check,
    addr: SocketAddr,
    timeout: Duration,
    exec: Option<&OneOff>,
) -> bool {
    let attempt = async {
        match (check, exec) {
            (Check::Tcp, _) => TcpStream::connect(addr).await.is_ok(),
            (Check::Http { path, status }, _) => http(addr, path, *status).await.unwrap_or(false),
            (Check::Exec { .. }, Some(exec)) => run_exec(exec).await,
            (Check::Exec { .. }, None) => false,
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

/// Runs the prepared command with no stdio; killed when the probe times out (dropped).
async fn run_exec(exec: &OneOff) -> bool {
    let status = tokio::process::Command::new(&exec.program)
        .args(&exec.args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(status.await, Ok(s) if s.success())
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
        let sh = |c: &str| OneOff {
            id: "web-1-v1".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), c.into()],
        };
        let exec = |c: &str| Check::Exec { command: c.into() };
        let http = |p: &str| Check::Http {
            path: p.into(),
            status: None,
        };
        assert!(run(&Check::Tcp, port, t, None).await);
        assert!(run(&http("/ok"), port, t, None).await);
        assert!(!run(&http("/bad"), port, t, None).await);
        assert!(run(&exec("x"), port, t, Some(&sh("true"))).await);
        assert!(!run(&exec("x"), port, t, Some(&sh("exit 1"))).await);
        assert!(!run(&exec("x"), port, t, None).await, "no way in: fails");
        let started = std::time::Instant::now();
        let short = Duration::from_millis(100);
        assert!(!run(&exec("x"), port, short, Some(&sh("sleep 5"))).await);
        assert!(started.elapsed() < Duration::from_secs(2));
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(!run(&Check::Tcp, closed, t, None).await);
    }
}
