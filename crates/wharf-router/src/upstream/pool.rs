//! One worker's idle upstream connections, per replica address.
//!
//! A request takes the most recently returned idle connection (LIFO: the warmest one,
//! and the cold ones at the front expire), skipping those that expired or that the
//! replica closed (or wrote to) while they sat idle. A connection comes back through
//! its [`Home`] once its response body ended cleanly. Idle connections are closed
//! after the idle timeout by a task that runs only while the pool holds some, and at
//! most `max_idle` stay per address (the oldest go first).
//!
//! Invariants: a pooled connection is idle (no exchange in progress, nothing buffered),
//! so two requests never share one; the pool holds at most `max_idle` connections per
//! address and none older than `idle_timeout` once the reaper ran.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::conn::Conn;

/// How long an idle upstream keep-alive connection stays in the pool.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per replica address and worker. Above the concurrency a
/// worker sees in bursts, else connections are closed and made again: with 256, h2c
/// at 640 streams (320 a worker) closed about 1,500 connections a second whenever the
/// load generator was descheduled and every exchange came back at once.
pub(crate) const MAX_IDLE: usize = 1024;

/// How the pool treats idle connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolConfig {
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            idle_timeout: IDLE_TIMEOUT,
            max_idle: MAX_IDLE,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Pool {
    config: PoolConfig,
    /// Per address, oldest first: requests take from the back, expiry works from the
    /// front.
    idle: HashMap<SocketAddr, VecDeque<Idle>, BuildHasherDefault<AddrHasher>>,
    /// The expiry task is running.
    reaping: bool,
}

#[derive(Debug)]
struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// Where a connection in use goes back to.
#[derive(Debug, Clone)]
pub(crate) struct Home(Weak<Mutex<Pool>>);

impl Pool {
    pub(crate) fn new(config: PoolConfig) -> Arc<Mutex<Pool>> {
        Arc::new(Mutex::new(Pool {
            config,
            ..Pool::default()
        }))
    }

    /// The most recently returned usable idle connection to `addr` at `now`; the
    /// unusable ones met on the way are dropped (closed).
    pub(crate) fn checkout(&mut self, addr: SocketAddr, now: Instant) -> Option<Box<Conn>> {
        let timeout = self.config.idle_timeout;
        let list = self.idle.get_mut(&addr)?;
        while let Some(idle) = list.pop_back() {
            if now.duration_since(idle.since) >= timeout {
                // The rest are older still.
                list.clear();
                break;
            }
            if idle.conn.idle_usable() {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Idle connections pooled for `addr`.
    #[cfg(test)]
    pub(crate) fn idle(&self, addr: SocketAddr) -> usize {
        self.idle.get(&addr).map_or(0, VecDeque::len)
    }
}

impl Home {
    pub(crate) fn of(pool: &Arc<Mutex<Pool>>) -> Self {
        Home(Arc::downgrade(pool))
    }

    /// Pools `conn`, idle from now.
    pub(crate) fn checkin(&self, conn: Box<Conn>) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        let mut pool = lock(&shared);
        let max_idle = pool.config.max_idle;
        let list = pool.idle.entry(conn.addr).or_default();
        list.push_back(Idle {
            conn,
            since: Instant::now(),
        });
        while list.len() > max_idle {
            list.pop_front();
        }
        if !pool.reaping && tokio::runtime::Handle::try_current().is_ok() {
            pool.reaping = true;
            tokio::spawn(reap(self.0.clone()));
        }
    }
}

/// Closes idle connections as they expire (or as the replica closed them); ends when
/// the pool is empty (the next check-in starts it again) or gone.
async fn reap(pool: Weak<Mutex<Pool>>) {
    loop {
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            let mut pool = lock(&pool);
            let timeout = pool.config.idle_timeout;
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            pool.idle.retain(|_, list| {
                list.retain(|idle| {
                    now.duration_since(idle.since) < timeout && idle.conn.idle_usable()
                });
                if let Some(oldest) = list.front() {
                    let expiry = oldest.since + timeout;
                    next = Some(next.map_or(expiry, |n| n.min(expiry)));
                }
                !list.is_empty()
            });
            if next.is_none() {
                pool.reaping = false;
            }
            next
        };
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => return,
        }
    }
}

/// A hasher for the pool's keys, the replicas' addresses (the router's own, not the
/// clients'): two multiplications instead of SipHash's rounds, twice per request.
#[derive(Debug, Default)]
pub(crate) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) fn lock(pool: &Mutex<Pool>) -> MutexGuard<'_, Pool> {
    // Every critical section leaves the pool consistent; poisoning is harmless.
    pool.lock().unwrap_or_else(|e| e.into_inner())
}
