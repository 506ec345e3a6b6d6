//! API tokens, roles and the audit log.
//!
//! Invariant: a stored [`TokenRecord`] holds the SHA-256 of the token, never the token.

use crate::release::UnixMillis;
use crate::AppName;
use serde::{Deserialize, Serialize};

/// What a token may do. viewer reads; deployer also deploys, scales and changes config
/// and secrets (of its app, when scoped); admin does everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Deployer,
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "deployer" => Ok(Self::Deployer),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown role {other:?}; use admin, deployer or viewer"
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Viewer => "viewer",
            Self::Deployer => "deployer",
            Self::Admin => "admin",
        })
    }
}

/// A token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public identifier (`tok-...`), shown in lists and the audit log.
    pub id: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub role: Role,
    /// Restricts the token to one app.
    pub app: Option<AppName>,
    pub created_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
}

/// A token as listed (no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub role: Role,
    pub app: Option<String>,
    pub created_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
}

impl From<&TokenRecord> for TokenInfo {
    fn from(t: &TokenRecord) -> Self {
        Self {
            id: t.id.clone(),
            role: t.role,
            app: t.app.as_ref().map(|a| a.to_string()),
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// `wharf tokens create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRequest {
    pub role: Role,
    pub app: Option<String>,
}

/// The answer to `tokens create`: the only time the token itself is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    pub id: String,
    pub token: String,
    pub role: Role,
    pub app: Option<String>,
}

/// One audit record: who did what to which app, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: UnixMillis,
    /// A token id, or "local" for the unix socket.
    pub who: String,
    /// "POST /v1/apps/a/secrets", "secrets read (replica web-1-v3 start)", ...
    pub action: String,
    pub app: Option<String>,
    /// "ok", or "denied (403)", "failed (400)", ...
    pub outcome: String,
}
