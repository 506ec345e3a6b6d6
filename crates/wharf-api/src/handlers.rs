//! One function per endpoint.

use crate::error::HttpError;
use crate::stream::ndjson;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use wharf_controller::logs::{self, Filter, Follower};
use wharf_controller::{Controller, DeployOptions, Progress};
use wharf_types::api::{ConfigRequest, DeployRequest, RollbackRequest, ScaleRequest};
use wharf_types::AppName;

type Result<T> = std::result::Result<T, HttpError>;

fn app_name(s: String) -> Result<AppName> {
    AppName::new(s).map_err(|e| HttpError::bad_input(e.to_string()))
}

pub async fn metrics(State(c): State<Controller>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        c.metrics(),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct DeployQuery {
    #[serde(default)]
    detach: bool,
}

pub async fn deploy(
    State(c): State<Controller>,
    caller: Option<crate::access::Caller>,
    Query(q): Query<DeployQuery>,
    Json(req): Json<DeployRequest>,
) -> Response {
    if let Some(axum::Extension(p)) = caller {
        if let Err(e) = crate::access::check_deploy_scope(&p, &req.dir, req.app.as_deref()) {
            return e.into_response();
        }
    }
    let (progress, rx) = Progress::channel(256);
    let opts = DeployOptions {
        dir: req.dir.into(),
        app: req.app,
        strategy: req.strategy,
        detach: q.detach,
    };
    tokio::spawn(async move { c.deploy(opts, progress).await });
    ndjson(rx)
}

pub async fn rollback(
    State(c): State<Controller>,
    Path(app): Path<String>,
    Json(req): Json<RollbackRequest>,
) -> Result<Response> {
    let app = app_name(app)?;
    let (progress, rx) = Progress::channel(256);
    tokio::spawn(async move { c.rollback(&app, req.to, progress).await });
    Ok(ndjson(rx))
}

pub async fn configure(
    State(c): State<Controller>,
    Path(app): Path<String>,
    Json(req): Json<ConfigRequest>,
) -> Result<Response> {
    let app = app_name(app)?;
    let (progress, rx) = Progress::channel(256);
    tokio::spawn(async move { c.configure(&app, req.set, req.unset, progress).await });
    Ok(ndjson(rx))
}

pub async fn apps(State(c): State<Controller>, caller: Option<crate::access::Caller>) -> Response {
    let mut apps = c.apps();
    if let Some(axum::Extension(p)) = caller {
        apps.retain(|a| p.may_touch(&a.name));
    }
    Json(apps).into_response()
}

pub async fn status(State(c): State<Controller>, Path(app): Path<String>) -> Result<Response> {
    Ok(Json(c.status(&app_name(app)?)?).into_response())
}

#[derive(Deserialize)]
pub struct PsQuery {
    app: Option<String>,
}

pub async fn ps(
    State(c): State<Controller>,
    caller: Option<crate::access::Caller>,
    Query(q): Query<PsQuery>,
) -> Result<Response> {
    let app = q.app.map(app_name).transpose()?;
    let mut rows = c.ps(app.as_ref())?;
    if let Some(axum::Extension(p)) = caller {
        if let Some(a) = &app {
            if !p.may_touch(a.as_str()) {
                return Err(HttpError::forbidden(format!(
                    "this token is limited to another app, not {a}"
                )));
            }
        }
        rows.retain(|r| p.may_touch(&r.app));
    }
    Ok(Json(rows).into_response())
}

pub async fn releases(State(c): State<Controller>, Path(app): Path<String>) -> Result<Response> {
    Ok(Json(c.releases(&app_name(app)?)?).into_response())
}

pub async fn scale(
    State(c): State<Controller>,
    Path(app): Path<String>,
    Json(req): Json<ScaleRequest>,
) -> Result<Response> {
    Ok(Json(c.scale(&app_name(app)?, &req.counts)?).into_response())
}

pub async fn config(State(c): State<Controller>, Path(app): Path<String>) -> Result<Response> {
    Ok(Json(c.config(&app_name(app)?)?).into_response())
}

pub async fn run(
    State(c): State<Controller>,
    Path(app): Path<String>,
    Json(req): Json<wharf_types::api::RunRequest>,
) -> Result<Response> {
    Ok(Json(c.start_run(&app_name(app)?, &req.command)?).into_response())
}

pub async fn run_done(
    State(c): State<Controller>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Response> {
    c.finish_run(&app_name(app)?, &id)?;
    Ok(Json(serde_json::json!({ "finished": id })).into_response())
}

pub async fn destroy(State(c): State<Controller>, Path(app): Path<String>) -> Result<Response> {
    let app = app_name(app)?;
    c.destroy(&app).await?;
    Ok(Json(BTreeMap::from([("destroyed", app.to_string())])).into_response())
}

#[derive(Deserialize)]
pub struct LogsQuery {
    since: Option<String>,
    process: Option<String>,
    #[serde(default)]
    follow: bool,
    /// Last N records (default 100 unless `since` is given).
    tail: Option<usize>,
}

/// Parses `--since`: a duration back from now (`10m`) or an RFC 3339 time.
fn since(s: &str) -> Result<String> {
    if let Ok(d) = humantime::parse_duration(s) {
        let t = SystemTime::now()
            .checked_sub(d)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        return Ok(logs::timestamp(t));
    }
    humantime::parse_rfc3339_weak(s)
        .map(logs::timestamp)
        .map_err(|_| HttpError::bad_input(format!("invalid --since {s:?}; use a duration like 10m or a time like 2026-01-02T15:04:05Z")))
}

pub async fn logs(
    State(c): State<Controller>,
    Path(app): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response> {
    let app = app_name(app)?;
    let path = c.log_path(&app)?;
    let filter = Filter {
        since: q.since.as_deref().map(since).transpose()?,
        process: q.process,
        replica: None,
    };
    let last = q.tail.or(if filter.since.is_some() {
        None
    } else {
        Some(100)
    });
    let (records, offset) = {
        let (path, filter) = (path.clone(), filter.clone());
        tokio::task::spawn_blocking(move || logs::read(&path, &filter, last))
            .await
            .map_err(|e| HttpError::bad_input(e.to_string()))?
            .map_err(|e| HttpError::bad_input(format!("cannot read logs: {e}")))?
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        for r in records {
            if tx.send(r).await.is_err() {
                return;
            }
        }
        if !q.follow {
            return;
        }
        let mut follower = Follower::new(path, offset);
        loop {
            match follower.poll(&filter) {
                Ok(new) => {
                    for r in new {
                        if tx.send(r).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => tracing::warn!("following logs: {e}"),
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Ok(ndjson(rx))
}
