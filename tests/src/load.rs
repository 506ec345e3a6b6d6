//! Load for zero-downtime checks: clients hammering `GET /` through the router.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Clients hammering `GET /` through the router until stopped; every answer that is not a
/// 200 (or does not arrive) is a failure.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    ok: Arc<Mutex<usize>>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Load {
    /// Clients each opening a connection per request.
    pub fn start(router: &str, host: &str, clients: usize) -> Load {
        Self::run(router, host, clients, false)
    }

    /// Clients each keeping one keep-alive connection (reopened only after an answer
    /// that closed it): a connection closed under a request counts as a failure.
    pub fn start_keepalive(router: &str, host: &str, clients: usize) -> Load {
        Self::run(router, host, clients, true)
    }

    fn run(router: &str, host: &str, clients: usize, keepalive: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(Mutex::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (router, host) = (router.to_string(), host.to_string());
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let mut conn = crate::http::KeepAlive::new(&router).expect("router address");
                    while !stop.load(Ordering::SeqCst) {
                        let answer = if keepalive {
                            conn.get(&host, "/")
                        } else {
                            crate::http_get(&router, &host, "/", &[])
                        };
                        match answer {
                            Ok(r) if r.status == 200 => *ok.lock().unwrap() += 1,
                            Ok(r) => failures
                                .lock()
                                .unwrap()
                                .push(format!("{} {:?}", r.status, r.body)),
                            Err(e) => failures
                                .lock()
                                .unwrap()
                                .push(format!("transport error: {e}")),
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads,
            ok,
            failures,
        }
    }

    pub fn ok(&self) -> usize {
        *self.ok.lock().unwrap()
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    /// Stops the clients; returns (successes, failures).
    pub fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("load thread");
        }
        let ok = *self.ok.lock().unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (ok, failures)
    }
}
