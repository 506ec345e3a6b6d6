//! The routes testapp answers (listed in the crate doc in `main.rs`).

use std::process::{self, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use crate::http::{json_escape, percent_decode, Request, Response};
use crate::{err, out, Config};

/// How many `GET /` requests this process has answered (drives `TESTAPP_ERROR_RATE`).
static ROOT_REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Set by `/hang`: from then on every request hangs (a deadlocked app).
static HUNG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Memory handed out by `/alloc`, kept until the process exits.
static HOG: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

pub fn handle(req: &Request, cfg: &Config) -> Response {
    let method = match req.method.as_str() {
        "HEAD" => "GET",
        m => m,
    };
    let path = req.path.as_str();
    if HUNG.load(Ordering::SeqCst) {
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
    match (method, path) {
        ("GET", "/hang") => {
            HUNG.store(true, Ordering::SeqCst);
            Response::text(200, "hanging from now on\n")
        }
        ("GET", "/") => root(cfg),
        ("GET", "/health") if cfg.fail_readiness => Response::text(503, "not ready\n"),
        ("GET", "/health") => Response::text(200, "ok\n"),
        ("GET", "/headers") => {
            let lines: String = req
                .headers
                .iter()
                .map(|(n, v)| format!("{n}: {v}\n"))
                .collect();
            Response::text(200, lines)
        }
        ("GET", "/slow") => match number(req.query_param("ms"), 0) {
            Some(ms) => {
                thread::sleep(Duration::from_millis(ms));
                Response::text(200, format!("slow {ms}\n"))
            }
            None => Response::text(400, "ms must be a number\n"),
        },
        ("GET", "/log") => {
            out(&req.query_param("msg").unwrap_or_default());
            Response::text(200, "logged\n")
        }
        ("GET", "/json-log") => {
            let msg = json_escape(&req.query_param("msg").unwrap_or_default());
            out(&format!(r#"{{"level":"info","msg":"{msg}"}}"#));
            Response::text(200, "logged\n")
        }
        ("GET", "/crash") => {
            err("testapp: crash requested");
            process::exit(1);
        }
        ("GET", "/pid") => Response::text(200, format!("{}\n", process::id())),
        ("GET" | "POST", "/alloc") => match number(req.query_param("mb"), 1) {
            Some(mb) => alloc(mb),
            None => Response::text(400, "mb must be a number\n"),
        },
        ("GET", "/spawn-child") => spawn_child(),
        ("GET", "/sh") => match req.query_param("c") {
            Some(script) => sh(&script),
            None => Response::text(400, "c (the shell script) is required\n"),
        },
        ("GET", "/burn") => match (
            number(req.query_param("ms"), 1000),
            number(req.query_param("threads"), 1),
        ) {
            (Some(ms), Some(threads @ 1..=64)) => burn(ms, threads),
            _ => Response::text(400, "ms and threads (1..=64) must be numbers\n"),
        },
        ("POST" | "PUT", "/echo") => Response {
            status: 200,
            content_type: "application/octet-stream",
            body: req.body.clone(),
        },
        ("GET", _) if path.starts_with("/env/") => {
            let name = percent_decode(&path["/env/".len()..], false);
            match std::env::var_os(&name) {
                Some(v) => Response::text(200, v.to_string_lossy()),
                None => Response::text(404, format!("{name} is not set\n")),
            }
        }
        ("GET", _) if path.starts_with("/status/") => {
            match path["/status/".len()..].parse::<u16>() {
                Ok(n @ 200..=599) => Response::text(n, format!("status {n}\n")),
                _ => Response::text(400, "status must be 200..599\n"),
            }
        }
        _ => Response::text(404, "not found\n"),
    }
}

/// `GET /`: the greeting, or a 500 for `TESTAPP_ERROR_RATE` percent of requests. The
/// failures are spread evenly: exactly P of every 100 consecutive requests fail.
fn root(cfg: &Config) -> Response {
    let n = ROOT_REQUESTS.fetch_add(1, Ordering::Relaxed);
    let rate = u64::from(cfg.error_rate);
    if (n + 1) * rate / 100 > n * rate / 100 {
        return Response::text(500, "injected failure (TESTAPP_ERROR_RATE)\n");
    }
    Response::text(
        200,
        format!(
            "Hello from testapp release={} replica={}\n",
            cfg.release, cfg.replica
        ),
    )
}

/// Parses an optional numeric query parameter, `default` when absent.
fn number(v: Option<String>, default: u64) -> Option<u64> {
    v.map_or(Some(default), |v| v.parse().ok())
}

/// `GET /alloc?mb=N`: allocates N MiB, writes every byte so the pages are resident,
/// and keeps the memory until exit.
fn alloc(mb: u64) -> Response {
    let Some(bytes) = usize::try_from(mb)
        .ok()
        .and_then(|m| m.checked_mul(1 << 20))
    else {
        return Response::text(400, "mb too large\n");
    };
    let mut block: Vec<u8> = Vec::new();
    if block.try_reserve_exact(bytes).is_err() {
        return Response::text(500, format!("could not allocate {mb} MiB\n"));
    }
    block.resize(bytes, 0x5a);
    let mut hog = HOG.lock().unwrap_or_else(|e| e.into_inner());
    hog.push(std::hint::black_box(block));
    let total: usize = hog.iter().map(Vec::len).sum::<usize>() >> 20;
    Response::text(200, format!("allocated {mb} MiB, holding {total} MiB\n"))
}

/// `GET /spawn-child`: starts `sleep 1000` (sharing our stdout/stderr, as a careless
/// app's child would) and answers its pid. The child is deliberately left running.
fn spawn_child() -> Response {
    match Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(child) => Response::text(200, format!("{}\n", child.id())),
        Err(e) => Response::text(500, format!("spawn failed: {e}\n")),
    }
}

/// `GET /sh?c=SCRIPT`: runs `/bin/sh -c SCRIPT` and answers `exit=N` then its stdout and
/// stderr. For probing the sandbox from inside a replica.
fn sh(script: &str) -> Response {
    match Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            let mut body = format!("exit={}\n", out.status.code().unwrap_or(-1)).into_bytes();
            body.extend_from_slice(&out.stdout);
            body.extend_from_slice(&out.stderr);
            Response {
                status: 200,
                content_type: "text/plain",
                body,
            }
        }
        Err(e) => Response::text(500, format!("cannot run /bin/sh: {e}\n")),
    }
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (nanoseconds).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// `GET /burn?ms=N&threads=T`: T threads spin for N ms of wall-clock time; answers
/// `cpu_ms=C wall_ms=N threads=T`, C being the CPU time they got together.
fn burn(ms: u64, threads: u64) -> Response {
    let until = std::time::Instant::now() + Duration::from_millis(ms);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            thread::spawn(move || {
                let start = thread_cpu_ns();
                let mut x: u64 = 0;
                while std::time::Instant::now() < until {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                }
                thread_cpu_ns().saturating_sub(start)
            })
        })
        .collect();
    let cpu_ns: u64 = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    Response::text(
        200,
        format!(
            "cpu_ms={} wall_ms={ms} threads={threads}\n",
            cpu_ns / 1_000_000
        ),
    )
}
