//! The `wharf` binary: the CLI, the `server` composition root, and the replica `init`
//! role. Everything else lives in the library crates.

mod claims;
mod cli;
mod client;
mod commands;
mod handoff;
mod output;
mod pinning;
mod server;
mod tls;
mod tls_serve;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The replica init's own command line (`wharf init RUN_DIR`, every replica start)
    // skips building the whole CLI's parser.
    if let Some(run_dir) = init_run_dir() {
        let code = wharf_runtime::init::run(&run_dir);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = cli::Cli::parse();
    if let cli::Command::Init { run_dir, exec } = &cli.command {
        // The replica init must not start a runtime or threads before forking the app,
        // nor may a process with threads enter a replica's mount namespace.
        let code = match exec {
            Some(command) => wharf_runtime::enter::run(run_dir, command),
            None => wharf_runtime::init::run(run_dir),
        };
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if let cli::Command::SecretEnv {
        files,
        claim,
        command,
    } = &cli.command
    {
        return commands::secrets::secret_env(files.as_deref(), claim, command);
    }
    // The server's replica inits are forked by a launcher, which must be forked while
    // this process has a single thread: now, before the async runtime, and before the
    // master key is read into memory (the launcher drops it from its environment).
    let launcher = match &cli.command {
        cli::Command::Server { .. } => {
            match wharf_runtime::launcher::Launcher::start(&["WHARF_MASTER_KEY"]) {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!("wharf: cannot start the replica launcher ({e}); replica inits are spawned instead");
                    None
                }
            }
        }
        _ => None,
    };
    // Taken out of the environment before any thread exists, so no child inherits it.
    let master_key = std::env::var("WHARF_MASTER_KEY").ok();
    std::env::remove_var("WHARF_MASTER_KEY");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(commands::dispatch(cli, master_key, launcher)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// RUN_DIR when the arguments are exactly `init RUN_DIR` (any other form of `init`,
/// `--help` included, goes through the parser).
fn init_run_dir() -> Option<std::path::PathBuf> {
    let mut args = std::env::args_os().skip(1);
    let (role, dir) = (args.next()?, args.next()?);
    let plain =
        role == "init" && args.next().is_none() && !dir.as_encoded_bytes().starts_with(b"-");
    plain.then(|| dir.into())
}
