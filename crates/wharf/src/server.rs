//! `wharf server`: the composition root. Wires store, runtime, router, controller and API.

use crate::client::{Client, Failure, Result};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use wharf_controller::{Controller, SecretEnv, Settings};
use wharf_core::clock::SystemClock;
use wharf_router::{Router, RouterConfig};
use wharf_runtime::sandbox::network::NetworkConfig;
use wharf_runtime::sandbox::{Sandbox, SandboxConfig};
use wharf_runtime::{Layout, ProcessRuntime};
use wharf_store::{KeyVault, RedbStore};

/// How long the router may take to finish in-flight requests at shutdown.
const ROUTER_DRAIN: Duration = Duration::from_secs(30);
/// How long API connections get to finish when the control plane stops.
const API_STOP: Duration = Duration::from_secs(1);
/// How long a server taking over waits for its re-adopted replicas' first probes
/// before it starts accepting (the old server serves meanwhile).
const TAKEOVER_WARMUP: Duration = Duration::from_secs(5);

pub struct Options {
    /// Forks replica inits (started by `main` while the process had one thread).
    pub launcher: Option<wharf_runtime::launcher::Launcher>,
    pub listen: String,
    pub listen_tls: Option<String>,
    /// ACME for the routes' real domain names (with `listen_tls`).
    pub acme: Option<wharf_router::AcmeOptions>,
    pub api: Option<String>,
    /// Serve the TCP API over TLS with this certificate (extra names for a generated one).
    pub api_tls: Option<crate::tls::CertSource>,
    /// Master key file (default `DATA/keys/master.key`).
    pub master_key_file: Option<std::path::PathBuf>,
    /// The value of `$WHARF_MASTER_KEY`, taken out of the environment at start so that
    /// no child process inherits it.
    pub master_key_env: Option<String>,
    /// `auto`, `sandbox` or `none`.
    pub isolation: String,
    pub cgroup_parent: String,
    /// Take the sockets over from the server running on the data dir.
    pub takeover: bool,
    /// Network of replicas with `network = "isolated"`.
    pub replica_subnet: wharf_core::addresses::Subnet,
    pub bridge: String,
}

