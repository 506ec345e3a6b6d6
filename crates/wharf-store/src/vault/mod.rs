//! [`KeyVault`]: the [`Vault`] of a server, envelope encryption with XChaCha20-Poly1305.
//!
//! Each secret version gets a fresh random 256-bit data key; the value is sealed with it,
//! and the data key is sealed ("wrapped") with the master key. The associated data binds
//! both ciphertexts to the app, name and version, so a record copied onto another secret
//! fails authentication like a tampered one.
//!
//! The master keys come from `$WHARF_MASTER_KEY` (hex, comma-separated, current first;
//! read-only) or from a key file (one hex key per line, current first, mode 0600,
//! created on first start). Rotation writes the file with the new key first and the old
//! ones after it, re-wraps every data key in one store transaction, then drops the old
//! keys from the file: a crash at any point leaves every secret readable.
//!
//! Invariants: plaintext values and keys are never logged, never in an error message, and
//! never written to the store; a record whose authentication fails is never returned.

mod crypto;
mod keys;

use crate::vault::crypto::{open, seal, DataKey};
use keys::{KeySource, MasterKey};
use std::path::Path;
use std::sync::RwLock;
use wharf_core::ports::{Store, StoreError, Vault, VaultError};
use wharf_types::release::UnixMillis;
use wharf_types::secret::SealedSecret;
use wharf_types::AppName;

pub use keys::generate_hex_key;

/// Envelope encryption under master keys from the environment or a key file.
pub struct KeyVault {
    source: KeySource,
    /// Current key first.
    keys: RwLock<Vec<MasterKey>>,
}

fn aad(kind: &str, app: &str, name: &str, version: u32) -> Vec<u8> {
    format!("wharf-{kind}\0{app}\0{name}\0{version}").into_bytes()
}

impl KeyVault {
    /// Keys from `env` (the value of `$WHARF_MASTER_KEY`) when given, else from `file`,
    /// which is created (mode 0600) when missing.
    pub fn load(env: Option<&str>, file: &Path) -> Result<Self, VaultError> {
        let (source, keys) = keys::load(env, file)?;
        Ok(Self {
            source,
            keys: RwLock::new(keys),
        })
    }

    /// The id of the current master key.
    pub fn key_id(&self) -> Result<String, VaultError> {
        Ok(self.current()?.id)
    }

    fn current(&self) -> Result<MasterKey, VaultError> {
        self.keys
            .read()
            .map_err(|_| VaultError::Key("key lock poisoned; restart the server".into()))?
            .first()
            .cloned()
            .ok_or_else(|| VaultError::Key("no master key loaded".into()))
    }

    fn key(&self, s: &SealedSecret) -> Result<MasterKey, VaultError> {
        let keys = self
            .keys
            .read()
            .map_err(|_| VaultError::Key("key lock poisoned; restart the server".into()))?;
        keys.iter()
            .find(|k| k.id == s.key_id)
            .cloned()
            .ok_or_else(|| VaultError::UnknownKey {
                app: s.app.to_string(),
                name: s.name.clone(),
                version: s.version,
                key_id: s.key_id.clone(),
            })
    }
}

fn tampered(s: &SealedSecret) -> VaultError {
    VaultError::Tampered {
        app: s.app.to_string(),
        name: s.name.clone(),
        version: s.version,
    }
}

/// Unwraps the data key of `s` with `master`.
fn unwrap_key(master: &MasterKey, s: &SealedSecret) -> Result<DataKey, VaultError> {
    let wrapped = crypto::from_hex(&s.wrapped_key).ok_or_else(|| tampered(s))?;
    let bytes = open(
        &master.key,
        &aad("data-key", s.app.as_str(), &s.name, s.version),
        &wrapped,
    )
    .ok_or_else(|| tampered(s))?;
    DataKey::from_slice(&bytes).ok_or_else(|| tampered(s))
}

impl Vault for KeyVault {
    fn seal(
        &self,
        app: &AppName,
        name: &str,
        version: u32,
        now: UnixMillis,
        plaintext: &[u8],
    ) -> Result<SealedSecret, VaultError> {
        let master = self.current()?;
        let dk = DataKey::random().map_err(VaultError::Key)?;
        let ciphertext = seal(
            dk.bytes(),
            &aad("secret", app.as_str(), name, version),
            plaintext,
        )
        .map_err(VaultError::Key)?;
        let wrapped = seal(
            &master.key,
            &aad("data-key", app.as_str(), name, version),
            dk.bytes(),
        )
        .map_err(VaultError::Key)?;
        Ok(SealedSecret {
            app: app.clone(),
            name: name.to_string(),
            version,
            created_at: now,
            key_id: master.id,
            wrapped_key: crypto::to_hex(&wrapped),
            ciphertext: crypto::to_hex(&ciphertext),
        })
    }

    fn open(&self, s: &SealedSecret) -> Result<Vec<u8>, VaultError> {
        let dk = unwrap_key(&self.key(s)?, s)?;
        let ct = crypto::from_hex(&s.ciphertext).ok_or_else(|| tampered(s))?;
        open(
            dk.bytes(),
            &aad("secret", s.app.as_str(), &s.name, s.version),
            &ct,
        )
        .ok_or_else(|| tampered(s))
    }

    fn rotate(&self, store: &dyn Store) -> Result<(String, usize), VaultError> {
        let KeySource::File(path) = &self.source else {
            return Err(VaultError::Key("the master key comes from $WHARF_MASTER_KEY, which the server cannot change; to rotate, restart the server with `WHARF_MASTER_KEY=NEW,OLD` and run rotate-master-key with a key file instead".into()));
        };
        let new = MasterKey::random().map_err(VaultError::Key)?;
        let old = self
            .keys
            .read()
            .map_err(|_| VaultError::Key("key lock poisoned; restart the server".into()))?
            .clone();
        let mut both = vec![new.clone()];
        both.extend(old.iter().cloned());
        // 1. The new key is durable (next to the old ones) before any data key uses it.
        keys::write(path, &both)?;
        *self
            .keys
            .write()
            .map_err(|_| VaultError::Key("key lock poisoned; restart the server".into()))? = both;
        // 2. Every data key is re-wrapped in one transaction. Any failure aborts it all.
        let mut failure: Option<VaultError> = None;
        let res = store.rewrap_secrets(&mut |s: &mut SealedSecret| {
            let dk = match old
                .iter()
                .find(|k| k.id == s.key_id)
                .ok_or_else(|| VaultError::UnknownKey {
                    app: s.app.to_string(),
                    name: s.name.clone(),
                    version: s.version,
                    key_id: s.key_id.clone(),
                })
                .and_then(|k| unwrap_key(k, s))
            {
                Ok(dk) => dk,
                Err(e) => {
                    let msg = e.to_string();
                    failure = Some(e);
                    return Err(StoreError(msg));
                }
            };
            let wrapped = seal(
                &new.key,
                &aad("data-key", s.app.as_str(), &s.name, s.version),
                dk.bytes(),
            )
            .map_err(StoreError)?;
            s.wrapped_key = crypto::to_hex(&wrapped);
            s.key_id = new.id.clone();
            Ok(())
        });
        let count = match res {
            Ok(n) => n,
            Err(e) => return Err(failure.unwrap_or(VaultError::Store(e))),
        };
        // 3. The old keys are no longer needed.
        keys::write(path, std::slice::from_ref(&new))?;
        *self
            .keys
            .write()
            .map_err(|_| VaultError::Key("key lock poisoned; restart the server".into()))? =
            vec![new.clone()];
        Ok((new.id, count))
    }
}

#[cfg(test)]
mod tests;
