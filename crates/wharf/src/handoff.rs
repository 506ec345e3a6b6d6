//! Zero-downtime restarts and upgrades: `wharf server --takeover` on a data dir whose
//! server is running takes its listening sockets over instead of binding new ones, so
//! no connection is refused while the two swap (as Envoy's hot restart and Pingora do).
//!
//! The exchange, over `DATA/handoff.sock` (`SOCK_SEQPACKET`, mode 0600):
//!
//! ```text
//! new -> old   takeover 1
//! old -> new   router api            + the listening sockets (SCM_RIGHTS), by name
//!              old stops its control plane and API and closes the store; it keeps
//!              routing with its last route table (replicas keep running)
//! old -> new   released
//!              new opens the store, re-adopts the replicas, waits for their first
//!              probes, starts accepting on the same sockets
//! new -> old   serving
//!              old stops accepting, drains (HTTP/1 answers close their connections,
//!              then idle ones are closed), finishes in-flight requests and exits
//! ```
//!
//! If the new server dies before `serving`, the old one keeps routing (without a
//! control plane) and accepts the next takeover.

use crate::client::{Failure, Result};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wharf_runtime::fdpass;

const TAKEOVER: &[u8] = b"takeover 1\n";
const RELEASED: &[u8] = b"released\n";
const SERVING: &[u8] = b"serving\n";
/// How long the new server waits for the old one to hand over and release the store.
const RELEASE_WAIT: Duration = Duration::from_secs(60);

pub fn socket(data_dir: &Path) -> PathBuf {
    data_dir.join("handoff.sock")
}

/// What the old server's main task is asked to do.
pub enum Request {
    /// Stop the control plane and close the store; answer on the channel when done.
    Release(std::sync::mpsc::Sender<()>),
    /// The new server accepts on the sockets: stop accepting, drain, exit.
    Serving,
}

/// Offers the listening sockets `listeners` (name, socket) to a successor, from a
/// thread of its own; the main task gets [`Request`]s on `tx`.
pub fn offer(
    data_dir: &Path,
    listeners: Vec<(&'static str, OwnedFd)>,
    tx: tokio::sync::mpsc::Sender<Request>,
) -> Result<()> {
    let path = socket(data_dir);
    let listener = fdpass::Listener::bind(&path)
        .map_err(|e| Failure::failed(format!("cannot bind {}: {e}", path.display())))?;
    std::thread::Builder::new()
        .name("handoff".into())
        .spawn(move || {
            let mut released = false;
            loop {
                let Ok(conn) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                match hand_over(&conn, &listeners, &tx, &mut released) {
                    Ok(()) => return,
                    Err(e) => eprintln!(
                        "wharf: takeover failed: {e}{}",
                        if released {
                            "; this server keeps routing with its last route table, without a control plane: run `wharf server --takeover` again"
                        } else {
                            ""
                        }
                    ),
                }
            }
        })
        .map_err(|e| Failure::failed(format!("cannot start the handoff thread: {e}")))?;
    Ok(())
}

/// One successor's takeover; `Ok` once it serves.
fn hand_over(
    conn: &UnixStream,
    listeners: &[(&'static str, OwnedFd)],
    tx: &tokio::sync::mpsc::Sender<Request>,
    released: &mut bool,
) -> std::result::Result<(), String> {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let (hello, _) = fdpass::recv(conn, 64).map_err(|e| e.to_string())?;
    if hello != TAKEOVER {
        return Err(format!(
            "unexpected greeting {:?}",
            String::from_utf8_lossy(&hello)
        ));
    }
    let names: Vec<&str> = listeners.iter().map(|(n, _)| *n).collect();
    let fds: Vec<_> = listeners.iter().map(|(_, fd)| fd.as_fd()).collect();
    let payload = format!("{}\n", names.join(" "));
    fdpass::send(conn, payload.as_bytes(), &fds).map_err(|e| e.to_string())?;
    if !*released {
        let (done, wait) = std::sync::mpsc::channel();
        tx.blocking_send(Request::Release(done))
            .map_err(|_| "the server is shutting down".to_string())?;
        wait.recv()
            .map_err(|_| "the server is shutting down".to_string())?;
        *released = true;
    }
    fdpass::send(conn, RELEASED, &[]).map_err(|e| e.to_string())?;
    // The successor bounds its own start-up; wait for it as long as it lives.
    let _ = conn.set_read_timeout(None);
    let (answer, _) = fdpass::recv(conn, 64).map_err(|e| e.to_string())?;
    if answer != SERVING {
        return Err("the new server ended before it started serving".into());
    }
    let _ = tx.blocking_send(Request::Serving);
    Ok(())
}

/// The sockets taken over from the running server, by name.
pub struct Taken {
    conn: UnixStream,
    pub listeners: BTreeMap<String, std::net::TcpListener>,
}

impl Taken {
    /// Tells the old server that this one accepts on the sockets now.
    pub fn serving(self) -> Result<()> {
        fdpass::send(&self.conn, SERVING, &[])
            .map_err(|e| Failure::failed(format!("cannot tell the old server to stop: {e}")))
    }
}

/// Takes the listening sockets over from the server running on `data_dir` and waits
/// until it has released the store. Blocking.
pub fn take(data_dir: &Path) -> Result<Taken> {
    let path = socket(data_dir);
    let conn = fdpass::connect(&path).map_err(|e| {
        Failure::failed(format!(
            "--takeover: no running server offers its sockets at {} ({e}); start without --takeover",
            path.display()
        ))
    })?;
    let fail = |e: String| Failure::failed(format!("--takeover: {e}"));
    let _ = conn.set_read_timeout(Some(RELEASE_WAIT));
    fdpass::send(&conn, TAKEOVER, &[]).map_err(|e| fail(e.to_string()))?;
    let (names, fds) = fdpass::recv(&conn, 1024).map_err(|e| fail(e.to_string()))?;
    let names = String::from_utf8_lossy(&names);
    let names: Vec<&str> = names.split_whitespace().collect();
    if names.is_empty() || names.len() != fds.len() {
        return Err(fail(format!(
            "the running server sent {} sockets for {} names",
            fds.len(),
            names.len()
        )));
    }
    let listeners = names
        .into_iter()
        .map(str::to_string)
        .zip(fds.into_iter().map(std::net::TcpListener::from))
        .collect();
    let (released, _) = fdpass::recv(&conn, 64).map_err(|e| fail(e.to_string()))?;
    if released != RELEASED {
        return Err(fail(
            "the running server did not release its store; it keeps running".into(),
        ));
    }
    Ok(Taken { conn, listeners })
}

/// A listening socket of the old server, ready for tokio.
pub fn listener(l: std::net::TcpListener) -> Result<tokio::net::TcpListener> {
    l.set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(l))
        .map_err(|e| Failure::failed(format!("cannot use a socket taken over: {e}")))
}
