//! Read-only commands: apps, status, ps, releases, config.

use crate::client::{Client, Result};
use crate::output::{self, age, table, until};
use std::collections::BTreeMap;
use std::process::ExitCode;
use wharf_types::api::{AppStatus, CertificateSource, CertificateStatus, ReleaseInfo, ReplicaInfo};
use wharf_types::AppName;

pub async fn apps(c: &Client, json: bool) -> Result<ExitCode> {
    let apps: Vec<AppStatus> = c.get("/v1/apps").await?;
    if json {
        output::json(&apps);
    } else if apps.is_empty() {
        println!("no apps yet; deploy one with `wharf deploy DIR`");
    } else {
        let rows: Vec<Vec<String>> = apps
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    a.release.map_or("-".into(), |v| format!("v{v}")),
                    a.status.clone(),
                    a.url.clone(),
                ]
            })
            .collect();
        table(&["APP", "RELEASE", "STATUS", "URL"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn status(c: &Client, app: &AppName, json: bool) -> Result<ExitCode> {
    let s: AppStatus = c.get(&format!("/v1/apps/{app}")).await?;
    if json {
        output::json(&s);
        return Ok(ExitCode::SUCCESS);
    }
    println!("app:      {}", s.name);
    println!(
        "release:  {}",
        s.release.map_or("none".into(), |v| format!("v{v}"))
    );
    println!("status:   {}", s.status);
    println!("url:      {}", s.url);
    println!("hosts:    {}", s.hosts.join(", "));
    if s.paths.iter().any(|p| p != "/") {
        println!("paths:    {}", s.paths.join(", "));
    }
    if !s.strategy.is_empty() {
        println!("strategy: {}", s.strategy);
    }
    if let Some(c) = &s.canary {
        println!(
            "canary:   step {} at {}% of traffic, {} failed checks",
            c.step + 1,
            c.weight,
            c.failed_checks
        );
        if let Some(a) = &c.last {
            println!("          {}", a.summary());
        }
    }
    if let Some(w) = &s.warm {
        println!("warm:     v{} kept for an instant rollback", w.release);
    }
    if let Some(o) = &s.last_outcome {
        let what = if o.succeeded {
            "succeeded".to_string()
        } else {
            format!("failed: {}", o.reason.clone().unwrap_or_default())
        };
        println!("last rollout: v{} {what} ({} ago)", o.release, age(o.at));
    }
    println!();
    let rows: Vec<Vec<String>> = s
        .processes
        .iter()
        .map(|p| {
            vec![
                p.process.clone(),
                format!("{}/{}", p.ready, p.desired),
                p.running.to_string(),
                p.command.clone(),
            ]
        })
        .collect();
    table(&["PROCESS", "READY", "RUNNING", "COMMAND"], &rows);
    certificates(&s.certificates);
    Ok(ExitCode::SUCCESS)
}

/// The HTTPS certificate of each host, then the ACME errors in full.
fn certificates(list: &[CertificateStatus]) {
    if list.is_empty() {
        return;
    }
    println!();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let acme = match &c.acme {
                None => "-".to_owned(),
                Some(a) if a.ordering => "ordering now".to_owned(),
                Some(a) => {
                    let next = a.next_attempt_at.map_or("-".into(), until);
                    match a.failures {
                        0 if c.source == CertificateSource::Acme => format!("renews in {next}"),
                        0 => format!("ordering in {next}"),
                        n => format!("failed {n}x, next try in {next}"),
                    }
                }
            };
            vec![
                c.host.clone(),
                c.source.to_string(),
                c.not_after
                    .map_or("-".into(), |t| format!("in {}", until(t))),
                acme,
            ]
        })
        .collect();
    table(&["HOST", "CERTIFICATE", "EXPIRES", "ACME"], &rows);
    for c in list {
        if let Some(error) = &c.files_error {
            println!("certificate files error: {error}");
        }
        if let Some((error, at)) = c
            .acme
            .as_ref()
            .and_then(|a| a.last_error.as_ref().zip(a.last_error_at))
        {
            println!("acme error ({} ago): {error}", age(at));
        }
    }
}

pub async fn ps(c: &Client, app: Option<&AppName>, json: bool) -> Result<ExitCode> {
    let path = match app {
        Some(a) => format!("/v1/ps?app={a}"),
        None => "/v1/ps".into(),
    };
    let list: Vec<ReplicaInfo> = c.get(&path).await?;
    if json {
        output::json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.app.clone(),
                r.id.clone(),
                r.process.clone(),
                format!("v{}", r.release),
                r.state.to_string(),
                r.pid.map_or("-".into(), |p| p.to_string()),
                r.address.clone().unwrap_or_else(|| "-".into()),
                r.restarts.to_string(),
                r.started_at.map_or("-".into(), age),
                r.last_exit.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "APP",
            "ID",
            "PROCESS",
            "RELEASE",
            "STATE",
            "PID",
            "ADDRESS",
            "RESTARTS",
            "AGE",
            "LAST EXIT",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn releases(c: &Client, app: &AppName, json: bool) -> Result<ExitCode> {
    let list: Vec<ReleaseInfo> = c.get(&format!("/v1/apps/{app}/releases")).await?;
    if json {
        output::json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                format!("{}v{}", if r.current { "*" } else { " " }, r.version),
                r.description.clone(),
                r.artifact.get(..19).unwrap_or(&r.artifact).to_string(),
                format!("{} ago", age(r.created_at)),
            ]
        })
        .collect();
    table(&[" RELEASE", "DESCRIPTION", "ARTIFACT", "CREATED"], &rows);
    Ok(ExitCode::SUCCESS)
}

pub async fn config(c: &Client, app: &AppName, json: bool) -> Result<ExitCode> {
    let vars: BTreeMap<String, String> = c.get(&format!("/v1/apps/{app}/config")).await?;
    if json {
        output::json(&vars);
    } else {
        for (k, v) in vars {
            println!("{k}={v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
