//! Rolling replacement of one process type, with Kubernetes `maxSurge`/`maxUnavailable`
//! semantics. Plain scaling is the degenerate case with no old replicas.

use super::{Action, ProcessDesired, StopReason};
use crate::replica::{Phase, Replica};
use wharf_types::release::UnixMillis;
use wharf_types::{AppName, ProcessType};

pub(super) struct Step {
    /// Every desired replica of the release is ready (old ones are being stopped).
    pub complete: bool,
}

/// Order in which replicas are given up: exited first, then starting/unready, then the
/// highest ordinal (the newest slots go first, as `scale` down users expect).
fn stop_order(a: &&Replica, b: &&Replica) -> std::cmp::Ordering {
    let rank = |r: &Replica| match (&r.phase, r.ready) {
        (Phase::Exited { .. }, _) => 0,
        (_, false) => 1,
        _ => 2,
    };
    rank(a).cmp(&rank(b)).then(b.ordinal.cmp(&a.ordinal))
}

/// Who and when a process plan is for.
pub(super) struct Context<'a> {
    pub app: &'a AppName,
    pub process: &'a ProcessType,
    pub release: u32,
    pub now: UnixMillis,
    /// Blue-green or canary: start the whole new set whatever runs, and keep the old
    /// replicas (they serve until the verdict); only exited ones go.
    pub whole_set: bool,
}

pub(super) fn plan_process(
    ctx: &Context<'_>,
    pd: &ProcessDesired,
    replicas: &[&Replica],
    taken_ordinals: &[u32],
    out: &mut Vec<Action>,
) -> Step {
    let Context {
        app,
        process,
        release,
        now,
        whole_set,
    } = *ctx;
    let n = pd.count;
    let stop = |r: &Replica, reason, out: &mut Vec<Action>| {
        out.push(Action::Stop {
            app: app.clone(),
            id: r.id.clone(),
            reason,
        });
    };
    let (mut new, mut old): (Vec<&Replica>, Vec<&Replica>) =
        replicas.iter().copied().partition(|r| r.release == release);

    // Surplus of the target release (scale down): the least useful go first.
    new.sort_by(stop_order);
    let surplus = new.len().saturating_sub(n as usize);
    for r in new.drain(..surplus) {
        stop(r, StopReason::ScaledDown, out);
    }

    // Restarts of exited replicas of the target release whose backoff has elapsed.
    for r in &new {
        if let Phase::Exited { restart_at } = r.phase {
            if now >= restart_at {
                out.push(Action::Restart {
                    app: app.clone(),
                    id: r.id.clone(),
                });
            }
        }
    }

    let surge = pd.deploy.max_surge.resolve(n, true);
    let unavailable = pd.deploy.max_unavailable.resolve(n, false);
    let (surge, unavailable) = if surge == 0 && unavailable == 0 {
        (1, 0)
    } else {
        (surge, unavailable)
    };

    // Scale up the new set within the surge budget.
    let total = (new.len() + old.len()) as u32;
    let missing = n.saturating_sub(new.len() as u32);
    let room = if whole_set {
        missing
    } else {
        (n + surge).saturating_sub(total)
    };
    let mut ordinal = 0;
    for _ in 0..missing.min(room) {
        ordinal += 1;
        while taken_ordinals.contains(&ordinal) || new.iter().any(|r| r.ordinal == ordinal) {
            ordinal += 1;
        }
        out.push(Action::Start {
            app: app.clone(),
            process: process.clone(),
            release,
            ordinal,
            id: Replica::make_id(process, ordinal, release),
        });
    }

    // Scale down the old set as far as availability allows (unready ones first).
    let ready_new = new.iter().filter(|r| r.is_ready()).count() as u32;
    let min_available = n.saturating_sub(unavailable);
    // Unready old replicas serve nobody: they may always go. Ready ones only while the
    // ready total stays at or above `n - max_unavailable`.
    let ready_old = old.iter().filter(|r| r.is_ready()).count() as u32;
    let unready_old = old.len() as u32 - ready_old;
    let budget = if whole_set {
        old.iter()
            .filter(|r| matches!(r.phase, Phase::Exited { .. }))
            .count()
    } else if ready_new >= n {
        old.len()
    } else {
        (unready_old + (ready_old + ready_new).saturating_sub(min_available)) as usize
    };
    old.sort_by(stop_order);
    for r in old.iter().take(budget) {
        stop(r, StopReason::Replaced, out);
    }

    Step {
        complete: ready_new >= n,
    }
}
