//! Ports: what the controller needs from the world. Adapters implement these traits
//! (`wharf-runtime` for processes, `wharf-store` for persistence); fakes live in tests.

use crate::replica::Exit;
use std::collections::BTreeMap;
use std::path::PathBuf;
use wharf_types::access::{AuditEntry, TokenRecord};
use wharf_types::release::UnixMillis;
use wharf_types::secret::SealedSecret;
use wharf_types::{AppName, AppRecord, ProcessType, Release};

/// Everything needed to start one replica process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub app: AppName,
    pub process: ProcessType,
    pub release: u32,
    pub id: String,
    /// Run with `/bin/sh -c "exec COMMAND"`.
    pub command: String,
    /// Working directory: the release artifact.
    pub dir: PathBuf,
    /// The full environment (release env, PORT, WHARF_*). Without `HOME`, the runtime
    /// sets a writable one.
    pub env: BTreeMap<String, String>,
    pub port: u16,
    /// The host's network, or a namespace of the replica's own (sandboxed runtimes only).
    pub network: wharf_types::Network,
    /// CPU units (1024 = one core), for runtimes that enforce limits.
    pub cpu: Option<u32>,
    /// Hard CPU quota in millicores (1000 = one core), for runtimes that enforce limits.
    pub cpu_limit: Option<u32>,
    /// Memory hard limit in bytes, for runtimes that enforce limits.
    pub memory: Option<u64>,
    /// One-offs only: the working directory is writable, not the read-only artifact
    /// (builds run in their scratch copy of the app).
    pub writable_dir: bool,
    /// `[secrets] as = "files"`: the process gets a private tmpfs at `/run/secrets` (a
    /// sandboxing runtime; without it, nothing is mounted there).
    pub secret_files: bool,
    /// The layer directories (top first) of the OCI image the process runs on; empty:
    /// the host's root filesystem. Only a sandboxing runtime can honour it.
    pub image: Vec<PathBuf>,
}

/// A started replica process, as recorded so that a restarted controller can find it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Handle {
    pub app: AppName,
    pub process: ProcessType,
    pub release: u32,
    pub id: String,
    /// The supervising process (the replica's init), leader of its process group.
    pub pid: u32,
    /// Kernel start time of `pid` (clock ticks since boot): guards against pid reuse.
    pub start_time: u64,
    pub port: u16,
    pub started_at: UnixMillis,
    /// The replica's own address when it has its own network (`network = "isolated"`);
    /// `None`: it listens on the host's loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<std::net::Ipv4Addr>,
}

impl Handle {
    /// Where the router and the probes reach the replica.
    pub fn socket_addr(&self) -> std::net::SocketAddr {
        let ip = self.addr.unwrap_or(std::net::Ipv4Addr::LOCALHOST);
        std::net::SocketAddr::from((ip, self.port))
    }
}

/// How to start a prepared one-off process (see [`Runtime::oneoff`]): the caller spawns
/// `program args...` with the stdio it wants; its exit code is the app's (128 + the
/// signal when one killed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOff {
    pub id: String,
    pub program: PathBuf,
    pub args: Vec<std::ffi::OsString>,
}

/// Is the replica process still there?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Running,
    Exited(Exit),
}

/// Signals the controller sends to a replica (to its whole process group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Kill,
}

/// Errors of a runtime adapter.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start replica {id}: {message}")]
    Start { id: String, message: String },
    #[error("cannot signal replica {id}: {message}")]
    Signal { id: String, message: String },
}

/// Runs replica processes.
pub trait Runtime: Send + Sync {
    fn start(&self, launch: &Launch) -> Result<Handle, RuntimeError>;
    /// Non-blocking check; reaps the process if it is a child.
    fn poll(&self, handle: &Handle) -> Liveness;
    fn signal(&self, handle: &Handle, signal: StopSignal) -> Result<(), RuntimeError>;
    /// Removes what the replica left behind: processes still in its group (what the app
    /// forked, or the app itself when only its init died) and its run directory. Call
    /// after the replica's init exited.
    fn cleanup(&self, handle: &Handle);
    /// Replicas recorded as started and still running (for re-adoption after a restart).
    /// Records of dead replicas are cleaned up and reported with their exit.
    fn discover(&self) -> Vec<(Handle, Liveness)>;
    /// The last `n` lines of a replica's output, for error reports.
    fn tail(&self, app: &AppName, id: &str, n: usize) -> Vec<String>;
    /// Prepares a one-off process of `launch` (a `wharf run`, a rotate command) in the
    /// same kind of world as a replica of it (sandbox, limits, uid), attached to the
    /// stdio of whoever starts it. Call [`Runtime::finish_oneoff`] when it has exited.
    fn oneoff(&self, launch: &Launch) -> Result<OneOff, RuntimeError>;
    /// How to run `command` inside the running replica of `handle` (its namespaces,
    /// cgroup, uid and environment, as `docker exec` does), for exec probes. The caller
    /// spawns it; killing that process ends the command.
    fn exec(&self, handle: &Handle, command: &str) -> Result<OneOff, RuntimeError>;
    /// Kills what one-off `id` left running (its process group `pgid` when the caller
    /// made one) and removes its run directory and cgroup.
    fn finish_oneoff(&self, app: &AppName, id: &str, pgid: Option<u32>);
}

