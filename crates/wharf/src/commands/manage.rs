//! scale and destroy.

use crate::client::{Client, Failure, Result};
use crate::output;
use hyper::Method;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use wharf_types::api::ScaleRequest;
use wharf_types::AppName;

pub async fn scale(c: &Client, app: &AppName, args: &[String], json: bool) -> Result<ExitCode> {
    let mut counts = BTreeMap::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("expected TYPE=N, got {a:?}")))?;
        let n = v
            .parse::<u32>()
            .map_err(|_| Failure::usage(format!("{a:?}: {v:?} is not a replica count")))?;
        counts.insert(k.to_string(), n);
    }
    let result: BTreeMap<String, u32> = c
        .call(
            Method::POST,
            &format!("/v1/apps/{app}/scale"),
            Some(&ScaleRequest { counts }),
        )
        .await?;
    if json {
        output::json(&result);
    } else {
        let now: Vec<String> = result.iter().map(|(p, n)| format!("{p}={n}")).collect();
        println!("scaled {app}: {}", now.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn destroy(c: &Client, app: &AppName, yes: bool, json: bool) -> Result<ExitCode> {
    if !yes {
        eprint!("this stops {app} and deletes its releases, config and logs; type the app name to confirm: ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| Failure::failed(e.to_string()))?;
        if answer.trim() != app.as_str() {
            return Err(Failure::usage(
                "not confirmed; nothing was changed (pass --yes to skip the question)",
            ));
        }
    }
    let result: BTreeMap<String, String> = c
        .call(Method::DELETE, &format!("/v1/apps/{app}"), None::<&()>)
        .await?;
    if json {
        output::json(&result);
    } else {
        println!("destroyed {app}");
    }
    Ok(ExitCode::SUCCESS)
}