pub async fn run(data_dir: &Path, mut opts: Options) -> Result<()> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        Failure::failed(format!(
            "cannot create the data dir {}: {e}",
            data_dir.display()
        ))
    })?;
    let _ = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700));
    let layout = Layout::new(data_dir);
    let exe = std::env::current_exe()
        .map_err(|e| Failure::failed(format!("cannot find the wharf binary: {e}")))?;
    let mut runtime = runtime(
        &layout,
        &opts,
        vec![exe.clone().into_os_string(), "init".into()],
    )?;
    if let Some(launcher) = opts.launcher.take() {
        runtime = runtime.with_launcher(launcher);
    }
    // However this server ends, the empty directories of its run state and cgroups go
    // (those of replicas still running stay, for the next start).
    let mut leftovers = Leftovers {
        run_state: (runtime.layout().run_state() != data_dir)
            .then(|| runtime.layout().run_state().to_path_buf()),
        cgroup_bases: runtime.sandbox().map(|s| s.base_dirs()).unwrap_or_default(),
    };

    let socket = layout.socket();
    if socket.exists() && !opts.takeover {
        if Client::unix(socket.clone()).healthy().await {
            return Err(Failure::failed(format!(
                "another wharf server is running with the data dir {}; stop it, pass a different --data-dir, or replace it without downtime with --takeover",
                data_dir.display()
            )));
        }
        let _ = std::fs::remove_file(&socket);
    }
    let key_file = opts
        .master_key_file
        .clone()
        .unwrap_or_else(|| data_dir.join("keys").join("master.key"));
    let vault = KeyVault::load(opts.master_key_env.as_deref(), &key_file)
        .map_err(|e| Failure::failed(e.to_string()))?;
    if opts.master_key_env.is_none() && key_file.starts_with(data_dir) {
        eprintln!(
            "wharf: the master key is {} inside the data dir; in production keep it elsewhere (--master-key-file) or pass it in $WHARF_MASTER_KEY",
            key_file.display()
        );
    }
    // Everything that can fail on our side was checked: now the old server lets go.
    let mut taken = match opts.takeover {
        true => {
            let dir = data_dir.to_path_buf();
            let t = tokio::task::spawn_blocking(move || crate::handoff::take(&dir))
                .await
                .map_err(|e| Failure::failed(e.to_string()))??;
            println!(
                "wharf: took over the sockets ({}) of the server running on this data dir",
                t.listeners.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            let _ = std::fs::remove_file(&socket);
            Some(t)
        }
        false => None,
    };
    let store = Arc::new(open_store(&layout.store(), taken.is_some()).await?);

    let listener = match taken.as_mut().and_then(|t| t.listeners.remove("router")) {
        Some(l) => crate::handoff::listener(l)?,
        None => TcpListener::bind(&opts.listen).await.map_err(|e| {
            Failure::failed(format!(
                "cannot listen on {}: {e}; pass --listen 127.0.0.1:PORT",
                opts.listen
            ))
        })?,
    };
    let router_addr = listener
        .local_addr()
        .map_err(|e| Failure::failed(e.to_string()))?;
    let https = match (
        &opts.listen_tls,
        taken
            .as_mut()
            .and_then(|t| t.listeners.remove("router-tls")),
    ) {
        (Some(_), Some(l)) => {
            Some(https_listener(data_dir, crate::handoff::listener(l)?, opts.acme.clone()).await?)
        }
        (Some(addr), None) => {
            let l = TcpListener::bind(addr).await.map_err(|e| {
                Failure::failed(format!(
                    "cannot listen on {addr}: {e}; pass --listen-tls 127.0.0.1:PORT"
                ))
            })?;
            Some(https_listener(data_dir, l, opts.acme.clone()).await?)
        }
        (None, _) => None,
    };
    let defaults = RouterConfig::default();
    let router = Router::new(RouterConfig {
        https: https.as_ref().map(|(_, https)| https.clone()),
        on_worker_start: crate::pinning::router_workers(defaults.workers),
        ..defaults
    });

    // Replicas claim their secrets here (loopback; a one-use ticket is the credential).
    let claim_listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| {
        Failure::failed(format!("cannot listen on 127.0.0.1 for secret claims: {e}"))
    })?;
    let claim_addr = claim_listener
        .local_addr()
        .map_err(|e| Failure::failed(e.to_string()))?;
    let runtime = Arc::new(runtime);
    // Replicas with their own network claim on their bridge instead (bound when needed).
    let (isolated_claim, claim_controller) = crate::claims::isolated_claim(&runtime).unzip();
    let settings = Settings {
        public_port: router_addr.port(),
        secret_env: Some(SecretEnv {
            exe: exe.clone(),
            claim: claim_addr.to_string(),
            isolated: isolated_claim,
        }),
        isolated_network: runtime.sandbox().is_some(),
        ..Settings::default()
    };
    let controller = Controller::new(
        store.clone(),
        Arc::new(vault),
        runtime,
        router.clone(),
        Arc::new(SystemClock),
        layout.clone(),
        settings,
    )
    .map_err(|e| Failure::failed(e.to_string()))?;
    if let Some(slot) = claim_controller {
        let _ = slot.set(controller.clone());
    }
    // Publish what was re-adopted before the first request arrives.
    controller.tick();

    let unix = UnixListener::bind(&socket)
        .map_err(|e| Failure::failed(format!("cannot bind {}: {e}", socket.display())))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Failure::failed(e.to_string()))?;
    let api = wharf_api::router(controller.clone(), true);
    let tcp_api = match (
        &opts.api,
        taken.as_mut().and_then(|t| t.listeners.remove("api")),
    ) {
        (Some(_), Some(l)) => Some(check_api(
            crate::handoff::listener(l)?,
            opts.api_tls.is_some(),
        )?),
        (Some(addr), None) => Some(bind_api(addr, opts.api_tls.is_some()).await?),
        (None, _) => None,
    };
    let api_addr = tcp_api.as_ref().and_then(|l| l.local_addr().ok());
    let tls = match (&opts.api_tls, api_addr) {
        (Some(src), Some(addr)) => {
            let mut src = crate::tls::CertSource {
                given: src.given.clone(),
                names: src.names.clone(),
            };
            for n in ["localhost", "127.0.0.1", "::1"] {
                src.names.push(n.to_string());
            }
            if !addr.ip().is_unspecified() {
                src.names.push(addr.ip().to_string());
            }
            src.names.sort();
            src.names.dedup();
            let config = crate::tls::server_config(data_dir, &src)?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };

    // A successor can take these sockets over (`--takeover`).
    let (handoff_tx, mut handoff_rx) = tokio::sync::mpsc::channel(4);
    let mut offered = vec![("router", dup(&listener)?)];
    if let Some((l, _)) = &https {
        offered.push(("router-tls", dup(l)?));
    }
    if let Some(l) = &tcp_api {
        offered.push(("api", dup(l)?));
    }
    crate::handoff::offer(data_dir, offered, handoff_tx)?;

    let info = serde_json::json!({
        "pid": std::process::id(),
        "router": router_addr.to_string(),
        "router_tls": https.as_ref().and_then(|(l, _)| l.local_addr().ok()).map(|a| a.to_string()),
        "router_ca": https.as_ref().map(|(_, h)| h.tls.ca_cert().display().to_string()),
        "api": api_addr.map(|a| a.to_string()),
        "api_tls": tls.is_some(),
        "api_ca": (tls.is_some() && opts.api_tls.as_ref().is_some_and(|t| t.given.is_none()))
            .then(|| crate::tls::ca_path(data_dir).display().to_string()),
        "socket": socket.display().to_string(),
    });
    let _ = std::fs::write(data_dir.join("server.json"), info.to_string());
    println!("wharf: router listening on http://{router_addr}");
    if let Some((listener, h)) = &https {
        if let Ok(addr) = listener.local_addr() {
            println!("wharf: router listening on https://{addr}");
        }
        println!(
            "wharf: certificates for *.localhost come from the local CA {} (trust it: curl --cacert {})",
            h.tls.ca_cert().display(),
            h.tls.ca_cert().display()
        );
    }
    println!(
        "wharf: api on {}{}",
        socket.display(),
        api_addr
            .map(|a| format!(" and {scheme}://{a}"))
            .unwrap_or_default()
    );
    println!("wharf: data dir {}", data_dir.display());

    // The control plane and the API stop first (at shutdown, or when a successor takes
    // over); the router last, after draining.
    let (plane_tx, plane_rx) = tokio::sync::watch::channel(false);
    let (router_tx, router_rx) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut plane = Vec::new();
    plane.push(tokio::spawn({
        let (api, stop) = (api.clone(), wait_stop(plane_rx.clone()));
        async move {
            let _ = axum::serve(unix, api).with_graceful_shutdown(stop).await;
        }
    }));
    if let Some(l) = tcp_api {
        let stop = wait_stop(plane_rx.clone());
        let api = wharf_api::router(controller.clone(), false);
        plane.push(match tls {
            Some(acceptor) => tokio::spawn(async move {
                let _ = crate::tls_serve::serve(l, acceptor, api, stop).await;
            }),
            None => tokio::spawn(async move {
                let _ = axum::serve(l, api).with_graceful_shutdown(stop).await;
            }),
        });
    }
    plane.push(tokio::spawn({
        let (claims, stop) = (
            wharf_api::claim_router(controller.clone()),
            wait_stop(plane_rx.clone()),
        );
        async move {
            let _ = axum::serve(claim_listener, claims)
                .with_graceful_shutdown(stop)
                .await;
        }
    }));
    let mut control_task = Some(tokio::spawn({
        let (ctl, stop) = (controller.clone(), wait_stop(plane_rx.clone()));
        async move { ctl.run(stop).await }
    }));
    if taken.is_some() {
        // The old server serves until the re-adopted replicas were probed and routed.
        let deadline = tokio::time::Instant::now() + TAKEOVER_WARMUP;
        while controller.warming_up() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        controller.tick();
    }
    let router_task = tokio::spawn(router.clone().serve(listener, wait_stop(router_rx.clone())));
    let tls_task = https.map(|(listener, _)| {
        tokio::spawn(router.clone().serve_tls(listener, wait_stop(router_rx)))
    });
    if let Some(t) = taken {
        t.serving()?;
    }

    let handed_over = loop {
        tokio::select! {
            () = shutdown_signal() => break false,
            request = handoff_rx.recv() => match request {
                Some(crate::handoff::Request::Release(done)) => {
                    println!("wharf: a new server takes over; stopping the control plane, routing on");
                    let _ = plane_tx.send(true);
                    if let Some(t) = control_task.take() {
                        let _ = t.await;
                    }
                    stop_all(&mut plane).await;
                    store.close();
                    let _ = done.send(());
                }
                Some(crate::handoff::Request::Serving) => break true,
                None => break false,
            },
        }
    };
    if handed_over {
        leftovers.cgroup_bases.clear();
        println!("wharf: the new server accepts connections; draining and exiting");
    } else {
        println!(
            "wharf: shutting down (replicas keep running and are re-adopted at the next start)"
        );
    }
    let _ = plane_tx.send(true);
    let _ = router_tx.send(true);
    if let Some(t) = control_task.take() {
        let _ = t.await;
    }
    stop_all(&mut plane).await;
    let routers = async move {
        let _ = router_task.await;
        if let Some(t) = tls_task {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(ROUTER_DRAIN, routers).await.is_err() {
        eprintln!(
            "wharf: some requests did not finish within {}s",
            ROUTER_DRAIN.as_secs()
        );
    }
    // After a takeover these belong to the new server.
    if !handed_over {
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(data_dir.join("server.json"));
        let _ = std::fs::remove_file(crate::handoff::socket(data_dir));
    }
    Ok(())
}

/// Waits a moment for API tasks to finish their graceful shutdown; then ends them (a
/// `logs -f` stream would otherwise hold them forever).
async fn stop_all(tasks: &mut Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks.drain(..) {
        let abort = t.abort_handle();
        if tokio::time::timeout(API_STOP, t).await.is_err() {
            abort.abort();
        }
    }
}

/// A copy of a listening socket, to hand to a successor.
fn dup(l: &TcpListener) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    l.as_fd()
        .try_clone_to_owned()
        .map_err(|e| Failure::failed(format!("cannot duplicate a listening socket: {e}")))
}

/// Opens the store; during a takeover, waits for the old server to release it.
async fn open_store(path: &Path, takeover: bool) -> Result<RedbStore> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match RedbStore::open(path) {
            Ok(s) => return Ok(s),
            Err(e) if takeover && tokio::time::Instant::now() < deadline => {
                tracing::debug!("store not released yet: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(Failure::failed(e.to_string())),
        }
    }
}

/// The router's HTTPS side on `listener`: loads (or makes) its certificates' CA.
async fn https_listener(
    data_dir: &Path,
    listener: TcpListener,
    acme: Option<wharf_router::AcmeOptions>,
) -> Result<(TcpListener, wharf_router::Https)> {
    let port = listener
        .local_addr()
        .map_err(|e| Failure::failed(e.to_string()))?
        .port();
    let mut options = wharf_router::TlsOptions::new(data_dir.join("tls"));
    if let Some(acme) = &acme {
        println!(
            "wharf: ACME certificates from {} for the routes' real domain names",
            acme.directory
        );
    }
    options.acme = acme;
    let tls = wharf_router::Tls::new(options)
        .map_err(|e| Failure::failed(format!("--listen-tls: {e}")))?;
    Ok((listener, wharf_router::Https { tls, port }))
}

/// Binds the TCP API. Without TLS bearer tokens would cross the network in clear text,
/// so only loopback addresses are accepted then.
async fn bind_api(addr: &str, tls: bool) -> Result<TcpListener> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::failed(format!("cannot listen on {addr} for the API: {e}")))?;
    check_api(l, tls)
}

