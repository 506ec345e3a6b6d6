//! wharf-api: the HTTP/JSON API the CLI talks to (over the unix socket, or TCP).
//!
//! Handlers translate requests into controller calls and controller errors into status
//! codes (bad input 400, unknown 404, busy 409, failed 422, internal 500) with an
//! [`ApiError`](wharf_types::api::ApiError) body. Long operations (deploy, rollback,
//! config changes, `logs -f`) answer with a stream of newline-delimited JSON.
//!
//! Invariant: no handler changes state except through the controller.

mod error;
mod handlers;
mod stream;

use axum::routing::{get, post};
use axum::Router;
use wharf_controller::Controller;

/// The API's routes, sharing one controller.
pub fn router(controller: Controller) -> Router {
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
        .route("/v1/apps/{app}/logs", get(handlers::logs))
        .with_state(controller)
}
