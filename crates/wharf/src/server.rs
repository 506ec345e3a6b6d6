//! `wharf server`: the composition root. Wires store, runtime, router, controller and API.

use crate::client::{Client, Endpoint, Failure, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use wharf_controller::{Controller, Settings};
use wharf_core::clock::SystemClock;
use wharf_router::{Router, RouterConfig};
use wharf_runtime::{Layout, ProcessRuntime};
use wharf_store::RedbStore;

/// How long the router may take to finish in-flight requests at shutdown.
const ROUTER_DRAIN: Duration = Duration::from_secs(30);

pub struct Options {
    pub listen: String,
    pub listen_tls: Option<String>,
    pub api: Option<String>,
}

pub async fn run(data_dir: &Path, opts: Options) -> Result<()> {
    if opts.listen_tls.is_some() {
        return Err(Failure::usage(
            "--listen-tls: HTTPS is not available in this version yet; serve HTTP with --listen",
        ));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| {
        Failure::failed(format!(
            "cannot create the data dir {}: {e}",
            data_dir.display()
        ))
    })?;
    let _ = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700));
    let layout = Layout::new(data_dir);
    if nix::unistd::geteuid().is_root() {
        tracing::info!("running as root");
    } else {
        eprintln!("wharf: not running as root: replicas run as plain processes of your user, without isolation");
    }

    let socket = layout.socket();
    if socket.exists() {
        if (Client {
            endpoint: Endpoint::Unix(socket.clone()),
        })
        .healthy()
        .await
        {
            return Err(Failure::failed(format!(
                "another wharf server is running with the data dir {}; stop it or pass a different --data-dir",
                data_dir.display()
            )));
        }
        let _ = std::fs::remove_file(&socket);
    }
    let store = RedbStore::open(&layout.store()).map_err(|e| Failure::failed(e.to_string()))?;

    let listener = TcpListener::bind(&opts.listen).await.map_err(|e| {
        Failure::failed(format!(
            "cannot listen on {}: {e}; pass --listen 127.0.0.1:PORT",
            opts.listen
        ))
    })?;
    let router_addr = listener
        .local_addr()
        .map_err(|e| Failure::failed(e.to_string()))?;
    let router = Router::new(RouterConfig::default());

    let exe = std::env::current_exe()
        .map_err(|e| Failure::failed(format!("cannot find the wharf binary: {e}")))?;
    let runtime = ProcessRuntime::new(layout.clone(), vec![exe.into_os_string(), "init".into()]);
    let settings = Settings {
        public_port: router_addr.port(),
        ..Settings::default()
    };
    let controller = Controller::new(
        Arc::new(store),
        Arc::new(runtime),
        router.clone(),
        Arc::new(SystemClock),
        layout.clone(),
        settings,
    )
    .map_err(|e| Failure::failed(e.to_string()))?;
    // Publish what was re-adopted before the first request arrives.
    controller.tick();

    let unix = UnixListener::bind(&socket)
        .map_err(|e| Failure::failed(format!("cannot bind {}: {e}", socket.display())))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Failure::failed(e.to_string()))?;
    let api = wharf_api::router(controller.clone());
    let tcp_api =
        match &opts.api {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                Failure::failed(format!("cannot listen on {addr} for the API: {e}"))
            })?),
            None => None,
        };
    let api_addr = tcp_api.as_ref().and_then(|l| l.local_addr().ok());

    let info = serde_json::json!({
        "pid": std::process::id(),
        "router": router_addr.to_string(),
        "api": api_addr.map(|a| a.to_string()),
        "socket": socket.display().to_string(),
    });
    let _ = std::fs::write(data_dir.join("server.json"), info.to_string());
    println!("wharf: router listening on http://{router_addr}");
    println!(
        "wharf: api on {}{}",
        socket.display(),
        api_addr
            .map(|a| format!(" and http://{a}"))
            .unwrap_or_default()
    );
    println!("wharf: data dir {}", data_dir.display());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let router_task = tokio::spawn(router.clone().serve(listener, wait_stop(stop_rx.clone())));
    let api_task = tokio::spawn({
        let (api, stop) = (api.clone(), wait_stop(stop_rx.clone()));
        async move { axum::serve(unix, api).with_graceful_shutdown(stop).await }
    });
    let tcp_task = tcp_api.map(|l| {
        let stop = wait_stop(stop_rx.clone());
        tokio::spawn(async move { axum::serve(l, api).with_graceful_shutdown(stop).await })
    });
    let ctl = controller.clone();
    let control_task = tokio::spawn({
        let stop = wait_stop(stop_rx.clone());
        async move { ctl.run(stop).await }
    });

    shutdown_signal().await;
    println!("wharf: shutting down (replicas keep running and are re-adopted at the next start)");
    let _ = stop_tx.send(true);
    let _ = control_task.await;
    let _ = api_task.await;
    if let Some(t) = tcp_task {
        let _ = t.await;
    }
    if tokio::time::timeout(ROUTER_DRAIN, router_task)
        .await
        .is_err()
    {
        eprintln!(
            "wharf: some requests did not finish within {}s",
            ROUTER_DRAIN.as_secs()
        );
    }
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(data_dir.join("server.json"));
    Ok(())
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
