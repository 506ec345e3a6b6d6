//! Blue-green and canary rollouts, interrupted deploys and restarts mid-rollout.

use super::*;
use std::time::Duration;
use wharf_types::route::ReleaseStats;
use wharf_types::spec::CanarySpec;
use wharf_types::Amount;

const T0: UnixMillis = 5_000_000;

fn app() -> AppName {
    AppName::new("shop").unwrap()
}

fn replica(release: u32, ordinal: u32, ready: bool) -> Replica {
    let mut r = Replica::new(app(), ProcessType::web(), release, ordinal, T0);
    r.phase = Phase::Running {
        pid: 1000 + ordinal,
        since: T0,
    };
    r.ready = ready;
    r.ever_ready = ready;
    r
}

fn set(release: u32, n: u32, ready: bool) -> Vec<Replica> {
    (1..=n).map(|i| replica(release, i, ready)).collect()
}

fn canary_spec() -> CanarySpec {
    CanarySpec {
        interval: Duration::from_secs(10),
        min_requests: 10,
        ..CanarySpec::default()
    }
}

fn desired(strategy: Strategy, release: u32, from: Option<Option<u32>>) -> AppDesired {
    let deploy = DeploySpec {
        strategy,
        timeout: Duration::from_secs(120),
        keep_previous: Duration::from_secs(300),
        canary: canary_spec(),
        ..DeploySpec::default()
    };
    AppDesired {
        app: app(),
        release: Some(release),
        processes: [(ProcessType::web(), ProcessDesired { count: 3, deploy })]
            .into_iter()
            .collect(),
        rollout: from.map(|f| Rollout::new(release, f, T0, "deploy")),
        warm: None,
        window: None,
    }
}

