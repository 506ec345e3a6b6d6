//! `plan(desired, observed, now) -> [Action]`: the reconciler's pure core.
//!
//! Per app, the `web` process follows the release's strategy: rolling (Kubernetes
//! surge/unavailable), blue-green (the whole new set, then an atomic switch, the old set
//! kept warm) or canary (the whole new set, traffic shifted in steps, each judged by the
//! router's metrics). Other process types always roll. [`traffic()`] says how the router
//! splits an app's requests between releases at any moment.

mod canary;
mod rolling;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_strategies;

pub use canary::{analyse, Verdict, Window};

use crate::replica::{Phase, Replica};
use std::collections::BTreeMap;
use wharf_types::release::{CanaryProgress, Rollout, UnixMillis, Warm};
use wharf_types::route::Weight;
use wharf_types::{AppName, DeploySpec, ProcessType, Strategy};

/// What one app should be running.
#[derive(Debug, Clone, PartialEq)]
pub struct AppDesired {
    pub app: AppName,
    /// The target release; `None` means nothing should run.
    pub release: Option<u32>,
    /// Process types of the target release with their desired counts.
    pub processes: BTreeMap<ProcessType, ProcessDesired>,
    /// The rollout in progress toward `release`, if any.
    pub rollout: Option<Rollout>,
    /// Blue-green: the previous set kept running out of routing.
    pub warm: Option<Warm>,
    /// Canary: what the router saw since the current step started.
    pub window: Option<Window>,
}

#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
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
    /// Every process of the release is fully up and takes all the traffic.
    RolloutSucceeded { app: AppName, release: u32 },
    /// The release failed; the controller returns the app to the rollout's `from`.
    RolloutFailed {
        app: AppName,
        release: u32,
        reason: String,
        replica: Option<String>,
    },
    /// Canary: record this progress (a new step, a failed check, or the last analysis).
    CanaryStep {
        app: AppName,
        release: u32,
        progress: CanaryProgress,
    },
    /// Blue-green: the warm window is over; its replicas are stopped like any old ones.
    ForgetWarm { app: AppName },
}

/// Consecutive exits before first readiness that fail a rollout.
pub const ROLLOUT_CRASH_LIMIT: u32 = 3;

/// The strategy the app's `web` process rolls out with (rolling without a web process).
pub fn strategy(desired: &AppDesired) -> Strategy {
    desired
        .processes
        .get(&ProcessType::web())
        .map_or(Strategy::Rolling, |p| p.deploy.strategy)
}

/// The rollout toward the target that is still being judged (not a revert).
fn active_rollout(desired: &AppDesired) -> Option<&Rollout> {
    desired
        .rollout
        .as_ref()
        .filter(|r| Some(r.release) == desired.release && r.reverting.is_none())
}

/// How the router splits the app's traffic between releases (empty: every ready
/// replica alike). Blue-green serves the old release until the switch and only the
/// target after it; canary serves the canary its step's share.
pub fn traffic(desired: &AppDesired) -> Vec<Weight> {
    let Some(target) = desired.release else {
        return Vec::new();
    };
    let only = |release| {
        vec![Weight {
            release,
            percent: 100,
        }]
    };
    match (strategy(desired), active_rollout(desired)) {
        (Strategy::Rolling, _) => Vec::new(),
        (_, None) => only(target),
        (_, Some(Rollout { from: None, .. })) => Vec::new(),
        (Strategy::BlueGreen, Some(Rollout { from: Some(f), .. })) => only(*f),
        (
            Strategy::Canary,
            Some(Rollout {
                from: Some(f),
                canary,
                ..
            }),
        ) => match canary {
            Some(c) if c.weight >= 100 => only(target),
            Some(c) => vec![
                Weight {
                    release: target,
                    percent: c.weight,
                },
                Weight {
                    release: *f,
                    percent: 100 - c.weight,
                },
            ],
            None => only(*f),
        },
    }
}

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
    let active = active_rollout(desired);
    if let Some(ro) = active {
        if let Some(fail) = rollout_failure(desired, ro, &live, now) {
            out.push(fail);
            return;
        }
    }
    // The warm set of a blue-green switch stays out of the plan until its time is up.
    let warm = desired.warm.as_ref().filter(|w| w.release != release);
    if let Some(w) = warm {
        if now >= w.until {
            out.push(Action::ForgetWarm {
                app: desired.app.clone(),
            });
        }
    }
    let kept = |r: &&Replica| warm.is_some_and(|w| now < w.until && r.release == w.release);
    let strategy = strategy(desired);
    let mut complete = true;
    for (process, pd) in &desired.processes {
        let of_type: Vec<&Replica> = live
            .iter()
            .copied()
            .filter(|r| &r.process == process && !kept(r))
            .collect();
        // Ordinals in use, draining replicas included, so a new id never collides.
        let taken: Vec<u32> = replicas
            .iter()
            .filter(|r| &r.process == process && r.release == release)
            .map(|r| r.ordinal)
            .collect();
        // Blue-green and canary start the whole new set next to the old one and keep the
        // old one serving until the verdict.
        let whole_set = process.is_web()
            && strategy != Strategy::Rolling
            && active.is_some_and(|ro| ro.from.is_some());
        let ctx = rolling::Context {
            app: &desired.app,
            process,
            release,
            now,
            whole_set,
        };
        let step = rolling::plan_process(&ctx, pd, &of_type, &taken, out);
        complete &= step.complete;
    }
    for r in &live {
        if !desired.processes.contains_key(&r.process) && !kept(r) {
            out.push(Action::Stop {
                app: r.app.clone(),
                id: r.id.clone(),
                reason: StopReason::NotDesired,
            });
        }
    }
    let Some(ro) = desired.rollout.as_ref().filter(|r| r.release == release) else {
        return;
    };
    let judged = strategy == Strategy::Canary && ro.reverting.is_none() && ro.from.is_some();
    if !judged {
        if complete {
            out.push(Action::RolloutSucceeded {
                app: desired.app.clone(),
                release,
            });
        }
        return;
    }
    let spec = desired
        .processes
        .get(&ProcessType::web())
        .map(|p| &p.deploy.canary);
    if let (Some(spec), true) = (spec, complete) {
        canary::advance(desired, ro, spec, now, out);
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
