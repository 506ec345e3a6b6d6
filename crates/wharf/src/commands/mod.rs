//! One function per command; `dispatch` picks it.

mod deploy;
mod logs;
mod manage;
mod run;
pub mod secrets;
mod show;
mod up;

use crate::cli::{Cli, Command, ConfigAction, SecretsAction, TokensAction};
use crate::client::{Client, Endpoint, Failure, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use wharf_types::AppName;

/// The data dir: --data-dir / $WHARF_DATA_DIR, else /var/lib/wharf as root, else
/// $XDG_DATA_HOME/wharf (or ~/.local/share/wharf).
pub fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    if let Some(d) = flag {
        return d;
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/wharf");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("wharf"),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
            .join(".local/share/wharf"),
    }
}

fn client(cli: &Cli) -> Client {
    let endpoint = match &cli.server {
        Some(addr) => Endpoint::parse(addr, std::env::var_os("WHARF_CA_CERT").map(PathBuf::from)),
        None => Endpoint::Unix(data_dir(cli.data_dir.clone()).join("wharf.sock")),
    };
    Client {
        endpoint,
        token: std::env::var("WHARF_TOKEN").ok().filter(|t| !t.is_empty()),
    }
}

/// Checks an app name before it goes anywhere.
pub fn app(name: &str) -> Result<AppName> {
    AppName::new(name).map_err(|e| Failure::usage(e.to_string()))
}

fn init_tracing(server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter: tracing_subscriber::filter::Targets = std::env::var("WHARF_LOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| default.parse().unwrap_or_default());
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .with(filter)
        .try_init();
}

pub async fn dispatch(
    cli: Cli,
    master_key_env: Option<String>,
    launcher: Option<wharf_runtime::launcher::Launcher>,
) -> Result<ExitCode> {
    init_tracing(matches!(cli.command, Command::Server { .. }));
    let c = client(&cli);
    let json = cli.json;
    match cli.command {
        Command::Server { listen, listen_tls, acme_directory, acme_email, acme_ca, api, api_tls, api_cert, api_key, api_tls_name, master_key_file, isolation, cgroup_parent, takeover, replica_subnet, bridge } => {
            let dir = data_dir(cli.data_dir.clone());
            let master_key_env = master_key_env.filter(|k| !k.is_empty());
            let given = api_cert.zip(api_key);
            let api_tls = (api_tls || given.is_some()).then_some(crate::tls::CertSource { given, names: api_tls_name });
            let acme = acme_directory.map(|directory| wharf_router::AcmeOptions { directory, email: acme_email, ca: acme_ca });
            let opts = crate::server::Options { launcher, listen, listen_tls, acme, api, api_tls, master_key_file, master_key_env, isolation, cgroup_parent, takeover, replica_subnet, bridge };
            crate::server::run(&dir, opts).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Up { dir, listen, listen_tls } => up::up(&c, data_dir(cli.data_dir.clone()), &dir, &listen, &listen_tls).await,
        Command::Deploy { dir, app, env, strategy, detach } => {
            if env.is_some() {
                return Err(Failure::usage("--env: environments are not available in this version yet"));
            }
            let strategy = strategy.map(|s| s.parse().map_err(Failure::usage)).transpose()?;
            deploy::deploy(&c, &dir, app, strategy, detach, json).await
        }
        Command::Apps => show::apps(&c, json).await,
        Command::Status { app: a } => show::status(&c, &app(&a)?, json).await,
        Command::Ps { app: a } => show::ps(&c, a.as_deref().map(app).transpose()?.as_ref(), json).await,
        Command::Releases { app: a } => show::releases(&c, &app(&a)?, json).await,
        Command::Rollback { app: a, release } => {
            let to = release
                .map(|r| r.trim_start_matches('v').parse::<u32>().map_err(|_| Failure::usage(format!("invalid release {r:?}; use a number like v3 or 3"))))
                .transpose()?;
            deploy::rollback(&c, &app(&a)?, to, json).await
        }
        Command::Scale { app: a, counts } => manage::scale(&c, &app(&a)?, &counts, json).await,
        Command::Logs { app: a, follow, since, process, lines } => logs::logs(&c, &app(&a)?, follow, since, process, lines, json).await,
        Command::Config { action, app: a } => match (action, a) {
            (Some(ConfigAction::Set { app: a, pairs }), _) => deploy::config_set(&c, &app(&a)?, &pairs, json).await,
            (Some(ConfigAction::Unset { app: a, keys }), _) => deploy::config_unset(&c, &app(&a)?, keys, json).await,
            (None, Some(a)) => show::config(&c, &app(&a)?, json).await,
            (None, None) => Err(Failure::usage("usage: wharf config APP | wharf config set APP K=V... | wharf config unset APP K...")),
        },
        Command::Secrets { action, app: a } => match (action, a) {
            (Some(SecretsAction::Set { app: a, pairs, stage }), _) => secrets::set(&c, &app(&a)?, &pairs, stage, json).await,
            (Some(SecretsAction::Unset { app: a, keys, stage }), _) => secrets::unset(&c, &app(&a)?, keys, stage, json).await,
            (Some(SecretsAction::RotateMasterKey), _) => secrets::rotate(&c, json).await,
            (None, Some(a)) => secrets::list(&c, &app(&a)?, json).await,
            (None, None) => Err(Failure::usage("usage: wharf secrets APP | wharf secrets set APP K=V... | wharf secrets unset APP K... | wharf secrets rotate-master-key")),
        },
        Command::Tokens { action } => match action {
            TokensAction::Create { role, app: a } => secrets::token_create(&c, &role, a.as_deref().map(app).transpose()?, json).await,
            TokensAction::List => secrets::token_list(&c, json).await,
            TokensAction::Revoke { id } => secrets::token_revoke(&c, &id, json).await,
        },
        Command::Audit { app: a, since } => secrets::audit(&c, a.as_deref().map(app).transpose()?, since, json).await,
        Command::Run { app: a, command } => run::run(&c, &app(&a)?, &command).await,
        Command::Destroy { app: a, yes } => manage::destroy(&c, &app(&a)?, yes, json).await,
        Command::Init { .. } | Command::SecretEnv { .. } => Err(Failure::usage("init and secret-env are run by the server, not by hand")),
    }
}
