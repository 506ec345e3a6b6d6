//! Secrets as stored (sealed) and as shown (names and versions, never values).
//!
//! Invariant: no type in this module holds a plaintext secret except
//! [`SecretsRequest`], which only travels from the CLI to the server.

use crate::release::UnixMillis;
use crate::AppName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One version of one secret, sealed by envelope encryption: the value is encrypted with
/// a random data key, and the data key is encrypted ("wrapped") with the master key
/// named by `key_id`. Both ciphertexts are `nonce || ciphertext || tag`, hex-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub app: AppName,
    pub name: String,
    pub version: u32,
    pub created_at: UnixMillis,
    /// Which master key wrapped the data key (a fingerprint, not the key).
    pub key_id: String,
    pub wrapped_key: String,
    pub ciphertext: String,
}

/// A secret as `wharf secrets A` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    pub version: u32,
    pub updated_at: UnixMillis,
    /// Whether the release the app runs (or rolls out) uses this version; false when the
    /// change was staged for the next release.
    pub live: bool,
}

/// `wharf secrets set/unset`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SecretsRequest {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub unset: Vec<String>,
    /// Record the change without making a release; the next release picks it up.
    #[serde(default)]
    pub stage: bool,
}

/// What `secrets rotate-master-key` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateReport {
    pub key_id: String,
    pub rewrapped: usize,
}

/// Asked by a starting replica (through `wharf secret-env`) for its secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimRequest {
    pub ticket: String,
}

/// `[secrets.rotate] NAME = { every = "30d", command = "...", check = "..." }`: wharf runs
/// `command` every `every` to produce a new value (its standard output, one trailing
/// newline dropped), runs `check` with the new value in `NAME` (exit 0 = good), and
/// rolls the new value out. A failed rotation keeps the old value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateSpec {
    /// Milliseconds between rotations.
    pub every_ms: u64,
    pub command: String,
    #[serde(default)]
    pub check: Option<String>,
}
