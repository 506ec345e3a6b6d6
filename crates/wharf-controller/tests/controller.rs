//! The control loop against a scripted runtime and the in-memory store: deploys, failed
//! rollouts, scaling, config, re-adoption and destroy, without real processes.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{FakeRuntime, Routes};
use wharf_controller::{Controller, DeployOptions, Progress, SecretEnv, Settings};
use wharf_core::clock::SystemClock;
use wharf_core::ports::{Handle, Liveness};
use wharf_runtime::Layout;
use wharf_store::{KeyVault, MemStore};
use wharf_types::api::{DeployEvent, ReplicaState};
use wharf_types::AppName;

struct Harness {
    c: Controller,
    rt: Arc<FakeRuntime>,
    routes: Arc<Routes>,
    data: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Replicas outlive the control plane; only the last harness of a test stops them.
    stop_replicas: bool,
}

impl Harness {
    /// Stops the control loop as a crash would: replicas keep running.
    fn crash(mut self) -> tempfile::TempDir {
        self.stop_replicas = false;
        self.data.take().unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if self.stop_replicas {
            for a in self.rt.live.lock().unwrap().values() {
                a.store(false, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
}

fn harness_with(rt: Arc<FakeRuntime>, store: Arc<MemStore>, data: tempfile::TempDir) -> Harness {
    let routes = Arc::new(Routes::default());
    let settings = Settings {
        public_port: 8080,
        tick: Duration::from_millis(10),
        secret_env: Some(SecretEnv {
            exe: "/usr/bin/wharf".into(),
            claim: "127.0.0.1:9".into(),
            isolated: None,
        }),
        isolated_network: true,
    };
    let vault = Arc::new(KeyVault::load(None, &data.path().join("keys/master.key")).unwrap());
    let c = Controller::new(
        store,
        vault,
        rt.clone(),
        routes.clone(),
        Arc::new(SystemClock),
        Layout::new(data.path()),
        settings,
    )
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = c.clone();
    tokio::spawn(async move {
        run.run(async {
            let _ = rx.await;
        })
        .await
    });
    Harness {
        c,
        rt,
        routes,
        data: Some(data),
        stop: Some(tx),
        stop_replicas: true,
    }
}

fn harness() -> Harness {
    harness_with(
        Arc::new(FakeRuntime::default()),
        Arc::new(MemStore::default()),
        tempfile::tempdir().unwrap(),
    )
}

fn app_dir(replicas: u32, env: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let toml = format!(
        "app = \"shop\"\n[env]\n{env}\n[process.web]\ncommand = \"serve\"\nreplicas = {replicas}\n[process.web.readiness]\nhttp = \"/health\"\ninterval = \"50ms\"\n[process.web.deploy]\ntimeout = \"2s\"\n"
    );
    std::fs::write(d.path().join("wharf.toml"), toml).unwrap();
    d
}

async fn deploy(c: &Controller, dir: &std::path::Path) -> Vec<DeployEvent> {
    let (progress, mut rx) = Progress::channel(1024);
    let opts = DeployOptions {
        dir: dir.to_path_buf(),
        app: None,
        strategy: None,
        detach: false,
    };
    let c2 = c.clone();
    tokio::spawn(async move { c2.deploy(opts, progress).await });
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("deploy stalled")
    {
        events.push(e);
    }
    events
}

fn outcome(events: &[DeployEvent]) -> &DeployEvent {
    events.last().expect("no events")
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn shop() -> AppName {
    AppName::new("shop").unwrap()
}

fn backends(h: &Harness) -> Vec<(String, u32)> {
    let t = h.routes.last.lock().unwrap();
    t.routes
        .iter()
        .flat_map(|r| r.backends.iter().map(|b| (b.replica.clone(), b.release)))
        .collect()
}

/// A replica with its own network is probed and routed at the address its runtime gave
/// it, not at the host's loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_replicas_are_probed_and_routed_at_their_own_address() {
    let h = harness();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("wharf.toml"),
        "app = \"shop\"\n[process.web]\ncommand = \"serve\"\nreplicas = 2\nnetwork = \"isolated\"\n[process.web.readiness]\nhttp = \"/health\"\ninterval = \"50ms\"\n",
    )
    .unwrap();
    let ev = deploy(&h.c, d.path()).await;
    assert!(
        matches!(outcome(&ev), DeployEvent::Done { release: 1, .. }),
        "{ev:?}"
    );
    let addrs: Vec<std::net::SocketAddr> = {
        let t = h.routes.last.lock().unwrap();
        t.routes
            .iter()
            .flat_map(|r| r.backends.iter().map(|b| b.addr))
            .collect()
    };
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert!(
        addrs
            .iter()
            .all(|a| a.ip() == std::net::Ipv4Addr::new(127, 0, 0, 2)),
        "routed at the replicas' own address: {addrs:?}"
    );
    assert!(h
        .rt
        .launches
        .lock()
        .unwrap()
        .iter()
        .all(|l| l.network == wharf_types::Network::Isolated));
    let ps = h.c.ps(Some(&shop())).unwrap();
    assert!(
        ps.iter().all(|r| r
            .address
            .as_deref()
            .is_some_and(|a| a.starts_with("127.0.0.2:"))),
        "{ps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_then_replace_routes_only_ready_replicas() {
    let h = harness();
    let dir = app_dir(2, "V = \"1\"");
    let ev = deploy(&h.c, dir.path()).await;
    assert!(
        matches!(outcome(&ev), DeployEvent::Done { release: 1, .. }),
        "{ev:?}"
    );
    assert_eq!(backends(&h).len(), 2);
    let ev = deploy(&h.c, app_dir(2, "V = \"2\"").path()).await;
    assert!(
        matches!(outcome(&ev), DeployEvent::Done { release: 2, .. }),
        "{ev:?}"
    );
    assert!(
        backends(&h).iter().all(|(_, r)| *r == 2),
        "{:?}",
        backends(&h)
    );
    until("old replicas stopped", || h.rt.running() == 2).await;
    let ps = h.c.ps(Some(&shop())).unwrap();
    assert_eq!(ps.len(), 2);
    assert!(ps
        .iter()
        .all(|r| r.release == 2 && r.state == ReplicaState::Ready));
    assert_eq!(h.c.releases(&shop()).unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_release_is_rolled_back_and_the_old_one_keeps_serving() {
    let h = harness();
    deploy(&h.c, app_dir(2, "V = \"1\"").path()).await;
    h.rt.crash_releases.lock().unwrap().insert(2);
    let ev = deploy(&h.c, app_dir(2, "V = \"2\"").path()).await;
    match outcome(&ev) {
        DeployEvent::Failed {
            reason,
            replica,
            logs,
            ..
        } => {
            assert!(
                reason.contains("before becoming ready") && reason.contains("rolled back to v1"),
                "{reason}"
            );
            assert!(replica.as_deref().unwrap().ends_with("-v2"));
            assert!(logs[0].contains("crashing on purpose"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(backends(&h).iter().all(|(_, r)| *r == 1));
    let status = h.c.status(&shop()).unwrap();
    assert_eq!(status.release, Some(1));
    assert!(!status.last_outcome.unwrap().succeeded);
    until("v2 replicas gone", || {
        h.c.ps(Some(&shop()))
            .unwrap()
            .iter()
            .all(|r| r.release == 1)
    })
    .await;
    assert!(
        !h.rt
            .signals
            .lock()
            .unwrap()
            .iter()
            .any(|(id, _)| id.ends_with("-v1")),
        "v1 was never touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_release_fails_at_the_deadline() {
    let h = harness();
    deploy(&h.c, app_dir(1, "V = \"1\"").path()).await;
    h.rt.unready_releases.lock().unwrap().insert(2);
    let ev = deploy(&h.c, app_dir(1, "V = \"2\"").path()).await;
    match outcome(&ev) {
        DeployEvent::Failed { reason, .. } => assert!(
            reason.contains("not ready within 2s") && reason.contains("readiness"),
            "{reason}"
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        backends(&h).iter().map(|(_, r)| *r).collect::<Vec<_>>(),
        [1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_deploy_failure_leaves_nothing_running() {
    let h = harness();
    h.rt.crash_releases.lock().unwrap().insert(1);
    let ev = deploy(&h.c, app_dir(1, "").path()).await;
    match outcome(&ev) {
        DeployEvent::Failed { reason, .. } => {
            assert!(reason.contains("nothing was serving before"), "{reason}")
        }
        other => panic!("unexpected {other:?}"),
    }
    until("slots gone", || h.c.ps(Some(&shop())).unwrap().is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_config_and_errors() {
    let h = harness();
    deploy(&h.c, app_dir(1, "V = \"1\"").path()).await;
    let counts = [("web".to_string(), 3)].into_iter().collect();
    assert_eq!(h.c.scale(&shop(), &counts).unwrap()["web"], 3);
    until("3 ready", || {
        h.c.ps(Some(&shop()))
            .unwrap()
            .iter()
            .filter(|r| r.state == ReplicaState::Ready)
            .count()
            == 3
    })
    .await;
    let bad = [("worker".to_string(), 1)].into_iter().collect();
    let e = h.c.scale(&shop(), &bad).unwrap_err();
    assert!(e.to_string().contains("no process type `worker`"), "{e}");

    let (progress, mut rx) = Progress::channel(1024);
    let set = [("GREETING".to_string(), "hi".to_string())]
        .into_iter()
        .collect();
    h.c.configure(&shop(), set, vec![], progress).await;
    let mut last = None;
    while let Ok(e) = rx.try_recv() {
        last = Some(e);
    }
    assert!(
        matches!(last, Some(DeployEvent::Done { release: 2, .. })),
        "{last:?}"
    );
    assert_eq!(h.c.config(&shop()).unwrap()["GREETING"], "hi");
    assert_eq!(h.c.config(&shop()).unwrap()["V"], "1");
    until("3 ready on v2", || {
        h.c.ps(Some(&shop()))
            .unwrap()
            .iter()
            .filter(|r| r.release == 2 && r.state == ReplicaState::Ready)
            .count()
            == 3
    })
    .await;

    let (progress, mut rx) = Progress::channel(16);
    h.c.configure(&shop(), Default::default(), vec!["V".into()], progress)
        .await;
    match rx.recv().await {
        Some(DeployEvent::Failed { reason, .. }) => {
            assert!(reason.contains("manifest"), "{reason}")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_re_adopts_running_replicas_without_duplicates() {
    let store = Arc::new(MemStore::default());
    let data = tempfile::tempdir().unwrap();
    let rt = Arc::new(FakeRuntime::default());
    let first = harness_with(rt.clone(), store.clone(), data);
    deploy(&first.c, app_dir(2, "").path()).await;
    let handles: Vec<Handle> = first
        .c
        .ps(Some(&shop()))
        .unwrap()
        .iter()
        .map(|r| Handle {
            app: shop(),
            process: wharf_types::ProcessType::web(),
            release: r.release,
            id: r.id.clone(),
            pid: r.pid.unwrap(),
            start_time: 1,
            port: r
                .address
                .as_ref()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap(),
            started_at: 0,
            addr: None,
        })
        .collect();
    let started_before = rt.started.lock().unwrap().len();
    // The "server" dies: its loop stops, the replicas (listener threads) keep running.
    let data = first.crash();
    *rt.adoptable.lock().unwrap() = handles
        .iter()
        .map(|h| (h.clone(), Liveness::Running))
        .collect();
    let second = harness_with(rt.clone(), store, data);
    until("adopted replicas ready", || {
        second
            .c
            .ps(Some(&shop()))
            .unwrap()
            .iter()
            .filter(|r| r.state == ReplicaState::Ready)
            .count()
            == 2
    })
    .await;
    assert_eq!(backends(&second).len(), 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        rt.started.lock().unwrap().len(),
        started_before,
        "nothing was started twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_stops_everything_and_forgets_the_app() {
    let h = harness();
    deploy(&h.c, app_dir(2, "").path()).await;
    h.c.destroy(&shop()).await.unwrap();
    assert_eq!(h.rt.running(), 0);
    assert!(h.c.apps().is_empty());
    assert!(backends(&h).is_empty());
    let e = h.c.destroy(&shop()).await.unwrap_err();
    assert!(e.to_string().contains("no app named shop"));
    let _ = &h.data;
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_a_replica_only_through_a_one_use_ticket() {
    use wharf_types::secret::SecretsRequest;
    let h = harness();
    let dir = app_dir(1, "");
    let events = deploy(&h.c, dir.path()).await;
    assert!(
        matches!(outcome(&events), DeployEvent::Done { .. }),
        "{events:?}"
    );
    let (progress, mut rx) = Progress::channel(64);
    let req = SecretsRequest {
        set: std::collections::BTreeMap::from([("DB".to_string(), "plain-value".to_string())]),
        ..Default::default()
    };
    let c2 = h.c.clone();
    tokio::spawn(async move { c2.set_secrets(&shop(), req, progress).await });
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("secrets set stalled")
    {
        events.push(e);
    }
    assert!(
        matches!(outcome(&events), DeployEvent::Done { release: 2, .. }),
        "{events:?}"
    );
    let last = h.rt.launches.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.release, 2);
    assert!(
        last.command.contains(" secret-env ") && last.command.ends_with(" 'serve'"),
        "{}",
        last.command
    );
    assert!(
        !format!("{last:?}").contains("plain-value"),
        "no plaintext in the launch spec"
    );
    let ticket = last.env[wharf_controller::TICKET_VAR].clone();
    let env = h.c.claim_secrets(&ticket).unwrap();
    assert_eq!(env["DB"], "plain-value");
    assert!(h.c.claim_secrets(&ticket).is_err(), "a ticket works once");
    let list = h.c.secrets(&shop()).unwrap();
    assert_eq!(
        (list[0].name.as_str(), list[0].version, list[0].live),
        ("DB", 1, true)
    );
    let audit = h.c.audit_log(Some("shop"), None).unwrap();
    assert!(
        audit.iter().any(|e| e.action.contains("secrets read (DB)")),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_off_gets_the_release_config_and_secrets_through_a_ticket() {
    use wharf_types::secret::SecretsRequest;
    let h = harness();
    let dir = app_dir(1, "");
    deploy(&h.c, dir.path()).await;
    let e = h.c.start_run(&shop(), "  ").unwrap_err();
    assert!(e.to_string().contains("no command to run"), "{e}");
    let e =
        h.c.start_run(&AppName::new("nope").unwrap(), "true")
            .unwrap_err();
    assert!(e.to_string().contains("no app named nope"), "{e}");

    let (progress, mut rx) = Progress::channel(64);
    let req = SecretsRequest {
        set: std::collections::BTreeMap::from([("DB".to_string(), "one-off-value".to_string())]),
        ..Default::default()
    };
    let c2 = h.c.clone();
    tokio::spawn(async move { c2.set_secrets(&shop(), req, progress).await });
    while tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("secrets set stalled")
        .is_some()
    {}

    let spec = h.c.start_run(&shop(), "node migrate.js").unwrap();
    assert_eq!(spec.release, 2);
    assert!(spec.id.starts_with("run-"), "{}", spec.id);
    let launch = h.rt.launches.lock().unwrap().last().cloned().unwrap();
    assert_eq!(launch.id, spec.id);
    assert_eq!(launch.process.as_str(), "run");
    assert_eq!(launch.port, 0);
    assert!(!launch.env.contains_key("PORT"));
    assert_eq!(launch.env["WHARF_RELEASE"], "2");
    assert!(
        launch.command.contains(" secret-env ") && launch.command.ends_with(" 'node migrate.js'"),
        "{}",
        launch.command
    );
    assert!(!format!("{launch:?}").contains("one-off-value"));
    let env =
        h.c.claim_secrets(&launch.env[wharf_controller::TICKET_VAR])
            .unwrap();
    assert_eq!(env["DB"], "one-off-value");

    let e = h.c.finish_run(&shop(), "../../etc").unwrap_err();
    assert!(e.to_string().contains("not the id of a one-off"), "{e}");
    assert!(h.rt.finished_oneoffs.lock().unwrap().is_empty());
    h.c.finish_run(&shop(), &spec.id).unwrap();
    assert_eq!(*h.rt.finished_oneoffs.lock().unwrap(), vec![spec.id]);
}
