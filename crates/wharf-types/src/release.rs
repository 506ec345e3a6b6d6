//! Releases (immutable, numbered) and the per-app record of desired state.

use crate::{AppName, ProcessSpec, ProcessType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Milliseconds since the Unix epoch: the one timestamp type persisted anywhere.
pub type UnixMillis = u64;

/// An immutable release: artifact + config + process spec, numbered v1, v2, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub app: AppName,
    pub version: u32,
    /// Content hash of the built artifact (a directory under the data dir).
    pub artifact: String,
    /// The environment every process of this release gets (manifest `[env]` + app config).
    pub env: BTreeMap<String, String>,
    pub processes: BTreeMap<ProcessType, ProcessSpec>,
    pub hosts: Vec<String>,
    /// `[route]` HTTPS settings, certificate paths absolute and canonical.
    #[serde(default)]
    pub tls: crate::route::RouteTls,
    pub created_at: UnixMillis,
    /// What made this release: "deploy", "config set FOO", "rollback to v2", ...
    pub description: String,
    /// The manifest `[env]`, kept so that config changes can re-merge over it.
    #[serde(default)]
    pub manifest_env: BTreeMap<String, String>,
    /// Secret versions this release uses (name -> version); values live sealed in the
    /// store and are decrypted only when a replica starts.
    #[serde(default)]
    pub secrets: BTreeMap<String, u32>,
    /// `[secrets] as = "files"`: values as files on a tmpfs at `/run/secrets/NAME`.
    #[serde(default)]
    pub secrets_as_files: bool,
    /// The manifest's `[secrets.rotate]`.
    #[serde(default)]
    pub rotate: BTreeMap<String, crate::secret::RotateSpec>,
    /// The manifest's `[route]` options (paths, balancing, timeouts, body limit).
    #[serde(default)]
    pub route: crate::route_options::RouteOptions,
}

/// Per-app desired state. Written by user actions; the reconciler converges to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub name: AppName,
    pub created_at: UnixMillis,
    /// Config vars set with `wharf config set` (override the manifest's `[env]`).
    pub config: BTreeMap<String, String>,
    /// Current secret versions (name -> version), including staged changes; the next
    /// release takes these.
    #[serde(default)]
    pub secrets: BTreeMap<String, u32>,
    /// Replica counts set with `wharf scale`, overriding the release's defaults.
    pub formation: BTreeMap<ProcessType, u32>,
    /// The release that should be running (the target of a rollout in progress).
    pub target: Option<u32>,
    /// The last release that fully rolled out; where a failed rollout goes back to.
    pub last_good: Option<u32>,
    /// The rollout in progress, if any.
    pub rollout: Option<Rollout>,
    /// How the last rollout ended.
    pub last_outcome: Option<RolloutOutcome>,
    /// The release that served before the current one: where `rollback` goes by default.
    #[serde(default)]
    pub previous: Option<u32>,
    /// Blue-green: the previous set, kept running out of routing until `until`.
    #[serde(default)]
    pub warm: Option<Warm>,
    /// Highest release number handed out so far.
    pub latest: u32,
}

impl AppRecord {
    pub fn new(name: AppName, now: UnixMillis) -> Self {
        Self {
            name,
            created_at: now,
            config: BTreeMap::new(),
            secrets: BTreeMap::new(),
            formation: BTreeMap::new(),
            target: None,
            last_good: None,
            rollout: None,
            last_outcome: None,
            previous: None,
            warm: None,
            latest: 0,
        }
    }

    /// Desired replicas of `process` in `release`: the scale override, else the spec.
    pub fn desired(&self, process: &ProcessType, spec: &ProcessSpec) -> u32 {
        self.formation
            .get(process)
            .copied()
            .unwrap_or(spec.replicas)
    }
}

/// A rollout in progress toward `release`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub release: u32,
    /// The release that was serving when this one started (None for a first deploy).
    pub from: Option<u32>,
    pub started_at: UnixMillis,
    /// Set when this rollout is itself the automatic return to `from` after a failure.
    #[serde(default)]
    pub reverting: Option<String>,
    /// What started it: "deploy", "rollback", "config set FOO", ...
    #[serde(default)]
    pub cause: String,
    /// Canary progress (unused by other strategies).
    #[serde(default)]
    pub canary: Option<CanaryProgress>,
}

impl Rollout {
    pub fn new(
        release: u32,
        from: Option<u32>,
        started_at: UnixMillis,
        cause: impl Into<String>,
    ) -> Self {
        Self {
            release,
            from,
            started_at,
            reverting: None,
            cause: cause.into(),
            canary: None,
        }
    }
}

/// Where a canary rollout is: its current step and the verdicts so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryProgress {
    /// Index into the canary steps.
    pub step: usize,
    /// Percent of traffic on the canary now.
    pub weight: u32,
    pub step_started_at: UnixMillis,
    pub failed_checks: u32,
    /// The last analysis, for `wharf status`.
    pub last: Option<Analysis>,
}

/// One canary check: the numbers and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub at: UnixMillis,
    pub canary_requests: u64,
    pub baseline_requests: u64,
    /// Percent of non-5xx answers.
    pub canary_success: Option<f64>,
    pub baseline_success: Option<f64>,
    /// p99 latency in milliseconds.
    pub canary_p99_ms: Option<u64>,
    pub baseline_p99_ms: Option<u64>,
    /// "pass", "fail: ...", or "wait: ..." (not enough traffic yet).
    pub verdict: String,
}

impl Analysis {
    /// "success 100.0% vs baseline 99.5%, p99 5 ms vs 10 ms, 40 requests: pass".
    pub fn summary(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}%"));
        let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
        format!(
            "success {} vs baseline {}, p99 {} vs {}, {} requests: {}",
            pct(self.canary_success),
            pct(self.baseline_success),
            ms(self.canary_p99_ms),
            ms(self.baseline_p99_ms),
            self.canary_requests,
            self.verdict
        )
    }
}

/// A previous release kept running (out of routing) for an instant rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warm {
    pub release: u32,
    pub until: UnixMillis,
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutOutcome {
    pub release: u32,
    pub succeeded: bool,
    pub at: UnixMillis,
    /// Why it failed, with the failing replica's id when there is one.
    pub reason: Option<String>,
    pub replica: Option<String>,
    /// What started the rollout ("deploy", "rollback", "config set FOO").
    #[serde(default)]
    pub cause: String,
}
