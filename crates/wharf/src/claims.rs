//! The secret claim listener of replicas with `network = "isolated"`.
//!
//! Such a replica cannot reach the host's loopback, where the main claim listener is, so
//! it claims on the host's side of its bridge. The bridge exists only once the first
//! isolated replica starts, so this listener is bound then, on `GATEWAY:0`, and serves
//! the same claim routes (one-use tickets are the credential) until the server exits.
//! Invariant: bound at most once per server; a failure is reported to the replica's start
//! and tried again at the next one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use wharf_controller::{Controller, IsolatedClaim};
use wharf_runtime::ProcessRuntime;

/// The lazily bound listener; `controller` is filled in once the controller exists.
struct Claims {
    runtime: Arc<ProcessRuntime>,
    controller: Arc<OnceLock<Controller>>,
    bound: Mutex<Option<SocketAddr>>,
}

/// The [`IsolatedClaim`] for the controller's settings, and the slot to put the
/// controller in once it exists. `None` without the sandbox.
pub fn isolated_claim(
    runtime: &Arc<ProcessRuntime>,
) -> Option<(IsolatedClaim, Arc<OnceLock<Controller>>)> {
    runtime.sandbox()?;
    let controller = Arc::new(OnceLock::new());
    let claims = Arc::new(Claims {
        runtime: Arc::clone(runtime),
        controller: Arc::clone(&controller),
        bound: Mutex::new(None),
    });
    Some((IsolatedClaim(Arc::new(move || claims.addr())), controller))
}

impl Claims {
    fn addr(&self) -> Result<String, String> {
        let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = *bound {
            return Ok(a.to_string());
        }
        let sandbox = self.runtime.sandbox().ok_or("replicas are not sandboxed")?;
        let gateway = sandbox.network_gateway().map_err(|e| e.to_string())?;
        let controller = self
            .controller
            .get()
            .ok_or("the server is still starting")?
            .clone();
        let listener = std::net::TcpListener::bind((gateway, 0))
            .map_err(|e| format!("cannot listen on {gateway}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, wharf_api::claim_router(controller)).await {
                tracing::error!("the secret claim listener on {addr} stopped: {e}");
            }
        });
        *bound = Some(addr);
        Ok(addr.to_string())
    }
}