/// Refuses a TCP API listener off loopback without TLS.
fn check_api(l: TcpListener, tls: bool) -> Result<TcpListener> {
    let local = l.local_addr().map_err(|e| Failure::failed(e.to_string()))?;
    if !tls && !local.ip().is_loopback() {
        return Err(Failure::usage(format!(
            "--api {local}: without TLS bearer tokens would cross the network in clear text; add --api-tls, or listen on loopback (127.0.0.1:PORT)"
        )));
    }
    Ok(l)
}

/// The replica runtime `--isolation` asks for, with a notice saying what replicas get.
fn runtime(layout: &Layout, opts: &Options, init: Vec<OsString>) -> Result<ProcessRuntime> {
    let root = nix::unistd::geteuid().is_root();
    let config = SandboxConfig {
        cgroup_parent: opts.cgroup_parent.clone(),
        network: NetworkConfig {
            bridge: opts.bridge.clone(),
            subnet: opts.replica_subnet,
        },
        ..SandboxConfig::default()
    };
    let plain = |why: &str| {
        eprintln!(
            "wharf: {why}: replicas run as plain processes, without isolation or resource limits"
        );
        Ok(ProcessRuntime::new(layout.clone(), init.clone()))
    };
    match opts.isolation.as_str() {
        "none" if root => plain("isolation none (pass --isolation sandbox to isolate them)"),
        "none" => plain("isolation none"),
        "auto" if !root => plain("not running as root"),
        mode => match Sandbox::new(layout, config) {
            Ok(sandbox) => {
                println!("wharf: {}", sandbox.notice());
                Ok(ProcessRuntime::sandboxed(
                    in_memory_run_state(layout),
                    init,
                    sandbox,
                ))
            }
            Err(e) if mode == "auto" => plain(&format!("cannot sandbox replicas ({e})")),
            Err(e) => Err(Failure::failed(format!("--isolation sandbox: {e}"))),
        },
    }
}