fn starts(a: &[Action]) -> usize {
    a.iter()
        .filter(|a| matches!(a, Action::Start { .. }))
        .count()
}
fn stops(a: &[Action]) -> Vec<String> {
    a.iter()
        .filter_map(|a| match a {
            Action::Stop { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}
fn succeeded(a: &[Action]) -> bool {
    a.iter()
        .any(|a| matches!(a, Action::RolloutSucceeded { .. }))
}
fn canary_step(a: &[Action]) -> Option<CanaryProgress> {
    a.iter().find_map(|a| match a {
        Action::CanaryStep { progress, .. } => Some(progress.clone()),
        _ => None,
    })
}
fn w(release: u32, percent: u32) -> Weight {
    Weight { release, percent }
}

fn stats(release: u32, requests: u64, errors: u64, p99_bucket: usize) -> ReleaseStats {
    let mut latency = vec![0; 15];
    latency[p99_bucket] = requests;
    ReleaseStats {
        release,
        requests,
        errors,
        latency,
    }
}

// ---------------------------------------------------------------- blue-green

#[test]
fn blue_green_starts_the_whole_set_and_keeps_serving_the_old_one() {
    let d = desired(Strategy::BlueGreen, 2, Some(Some(1)));
    let mut world = set(1, 3, true);
    let a = plan(std::slice::from_ref(&d), &world, T0);
    assert_eq!(starts(&a), 3);
    assert!(stops(&a).is_empty());
    assert_eq!(traffic(&d), [w(1, 100)]);
    world.extend([
        replica(2, 1, true),
        replica(2, 2, true),
        replica(2, 3, false),
    ]);
    let a = plan(std::slice::from_ref(&d), &world, T0);
    assert!(
        a.is_empty(),
        "2 of 3 ready: no switch, nothing stops: {a:?}"
    );
    world[5].ready = true;
    let a = plan(std::slice::from_ref(&d), &world, T0);
    assert_eq!(
        a,
        vec![Action::RolloutSucceeded {
            app: app(),
            release: 2
        }],
        "the switch; the old set is not touched"
    );
}

#[test]
fn blue_green_after_the_switch_keeps_the_old_set_warm_then_stops_it() {
    let mut d = desired(Strategy::BlueGreen, 2, None);
    d.warm = Some(Warm {
        release: 1,
        until: T0 + 300_000,
    });
    let mut world = set(1, 3, true);
    world.extend(set(2, 3, true));
    assert_eq!(
        traffic(&d),
        [w(2, 100)],
        "all traffic on the new set, none on the warm one"
    );
    assert!(plan(std::slice::from_ref(&d), &world, T0 + 299_999).is_empty());
    let a = plan(std::slice::from_ref(&d), &world, T0 + 300_000);
    assert!(a.contains(&Action::ForgetWarm { app: app() }));
    assert_eq!(stops(&a).len(), 3);
    assert!(stops(&a).iter().all(|id| id.ends_with("-v1")));
}

#[test]
fn blue_green_rollback_to_the_warm_set_is_instant() {
    // Rollback: target back to v1 (warm and ready), from v2.
    let mut d = desired(Strategy::BlueGreen, 1, Some(Some(2)));
    d.warm = Some(Warm {
        release: 1,
        until: T0 + 300_000,
    });
    let mut world = set(1, 3, true);
    world.extend(set(2, 3, true));
    let a = plan(std::slice::from_ref(&d), &world, T0);
    assert_eq!(starts(&a), 0, "nothing to start");
    assert!(succeeded(&a), "done at once: {a:?}");
}

#[test]
fn blue_green_failure_never_touches_the_old_set() {
    let d = desired(Strategy::BlueGreen, 2, Some(Some(1)));
    let mut world = set(1, 3, true);
    world.extend(set(2, 3, false));
    let a = plan(std::slice::from_ref(&d), &world, T0 + 120_000);
    assert!(
        matches!(&a[..], [Action::RolloutFailed { release: 2, .. }]),
        "{a:?}"
    );
}

#[test]
fn first_blue_green_deploy_just_starts() {
    let d = desired(Strategy::BlueGreen, 1, Some(None));
    assert!(
        traffic(&d).is_empty(),
        "nothing to keep: every ready replica serves"
    );
    let a = plan(std::slice::from_ref(&d), &[], T0);
    assert_eq!(starts(&a), 3);
    assert!(succeeded(&plan(
        std::slice::from_ref(&d),
        &set(1, 3, true),
        T0
    )));
}

// ---------------------------------------------------------------- canary

#[test]
fn canary_waits_for_the_whole_set_then_takes_the_first_step() {
    let d = desired(Strategy::Canary, 2, Some(Some(1)));
    let mut world = set(1, 3, true);
    let a = plan(std::slice::from_ref(&d), &world, T0);
    assert_eq!(starts(&a), 3);
    assert_eq!(traffic(&d), [w(1, 100)]);
    world.extend(set(2, 3, true));
    let a = plan(std::slice::from_ref(&d), &world, T0 + 1_000);
    let step = canary_step(&a).expect("first step");
    assert_eq!(
        (
            step.step,
            step.weight,
            step.step_started_at,
            step.failed_checks
        ),
        (0, 10, T0 + 1_000, 0)
    );
    assert!(stops(&a).is_empty(), "the baseline keeps serving");
}

fn at_step(step: usize, weight: u32, failed: u32) -> AppDesired {
    let mut d = desired(Strategy::Canary, 2, Some(Some(1)));
    d.rollout.as_mut().unwrap().canary = Some(CanaryProgress {
        step,
        weight,
        step_started_at: T0,
        failed_checks: failed,
        last: None,
    });
    d
}

fn world_both() -> Vec<Replica> {
    let mut world = set(1, 3, true);
    world.extend(set(2, 3, true));
    world
}

#[test]
fn canary_traffic_follows_the_step() {
    assert_eq!(traffic(&at_step(0, 10, 0)), [w(2, 10), w(1, 90)]);
    assert_eq!(traffic(&at_step(1, 50, 0)), [w(2, 50), w(1, 50)]);
    assert_eq!(traffic(&at_step(2, 100, 0)), [w(2, 100)]);
}

#[test]
fn canary_step_is_judged_only_after_its_interval() {
    let mut d = at_step(0, 10, 0);
    d.window = Some(Window {
        canary: stats(2, 100, 0, 3),
        baseline: Some(stats(1, 900, 0, 3)),
    });
    assert!(plan(std::slice::from_ref(&d), &world_both(), T0 + 9_999).is_empty());
    let a = plan(std::slice::from_ref(&d), &world_both(), T0 + 10_000);
    let step = canary_step(&a).unwrap();
    assert_eq!((step.step, step.weight), (1, 50));
    assert_eq!(step.last.unwrap().verdict, "pass");
}

#[test]
fn canary_promotes_after_the_last_step() {
    let mut d = at_step(2, 100, 0);
    d.window = Some(Window {
        canary: stats(2, 100, 0, 3),
        baseline: None,
    });
    let a = plan(std::slice::from_ref(&d), &world_both(), T0 + 10_000);
    assert!(succeeded(&a), "{a:?}");
}

#[test]
fn canary_failed_checks_count_then_roll_back() {
    let mut d = at_step(1, 50, 0);
    d.window = Some(Window {
        canary: stats(2, 100, 20, 3),
        baseline: Some(stats(1, 100, 0, 3)),
    });
    let a = plan(std::slice::from_ref(&d), &world_both(), T0 + 10_000);
    let step = canary_step(&a).unwrap();
    assert_eq!(
        (step.step, step.failed_checks, step.step_started_at),
        (1, 1, T0 + 10_000),
        "same step, a new window"
    );
    assert!(step
        .last
        .unwrap()
        .verdict
        .starts_with("fail: success rate 80.0%"));
    let mut d2 = at_step(1, 50, 1);
    d2.window = d.window.clone();
    let a = plan(std::slice::from_ref(&d2), &world_both(), T0 + 10_000);
    match &a[..] {
        [Action::RolloutFailed { reason, .. }] => assert!(
            reason.contains("failed 2 of 2") && reason.contains("50%"),
            "{reason}"
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn canary_without_enough_traffic_waits_and_says_so_once() {
    let mut d = at_step(0, 10, 0);
    d.window = Some(Window {
        canary: stats(2, 3, 0, 3),
        baseline: Some(stats(1, 27, 0, 3)),
    });
    let a = plan(std::slice::from_ref(&d), &world_both(), T0 + 10_000);
    let step = canary_step(&a).unwrap();
    assert_eq!(
        (step.step, step.step_started_at),
        (0, T0),
        "the window goes on"
    );
    assert!(step
        .last
        .as_ref()
        .unwrap()
        .verdict
        .starts_with("wait: 3 canary requests"));
    d.rollout.as_mut().unwrap().canary = Some(step);
    assert!(
        plan(std::slice::from_ref(&d), &world_both(), T0 + 11_000).is_empty(),
        "no churn while nothing changes"
    );
}

#[test]
fn canary_that_never_gets_traffic_fails_at_the_deploy_timeout() {
    let d = at_step(0, 10, 0);
    let a = plan(std::slice::from_ref(&d), &world_both(), T0 + 120_000);
    assert!(matches!(&a[..], [Action::RolloutFailed { .. }]), "{a:?}");
}

#[test]
fn analysis_thresholds() {
    let spec = CanarySpec {
        min_requests: 10,
        ..CanarySpec::default()
    };
    let judge = |canary: ReleaseStats, baseline: Option<ReleaseStats>| {
        analyse(&spec, &Window { canary, baseline }, T0).0
    };
    assert_eq!(
        judge(stats(2, 100, 0, 3), Some(stats(1, 100, 0, 3))),
        Verdict::Pass
    );
    assert!(matches!(judge(stats(2, 9, 0, 3), None), Verdict::Wait(_)));
    // 98% < 99%
    assert!(matches!(judge(stats(2, 100, 2, 3), None), Verdict::Fail(m) if m.contains("98.0%")));
    // 99.0% passes the floor, but the baseline is at 100% (drop of 1 point is allowed)...
    assert_eq!(
        judge(stats(2, 100, 1, 3), Some(stats(1, 100, 0, 3))),
        Verdict::Pass
    );
    // ... a drop of more than 1 point is not.
    let spec_strict = CanarySpec {
        min_success_rate: 90.0,
        ..spec.clone()
    };
    let v = analyse(
        &spec_strict,
        &Window {
            canary: stats(2, 100, 5, 3),
            baseline: Some(stats(1, 100, 0, 3)),
        },
        T0,
    )
    .0;
    assert!(matches!(v, Verdict::Fail(m) if m.contains("below the baseline")));
    // p99 over 500 ms (bucket 9 = 1 s)
    assert!(
        matches!(judge(stats(2, 100, 0, 9), None), Verdict::Fail(m) if m.contains("p99 1000 ms > 500 ms"))
    );
    // p99 250 ms vs baseline 100 ms: 2.5x > 1.5x
    assert!(
        matches!(judge(stats(2, 100, 0, 7), Some(stats(1, 100, 0, 6))), Verdict::Fail(m) if m.contains("baseline"))
    );
    // p99 in the same bucket as the baseline passes
    assert_eq!(
        judge(stats(2, 100, 0, 6), Some(stats(1, 100, 0, 6))),
        Verdict::Pass
    );
    // the baseline without traffic in the window is ignored
    assert_eq!(
        judge(stats(2, 100, 0, 3), Some(stats(1, 0, 0, 0))),
        Verdict::Pass
    );
}

/// Under 100 requests a window's p99 is its slowest request: latency is not judged there
/// (the CI failure this mends: one 250 ms request among 8 rolled a good canary back).
#[test]
fn p99_needs_a_hundred_requests_to_be_judged() {
    let spec = CanarySpec {
        min_requests: 3,
        ..CanarySpec::default()
    };
    let w = |canary, baseline| Window {
        canary,
        baseline: Some(baseline),
    };
    // 8 canary requests in the 250 ms bucket against a 100 ms baseline: not judged
    let (v, a) = analyse(&spec, &w(stats(2, 8, 0, 7), stats(1, 400, 0, 6)), T0);
    assert_eq!(v, Verdict::Pass);
    assert_eq!(a.verdict, "pass (p99 not judged under 100 requests)");
    // nor over the absolute limit
    let (v, _) = analyse(&spec, &w(stats(2, 99, 0, 9), stats(1, 400, 0, 3)), T0);
    assert_eq!(v, Verdict::Pass);
    // a small window still fails on errors
    let (v, _) = analyse(&spec, &w(stats(2, 8, 1, 3), stats(1, 400, 0, 3)), T0);
    assert!(matches!(v, Verdict::Fail(m) if m.contains("success rate")));
    // 100 canary requests: judged, against the absolute limit even with a small baseline
    let (v, _) = analyse(&spec, &w(stats(2, 100, 0, 9), stats(1, 8, 0, 3)), T0);
    assert!(matches!(v, Verdict::Fail(m) if m.contains("> 500 ms")));
    // but the ratio needs 100 baseline requests too
    let (v, a) = analyse(&spec, &w(stats(2, 100, 0, 7), stats(1, 99, 0, 6)), T0);
    assert_eq!((v, a.verdict.as_str()), (Verdict::Pass, "pass"));
    let (v, _) = analyse(&spec, &w(stats(2, 100, 0, 7), stats(1, 100, 0, 6)), T0);
    assert!(matches!(v, Verdict::Fail(m) if m.contains("baseline")));
}

#[test]
fn reverted_canary_sends_all_traffic_back_and_stops_the_canary() {
    let mut d = desired(Strategy::Canary, 1, Some(Some(2)));
    d.rollout.as_mut().unwrap().reverting = Some("analysis failed".into());
    assert_eq!(traffic(&d), [w(1, 100)]);
    let a = plan(std::slice::from_ref(&d), &world_both(), T0);
    assert_eq!(stops(&a).len(), 3);
    assert!(stops(&a).iter().all(|id| id.ends_with("-v2")));
}

// ---------------------------------------------------------------- interruptions

#[test]
fn a_deploy_during_a_blue_green_rollout_takes_over() {
    // v2 was half up when v3 was deployed; v1 still serves and is the rollout's `from`.
    let d = desired(Strategy::BlueGreen, 3, Some(Some(1)));
    let mut world = set(1, 3, true);
    world.extend([replica(2, 1, true), replica(2, 2, false)]);
    let a = plan(std::slice::from_ref(&d), &world, T0);
    assert_eq!(starts(&a), 3, "the whole v3 set");
    assert!(
        stops(&a).is_empty(),
        "v2 replicas leave only with the switch"
    );
    assert_eq!(
        traffic(&d),
        [w(1, 100)],
        "v1 keeps all the traffic, v2 none"
    );
    let mut after = desired(Strategy::BlueGreen, 3, None);
    after.warm = Some(Warm {
        release: 1,
        until: T0 + 300_000,
    });
    world.extend(set(3, 3, true));
    let a = plan(std::slice::from_ref(&after), &world, T0 + 1);
    assert_eq!(
        stops(&a),
        ["web-2-v2", "web-1-v2"],
        "the abandoned v2 goes, the warm v1 stays"
    );
}

#[test]
fn a_deploy_during_a_rolling_rollout_replaces_the_abandoned_release_first() {
    let mut d = desired(Strategy::Rolling, 3, Some(Some(1)));
    d.processes
        .get_mut(&ProcessType::web())
        .unwrap()
        .deploy
        .max_surge = Amount::Count(1);
    let mut world = set(1, 2, true);
    world.push(replica(2, 1, false));
    world.push(replica(2, 2, true));
    let a = plan(std::slice::from_ref(&d), &world, T0);
    assert_eq!(
        stops(&a),
        ["web-1-v2"],
        "the unready abandoned replica goes first"
    );
}

#[test]
fn a_restarted_controller_resumes_a_canary_where_it_was() {
    // Re-adopted replicas, persisted progress at step 1 started 4 s ago: nothing to do yet.
    let d = at_step(1, 50, 1);
    let a = plan(std::slice::from_ref(&d), &world_both(), T0 + 4_000);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(traffic(&d), [w(2, 50), w(1, 50)]);
}
