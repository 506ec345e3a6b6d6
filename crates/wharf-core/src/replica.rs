//! The observed state of one replica, as the controller tracks it and `plan()` reads it.

use crate::backoff::Backoff;
use serde::{Deserialize, Serialize};
use wharf_types::release::UnixMillis;
use wharf_types::{AppName, ProcessType};

/// How a replica's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub at: UnixMillis,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Human summary: "exited with code 3", "killed by signal 9 (SIGKILL)", "OOM killed".
    pub reason: String,
}

/// Where a replica is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// A process is running.
    Running { pid: u32, since: UnixMillis },
    /// The process exited; it may be restarted at `restart_at`.
    Exited { restart_at: UnixMillis },
    /// Leaving: out of the route table, draining then terminating. Owned by the stopper.
    Stopping { since: UnixMillis, draining: bool },
}

/// One replica: a slot (`web-2-v3`) that keeps its identity across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub id: String,
    pub app: AppName,
    pub process: ProcessType,
    pub release: u32,
    pub ordinal: u32,
    pub phase: Phase,
    /// Readiness verdict of the running process (false when not running).
    pub ready: bool,
    /// Has been ready at least once since the slot was created.
    pub ever_ready: bool,
    /// Times the process was restarted.
    pub restarts: u32,
    pub backoff: Backoff,
    pub last_exit: Option<Exit>,
}

impl Replica {
    /// The id of ordinal `n` of `process` in release `release`: `web-2-v3`.
    pub fn make_id(process: &ProcessType, ordinal: u32, release: u32) -> String {
        format!("{process}-{ordinal}-v{release}")
    }

    /// A fresh slot about to be started.
    pub fn new(
        app: AppName,
        process: ProcessType,
        release: u32,
        ordinal: u32,
        now: UnixMillis,
    ) -> Self {
        Self {
            id: Self::make_id(&process, ordinal, release),
            app,
            process,
            release,
            ordinal,
            phase: Phase::Exited { restart_at: now },
            ready: false,
            ever_ready: false,
            restarts: 0,
            backoff: Backoff::default(),
            last_exit: None,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running { .. })
    }
    pub fn is_stopping(&self) -> bool {
        matches!(self.phase, Phase::Stopping { .. })
    }
    /// Running and passing readiness: may receive traffic.
    pub fn is_ready(&self) -> bool {
        self.is_running() && self.ready
    }
    pub fn pid(&self) -> Option<u32> {
        match self.phase {
            Phase::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Records that the process exited: computes the backoff and the restart time.
    pub fn record_exit(&mut self, exit: Exit) {
        let started = match self.phase {
            Phase::Running { since, .. } => since,
            _ => exit.at,
        };
        let restart_at = self.backoff.record_exit(started, exit.at);
        self.phase = Phase::Exited { restart_at };
        self.ready = false;
        self.last_exit = Some(exit);
    }
}
