//! Starts the real binary on a free port and talks HTTP to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Kills the child (by pid, through `Child::kill`) if the test ends without reaping it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts testapp with `env`, returning the guard and a channel of its stdout lines.
fn start(env: &[(&str, &str)]) -> (KillOnDrop, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testapp"));
    cmd.env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().expect("spawn testapp"));
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_for_line(rx: &mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line starting with {prefix:?}: {e}"),
        }
    }
}

fn wait_exit(child: &mut KillOnDrop) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "testapp did not exit");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one request on `conn` and reads one response: (status, headers, body).
fn exchange(
    conn: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    extra: &str,
) -> (u16, String, String) {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n");
    conn.get_mut().write_all(req.as_bytes()).unwrap();
    let mut status = String::new();
    conn.read_line(&mut status).unwrap();
    let code = status.split(' ').nth(1).unwrap().parse().unwrap();
    let (mut headers, mut len) = (String::new(), 0);
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        headers.push_str(&line);
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).unwrap();
    (code, headers, String::from_utf8(body).unwrap())
}

fn connect(port: u16) -> BufReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(s)
}

fn get(port: u16, path: &str) -> (u16, String) {
    let (code, _, body) = exchange(&mut connect(port), "GET", path, "Connection: close\r\n");
    (code, body)
}

#[test]
fn serves_routes_keeps_alive_and_drains_on_sigterm() {
    let port = free_port();
    let port_s = port.to_string();
    let (mut child, rx) = start(&[
        ("PORT", &port_s),
        ("WHARF_RELEASE", "7"),
        ("WHARF_REPLICA", "web-1-v7"),
        ("GREETING", "hi there"),
    ]);
    let line = wait_for_line(&rx, "testapp listening");
    assert_eq!(
        line,
        format!("testapp listening on 127.0.0.1:{port} release=7 replica=web-1-v7")
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        format!(r#"{{"level":"info","msg":"started","port":{port}}}"#)
    );

    assert_eq!(
        get(port, "/"),
        (
            200,
            "Hello from testapp release=7 replica=web-1-v7\n".into()
        )
    );
    assert_eq!(get(port, "/health"), (200, "ok\n".into()));
    assert_eq!(get(port, "/env/GREETING"), (200, "hi there".into()));
    assert_eq!(get(port, "/env/NOT_SET").0, 404);
    assert_eq!(get(port, "/status/418").0, 418);
    assert_eq!(get(port, "/nope").0, 404);

    // Two requests on one keep-alive connection.
    let mut conn = connect(port);
    let (code, headers, _) = exchange(&mut conn, "GET", "/health", "");
    assert_eq!(code, 200);
    assert!(!headers.to_ascii_lowercase().contains("connection: close"));
    let (code, _, body) = exchange(
        &mut conn,
        "GET",
        "/headers",
        "X-Forwarded-For: 10.0.0.1\r\n",
    );
    assert_eq!(code, 200);
    assert!(body.contains("X-Forwarded-For: 10.0.0.1\n"), "{body}");

    // /log prints the decoded text; SIGTERM lets an in-flight request finish.
    assert_eq!(get(port, "/log?msg=hello%20log+line").0, 200);
    wait_for_line(&rx, "hello log line");
    let slow = thread::spawn(move || get(port, "/slow?ms=400"));
    thread::sleep(Duration::from_millis(150));
    let kill = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(slow.join().unwrap(), (200, "slow 400\n".into()));
    wait_for_line(&rx, "testapp: shutting down");
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

#[test]
fn exit_codes_for_bad_port_and_crash_on_start() {
    let (mut child, _rx) = start(&[]);
    assert_eq!(wait_exit(&mut child).code(), Some(2));
    let (mut child, _rx) = start(&[("PORT", "not-a-port")]);
    assert_eq!(wait_exit(&mut child).code(), Some(2));
    let port = free_port().to_string();
    let (mut child, _rx) = start(&[("PORT", &port), ("TESTAPP_CRASH_ON_START", "1")]);
    assert_eq!(wait_exit(&mut child).code(), Some(3));
}
