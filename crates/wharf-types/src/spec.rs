//! The normalized process specification a release carries: what to run, how many, how
//! to tell it is healthy, and how to roll it out. Produced from a manifest or a Procfile.

use crate::quantity::duration_str;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default grace between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to wait for in-flight requests of a replica leaving the route table.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a new release has to become ready before the deploy is rolled back.
pub const DEFAULT_DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);

/// One process type of a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Run by `/bin/sh -c "exec COMMAND"`.
    pub command: String,
    pub replicas: u32,
    /// CPU units, 1024 = one core (enforced by the sandboxed runtime).
    #[serde(default)]
    pub cpu: Option<u32>,
    /// Hard CPU quota in millicores (1000 = one core), from `cpu_limit = 0.5` (cores):
    /// the replica never gets more, even on an idle machine (enforced by the sandbox).
    #[serde(default)]
    pub cpu_limit: Option<u32>,
    /// Memory hard limit in bytes (enforced by the sandboxed runtime).
    #[serde(default)]
    pub memory: Option<u64>,
    /// A fixed port the app listens on, instead of the `$PORT` wharf assigns.
    #[serde(default)]
    pub port: Option<u16>,
    /// An OCI image as the root filesystem instead of the host's (sandbox only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// The host's network (default), or a network namespace of each replica's own.
    #[serde(default)]
    pub network: Network,
    /// Readiness: may this replica receive traffic? `None` = ready once started (non-web).
    #[serde(default)]
    pub readiness: Option<Probe>,
    /// Liveness: should this replica be restarted?
    #[serde(default)]
    pub liveness: Option<Probe>,
    /// Startup: holds readiness and liveness until it first passes; restarts the
    /// replica when it fails `failure_threshold` times in a row.
    #[serde(default)]
    pub startup: Option<Probe>,
    pub deploy: DeploySpec,
    #[serde(with = "duration_str")]
    pub stop_timeout: Duration,
    #[serde(with = "duration_str")]
    pub drain_timeout: Duration,
}

/// An OCI image a process runs on (`image = "oci:PATH[:TAG]"`), resolved at deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// As the manifest says: `oci:PATH` or `oci:PATH:TAG`.
    pub reference: String,
    /// The image manifest's digest (`sha256:...`), once resolved.
    #[serde(default)]
    pub digest: String,
    /// Layer digests (sha256 hex), bottom first, once resolved.
    #[serde(default)]
    pub layers: Vec<String>,
    /// The image's `KEY=VALUE` environment (its config's `Env`).
    #[serde(default)]
    pub env: Vec<String>,
}

impl Image {
    pub fn new(reference: impl Into<String>) -> Self {
        Image {
            reference: reference.into(),
            digest: String::new(),
            layers: Vec::new(),
            env: Vec::new(),
        }
    }
}

impl ProcessSpec {
    /// A spec with the defaults a Procfile line gets: one replica; web processes are
    /// ready when their port accepts TCP connections.
    pub fn from_command(process: &crate::ProcessType, command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            replicas: 1,
            cpu: None,
            cpu_limit: None,
            memory: None,
            port: None,
            image: None,
            network: Network::Host,
            readiness: process.is_web().then(|| Probe::new(Check::Tcp)),
            liveness: None,
            startup: None,
            deploy: DeploySpec::default(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// The network a replica is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// The host's network: the app listens on `127.0.0.1:$PORT` (Heroku style).
    #[default]
    Host,
    /// Its own network namespace with an address of the replica subnet, reachable from
    /// the host (the router, probes) at that address; the app listens on `0.0.0.0:$PORT`.
    Isolated,
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host" => Ok(Self::Host),
            "isolated" => Ok(Self::Isolated),
            _ => Err(format!(
                "unknown network {s:?}; use \"host\" or \"isolated\""
            )),
        }
    }
}

/// A health check and its timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub check: Check,
    #[serde(with = "duration_str")]
    pub interval: Duration,
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Consecutive failures before the probe counts as failed.
    pub failure_threshold: u32,
    /// Consecutive successes before the probe counts as passing.
    pub success_threshold: u32,
}

impl Probe {
    pub fn new(check: Check) -> Self {
        Self {
            check,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            failure_threshold: 3,
            success_threshold: 1,
        }
    }
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// `GET path` on the replica's port; passes on the expected status, or any 2xx/3xx.
    Http { path: String, status: Option<u16> },
    /// A TCP connect to the replica's port.
    Tcp,
    /// A command run with the replica's environment; passes on exit code 0.
    Exec { command: String },
}