/// Errors of a store adapter.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// Durable desired state. Every method that writes commits before returning.
pub trait Store: Send + Sync {
    fn apps(&self) -> Result<Vec<AppRecord>, StoreError>;
    fn app(&self, name: &AppName) -> Result<Option<AppRecord>, StoreError>;
    /// Writes the app record and, in the same transaction, a new release (which must not
    /// exist yet: releases are immutable).
    fn put(&self, app: &AppRecord, release: Option<&Release>) -> Result<(), StoreError>;
    fn release(&self, app: &AppName, version: u32) -> Result<Option<Release>, StoreError>;
    fn releases(&self, app: &AppName) -> Result<Vec<Release>, StoreError>;
    /// Deletes the app and all its releases and secrets.
    fn delete(&self, app: &AppName) -> Result<(), StoreError>;

    /// Writes sealed secret versions in one transaction; a version, once written, is
    /// only ever replaced by [`Store::rewrap_secrets`].
    fn put_secrets(&self, secrets: &[SealedSecret]) -> Result<(), StoreError>;
    fn secret(
        &self,
        app: &AppName,
        name: &str,
        version: u32,
    ) -> Result<Option<SealedSecret>, StoreError>;
    /// Every version of every secret of `app`.
    fn secrets(&self, app: &AppName) -> Result<Vec<SealedSecret>, StoreError>;
    /// Applies `f` to every sealed secret of every app and writes the results, all in one
    /// transaction: either every secret is rewritten or none is.
    fn rewrap_secrets(&self, f: &mut RewrapFn<'_>) -> Result<usize, StoreError>;

    /// Writes (or replaces, for revocation) a token record.
    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Appends to the audit log.
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// The audit log, oldest first.
    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError>;
}

/// What [`Store::rewrap_secrets`] applies to each secret.
pub type RewrapFn<'a> = dyn FnMut(&mut SealedSecret) -> Result<(), StoreError> + 'a;

/// Errors of the secret vault. Messages name the secret, never its value.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("secret {name} of {app} (version {version}) failed authentication: its stored ciphertext was altered or belongs elsewhere; it was not used. Set it again with `wharf secrets set {app} {name}=...`")]
    Tampered {
        app: String,
        name: String,
        version: u32,
    },
    #[error("secret {name} of {app} (version {version}) is wrapped by master key {key_id}, which this server does not have; start the server with that key (--master-key-file or $WHARF_MASTER_KEY)")]
    UnknownKey {
        app: String,
        name: String,
        version: u32,
        key_id: String,
    },
    #[error("master key: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Envelope encryption of secrets: seals values under fresh data keys wrapped by the
/// master key, opens them (verifying integrity), and rotates the master key.
pub trait Vault: Send + Sync {
    fn seal(
        &self,
        app: &AppName,
        name: &str,
        version: u32,
        now: UnixMillis,
        plaintext: &[u8],
    ) -> Result<SealedSecret, VaultError>;
    /// Decrypts and authenticates; a tampered record is an error, never a value.
    fn open(&self, sealed: &SealedSecret) -> Result<Vec<u8>, VaultError>;
    /// Makes a new master key current and re-wraps every data key in `store` with it in
    /// one transaction. Returns the new key id and the number of secrets re-wrapped.
    fn rotate(&self, store: &dyn Store) -> Result<(String, usize), VaultError>;
}

/// Where the controller sends the route table, and asks how busy a replica is.
pub trait RouteSink: Send + Sync {
    /// Atomically replaces the route table.
    fn publish(&self, table: wharf_types::route::RouteTable);
    /// Requests in flight to a replica (0 when unknown).
    fn inflight(&self, replica: &str) -> usize;
    /// Monotonic request counters and latency histograms per release of `app`.
    fn stats(&self, _app: &str) -> Vec<wharf_types::route::ReleaseStats> {
        Vec::new()
    }
    /// Prometheus text of the data plane's own metrics.
    fn metrics(&self) -> String {
        String::new()
    }
    /// Whether the data plane can serve the certificate chain in `cert` with the key in
    /// `key` (readable PEM files that belong together); the error says what is wrong.
    fn check_certificate(
        &self,
        _cert: &std::path::Path,
        _key: &std::path::Path,
    ) -> Result<(), String> {
        Ok(())
    }
    /// The port of the HTTPS listener, when there is one.
    fn https_port(&self) -> Option<u16> {
        None
    }
    /// What the HTTPS listener serves for each of `hosts` (source, expiry, ACME's
    /// progress); empty without one.
    fn certificates(&self, _hosts: &[String]) -> Vec<wharf_types::api::CertificateStatus> {
        Vec::new()
    }
}
