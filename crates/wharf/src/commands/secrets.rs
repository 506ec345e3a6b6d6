//! `wharf secrets`, `wharf tokens`, `wharf audit`, and the `secret-env` helper that a
//! starting replica runs to fetch its secrets.

use super::deploy::follow;
use crate::client::{Client, Failure, Result};
use crate::output;
use hyper::Method;
use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;
use wharf_types::access::{AuditEntry, Role, TokenCreated, TokenInfo, TokenRequest};
use wharf_types::api::{DeployEvent, ErrorKind};
use wharf_types::secret::{ClaimRequest, RotateReport, SecretInfo, SecretsRequest};
use wharf_types::AppName;

/// Drops one trailing newline (what `echo` and editors add).
fn chomp(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// `K=V`, `K=@FILE` (the file's content) or `K=-` (standard input, once).
fn value_of(pair: &str, stdin_used: &mut bool) -> Result<(String, String)> {
    let (k, v) = pair.split_once('=').ok_or_else(|| {
        Failure::usage(format!(
            "expected KEY=VALUE, KEY=@FILE or KEY=-, got {:?}",
            pair.split('=').next().unwrap_or("")
        ))
    })?;
    let value = if v == "-" {
        if std::mem::replace(stdin_used, true) {
            return Err(Failure::usage(
                "only one secret can be read from standard input",
            ));
        }
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure::usage(format!("{k}: cannot read standard input as text: {e}")))?;
        chomp(s)
    } else if let Some(file) = v.strip_prefix('@') {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Failure::usage(format!("{k}: cannot read {file} as text: {e}")))?;
        chomp(text)
    } else {
        v.to_string()
    };
    Ok((k.to_string(), value))
}

pub async fn set(
    c: &Client,
    app: &AppName,
    pairs: &[String],
    stage: bool,
    json: bool,
) -> Result<ExitCode> {
    let mut stdin_used = false;
    let mut set = BTreeMap::new();
    for p in pairs {
        let (k, v) = value_of(p, &mut stdin_used)?;
        set.insert(k, v);
    }
    let req = SecretsRequest {
        set,
        unset: Vec::new(),
        stage,
    };
    change(c, app, &req, json).await
}

/// Sends a change; a staged one is reported without the rollout's "is live" line.
async fn change(c: &Client, app: &AppName, req: &SecretsRequest, json: bool) -> Result<ExitCode> {
    let path = format!("/v1/apps/{app}/secrets");
    if !req.stage || json {
        return follow(c, Method::POST, &path, req, json).await;
    }
    let mut outcome = Err(Failure::failed(
        "the server ended the answer early; see `wharf secrets APP`",
    ));
    c.stream(Method::POST, &path, Some(req), |e: DeployEvent| {
        match e {
            DeployEvent::Progress { message } => println!("-----> {message}"),
            DeployEvent::Done { .. } => outcome = Ok(ExitCode::SUCCESS),
            DeployEvent::Failed { reason, kind, .. } => {
                let code = match kind {
                    ErrorKind::BadInput | ErrorKind::NotFound => 2,
                    _ => 1,
                };
                outcome = Err(Failure::new(code, reason));
            }
            _ => {}
        }
        Ok(())
    })
    .await?;
    outcome
}

pub async fn unset(
    c: &Client,
    app: &AppName,
    keys: Vec<String>,
    stage: bool,
    json: bool,
) -> Result<ExitCode> {
    let req = SecretsRequest {
        set: BTreeMap::new(),
        unset: keys,
        stage,
    };
    change(c, app, &req, json).await
}

