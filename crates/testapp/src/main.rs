//! `testapp`: a small, std-only HTTP/1.1 server that wharf's end-to-end tests deploy to
//! exercise every failure the platform must survive. Everything is driven by environment
//! variables, so a `wharf config set` (a new release) can toggle the behaviour.
//!
//! Environment:
//! - `PORT` (required): listen on `127.0.0.1:$PORT`; missing or invalid → message on
//!   stderr, exit 2. Any other invalid knob value also exits 2.
//! - `TESTAPP_HOST=ADDR`: listen on ADDR instead of `127.0.0.1` (`0.0.0.0` in a replica
//!   with its own network, which the router reaches at its address).
//! - `WHARF_RELEASE`, `WHARF_REPLICA`: echoed by `GET /` and the startup line (`-` if unset).
//! - `TESTAPP_START_DELAY_MS=N`: sleep N ms before listening (slow start).
//! - `TESTAPP_CRASH_ON_START=1`: print `testapp: crashing on purpose` to stderr and exit 3
//!   before listening (after the start delay, if any).
//! - `TESTAPP_CRASH_AFTER_MS=N`: exit 1 N ms after starting to listen.
//! - `TESTAPP_FAIL_READINESS=1`: `GET /health` answers 503.
//! - `TESTAPP_HANG=1`: accept connections but never read or answer them.
//! - `TESTAPP_IGNORE_SIGTERM=1`: on SIGTERM print `testapp: ignoring SIGTERM` and go on.
//!   Otherwise SIGTERM (and always SIGINT) prints `testapp: shutting down`, closes the
//!   listener, lets in-flight requests finish (at most 10 s) and exits 0.
//! - `TESTAPP_ERROR_RATE=P` (0..=100): P percent of `GET /` answer 500, evenly spread
//!   (exactly P of every 100 consecutive requests).
//!
//! Booleans accept `1`/`true`/`yes`/`on` and `0`/`false`/`no`/`off`/empty.
//!
//! Output (stdout, line by line): `testapp listening on 127.0.0.1:PORT release=R
//! replica=ID`, then `{"level":"info","msg":"started","port":PORT}`. Nothing per request.
//!
//! Routes (GET; HEAD works too; text bodies end in `\n` unless noted):
//! - `/` → `Hello from testapp release=$WHARF_RELEASE replica=$WHARF_REPLICA`
//! - `/health` → 200 `ok` (503 `not ready` with `TESTAPP_FAIL_READINESS`)
//! - `/env/NAME` → exactly the value of NAME (no newline added); 404 if unset
//! - `/headers` → the request headers as `name: value` lines, in order, as sent
//! - `/slow?ms=N` → sleeps N ms, then `slow N`
//! - `/status/N` → status N (200..=599), body `status N`
//! - `/log?msg=TEXT` → prints TEXT (percent-decoded, `+` is a space) on stdout
//! - `/json-log?msg=TEXT` → prints `{"level":"info","msg":"TEXT"}` on stdout
//! - `/crash` → prints `testapp: crash requested` to stderr, exits 1 without answering
//! - `/pid` → its pid
//! - `/hang` → answers, then every later request hangs forever (a deadlocked app)
//! - `/alloc?mb=N` → allocates, touches and keeps N MiB (default 1)
//! - `/spawn-child` → spawns `sleep 1000` (left running) and answers its pid
//! - `/sh?c=SCRIPT` → runs `/bin/sh -c SCRIPT`; `exit=N`, then its stdout and stderr
//! - `/burn?ms=N&threads=T` → T threads (default 1) spin for N ms (default 1000);
//!   `cpu_ms=C wall_ms=N threads=T`, C being the CPU time they got
//! - `POST /echo` → the request body, back
//! - anything else → 404
//!
//! Request bodies may use Content-Length or chunked encoding; every response has a
//! Content-Length. HTTP/1.1 connections are kept alive unless `Connection: close`;
//! once shutting down, responses carry `Connection: close`.

