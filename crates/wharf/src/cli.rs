//! Command-line interface definition.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "wharf",
    version,
    about = "A self-hosted application platform in one binary"
)]
pub struct Cli {
    /// Data directory (default: $WHARF_DATA_DIR, else /var/lib/wharf as root, else $XDG_DATA_HOME/wharf)
    #[arg(long, global = true, env = "WHARF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// API address of the server to talk to (default: the unix socket in the data dir)
    #[arg(
        long = "server",
        global = true,
        env = "WHARF_SERVER",
        value_name = "HOST:PORT"
    )]
    pub server: Option<String>,
    /// Print data as JSON
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the `server` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the platform in the foreground (control plane, router, supervisor)
    Server {
        /// Router address
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// HTTPS router address (off by default); certificates from the routes' files,
        /// ACME, or the local CA in DATA/tls for *.localhost
        #[arg(long, value_name = "ADDR")]
        listen_tls: Option<String>,
        /// ACME directory URL: certificates for the routes' real domain names (HTTP-01
        /// on --listen, which must be reachable on port 80 for them); needs --listen-tls
        #[arg(long, value_name = "URL", requires = "listen_tls")]
        acme_directory: Option<String>,
        /// Contact e-mail of the ACME account
        #[arg(long, value_name = "EMAIL", requires = "acme_directory")]
        acme_email: Option<String>,
        /// PEM CA certificates to trust for the ACME server's HTTPS instead of the
        /// system's (a test CA such as pebble's)
        #[arg(long, value_name = "PEM", requires = "acme_directory")]
        acme_ca: Option<PathBuf>,
        /// Also serve the API over TCP at this address (every call but /healthz needs a
        /// bearer token); without --api-tls only loopback addresses are accepted
        #[arg(long)]
        api: Option<String>,
        /// Serve the TCP API over TLS (a certificate and CA are made in DATA/tls unless
        /// --api-cert and --api-key are given)
        #[arg(long)]
        api_tls: bool,
        /// PEM certificate chain for the TCP API (with --api-key)
        #[arg(long, value_name = "PEM", requires = "api_key")]
        api_cert: Option<PathBuf>,
        /// PEM private key for the TCP API (with --api-cert)
        #[arg(long, value_name = "PEM", requires = "api_cert")]
        api_key: Option<PathBuf>,
        /// Extra DNS name or IP the generated certificate is valid for (repeatable)
        #[arg(long, value_name = "NAME")]
        api_tls_name: Vec<String>,
        /// Master key file for secrets (default DATA/keys/master.key, created 0600);
        /// $WHARF_MASTER_KEY (hex) takes precedence
        #[arg(long, value_name = "PATH")]
        master_key_file: Option<PathBuf>,
        /// How replicas are isolated: `sandbox` (namespaces, overlay root, cgroups,
        /// seccomp; needs root), `none` (plain processes), `auto` (sandbox when root,
        /// else plain processes, said at start)
        #[arg(long, env = "WHARF_ISOLATION", default_value = "auto", value_parser = ["auto", "sandbox", "none"])]
        isolation: String,
        /// Parent cgroup of the replicas' cgroups: relative to the server's own cgroup,
        /// or absolute with a leading `/`
        #[arg(long, env = "WHARF_CGROUP_PARENT", default_value = "wharf")]
        cgroup_parent: String,
        /// Take over from the server running on this data dir (a restart or an upgrade
        /// to this binary) without refusing a connection: its listening sockets are
        /// handed over, it finishes its in-flight requests and exits
        #[arg(long)]
        takeover: bool,
        /// IPv4 subnet of replicas with `network = "isolated"`: the host takes its first
        /// address (on the bridge), each such replica one of the others
        #[arg(long, env = "WHARF_REPLICA_SUBNET", default_value = wharf_core::addresses::DEFAULT_SUBNET)]
        replica_subnet: wharf_core::addresses::Subnet,
        /// Host bridge of replicas with `network = "isolated"` (created when the first
        /// starts; give each server on a machine its own bridge and subnet)
        #[arg(long, env = "WHARF_BRIDGE", default_value = wharf_runtime::sandbox::network::DEFAULT_BRIDGE, value_parser = wharf_runtime::sandbox::network::parse_bridge)]
        bridge: String,
    },
    /// Quick start: start a server if none answers, deploy DIR, follow its logs
    Up {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Router address of the server started for you
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// HTTPS router address of the server started for you
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen_tls: String,
    },
    /// Build a release from DIR and roll it out
    Deploy {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// App name (overrides the manifest and the directory name)
        #[arg(long)]
        app: Option<String>,
        /// Environment (not available yet)
        #[arg(long)]
        env: Option<String>,
        /// rolling | blue-green | canary
        #[arg(long)]
        strategy: Option<String>,
        /// Return once the release is created
        #[arg(long)]
        detach: bool,
    },
    /// List apps
    Apps,
    /// One app's release, processes, routes and health
    Status { app: String },
    /// Replicas with state, release, pid, address
    Ps { app: Option<String> },
    /// The release ledger
    Releases { app: String },
    /// Roll back to the previous release, or to vN
    Rollback {
        app: String,
        release: Option<String>,
    },
    /// Set replica counts: wharf scale APP web=3 worker=1
    Scale {
        app: String,
        #[arg(required = true, value_name = "TYPE=N")]
        counts: Vec<String>,
    },
    /// App logs, kept across deploys and restarts
    Logs {
        app: String,
        /// Follow new lines
        #[arg(short, long)]
        follow: bool,
        /// Only lines newer than this (10m, 1h, or an RFC 3339 time)
        #[arg(long)]
        since: Option<String>,
        /// Only this process type
        #[arg(long)]
        process: Option<String>,
        /// Number of lines (default 100 unless --since)
        #[arg(short = 'n', long)]
        lines: Option<usize>,
    },
    /// Show config vars, or change them (a change is a new release)
    #[command(args_conflicts_with_subcommands = true)]
    Config {
        #[command(subcommand)]
        action: Option<ConfigAction>,
        /// App (when showing)
        app: Option<String>,
    },
    /// List secrets (names, versions, update times; never values), or change them
    #[command(args_conflicts_with_subcommands = true)]
    Secrets {
        #[command(subcommand)]
        action: Option<SecretsAction>,
        /// App (when listing)
        app: Option<String>,
    },
    /// API tokens for the TCP API
    Tokens {
        #[command(subcommand)]
        action: TokensAction,
    },
    /// The audit log: who did what, when, and how it ended
    Audit {
        /// Only this app
        #[arg(long)]
        app: Option<String>,
        /// Only entries newer than this (10m, 1h, or an RFC 3339 time)
        #[arg(long)]
        since: Option<String>,
    },
    /// Run a one-off process with the app's release and config
    Run {
        app: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Stop and remove an app
    Destroy {
        app: String,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
    /// The replica init (internal); with --exec, runs a command inside the running
    /// replica of RUN_DIR instead (exec probes)
    #[command(hide = true)]
    Init {
        run_dir: PathBuf,
        #[arg(long, value_name = "COMMAND")]
        exec: Option<String>,
    },
    /// Fetches a starting replica's secrets and runs its command (internal)
    #[command(hide = true)]
    SecretEnv {
        /// Write each secret to DIR/NAME (a tmpfs) instead of the environment
        #[arg(long, value_name = "DIR")]
        files: Option<PathBuf>,
        claim: String,
        command: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretsAction {
    /// Set secrets: wharf secrets set APP K=V K=@FILE K=- (stdin)
    Set {
        app: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// Record without a new release; the next deploy or config change picks it up
        #[arg(long)]
        stage: bool,
    },
    /// Remove secrets: wharf secrets unset APP K...
    Unset {
        app: String,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        /// Record without a new release
        #[arg(long)]
        stage: bool,
    },
    /// Re-wrap every data key under a new master key (no restart, no downtime)
    RotateMasterKey,
}

#[derive(Subcommand, Debug)]
pub enum TokensAction {
    /// Create a token (printed once)
    Create {
        /// admin | deployer | viewer
        #[arg(long)]
        role: String,
        /// Limit the token to one app
        #[arg(long)]
        app: Option<String>,
    },
    /// List tokens (ids, roles, apps; never the tokens)
    List,
    /// Revoke a token by id
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Set variables: wharf config set APP K=V...
    Set {
        app: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Remove variables: wharf config unset APP K...
    Unset {
        app: String,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
}
