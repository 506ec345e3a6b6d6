//! wharf logs.

use crate::client::{Client, Result};
use crate::output;
use hyper::Method;
use std::process::ExitCode;
use wharf_types::api::LogRecord;
use wharf_types::AppName;

pub async fn logs(
    c: &Client,
    app: &AppName,
    follow: bool,
    since: Option<String>,
    process: Option<String>,
    lines: Option<usize>,
    json: bool,
) -> Result<ExitCode> {
    let mut q = vec![format!("follow={follow}")];
    if let Some(s) = since {
        q.push(format!("since={}", encode(&s)));
    }
    if let Some(p) = process {
        q.push(format!("process={}", encode(&p)));
    }
    if let Some(n) = lines {
        q.push(format!("tail={n}"));
    }
    let path = format!("/v1/apps/{app}/logs?{}", q.join("&"));
    c.stream(Method::GET, &path, None::<&()>, |r: LogRecord| {
        if json {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        } else {
            println!("{}", output::log_line(&r));
        }
        Ok(())
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
