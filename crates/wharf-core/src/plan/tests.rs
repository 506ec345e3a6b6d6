use super::*;
use crate::backoff::Backoff;
use crate::replica::Exit;
use std::time::Duration;
use wharf_types::release::Rollout;
use wharf_types::Amount;

const T0: UnixMillis = 1_000_000;

fn app() -> AppName {
    AppName::new("shop").unwrap()
}
fn web() -> ProcessType {
    ProcessType::web()
}

fn desired(release: u32, count: u32, rollout_from: Option<Option<u32>>) -> AppDesired {
    desired_with(
        release,
        count,
        rollout_from,
        Amount::Percent(100),
        Amount::Count(0),
    )
}

fn desired_with(
    release: u32,
    count: u32,
    rollout_from: Option<Option<u32>>,
    surge: Amount,
    unav: Amount,
) -> AppDesired {
    let deploy = DeploySpec {
        max_surge: surge,
        max_unavailable: unav,
        timeout: Duration::from_secs(60),
        ..DeploySpec::default()
    };
    AppDesired {
        app: app(),
        release: Some(release),
        processes: [(web(), ProcessDesired { count, deploy })]
            .into_iter()
            .collect(),
        rollout: rollout_from.map(|from| Rollout::new(release, from, T0, "deploy")),
        warm: None,
        window: None,
    }
}

fn running(release: u32, ordinal: u32, ready: bool) -> Replica {
    let mut r = Replica::new(app(), web(), release, ordinal, T0);
    r.phase = Phase::Running {
        pid: 100 + ordinal,
        since: T0,
    };
    r.ready = ready;
    r.ever_ready = ready;
    r
}

fn starts(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}
fn stops(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}
fn succeeded(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::RolloutSucceeded { .. }))
}

#[test]
fn first_deploy_starts_every_replica() {
    let a = plan(&[desired(1, 3, Some(None))], &[], T0);
    assert_eq!(starts(&a), ["web-1-v1", "web-2-v1", "web-3-v1"]);
    assert!(!succeeded(&a));
}

#[test]
fn first_deploy_succeeds_when_all_ready() {
    let reps = [
        running(1, 1, true),
        running(1, 2, true),
        running(1, 3, false),
    ];
    assert!(!succeeded(&plan(&[desired(1, 3, Some(None))], &reps, T0)));
    let reps = [
        running(1, 1, true),
        running(1, 2, true),
        running(1, 3, true),
    ];
    let a = plan(&[desired(1, 3, Some(None))], &reps, T0);
    assert_eq!(
        a,
        vec![Action::RolloutSucceeded {
            app: app(),
            release: 1
        }]
    );
}

#[test]
fn rolling_default_surges_then_replaces_as_new_become_ready() {
    let d = desired(2, 3, Some(Some(1)));
    let old = vec![
        running(1, 1, true),
        running(1, 2, true),
        running(1, 3, true),
    ];
    let a = plan(std::slice::from_ref(&d), &old, T0);
    assert_eq!(starts(&a), ["web-1-v2", "web-2-v2", "web-3-v2"]);
    assert!(
        stops(&a).is_empty(),
        "max_unavailable 0: no old replica leaves before a new one is ready"
    );

    let mut reps = old.clone();
    reps.extend([
        running(2, 1, true),
        running(2, 2, false),
        running(2, 3, false),
    ]);
    let a = plan(std::slice::from_ref(&d), &reps, T0);
    assert_eq!(
        stops(&a),
        ["web-3-v1"],
        "one new ready: one old leaves, highest ordinal first"
    );
    assert!(starts(&a).is_empty());

    let mut reps = old;
    reps.extend([
        running(2, 1, true),
        running(2, 2, true),
        running(2, 3, true),
    ]);
    let a = plan(&[d], &reps, T0);
    assert_eq!(stops(&a).len(), 3);
    assert!(succeeded(&a));
}

#[test]
fn rolling_with_max_unavailable_stops_first() {
    let d = desired_with(2, 3, Some(Some(1)), Amount::Count(0), Amount::Count(1));
    let old = vec![
        running(1, 1, true),
        running(1, 2, true),
        running(1, 3, true),
    ];
    let a = plan(std::slice::from_ref(&d), &old, T0);
    assert!(
        starts(&a).is_empty(),
        "no surge: nothing starts while 3 run"
    );
    assert_eq!(stops(&a), ["web-3-v1"]);
    let a = plan(&[d], &old[..2], T0);
    assert_eq!(starts(&a), ["web-1-v2"]);
    assert!(stops(&a).is_empty(), "2 ready of 3 is the floor");
}

