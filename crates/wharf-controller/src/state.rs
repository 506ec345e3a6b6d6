//! The controller's observed state: one entry per replica slot.

use std::collections::BTreeMap;
use wharf_core::ports::Handle;
use wharf_core::probe::ProbeState;
use wharf_core::Replica;
use wharf_types::release::UnixMillis;
use wharf_types::route::RouteTable;
use wharf_types::AppName;

/// A replica slot and what the controller knows about its current process.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub replica: Replica,
    /// The running (or last) process; `None` before the first start.
    pub handle: Option<Handle>,
    pub readiness: ProbeState,
    pub liveness: ProbeState,
    pub next_probe: UnixMillis,
    pub probing: bool,
    /// Passed readiness since the current process started.
    pub ready_since_start: bool,
    /// Found running at server start; not yet probed.
    pub awaiting_first_probe: bool,
    /// Why the controller killed the current process (liveness), to report its exit.
    pub kill_reason: Option<String>,
    /// The startup probe passed for the current process (or there is none).
    pub startup_passed: bool,
    pub startup_failures: u32,
}

impl Entry {
    pub fn new(replica: Replica) -> Self {
        Self {
            replica,
            handle: None,
            readiness: ProbeState::new(false),
            liveness: ProbeState::new(true),
            next_probe: 0,
            probing: false,
            ready_since_start: false,
            awaiting_first_probe: false,
            kill_reason: None,
            startup_passed: false,
            startup_failures: 0,
        }
    }

    /// Resets per-process state for a freshly started process.
    pub fn started(&mut self, handle: Handle, now: UnixMillis) {
        self.replica.phase = wharf_core::Phase::Running {
            pid: handle.pid,
            since: now,
        };
        self.replica.ready = false;
        self.handle = Some(handle);
        self.readiness = ProbeState::new(false);
        self.liveness = ProbeState::new(true);
        self.next_probe = now + FIRST_PROBE_DELAY_MS;
        self.ready_since_start = false;
        self.kill_reason = None;
        self.startup_passed = false;
        self.startup_failures = 0;
    }

    /// Where the router and the probes reach the current process.
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        self.handle.as_ref().map(|h| h.socket_addr())
    }
}

/// Delay before the first probe of a new process.
pub(crate) const FIRST_PROBE_DELAY_MS: u64 = 50;
/// Probe period until a new process is first ready (fast deploys), before `interval` applies.
pub(crate) const STARTUP_PROBE_PERIOD_MS: u64 = 100;
/// A process without a readiness probe counts as ready after running this long.
pub(crate) const READY_WITHOUT_PROBE_MS: u64 = 1_000;
/// After a restart of the server, planning waits this long at most for adopted replicas'
/// first probes, so that they are not replaced while merely unprobed.
pub(crate) const ADOPTION_WARMUP_MS: u64 = 3_000;

pub(crate) type Key = (AppName, String);

#[derive(Debug, Default)]
pub(crate) struct State {
    pub entries: BTreeMap<Key, Entry>,
    pub published: Option<RouteTable>,
    pub warm_until: UnixMillis,
}

impl State {
    /// Adopted replicas still await their first probe, within the warm-up.
    pub(crate) fn warming_up(&self, now: UnixMillis) -> bool {
        now < self.warm_until && self.entries.values().any(|e| e.awaiting_first_probe)
    }
}
