//! wharf run: a one-off process of the app's current release, in its sandbox, with its
//! config and secrets, attached to this terminal.

use crate::client::{Client, Failure, Result};
use hyper::Method;
use std::process::ExitCode;
use wharf_types::api::{RunRequest, RunSpec};
use wharf_types::AppName;

pub async fn run(c: &Client, app: &AppName, command: &[String]) -> Result<ExitCode> {
    let line = command
        .iter()
        .map(|a| quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let spec: RunSpec = c
        .call(
            Method::POST,
            &format!("/v1/apps/{app}/run"),
            Some(&RunRequest {
                command: line.clone(),
            }),
        )
        .await?;
    let status = attached(&spec).await;
    // Whatever happened, the server removes the one-off's run dir and cgroup.
    let done: Result<serde_json::Value> = c
        .call(
            Method::POST,
            &format!("/v1/apps/{app}/run/{}/done", spec.id),
            None::<&()>,
        )
        .await;
    if let Err(e) = done {
        eprintln!(
            "wharf: cannot tell the server that {} ended: {}",
            spec.id, e.message
        );
    }
    let code = status.map_err(|e| Failure::failed(format!("cannot run {line}: {e}")))?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Starts the prepared one-off with this terminal's stdin, stdout and stderr and waits
/// for it; Ctrl-C reaches it (through the terminal) instead of ending `wharf run` first.
async fn attached(spec: &RunSpec) -> std::io::Result<i32> {
    let mut child = tokio::process::Command::new(&spec.program)
        .args(&spec.args)
        .spawn()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "{e} ({}); `wharf run` starts the process on the server's machine, so run it there",
                    spec.program
                ),
            )
        })?;
    loop {
        tokio::select! {
            status = child.wait() => return Ok(status?.code().unwrap_or(1)),
            _ = tokio::signal::ctrl_c() => {}
        }
    }
}

/// Quotes one argument for `/bin/sh` unless it is plainly safe.
fn quote(a: &str) -> String {
    let safe = !a.is_empty()
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}