#[test]
fn rolling_with_surge_one_replaces_one_at_a_time() {
    let d = desired_with(2, 3, Some(Some(1)), Amount::Count(1), Amount::Count(0));
    let old = vec![
        running(1, 1, true),
        running(1, 2, true),
        running(1, 3, true),
    ];
    let a = plan(std::slice::from_ref(&d), &old, T0);
    assert_eq!(starts(&a), ["web-1-v2"]);
    let mut reps = old.clone();
    reps.push(running(2, 1, false));
    let a = plan(std::slice::from_ref(&d), &reps, T0);
    assert!(starts(&a).is_empty() && stops(&a).is_empty());
    reps.pop();
    reps.push(running(2, 1, true));
    let a = plan(&[d], &reps, T0);
    assert_eq!(stops(&a), ["web-3-v1"]);
}

#[test]
fn scale_up_and_down_without_rollout() {
    let reps = vec![
        running(1, 1, true),
        running(1, 2, true),
        running(1, 3, true),
    ];
    let a = plan(&[desired(1, 5, None)], &reps, T0);
    assert_eq!(starts(&a), ["web-4-v1", "web-5-v1"]);
    let mut reps2 = reps.clone();
    reps2[0].ready = false;
    let a = plan(&[desired(1, 1, None)], &reps2, T0);
    assert_eq!(
        stops(&a),
        ["web-1-v1", "web-3-v1"],
        "unready first, then highest ordinal"
    );
    let a = plan(&[desired(1, 0, None)], &reps, T0);
    assert_eq!(stops(&a).len(), 3);
    assert!(
        plan(&[desired(1, 3, None)], &reps, T0).is_empty(),
        "converged: nothing to do"
    );
}

#[test]
fn exited_replica_restarts_after_backoff() {
    let mut r = running(1, 1, true);
    r.record_exit(Exit {
        at: T0 + 5_000,
        code: Some(1),
        signal: None,
        reason: "exited with code 1".into(),
    });
    let reps = vec![r, running(1, 2, true)];
    let d = desired(1, 2, None);
    assert!(
        plan(std::slice::from_ref(&d), &reps, T0 + 5_500).is_empty(),
        "inside the 1 s backoff"
    );
    assert_eq!(
        plan(&[d], &reps, T0 + 6_000),
        vec![Action::Restart {
            app: app(),
            id: "web-1-v1".into()
        }]
    );
}

