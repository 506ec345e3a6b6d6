//! API tokens (create, list, revoke, authenticate) and the audit log.
//!
//! Invariants: a token is shown once, when created; the store keeps its SHA-256 only
//! (tokens are 256 random bits, so a fast hash is enough); a revoked token never
//! authenticates again.

use crate::secrets::random_hex;
use crate::{ControlError, Controller};
use sha2::{Digest, Sha256};
use wharf_types::access::{AuditEntry, Role, TokenCreated, TokenInfo, TokenRecord};
use wharf_types::release::UnixMillis;
use wharf_types::AppName;

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

impl Controller {
    /// Makes a token; the answer is the only place the token itself appears.
    pub fn create_token(
        &self,
        role: Role,
        app: Option<AppName>,
    ) -> Result<TokenCreated, ControlError> {
        let token = format!("wharf_{}", random_hex()?);
        let id = format!("tok-{}", &random_hex()?[..12]);
        let rec = TokenRecord {
            id: id.clone(),
            hash: hash(&token),
            role,
            app: app.clone(),
            created_at: self.inner.clock.now(),
            revoked_at: None,
        };
        self.inner.store.put_token(&rec)?;
        Ok(TokenCreated {
            id,
            token,
            role,
            app: app.map(|a| a.to_string()),
        })
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>, ControlError> {
        Ok(self
            .inner
            .store
            .tokens()?
            .iter()
            .map(TokenInfo::from)
            .collect())
    }

    pub fn revoke_token(&self, id: &str) -> Result<TokenInfo, ControlError> {
        let mut t = self
            .inner
            .store
            .tokens()?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| {
                ControlError::not_found(format!("no token {id}; see `wharf tokens list`"))
            })?;
        if t.revoked_at.is_none() {
            t.revoked_at = Some(self.inner.clock.now());
            self.inner.store.put_token(&t)?;
        }
        Ok(TokenInfo::from(&t))
    }

    /// The live (not revoked) token record matching `token`.
    pub fn authenticate(&self, token: &str) -> Result<Option<TokenRecord>, ControlError> {
        let h = hash(token);
        Ok(self
            .inner
            .store
            .tokens()?
            .into_iter()
            .find(|t| t.hash == h && t.revoked_at.is_none()))
    }

    /// Appends to the audit log (failures are logged, never fatal).
    pub fn record_audit(&self, entry: AuditEntry) {
        self.inner.audit(entry);
    }

    /// The audit log, oldest first, filtered by app and start time.
    pub fn audit_log(
        &self,
        app: Option<&str>,
        since: Option<UnixMillis>,
    ) -> Result<Vec<AuditEntry>, ControlError> {
        Ok(self
            .inner
            .store
            .audit()?
            .into_iter()
            .filter(|e| app.is_none_or(|a| e.app.as_deref() == Some(a)))
            .filter(|e| since.is_none_or(|s| e.at >= s))
            .collect())
    }

    pub fn now(&self) -> UnixMillis {
        self.inner.clock.now()
    }
}
