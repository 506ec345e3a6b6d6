//! Data exchanged between the CLI and the API (JSON over HTTP on a unix socket).

use crate::release::{RolloutOutcome, UnixMillis};
use crate::{ManifestError, Strategy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What kind of failure an API error is; decides the HTTP status and the CLI exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The user's input is wrong (exit 2).
    BadInput,
    NotFound,
    Conflict,
    /// The operation ran and failed (exit 1).
    Failed,
    Internal,
    /// No valid token (401).
    Unauthorized,
    /// The token's role or app does not allow this (403).
    Forbidden,
}

/// The body of every non-2xx API answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ManifestError>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRequest {
    /// Absolute path of the app directory on the server's machine.
    pub dir: String,
    pub app: Option<String>,
    pub strategy: Option<Strategy>,
}

/// One line of the newline-delimited JSON stream a deploy or rollback answers with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DeployEvent {
    /// A step of the rollout ("release v3 created", "web-1-v3 ready", ...).
    Progress { message: String },
    /// A line of build output.
    Build { line: String },
    /// The release serves all traffic.
    Done {
        app: String,
        release: u32,
        url: String,
    },
    /// The rollout failed and the previous release serves (or nothing did before).
    Failed {
        reason: String,
        kind: ErrorKind,
        #[serde(default)]
        replica: Option<String>,
        #[serde(default)]
        logs: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        manifest: Option<ManifestError>,
    },
}

/// Lifecycle state of a replica as `ps` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaState {
    Starting,
    Ready,
    /// Running but failing readiness (out of routing).
    Unready,
    Draining,
    Stopping,
    /// Exited; waiting out the restart backoff.
    Backoff,
    /// Restarting repeatedly.
    CrashLoop,
}

impl std::fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

/// One replica, as `ps --json` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub app: String,
    pub id: String,
    pub process: String,
    pub release: u32,
    pub state: ReplicaState,
    pub pid: Option<u32>,
    /// host:port the router sends traffic to.
    pub address: Option<String>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub started_at: Option<UnixMillis>,
}

/// One process type of an app in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub process: String,
    pub command: String,
    pub desired: u32,
    pub ready: u32,
    pub running: u32,
}

/// One app, as `apps` lists it and `status` details it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub release: Option<u32>,
    pub url: String,
    pub hosts: Vec<String>,
    /// Path prefixes served on those hosts (`[route] paths`; `["/"]` by default).
    #[serde(default)]
    pub paths: Vec<String>,
    /// "running", "deploying vN", "idle", ...
    pub status: String,
    pub processes: Vec<ProcessStatus>,
    pub last_outcome: Option<RolloutOutcome>,
    pub created_at: UnixMillis,
    /// How the web process rolls out: rolling, blue-green or canary.
    #[serde(default)]
    pub strategy: String,
    /// The canary in progress: its step, weight, failed checks and last analysis.
    #[serde(default)]
    pub canary: Option<crate::release::CanaryProgress>,
    /// Blue-green: the previous set kept warm for an instant rollback.
    #[serde(default)]
    pub warm: Option<crate::release::Warm>,
    /// The certificate the router's TLS listener serves for each host (empty without
    /// `--listen-tls`).
    #[serde(default)]
    pub certificates: Vec<CertificateStatus>,
}

/// The certificate served over HTTPS for one of an app's hosts, and ACME's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    pub host: String,
    /// Where the certificate served right now comes from.
    pub source: CertificateSource,
    /// When that certificate expires; absent for the local CA's, issued on demand.
    #[serde(default)]
    pub not_after: Option<UnixMillis>,
    /// What is wrong with the route's certificate files (`[route] tls`) for this host:
    /// the last load failed (then the last good certificate stays in service), or the
    /// certificate does not name the host.
    #[serde(default)]
    pub files_error: Option<String>,
    /// Set when ACME manages the host (a real domain name without covering certificate
    /// files, on a server with `--acme-directory`).
    #[serde(default)]
    pub acme: Option<AcmeStatus>,
}

/// Where a served certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateSource {
    /// The route's certificate files (`[route] tls`).
    Files,
    /// Issued by the ACME server (`--acme-directory`).
    Acme,
    /// Issued on demand by the router's local CA (`DATA/tls/router-ca.pem`).
    LocalCa,
}

impl std::fmt::Display for CertificateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertificateSource::Files => "files",
            CertificateSource::Acme => "ACME",
            CertificateSource::LocalCa => "local CA",
        })
    }
}

/// ACME's state for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeStatus {
    /// An order is in progress right now.
    pub ordering: bool,
    /// When the next order starts: the renewal time of the certificate in service, or
    /// the retry after a failure; absent while ordering.
    #[serde(default)]
    pub next_attempt_at: Option<UnixMillis>,
    /// Orders failed in a row since the last certificate.
    pub failures: u32,
    /// The last failure since then: what went wrong and what to check.
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_at: Option<UnixMillis>,
}

/// A release in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub version: u32,
    pub artifact: String,
    pub description: String,
    pub created_at: UnixMillis,
    pub current: bool,
    pub processes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub counts: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ConfigRequest {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub unset: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackRequest {
    pub to: Option<u32>,
}

/// `wharf run`: the command line of a one-off process (run with `/bin/sh -c`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRequest {
    pub command: String,
}

/// A one-off process the server prepared for `wharf run` (in the app's sandbox, with
/// its config and secrets): the caller starts `program args...` on the server's machine
/// with its own stdin, stdout and stderr, then reports it finished.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub release: u32,
    pub id: String,
    pub program: String,
    pub args: Vec<String>,
}

/// A log record as kept in the data dir and streamed by `logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// RFC 3339 with milliseconds, UTC.
    pub ts: String,
    pub app: String,
    pub process: String,
    pub replica: String,
    pub release: u32,
    /// "stdout", "stderr", or "wharf" for platform events about the replica.
    pub stream: String,
    pub msg: String,
    /// Set when the line was a JSON object: its fields, kept structured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
}
