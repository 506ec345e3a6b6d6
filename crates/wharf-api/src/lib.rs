//! wharf-api: the HTTP/JSON API the CLI talks to (over the unix socket, or TCP).
//!
//! Handlers translate requests into controller calls and controller errors into status
//! codes (bad input 400, unknown 404, busy 409, failed 422, internal 500) with an
//! [`ApiError`](wharf_types::api::ApiError) body. Long operations (deploy, rollback,
//! config changes, `logs -f`) answer with a stream of newline-delimited JSON.
//!
//! Invariants: no handler changes state except through the controller; every call passes
//! the gate in [`auth`] (authentication, role and app checks, audit) first; no answer
//! holds a secret value, except the one-use claim of a starting replica on the claim
//! listener ([`claim_router`]).

mod access;
mod auth;
mod error;
mod handlers;
mod stream;

pub use auth::{authorize, Principal};

use axum::routing::{delete, get, post};
use axum::Router;
use wharf_controller::Controller;

/// The endpoint starting replicas claim their secrets on, with a one-use ticket as the
/// only credential. Served on its own loopback listener: replicas share the host's
/// network but, sandboxed, see neither the data dir nor its socket.
pub fn claim_router(controller: Controller) -> Router {
    Router::new()
        .route("/v1/internal/secrets/claim", post(access::claim))
        .with_state(controller)
}

/// The API's routes, sharing one controller. `local`: served on the unix socket (the
/// caller is the server's owner, admin); otherwise every call but `/healthz` needs a
/// bearer token.
pub fn router(controller: Controller, local: bool) -> Router {
    let gate = auth::Gate {
        controller: controller.clone(),
        local,
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(handlers::metrics))
        .route("/v1/deploy", post(handlers::deploy))
        .route("/v1/ps", get(handlers::ps))
        .route("/v1/apps", get(handlers::apps))
        .route(
            "/v1/apps/{app}",
            get(handlers::status).delete(handlers::destroy),
        )
        .route("/v1/apps/{app}/releases", get(handlers::releases))
        .route("/v1/apps/{app}/rollback", post(handlers::rollback))
        .route("/v1/apps/{app}/scale", post(handlers::scale))
        .route(
            "/v1/apps/{app}/config",
            get(handlers::config).post(handlers::configure),
        )
        .route("/v1/apps/{app}/run", post(handlers::run))
        .route("/v1/apps/{app}/run/{id}/done", post(handlers::run_done))
        .route("/v1/apps/{app}/logs", get(handlers::logs))
        .route(
            "/v1/apps/{app}/secrets",
            get(access::secrets).post(access::set_secrets),
        )
        .route("/v1/secrets/rotate-master-key", post(access::rotate))
        .route("/v1/tokens", get(access::tokens).post(access::create_token))
        .route("/v1/tokens/{id}", delete(access::revoke_token))
        .route("/v1/audit", get(access::audit))
        .layer(axum::middleware::from_fn_with_state(gate, auth::gate))
        .with_state(controller)
}
