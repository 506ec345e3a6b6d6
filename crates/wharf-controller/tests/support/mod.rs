//! A scripted runtime: each "replica" is a TCP listener thread on its port that answers
//! HTTP 200 (or 503 when scripted unready); "crashing" is scripted per release.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use wharf_core::ports::{
    Handle, Launch, Liveness, OneOff, RouteSink, Runtime, RuntimeError, StopSignal,
};
use wharf_core::Exit;
use wharf_types::route::RouteTable;
use wharf_types::AppName;

#[derive(Default)]
pub struct FakeRuntime {
    next_pid: AtomicU32,
    pub live: Mutex<BTreeMap<u32, Arc<AtomicBool>>>,
    /// Releases whose replicas exit right after starting.
    pub crash_releases: Mutex<BTreeSet<u32>>,
    /// Releases whose replicas answer 503.
    pub unready_releases: Mutex<BTreeSet<u32>>,
    pub started: Mutex<Vec<String>>,
    /// Every launch spec, in order.
    pub launches: Mutex<Vec<Launch>>,
    pub signals: Mutex<Vec<(String, StopSignal)>>,
    pub adoptable: Mutex<Vec<(Handle, Liveness)>>,
    /// Ids of the one-offs reported finished.
    pub finished_oneoffs: Mutex<Vec<String>>,
}

impl FakeRuntime {
    pub fn running(&self) -> usize {
        self.live
            .lock()
            .unwrap()
            .values()
            .filter(|a| a.load(Ordering::SeqCst))
            .count()
    }
}

impl Runtime for FakeRuntime {
    fn start(&self, l: &Launch) -> Result<Handle, RuntimeError> {
        let pid = 10_000 + self.next_pid.fetch_add(1, Ordering::SeqCst);
        let alive = Arc::new(AtomicBool::new(
            !self.crash_releases.lock().unwrap().contains(&l.release),
        ));
        // A replica with its own network listens at its own address: here 127.0.0.2,
        // which the host's loopback answers too.
        let addr = (l.network == wharf_types::Network::Isolated)
            .then_some(std::net::Ipv4Addr::new(127, 0, 0, 2));
        if alive.load(Ordering::SeqCst) {
            let ip = addr.unwrap_or(std::net::Ipv4Addr::LOCALHOST);
            let listener = TcpListener::bind((ip, l.port)).map_err(|e| RuntimeError::Start {
                id: l.id.clone(),
                message: e.to_string(),
            })?;
            listener.set_nonblocking(true).unwrap();
            let unready = self.unready_releases.lock().unwrap().contains(&l.release);
            let flag = Arc::clone(&alive);
            std::thread::spawn(move || {
                while flag.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            s.set_nonblocking(false).ok();
                            let mut buf = [0u8; 512];
                            let _ = s.read(&mut buf);
                            let status = if unready {
                                "503 Service Unavailable"
                            } else {
                                "200 OK"
                            };
                            let _ = s.write_all(
                                format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok")
                                    .as_bytes(),
                            );
                        }
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                    }
                }
            });
        }
        self.live.lock().unwrap().insert(pid, alive);
        self.started.lock().unwrap().push(l.id.clone());
        self.launches.lock().unwrap().push(l.clone());
        Ok(Handle {
            app: l.app.clone(),
            process: l.process.clone(),
            release: l.release,
            id: l.id.clone(),
            pid,
            start_time: 1,
            port: l.port,
            started_at: 0,
            addr,
        })
    }

    fn poll(&self, h: &Handle) -> Liveness {
        match self.live.lock().unwrap().get(&h.pid) {
            Some(a) if a.load(Ordering::SeqCst) => Liveness::Running,
            _ => Liveness::Exited(Exit {
                at: 0,
                code: Some(3),
                signal: None,
                reason: "exited with code 3".into(),
            }),
        }
    }

    fn signal(&self, h: &Handle, sig: StopSignal) -> Result<(), RuntimeError> {
        self.signals.lock().unwrap().push((h.id.clone(), sig));
        if let Some(a) = self.live.lock().unwrap().get(&h.pid) {
            a.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    fn cleanup(&self, _: &Handle) {}

    fn discover(&self) -> Vec<(Handle, Liveness)> {
        std::mem::take(&mut *self.adoptable.lock().unwrap())
    }

    fn tail(&self, _: &AppName, id: &str, _: usize) -> Vec<String> {
        vec![format!("{id}: crashing on purpose")]
    }

    /// A plain shell in the launch's directory, with exactly its environment.
    fn oneoff(&self, l: &Launch) -> Result<OneOff, RuntimeError> {
        self.launches.lock().unwrap().push(l.clone());
        let mut args: Vec<std::ffi::OsString> = vec!["-i".into()];
        args.extend(l.env.iter().map(|(k, v)| format!("{k}={v}").into()));
        args.extend(["/bin/sh".into(), "-c".into()]);
        args.push(format!("cd '{}' && exec {}", l.dir.display(), l.command).into());
        Ok(OneOff {
            id: l.id.clone(),
            program: "/usr/bin/env".into(),
            args,
        })
    }

    /// A plain shell: the fake replicas have no world to enter.
    fn exec(&self, h: &Handle, command: &str) -> Result<OneOff, RuntimeError> {
        Ok(OneOff {
            id: h.id.clone(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), command.into()],
        })
    }

    fn finish_oneoff(&self, _: &AppName, id: &str, _: Option<u32>) {
        self.finished_oneoffs.lock().unwrap().push(id.to_string());
    }
}

/// Records every published table and reports no in-flight requests.
#[derive(Default)]
pub struct Routes {
    pub last: Mutex<RouteTable>,
}

impl RouteSink for Routes {
    fn publish(&self, table: RouteTable) {
        *self.last.lock().unwrap() = table;
    }
    fn inflight(&self, _: &str) -> usize {
        0
    }
}
