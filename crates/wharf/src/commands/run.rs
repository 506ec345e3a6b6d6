//! wharf run: a one-off process with the app's current release and config.

use crate::client::{Client, Failure, Result};
use hyper::Method;
use std::process::ExitCode;
use wharf_types::api::RunSpec;
use wharf_types::AppName;

pub async fn run(c: &Client, app: &AppName, command: &[String]) -> Result<ExitCode> {
    let spec: RunSpec = c
        .call(Method::POST, &format!("/v1/apps/{app}/run"), None::<&()>)
        .await?;
    let line = command
        .iter()
        .map(|a| quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let status = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {line}"))
        .current_dir(&spec.dir)
        .env_clear()
        .envs(&spec.env)
        .status()
        .await
        .map_err(|e| Failure::failed(format!("cannot run {line}: {e}")))?;
    Ok(match status.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    })
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
