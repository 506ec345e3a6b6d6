//! Canary analysis: each step's window of router metrics judged against the baseline,
//! and the step machine (start at the first weight, advance on a pass, count failed
//! checks, roll back past the limit, promote after the last step).

use super::{Action, AppDesired};
use wharf_types::release::{Analysis, CanaryProgress, Rollout, UnixMillis};
use wharf_types::route::ReleaseStats;
use wharf_types::spec::CanarySpec;

/// What the router saw since the current step started: deltas of its counters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Window {
    pub canary: ReleaseStats,
    /// `None` when the baseline took no traffic in the window (the 100% step).
    pub baseline: Option<ReleaseStats>,
}

/// Below this p99, latency is not compared with the baseline: a few milliseconds of
/// scheduling noise on a busy host, magnified by the histogram's coarse buckets, are not
/// a regression worth a rollback.
pub const P99_NOISE_FLOOR_MS: u64 = 50;

/// Fewer requests than this in a window and its "p99" is simply its slowest request: one
/// request that waited for a busy CPU would roll a good canary back. Latency is judged
/// only on windows with at least this many requests (for the comparison, on both sides).
pub const P99_MIN_REQUESTS: u64 = 100;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    /// Not enough canary traffic to judge yet.
    Wait(String),
}

/// Judges a window by the spec's thresholds (Flagger's defaults: success rate at least
/// 99% and no more than 1 point below the baseline, p99 at most 500 ms and at most
/// 1.5 x the baseline's).
pub fn analyse(spec: &CanarySpec, w: &Window, now: UnixMillis) -> (Verdict, Analysis) {
    let base = w.baseline.as_ref().filter(|b| b.requests > 0);
    let mut a = Analysis {
        at: now,
        canary_requests: w.canary.requests,
        baseline_requests: base.map_or(0, |b| b.requests),
        canary_success: w.canary.success_rate(),
        baseline_success: base.and_then(|b| b.success_rate()),
        canary_p99_ms: w.canary.p99_ms(),
        baseline_p99_ms: base.and_then(|b| b.p99_ms()),
        verdict: String::new(),
    };
    let verdict = judge(spec, &a);
    a.verdict = match &verdict {
        Verdict::Pass if a.canary_requests < P99_MIN_REQUESTS => {
            format!("pass (p99 not judged under {P99_MIN_REQUESTS} requests)")
        }
        Verdict::Pass => "pass".to_string(),
        Verdict::Fail(why) => format!("fail: {why}"),
        Verdict::Wait(why) => format!("wait: {why}"),
    };
    (verdict, a)
}

fn judge(spec: &CanarySpec, a: &Analysis) -> Verdict {
    if a.canary_requests < spec.min_requests.max(1) {
        return Verdict::Wait(format!(
            "{} canary requests, need {}",
            a.canary_requests,
            spec.min_requests.max(1)
        ));
    }
    let (Some(rate), Some(p99)) = (a.canary_success, a.canary_p99_ms) else {
        return Verdict::Wait("no canary measurements".into());
    };
    if rate < spec.min_success_rate {
        return Verdict::Fail(format!(
            "success rate {rate:.1}% < {}%",
            spec.min_success_rate
        ));
    }
    if let Some(base) = a.baseline_success {
        if rate < base - spec.max_success_drop {
            return Verdict::Fail(format!(
                "success rate {rate:.1}% is more than {} points below the baseline's {base:.1}%",
                spec.max_success_drop
            ));
        }
    }
    if a.canary_requests < P99_MIN_REQUESTS {
        return Verdict::Pass;
    }
    let max_p99 = spec.max_p99.as_millis() as u64;
    if p99 > max_p99 {
        return Verdict::Fail(format!("p99 {p99} ms > {max_p99} ms"));
    }
    if let Some(base) = a
        .baseline_p99_ms
        .filter(|_| a.baseline_requests >= P99_MIN_REQUESTS)
    {
        // Latency buckets are coarse: a canary in the baseline's own bucket passes, and
        // so does one under the noise floor.
        if p99 > base.max(P99_NOISE_FLOOR_MS) && p99 as f64 > base as f64 * spec.max_p99_ratio {
            return Verdict::Fail(format!(
                "p99 {p99} ms > {} x the baseline's {base} ms",
                spec.max_p99_ratio
            ));
        }
    }
    Verdict::Pass
}

/// Moves a canary rollout on, once the whole canary set is ready.
pub(super) fn advance(
    desired: &AppDesired,
    ro: &Rollout,
    spec: &CanarySpec,
    now: UnixMillis,
    out: &mut Vec<Action>,
) {
    let app = desired.app.clone();
    let release = ro.release;
    let step_to = |step: usize, failed_checks: u32, last: Option<Analysis>| CanaryProgress {
        step,
        weight: spec.steps.get(step).copied().unwrap_or(100),
        step_started_at: now,
        failed_checks,
        last,
    };
    let Some(c) = &ro.canary else {
        out.push(Action::CanaryStep {
            app,
            release,
            progress: step_to(0, 0, None),
        });
        return;
    };
    let interval = spec.interval.as_millis() as u64;
    if now < c.step_started_at.saturating_add(interval) {
        return;
    }
    let window = desired.window.clone().unwrap_or_default();
    let (verdict, analysis) = analyse(spec, &window, now);
    match verdict {
        Verdict::Wait(_) => {
            if c.last.as_ref().map(|l| &l.verdict) != Some(&analysis.verdict) {
                let progress = CanaryProgress {
                    last: Some(analysis),
                    ..c.clone()
                };
                out.push(Action::CanaryStep {
                    app,
                    release,
                    progress,
                });
            }
        }
        Verdict::Pass if c.step + 1 >= spec.steps.len() => {
            out.push(Action::RolloutSucceeded { app, release })
        }
        Verdict::Pass => out.push(Action::CanaryStep {
            app,
            release,
            progress: step_to(c.step + 1, c.failed_checks, Some(analysis)),
        }),
        Verdict::Fail(why) => {
            let failed = c.failed_checks + 1;
            if failed >= spec.max_failed_checks {
                let reason = format!("canary v{release} failed {failed} of {} allowed checks at {}% of traffic (last: {why})", spec.max_failed_checks, c.weight);
                out.push(Action::RolloutFailed {
                    app,
                    release,
                    reason,
                    replica: None,
                });
            } else {
                out.push(Action::CanaryStep {
                    app,
                    release,
                    progress: step_to(c.step, failed, Some(analysis)),
                });
            }
        }
    }
}