/// How a new release replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    #[default]
    Rolling,
    BlueGreen,
    Canary,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rolling" => Ok(Self::Rolling),
            "blue-green" => Ok(Self::BlueGreen),
            "canary" => Ok(Self::Canary),
            _ => Err(format!(
                "unknown strategy {s:?}; use rolling, blue-green or canary"
            )),
        }
    }
}

/// A replica count given absolutely or as a percentage of the desired count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Amount {
    Count(u32),
    Percent(u32),
}

impl Amount {
    /// Resolves against `of` replicas. Surge rounds up, unavailability down (Kubernetes).
    pub fn resolve(self, of: u32, round_up: bool) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => {
                let num = u64::from(of) * u64::from(p);
                let v = if round_up {
                    num.div_ceil(100)
                } else {
                    num / 100
                };
                u32::try_from(v).unwrap_or(u32::MAX)
            }
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            || format!("invalid amount {s:?}; use a count like 1 or a percentage like \"25%\"");
        match s.trim().strip_suffix('%') {
            Some(p) => p.trim().parse().map(Amount::Percent).map_err(|_| bad()),
            None => s.trim().parse().map(Amount::Count).map_err(|_| bad()),
        }
    }
}

/// Default time the previous set of a blue-green deploy is kept running.
pub const DEFAULT_KEEP_PREVIOUS: Duration = Duration::from_secs(5 * 60);

/// Rollout parameters of one process type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploySpec {
    pub strategy: Strategy,
    pub max_surge: Amount,
    pub max_unavailable: Amount,
    /// How long new replicas have to become ready before the deploy is rolled back.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Blue-green: how long the previous set stays warm (out of routing) after the
    /// switch, so that a rollback within that window is instant.
    #[serde(with = "duration_str", default = "default_keep_previous")]
    pub keep_previous: Duration,
    #[serde(default)]
    pub canary: CanarySpec,
}

fn default_keep_previous() -> Duration {
    DEFAULT_KEEP_PREVIOUS
}

impl Default for DeploySpec {
    fn default() -> Self {
        Self {
            strategy: Strategy::Rolling,
            max_surge: Amount::Percent(100),
            max_unavailable: Amount::Count(0),
            timeout: DEFAULT_DEPLOY_TIMEOUT,
            keep_previous: DEFAULT_KEEP_PREVIOUS,
            canary: CanarySpec::default(),
        }
    }
}

/// Canary analysis: traffic steps and the thresholds each step is judged by, with the
/// router's own metrics of the canary against the baseline (Flagger's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanarySpec {
    /// Percent of traffic on the canary at each step; the last is 100.
    pub steps: Vec<u32>,
    /// How long each step is observed before it is judged.
    #[serde(with = "duration_str")]
    pub interval: Duration,
    /// Fewer canary requests than this in a window: no verdict yet.
    pub min_requests: u64,
    /// Failed checks that roll the canary back.
    pub max_failed_checks: u32,
    /// Lowest acceptable canary success rate (non-5xx), in percent.
    pub min_success_rate: f64,
    /// Largest acceptable drop of the canary's success rate below the baseline's, in points.
    pub max_success_drop: f64,
    /// Highest acceptable canary p99 latency.
    #[serde(with = "duration_str")]
    pub max_p99: Duration,
    /// Highest acceptable canary p99 as a multiple of the baseline's.
    pub max_p99_ratio: f64,
}

impl Default for CanarySpec {
    fn default() -> Self {
        Self {
            steps: vec![10, 50, 100],
            interval: Duration::from_secs(10),
            min_requests: 20,
            max_failed_checks: 2,
            min_success_rate: 99.0,
            max_success_drop: 1.0,
            max_p99: Duration::from_millis(500),
            max_p99_ratio: 1.5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(Amount::parse("25%").unwrap(), Amount::Percent(25));
        assert_eq!(Amount::parse("2").unwrap(), Amount::Count(2));
        assert!(Amount::parse("x%").is_err());
        assert_eq!(Amount::Percent(25).resolve(3, true), 1);
        assert_eq!(Amount::Percent(25).resolve(3, false), 0);
        assert_eq!(Amount::Percent(100).resolve(3, true), 3);
        assert_eq!(Amount::Count(2).resolve(3, false), 2);
    }

    #[test]
    fn strategies() {
        assert_eq!(
            "blue-green".parse::<Strategy>().unwrap(),
            Strategy::BlueGreen
        );
        assert!("yolo".parse::<Strategy>().unwrap_err().contains("rolling"));
    }
}