#[test]
fn crash_looping_new_release_fails_the_rollout() {
    let mut bad = Replica::new(app(), web(), 2, 1, T0);
    bad.backoff = Backoff { failures: 3 };
    bad.last_exit = Some(Exit {
        at: T0,
        code: Some(3),
        signal: None,
        reason: "exited with code 3".into(),
    });
    bad.phase = Phase::Exited {
        restart_at: T0 + 4_000,
    };
    let reps = vec![running(1, 1, true), bad];
    let a = plan(&[desired(2, 1, Some(Some(1)))], &reps, T0 + 1_000);
    assert_eq!(a.len(), 1, "{a:?}");
    match &a[0] {
        Action::RolloutFailed {
            release,
            reason,
            replica,
            ..
        } => {
            assert_eq!(*release, 2);
            assert_eq!(replica.as_deref(), Some("web-1-v2"));
            assert!(
                reason.contains("exited 3 times") && reason.contains("code 3"),
                "{reason}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_replica_that_was_ready_once_does_not_fail_the_rollout_by_crashing() {
    let mut r = running(2, 1, true);
    r.backoff = Backoff { failures: 5 };
    r.phase = Phase::Exited {
        restart_at: T0 + 100_000,
    };
    let a = plan(&[desired(2, 1, Some(Some(1)))], &[r], T0 + 1_000);
    assert!(
        !a.iter().any(|a| matches!(a, Action::RolloutFailed { .. })),
        "{a:?}"
    );
}

#[test]
fn rollout_deadline_fails_naming_the_laggard() {
    let reps = vec![
        running(1, 1, true),
        running(2, 1, true),
        running(2, 2, false),
    ];
    let d = desired(2, 2, Some(Some(1)));
    assert!(!plan(std::slice::from_ref(&d), &reps, T0 + 59_999)
        .iter()
        .any(|a| matches!(a, Action::RolloutFailed { .. })));
    let a = plan(&[d], &reps, T0 + 60_000);
    match &a[..] {
        [Action::RolloutFailed {
            reason, replica, ..
        }] => {
            assert_eq!(replica.as_deref(), Some("web-2-v2"));
            assert!(reason.contains("1 of 2 replicas ready"), "{reason}");
            assert!(reason.contains("readiness"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn reverting_rollout_never_fails_and_restores_the_old_release() {
    // v2 failed; the controller set the target back to v1 with a reverting rollout.
    let mut d = desired(1, 2, Some(Some(2)));
    d.rollout.as_mut().unwrap().reverting = Some("v2 failed".into());
    let reps = vec![
        running(1, 1, true),
        running(2, 1, false),
        running(2, 2, false),
    ];
    let a = plan(&[d], &reps, T0 + 3_600_000);
    assert_eq!(starts(&a), ["web-2-v1"]);
    assert_eq!(
        stops(&a),
        ["web-2-v2", "web-1-v2"],
        "failed replicas are not ready: they go at once"
    );
    assert!(!a.iter().any(|a| matches!(a, Action::RolloutFailed { .. })));
}

#[test]
fn readoption_starts_nothing_for_running_replicas() {
    let reps = vec![running(3, 1, false), running(3, 2, false)];
    let a = plan(&[desired(3, 2, None)], &reps, T0);
    assert!(
        a.is_empty(),
        "re-adopted replicas waiting for readiness are not duplicated: {a:?}"
    );
}

#[test]
fn orphans_and_undesired_processes_are_stopped() {
    let mut stray = running(1, 1, true);
    stray.app = AppName::new("gone").unwrap();
    let mut worker = running(1, 1, true);
    worker.process = ProcessType::new("worker").unwrap();
    worker.id = "worker-1-v1".into();
    let reps = vec![running(1, 1, true), stray, worker];
    let a = plan(&[desired(1, 1, None)], &reps, T0);
    assert_eq!(stops(&a), ["worker-1-v1", "web-1-v1"]);
}

#[test]
fn no_target_release_stops_everything() {
    let mut d = desired(1, 1, None);
    d.release = None;
    let a = plan(&[d], &[running(1, 1, true)], T0);
    assert_eq!(stops(&a), ["web-1-v1"]);
}

#[test]
fn new_ids_skip_ordinals_of_stopping_replicas() {
    let mut leaving = running(1, 1, true);
    leaving.phase = Phase::Stopping {
        since: T0,
        draining: true,
    };
    let a = plan(&[desired(1, 1, None)], &[leaving], T0);
    assert_eq!(starts(&a), ["web-2-v1"]);
}

/// Simulates rollouts over a grid of sizes and budgets: replicas become ready one tick
/// after starting, stopping replicas vanish next tick. Checks the rollout invariants.
#[test]
fn simulated_rollouts_respect_surge_and_availability() {
    let mut cases = 0;
    for n in 1..=8u32 {
        for surge in [
            Amount::Count(0),
            Amount::Count(1),
            Amount::Count(2),
            Amount::Percent(25),
            Amount::Percent(100),
        ] {
            for unav in [Amount::Count(0), Amount::Count(1), Amount::Percent(50)] {
                let s = surge.resolve(n, true);
                let u = unav.resolve(n, false);
                if s == 0 && u == 0 {
                    continue;
                }
                cases += 1;
                let d = desired_with(2, n, Some(Some(1)), surge, unav);
                let mut world: Vec<Replica> = (1..=n).map(|i| running(1, i, true)).collect();
                let mut done = false;
                for tick in 0..100 {
                    let actions = plan(std::slice::from_ref(&d), &world, T0 + tick);
                    world.retain(|r| !r.is_stopping());
                    for r in world.iter_mut() {
                        if r.is_running() && !r.ready {
                            r.ready = true;
                            r.ever_ready = true;
                        }
                    }
                    for a in &actions {
                        match a {
                            Action::Start {
                                release, ordinal, ..
                            } => world.push(running(*release, *ordinal, false)),
                            Action::Stop { id, .. } => {
                                let r = world
                                    .iter_mut()
                                    .find(|r| &r.id == id)
                                    .expect("stop of a known replica");
                                r.phase = Phase::Stopping {
                                    since: T0,
                                    draining: true,
                                };
                            }
                            Action::RolloutSucceeded { .. } => done = true,
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    let alive: Vec<&Replica> = world.iter().filter(|r| !r.is_stopping()).collect();
                    let ready = alive.iter().filter(|r| r.is_ready()).count() as u32;
                    assert!(
                        alive.len() as u32 <= n + s.max(1),
                        "n={n} s={s} u={u}: {} alive",
                        alive.len()
                    );
                    assert!(ready >= n - u, "n={n} s={s} u={u}: only {ready} ready");
                    if done {
                        break;
                    }
                }
                assert!(done, "n={n} s={s} u={u}: rollout never completed");
                let alive: Vec<&Replica> = world.iter().filter(|r| !r.is_stopping()).collect();
                assert!(alive.iter().all(|r| r.release == 2) || alive.len() as u32 > n);
            }
        }
    }
    assert!(cases > 90);
}