mod http;
mod routes;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Set once SIGTERM (or SIGINT) starts a graceful shutdown.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
/// Requests being read or answered (plus accepted connections not yet read from).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// The bound address, so the signal thread can wake the blocking `accept`.
static LISTEN_ADDR: OnceLock<SocketAddr> = OnceLock::new();
/// How long a graceful shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Config {
    pub host: Option<std::net::IpAddr>,
    pub port: u16,
    pub release: String,
    pub replica: String,
    pub start_delay_ms: u64,
    pub crash_on_start: bool,
    pub crash_after_ms: Option<u64>,
    pub fail_readiness: bool,
    pub hang: bool,
    pub ignore_sigterm: bool,
    pub error_rate: u8,
}

impl Config {
    /// Reads the configuration through `var` (the process environment in `main`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let port = match var("PORT") {
            None => return Err("PORT is not set".into()),
            Some(p) => match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("PORT={p:?} is not a valid port (1..65535)")),
            },
        };
        let num = |name: &str| -> Result<Option<u64>, String> {
            var(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("{name}={v:?} is not a non-negative integer"))
                })
                .transpose()
        };
        let flag = |name: &str| -> Result<bool, String> {
            match var(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
                None | Some("" | "0" | "false" | "no" | "off") => Ok(false),
                Some("1" | "true" | "yes" | "on") => Ok(true),
                Some(v) => Err(format!("{name}={v:?} is not a boolean (use 1 or 0)")),
            }
        };
        let error_rate = match num("TESTAPP_ERROR_RATE")? {
            Some(p @ 0..=100) => p as u8,
            Some(p) => return Err(format!("TESTAPP_ERROR_RATE={p} is not in 0..=100")),
            None => 0,
        };
        let host = match var("TESTAPP_HOST") {
            Some(h) => Some(
                h.trim()
                    .parse()
                    .map_err(|_| format!("TESTAPP_HOST={h:?} is not an IP address"))?,
            ),
            None => None,
        };
        Ok(Config {
            host,
            port,
            release: var("WHARF_RELEASE").unwrap_or_else(|| "-".into()),
            replica: var("WHARF_REPLICA").unwrap_or_else(|| "-".into()),
            start_delay_ms: num("TESTAPP_START_DELAY_MS")?.unwrap_or(0),
            crash_on_start: flag("TESTAPP_CRASH_ON_START")?,
            crash_after_ms: num("TESTAPP_CRASH_AFTER_MS")?,
            fail_readiness: flag("TESTAPP_FAIL_READINESS")?,
            hang: flag("TESTAPP_HANG")?,
            ignore_sigterm: flag("TESTAPP_IGNORE_SIGTERM")?,
            error_rate,
        })
    }
}

/// Prints a line on stdout; a closed stdout must not crash the app.
pub fn out(line: &str) {
    let _ = writeln!(io::stdout().lock(), "{line}");
}

/// Prints a line on stderr.
pub fn err(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// Counts one unit of work in `IN_FLIGHT` for as long as it lives.
struct InFlight;

impl InFlight {
    fn new() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

fn main() {
    let cfg = match Config::from_vars(|k| std::env::var(k).ok()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            err(&format!("testapp: {e}"));
            process::exit(2);
        }
    };
    if let Err(e) = watch_signals(cfg.ignore_sigterm) {
        err(&format!("testapp: cannot install signal handlers: {e}"));
        process::exit(1);
    }
    if cfg.start_delay_ms > 0 {
        thread::sleep(Duration::from_millis(cfg.start_delay_ms));
    }
    if cfg.crash_on_start {
        err("testapp: crashing on purpose");
        process::exit(3);
    }
    let host = cfg
        .host
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let listener = match TcpListener::bind((host, cfg.port)) {
        Ok(l) => l,
        Err(e) => {
            err(&format!(
                "testapp: cannot listen on {host}:{}: {e}",
                cfg.port
            ));
            process::exit(1);
        }
    };
    if let Ok(addr) = listener.local_addr() {
        let _ = LISTEN_ADDR.set(addr);
    }
    out(&format!(
        "testapp listening on {host}:{} release={} replica={}",
        cfg.port, cfg.release, cfg.replica
    ));
    out(&format!(
        r#"{{"level":"info","msg":"started","port":{}}}"#,
        cfg.port
    ));
    if let Some(ms) = cfg.crash_after_ms {
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(ms));
            err(&format!(
                "testapp: crashing after {ms} ms (TESTAPP_CRASH_AFTER_MS)"
            ));
            process::exit(1);
        });
    }

    let mut hung = Vec::new();
    for stream in listener.incoming() {
        match stream {
            Ok(s) if cfg.hang => hung.push(s),
            Ok(s) => {
                let guard = InFlight::new();
                let cfg = Arc::clone(&cfg);
                thread::spawn(move || serve(s, &cfg, guard));
            }
            Err(e) => {
                err(&format!("testapp: accept failed: {e}"));
                thread::sleep(Duration::from_millis(10));
            }
        }
        if SHUTTING_DOWN.load(Ordering::SeqCst) {
            break;
        }
    }
    drop(listener);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    process::exit(0);
}