pub async fn list(c: &Client, app: &AppName, json: bool) -> Result<ExitCode> {
    let secrets: Vec<SecretInfo> = c.get(&format!("/v1/apps/{app}/secrets")).await?;
    if json {
        output::json(&secrets);
    } else if secrets.is_empty() {
        println!("{app} has no secrets; set one with `wharf secrets set {app} NAME=VALUE`");
    } else {
        let rows: Vec<Vec<String>> = secrets
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    format!("v{}", s.version),
                    format!("{} ago", output::age(s.updated_at)),
                    if s.live { "live" } else { "staged" }.to_string(),
                ]
            })
            .collect();
        output::table(&["NAME", "VERSION", "UPDATED", "STATE"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rotate(c: &Client, json: bool) -> Result<ExitCode> {
    let r: RotateReport = c
        .call(Method::POST, "/v1/secrets/rotate-master-key", None::<&()>)
        .await?;
    if json {
        output::json(&r);
    } else {
        println!(
            "master key rotated: now {}; {} data keys re-wrapped",
            r.key_id, r.rewrapped
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn token_create(
    c: &Client,
    role: &str,
    app: Option<AppName>,
    json: bool,
) -> Result<ExitCode> {
    let role: Role = role.parse().map_err(Failure::usage)?;
    let req = TokenRequest {
        role,
        app: app.map(|a| a.to_string()),
    };
    let t: TokenCreated = c.call(Method::POST, "/v1/tokens", Some(&req)).await?;
    if json {
        output::json(&t);
    } else {
        eprintln!(
            "created {} ({}{}); this is the only time the token is shown:",
            t.id,
            t.role,
            t.app
                .as_ref()
                .map(|a| format!(" of {a}"))
                .unwrap_or_default()
        );
        println!("{}", t.token);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn token_list(c: &Client, json: bool) -> Result<ExitCode> {
    let tokens: Vec<TokenInfo> = c.get("/v1/tokens").await?;
    if json {
        output::json(&tokens);
    } else {
        let rows: Vec<Vec<String>> = tokens
            .iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    t.role.to_string(),
                    t.app.clone().unwrap_or_else(|| "*".into()),
                    format!("{} ago", output::age(t.created_at)),
                    t.revoked_at.map_or("active".into(), |r| {
                        format!("revoked {} ago", output::age(r))
                    }),
                ]
            })
            .collect();
        output::table(&["ID", "ROLE", "APP", "CREATED", "STATE"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn token_revoke(c: &Client, id: &str, json: bool) -> Result<ExitCode> {
    let t: TokenInfo = c
        .call(Method::DELETE, &format!("/v1/tokens/{id}"), None::<&()>)
        .await?;
    if json {
        output::json(&t);
    } else {
        println!("revoked {}", t.id);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(
    c: &Client,
    app: Option<AppName>,
    since: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let mut q = Vec::new();
    if let Some(a) = app {
        q.push(format!("app={a}"));
    }
    if let Some(s) = since {
        q.push(format!("since={}", s.replace('+', "%2B")));
    }
    let path = if q.is_empty() {
        "/v1/audit".to_string()
    } else {
        format!("/v1/audit?{}", q.join("&"))
    };
    let entries: Vec<AuditEntry> = c.get(&path).await?;
    if json {
        output::json(&entries);
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    format!("{} ago", output::age(e.at)),
                    e.who.clone(),
                    e.app.clone().unwrap_or_else(|| "-".into()),
                    e.action.clone(),
                    e.outcome.clone(),
                ]
            })
            .collect();
        output::table(&["WHEN", "WHO", "APP", "ACTION", "OUTCOME"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// The replica side of secret delivery: claims the secrets on the server's loopback
/// claim listener with the one-use ticket in the environment, then replaces itself with `/bin/sh -c "exec COMMAND"` with them in
/// its environment. Errors go to stderr, which the replica's init writes to its log.
pub fn secret_env(files: Option<&std::path::Path>, claim: &str, command: &str) -> ExitCode {
    let var = wharf_controller::TICKET_VAR;
    let Some(ticket) = std::env::var(var).ok() else {
        eprintln!(
            "wharf secret-env: no {var} in the environment; this command is run by the server"
        );
        return ExitCode::from(2);
    };
    let claimed: Result<BTreeMap<String, String>> = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(e.to_string()))
        .and_then(|rt| {
            let c = Client {
                endpoint: crate::client::Endpoint::Tcp(claim.to_string()),
                token: None,
            };
            rt.block_on(c.call(
                Method::POST,
                "/v1/internal/secrets/claim",
                Some(&ClaimRequest { ticket }),
            ))
        });
    let env = match claimed {
        Ok(env) => env,
        Err(e) => {
            eprintln!("wharf: cannot start: {}", e.message);
            return ExitCode::from(1);
        }
    };
    let env = match files {
        Some(dir) => match write_secret_files(dir, &env) {
            Ok(()) => BTreeMap::new(),
            Err(e) => {
                eprintln!("wharf: cannot start: {e}");
                return ExitCode::from(1);
            }
        },
        None => env,
    };
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(wharf_runtime::shell::line(command))
        .env_remove(var)
        .envs(env)
        .exec();
    eprintln!("wharf: cannot start `{command}`: {e}");
    ExitCode::from(127)
}

/// `[secrets] as = "files"`: each value into DIR/NAME, readable by the app's user only.
/// DIR must be a tmpfs (the sandbox mounts one at /run/secrets), so that no value ever
/// reaches a disk.
fn write_secret_files(
    dir: &std::path::Path,
    env: &BTreeMap<String, String>,
) -> std::result::Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !wharf_runtime::run_state::in_memory(dir) {
        return Err(format!(
            "secrets as files need a tmpfs at {}, which only sandboxed replicas have; run the server as root with --isolation auto or sandbox, or deliver secrets as environment variables",
            dir.display()
        ));
    }
    for (name, value) in env {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        f.write_all(value.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
