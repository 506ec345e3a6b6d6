//! `plan(desired, observed, now) -> [Action]`: the reconciler's pure core.

mod rolling;
#[cfg(test)]
mod tests;

use crate::replica::{Phase, Replica};
use std::collections::BTreeMap;
use wharf_types::release::{Rollout, UnixMillis};
use wharf_types::{AppName, DeploySpec, ProcessType};

/// What one app should be running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDesired {
    pub app: AppName,
    /// The target release; `None` means nothing should run.
    pub release: Option<u32>,
    /// Process types of the target release with their desired counts.
    pub processes: BTreeMap<ProcessType, ProcessDesired>,
    /// The rollout in progress toward `release`, if any.
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessDesired {
    pub count: u32,
    pub deploy: DeploySpec,
}

/// Why a replica is stopped; shown in logs and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Replaced by a replica of the new release.
    Replaced,
    /// More replicas than desired.
    ScaledDown,
    /// Its app, release or process type is no longer desired.
    NotDesired,
}

/// A step the controller must execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create and start a new replica slot.
    Start {
        app: AppName,
        process: ProcessType,
        release: u32,
        ordinal: u32,
        id: String,
    },
    /// Start the process of an exited replica again (its backoff has elapsed).
    Restart { app: AppName, id: String },
    /// Take out of routing, drain, terminate, remove.
    Stop {
        app: AppName,
        id: String,
        reason: StopReason,
    },
    /// Every process of the release is fully up and the old ones are leaving.
    RolloutSucceeded { app: AppName, release: u32 },
    /// The release failed; the controller returns the app to the rollout's `from`.
    RolloutFailed {
        app: AppName,
        release: u32,
        reason: String,
        replica: Option<String>,
    },
}

/// Consecutive exits before first readiness that fail a rollout.
pub const ROLLOUT_CRASH_LIMIT: u32 = 3;

/// Plans every app. Replicas of apps not in `apps` are stopped.
pub fn plan(apps: &[AppDesired], replicas: &[Replica], now: UnixMillis) -> Vec<Action> {
    let mut out = Vec::new();
    for desired in apps {
        let mine: Vec<&Replica> = replicas.iter().filter(|r| r.app == desired.app).collect();
        plan_app(desired, &mine, now, &mut out);
    }
    for r in replicas {
        if !r.is_stopping() && !apps.iter().any(|a| a.app == r.app) {
            out.push(Action::Stop {
                app: r.app.clone(),
                id: r.id.clone(),
                reason: StopReason::NotDesired,
            });
        }
    }
    out
}

fn plan_app(desired: &AppDesired, replicas: &[&Replica], now: UnixMillis, out: &mut Vec<Action>) {
    let live: Vec<&Replica> = replicas
        .iter()
        .copied()
        .filter(|r| !r.is_stopping())
        .collect();
    let Some(release) = desired.release else {
        for r in live {
            out.push(Action::Stop {
                app: r.app.clone(),
                id: r.id.clone(),
                reason: StopReason::NotDesired,
            });
        }
        return;
    };
    let rollout = desired.rollout.as_ref().filter(|r| r.release == release);
    if let Some(ro) = rollout.filter(|ro| ro.reverting.is_none()) {
        if let Some(fail) = rollout_failure(desired, ro, &live, now) {
            out.push(fail);
            return;
        }
    }
    let mut complete = true;
    for (process, pd) in &desired.processes {
        let of_type: Vec<&Replica> = live
            .iter()
            .copied()
            .filter(|r| &r.process == process)
            .collect();
        // Ordinals in use, draining replicas included, so a new id never collides.
        let taken: Vec<u32> = replicas
            .iter()
            .filter(|r| &r.process == process && r.release == release)
            .map(|r| r.ordinal)
            .collect();
        let step = rolling::plan_process(
            &desired.app,
            process,
            release,
            pd,
            &of_type,
            &taken,
            now,
            out,
        );
        complete &= step.complete;
    }
    for r in &live {
        if !desired.processes.contains_key(&r.process) {
            out.push(Action::Stop {
                app: r.app.clone(),
                id: r.id.clone(),
                reason: StopReason::NotDesired,
            });
        }
    }
    if let Some(ro) = rollout {
        if complete {
            out.push(Action::RolloutSucceeded {
                app: desired.app.clone(),
                release: ro.release,
            });
        }
    }
}

/// A rollout fails when a new replica crashes repeatedly before ever being ready, or
/// when the release is not fully ready by the deadline.
fn rollout_failure(
    desired: &AppDesired,
    ro: &Rollout,
    live: &[&Replica],
    now: UnixMillis,
) -> Option<Action> {
    let new: Vec<&Replica> = live
        .iter()
        .copied()
        .filter(|r| r.release == ro.release)
        .collect();
    let fail = |reason: String, replica: Option<&Replica>| Action::RolloutFailed {
        app: desired.app.clone(),
        release: ro.release,
        reason,
        replica: replica.map(|r| r.id.clone()),
    };
    if let Some(r) = new
        .iter()
        .find(|r| !r.ever_ready && r.backoff.failures >= ROLLOUT_CRASH_LIMIT)
    {
        let last = r
            .last_exit
            .as_ref()
            .map_or("unknown".to_string(), |e| e.reason.clone());
        return Some(fail(
            format!(
                "replica {} exited {} times before becoming ready (last: {last})",
                r.id, r.backoff.failures
            ),
            Some(r),
        ));
    }
    let timeout = desired.processes.values().map(|p| p.deploy.timeout).max()?;
    let deadline = ro
        .started_at
        .saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
    if now >= deadline {
        let ready = new.iter().filter(|r| r.is_ready()).count();
        let wanted: u32 = desired.processes.values().map(|p| p.count).sum();
        let laggard = new.iter().copied().find(|r| !r.is_ready());
        let what = match laggard {
            Some(r) => match (&r.phase, &r.last_exit) {
                (Phase::Exited { .. }, Some(e)) => format!("; {} {}", r.id, e.reason),
                _ => format!("; {} is not passing its readiness check", r.id),
            },
            None => String::new(),
        };
        return Some(fail(
            format!(
                "release v{} was not ready within {} ({ready} of {wanted} replicas ready{what})",
                ro.release,
                wharf_types::quantity::format_duration(timeout)
            ),
            laggard,
        ));
    }
    None
}
