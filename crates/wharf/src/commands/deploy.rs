//! Commands that roll out a release and show its progress: deploy, rollback, config set/unset.

use crate::client::{Client, Failure, Result};
use hyper::Method;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use wharf_types::api::{ConfigRequest, DeployEvent, DeployRequest, ErrorKind, RollbackRequest};
use wharf_types::{AppName, Strategy};

/// Shows deploy events as they come; returns the outcome.
pub(crate) async fn follow(
    c: &Client,
    method: Method,
    path: &str,
    body: &impl serde::Serialize,
    json: bool,
) -> Result<ExitCode> {
    let mut outcome: Option<Result<ExitCode>> = None;
    c.stream(method, path, Some(body), |e: DeployEvent| {
        if json {
            println!("{}", serde_json::to_string(&e).unwrap_or_default());
        }
        match e {
            DeployEvent::Progress { message } if !json => println!("-----> {message}"),
            DeployEvent::Build { line } if !json => println!("       {line}"),
            DeployEvent::Done { app, release, url } => {
                if !json {
                    println!("-----> {app} v{release} is live at {url}");
                }
                outcome = Some(Ok(ExitCode::SUCCESS));
            }
            DeployEvent::Failed {
                reason,
                kind,
                replica,
                logs,
                manifest,
            } => {
                let code = match kind {
                    ErrorKind::BadInput | ErrorKind::NotFound => 2,
                    _ => 1,
                };
                let mut msg = match manifest {
                    Some(m) => m.to_string(),
                    None => reason,
                };
                if !logs.is_empty() {
                    let who = replica.unwrap_or_else(|| "the failing replica".into());
                    msg.push_str(&format!(
                        "\nlast log lines of {who}:\n  {}",
                        logs.join("\n  ")
                    ));
                }
                outcome = Some(Err(Failure::new(code, msg)));
            }
            _ => {}
        }
        Ok(())
    })
    .await?;
    outcome.unwrap_or_else(|| {
        Err(Failure::failed(
            "the server ended the deploy without an outcome; see `wharf status`",
        ))
    })
}

pub async fn deploy(
    c: &Client,
    dir: &Path,
    app: Option<String>,
    strategy: Option<Strategy>,
    detach: bool,
    json: bool,
) -> Result<ExitCode> {
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| Failure::usage(format!("{}: {e}", dir.display())))?;
    // Check the manifest here too, so that a typo is reported without a server round trip.
    wharf_controller::load_manifest(&dir, app.as_deref())
        .map_err(|e| Failure::usage(e.to_string()))?;
    let req = DeployRequest {
        dir: dir.display().to_string(),
        app,
        strategy,
    };
    let path = if detach {
        "/v1/deploy?detach=true"
    } else {
        "/v1/deploy"
    };
    follow(c, Method::POST, path, &req, json).await
}

pub async fn rollback(c: &Client, app: &AppName, to: Option<u32>, json: bool) -> Result<ExitCode> {
    follow(
        c,
        Method::POST,
        &format!("/v1/apps/{app}/rollback"),
        &RollbackRequest { to },
        json,
    )
    .await
}

pub async fn config_set(
    c: &Client,
    app: &AppName,
    pairs: &[String],
    json: bool,
) -> Result<ExitCode> {
    let mut set = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("expected KEY=VALUE, got {p:?}")))?;
        set.insert(k.to_string(), v.to_string());
    }
    let req = ConfigRequest {
        set,
        unset: Vec::new(),
    };
    change_config(c, app, &req, json).await
}

pub async fn config_unset(
    c: &Client,
    app: &AppName,
    keys: Vec<String>,
    json: bool,
) -> Result<ExitCode> {
    let req = ConfigRequest {
        set: BTreeMap::new(),
        unset: keys,
    };
    change_config(c, app, &req, json).await
}

/// Sends a config change and follows its rollout.
async fn change_config(
    c: &Client,
    app: &AppName,
    req: &ConfigRequest,
    json: bool,
) -> Result<ExitCode> {
    follow(
        c,
        Method::POST,
        &format!("/v1/apps/{app}/config"),
        req,
        json,
    )
    .await
}
