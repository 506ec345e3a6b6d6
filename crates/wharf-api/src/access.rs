//! Endpoints of secrets, tokens and the audit log.

use crate::auth::Principal;
use crate::error::HttpError;
use crate::stream::ndjson;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use std::time::SystemTime;
use wharf_controller::{Controller, Progress};
use wharf_types::access::TokenRequest;
use wharf_types::secret::{ClaimRequest, SecretsRequest};
use wharf_types::AppName;

type Result<T> = std::result::Result<T, HttpError>;

fn app_name(s: String) -> Result<AppName> {
    AppName::new(s).map_err(|e| HttpError::bad_input(e.to_string()))
}

pub async fn secrets(State(c): State<Controller>, Path(app): Path<String>) -> Result<Response> {
    Ok(Json(c.secrets(&app_name(app)?)?).into_response())
}

pub async fn set_secrets(
    State(c): State<Controller>,
    Path(app): Path<String>,
    Json(req): Json<SecretsRequest>,
) -> Result<Response> {
    let app = app_name(app)?;
    let (progress, rx) = Progress::channel(256);
    tokio::spawn(async move { c.set_secrets(&app, req, progress).await });
    Ok(ndjson(rx))
}

pub async fn rotate(State(c): State<Controller>) -> Result<Response> {
    let c2 = c.clone();
    let report = tokio::task::spawn_blocking(move || c2.rotate_master_key())
        .await
        .map_err(|e| {
            HttpError::from(wharf_controller::ControlError::internal(format!(
                "master-key rotation task failed: {e}"
            )))
        })??;
    Ok(Json(report).into_response())
}

pub async fn claim(State(c): State<Controller>, Json(req): Json<ClaimRequest>) -> Result<Response> {
    Ok(Json(c.claim_secrets(&req.ticket)?).into_response())
}

pub async fn tokens(State(c): State<Controller>) -> Result<Response> {
    Ok(Json(c.tokens()?).into_response())
}

pub async fn create_token(
    State(c): State<Controller>,
    Json(req): Json<TokenRequest>,
) -> Result<Response> {
    let app = req.app.map(app_name).transpose()?;
    Ok(Json(c.create_token(req.role, app)?).into_response())
}

pub async fn revoke_token(State(c): State<Controller>, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(c.revoke_token(&id)?).into_response())
}

#[derive(Deserialize)]
pub struct AuditQuery {
    app: Option<String>,
    since: Option<String>,
}

pub async fn audit(State(c): State<Controller>, Query(q): Query<AuditQuery>) -> Result<Response> {
    let since = q
        .since
        .map(|s| {
            let t = humantime::parse_duration(&s)
                .map(|d| SystemTime::now().checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH))
                .or_else(|_| humantime::parse_rfc3339_weak(&s))
                .map_err(|_| HttpError::bad_input(format!("invalid --since {s:?}; use a duration like 10m or a time like 2026-01-02T15:04:05Z")))?;
            Ok::<_, HttpError>(
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            )
        })
        .transpose()?;
    Ok(Json(c.audit_log(q.app.as_deref(), since)?).into_response())
}

/// A token limited to one app may deploy only that app.
pub fn check_deploy_scope(p: &Principal, dir: &str, app: Option<&str>) -> Result<()> {
    if let Principal::Token(t) = p {
        if let Some(scope) = &t.app {
            let name = wharf_controller::load_manifest(std::path::Path::new(dir), app)
                .map(|m| m.app.to_string())
                .ok();
            if name.as_deref().is_some_and(|n| n != scope.as_str()) {
                return Err(HttpError::forbidden(format!(
                    "token {} is limited to app {scope}, not {}",
                    t.id,
                    name.unwrap_or_default()
                )));
            }
        }
    }
    Ok(())
}

pub type Caller = Extension<Principal>;
