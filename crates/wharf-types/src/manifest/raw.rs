//! The manifest as serde reads it: every key optional, unknown keys refused.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    pub app: Option<String>,
    pub build: Option<RawBuild>,
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    #[serde(default)]
    pub process: BTreeMap<String, RawProcess>,
    pub route: Option<RawRoute>,
    pub secrets: Option<RawSecrets>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecrets {
    #[serde(rename = "as")]
    pub delivery: Option<String>,
    #[serde(default)]
    pub rotate: BTreeMap<String, RawRotate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRotate {
    pub every: Option<String>,
    pub command: Option<String>,
    pub check: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBuild {
    pub command: Option<String>,
}

/// `[env]` values may be written as TOML scalars; they become strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum EnvValue {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProcess {
    pub command: Option<String>,
    pub replicas: Option<u32>,
    pub cpu: Option<u32>,
    /// Cores, e.g. `0.5`.
    pub cpu_limit: Option<RawNumber>,
    pub memory: Option<String>,
    pub port: Option<u16>,
    pub image: Option<String>,
    pub network: Option<String>,
    pub readiness: Option<RawProbe>,
    pub liveness: Option<RawProbe>,
    pub startup: Option<RawProbe>,
    pub deploy: Option<RawDeploy>,
    pub stop_timeout: Option<String>,
    pub drain_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbe {
    pub http: Option<String>,
    pub tcp: Option<bool>,
    pub exec: Option<String>,
    pub status: Option<u16>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub failure_threshold: Option<u32>,
    pub success_threshold: Option<u32>,
}

/// `max_surge = 1` or `max_surge = "25%"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawAmount {
    Count(u32),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeploy {
    pub strategy: Option<String>,
    pub max_surge: Option<RawAmount>,
    pub max_unavailable: Option<RawAmount>,
    pub timeout: Option<String>,
    pub keep_previous: Option<String>,
    pub canary: Option<RawCanary>,
}

/// A number written as an integer or a float.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawNumber {
    Int(i64),
    Float(f64),
}

impl RawNumber {
    pub fn value(&self) -> f64 {
        match self {
            RawNumber::Int(i) => *i as f64,
            RawNumber::Float(f) => *f,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCanary {
    pub steps: Option<Vec<u32>>,
    pub interval: Option<String>,
    pub min_requests: Option<u64>,
    pub max_failed_checks: Option<u32>,
    pub min_success_rate: Option<RawNumber>,
    pub max_success_drop: Option<RawNumber>,
    pub max_p99: Option<String>,
    pub max_p99_ratio: Option<RawNumber>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    #[serde(default)]
    pub hosts: Vec<String>,
    pub tls: Option<RawTlsFiles>,
    pub https_only: Option<bool>,
    pub paths: Option<Vec<String>>,
    pub balance: Option<String>,
    pub timeouts: Option<RawTimeouts>,
    pub max_body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTlsFiles {
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// `[route] timeouts = { connect = "2s", response = "60s", idle = "60s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub connect: Option<String>,
    pub response: Option<String>,
    pub idle: Option<String>,
}