/// What a server leaves when it ends, pruned when dropped: the run-state dir's empty
/// directories (see `wharf_runtime::run_state::release`) and the data dir's cgroup
/// directories if empty (not after a takeover: the new server uses them).
struct Leftovers {
    run_state: Option<std::path::PathBuf>,
    cgroup_bases: Vec<std::path::PathBuf>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if let Some(dir) = &self.run_state {
            wharf_runtime::run_state::release(dir);
        }
        for base in &self.cgroup_bases {
            // Fails, and keeps it, while a replica's cgroup is inside.
            let _ = std::fs::remove_dir(base);
        }
    }
}

/// `layout` with its run directories on a tmpfs (see `wharf_runtime::run_state`),
/// unless replicas started by an older server still have theirs in the data dir (they
/// are re-adopted there), or no tmpfs can be had (then they stay, and starts are slower).
fn in_memory_run_state(layout: &Layout) -> Layout {
    let on_disk =
        |d: std::path::PathBuf| std::fs::read_dir(d).is_ok_and(|mut r| r.next().is_some());
    if on_disk(layout.run()) || on_disk(layout.oneoffs()) {
        eprintln!(
            "wharf: replicas of an earlier server have run directories in {}: they stay there",
            layout.run().display()
        );
        return layout.clone();
    }
    match wharf_runtime::run_state::of_data_dir(layout.root()) {
        Ok(dir) => layout.clone().with_run_state(dir),
        Err(e) => {
            eprintln!("wharf: {e}; run directories stay in the data dir (slower starts)");
            layout.clone()
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