/// Starts the thread that turns SIGTERM/SIGINT into a graceful shutdown.
fn watch_signals(ignore_sigterm: bool) -> io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    thread::spawn(move || {
        for sig in signals.forever() {
            if sig == SIGTERM && ignore_sigterm {
                out("testapp: ignoring SIGTERM");
                continue;
            }
            if SHUTTING_DOWN.swap(true, Ordering::SeqCst) {
                continue;
            }
            out("testapp: shutting down");
            match LISTEN_ADDR.get() {
                // Wake the accept loop; `main` then drains and exits.
                Some(addr) => {
                    if TcpStream::connect_timeout(addr, Duration::from_secs(1)).is_err() {
                        process::exit(0);
                    }
                }
                None => process::exit(0),
            }
        }
    });
    Ok(())
}

/// Serves requests on one connection until it closes. `first` counts the connection as
/// in flight until its first request has been read and answered.
fn serve(stream: TcpStream, cfg: &Config, first: InFlight) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    let mut first = Some(first);
    loop {
        // Wait for the next request; an idle keep-alive connection is not in flight.
        match reader.fill_buf() {
            Ok([]) | Err(_) => return,
            Ok(_) => {}
        }
        let _busy = first.take().unwrap_or_else(InFlight::new);
        let req = match http::read_request(&mut reader) {
            Ok(Some(req)) => req,
            Ok(None) | Err(http::HttpError::Io) => return,
            Err(e) => {
                let resp = http::Response::text(e.status(), format!("{}\n", e.message()));
                let _ = http::write_response(&mut writer, &resp, false, false);
                return;
            }
        };
        let resp = routes::handle(&req, cfg);
        let keep_alive = req.keep_alive() && !SHUTTING_DOWN.load(Ordering::SeqCst);
        let head_only = req.method == "HEAD";
        if http::write_response(&mut writer, &resp, keep_alive, head_only).is_err() || !keep_alive {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Config;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn config_from_env() {
        let c = cfg(&[
            ("PORT", "8080"),
            ("WHARF_RELEASE", "3"),
            ("TESTAPP_HANG", "true"),
            ("TESTAPP_ERROR_RATE", "25"),
            ("TESTAPP_CRASH_AFTER_MS", "500"),
        ])
        .unwrap();
        assert_eq!(
            (c.port, c.release.as_str(), c.replica.as_str()),
            (8080, "3", "-")
        );
        assert!(c.hang && !c.ignore_sigterm && !c.fail_readiness);
        assert_eq!((c.error_rate, c.crash_after_ms), (25, Some(500)));
    }

    #[test]
    fn config_errors_name_the_variable() {
        assert!(cfg(&[]).unwrap_err().contains("PORT"));
        assert!(cfg(&[("PORT", "0")]).unwrap_err().contains("PORT"));
        assert!(cfg(&[("PORT", "70000")]).unwrap_err().contains("PORT"));
        let e = cfg(&[("PORT", "1"), ("TESTAPP_ERROR_RATE", "101")]).unwrap_err();
        assert!(e.contains("TESTAPP_ERROR_RATE"));
        let e = cfg(&[("PORT", "1"), ("TESTAPP_HANG", "maybe")]).unwrap_err();
        assert!(e.contains("TESTAPP_HANG"));
    }
}
