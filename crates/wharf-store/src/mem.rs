//! An in-memory store with the same contract, for tests of the controller.

use std::collections::BTreeMap;
use std::sync::Mutex;
use wharf_core::ports::{RewrapFn, Store, StoreError};
use wharf_types::access::{AuditEntry, TokenRecord};
use wharf_types::secret::SealedSecret;
use wharf_types::{AppName, AppRecord, Release};

#[derive(Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    apps: BTreeMap<AppName, AppRecord>,
    releases: BTreeMap<(AppName, u32), Release>,
    secrets: BTreeMap<(AppName, String, u32), SealedSecret>,
    tokens: BTreeMap<String, TokenRecord>,
    audit: Vec<AuditEntry>,
}

impl MemStore {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError("memory store poisoned".into()))
    }
}

impl Store for MemStore {
    fn apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        Ok(self.lock()?.apps.values().cloned().collect())
    }
    fn app(&self, name: &AppName) -> Result<Option<AppRecord>, StoreError> {
        Ok(self.lock()?.apps.get(name).cloned())
    }
    fn put(&self, app: &AppRecord, release: Option<&Release>) -> Result<(), StoreError> {
        let mut g = self.lock()?;
        if let Some(r) = release {
            let key = (r.app.clone(), r.version);
            if g.releases.contains_key(&key) {
                return Err(StoreError(format!(
                    "release v{} of {} already exists; releases are immutable",
                    r.version, r.app
                )));
            }
            g.releases.insert(key, r.clone());
        }
        g.apps.insert(app.name.clone(), app.clone());
        Ok(())
    }
    fn release(&self, app: &AppName, version: u32) -> Result<Option<Release>, StoreError> {
        Ok(self.lock()?.releases.get(&(app.clone(), version)).cloned())
    }
    fn releases(&self, app: &AppName) -> Result<Vec<Release>, StoreError> {
        Ok(self
            .lock()?
            .releases
            .iter()
            .filter(|((a, _), _)| a == app)
            .map(|(_, r)| r.clone())
            .collect())
    }
    fn delete(&self, app: &AppName) -> Result<(), StoreError> {
        let mut g = self.lock()?;
        g.apps.remove(app);
        g.releases.retain(|(a, _), _| a != app);
        g.secrets.retain(|(a, _, _), _| a != app);
        Ok(())
    }
    fn put_secrets(&self, secrets: &[SealedSecret]) -> Result<(), StoreError> {
        let mut g = self.lock()?;
        for s in secrets {
            g.secrets
                .insert((s.app.clone(), s.name.clone(), s.version), s.clone());
        }
        Ok(())
    }
    fn secret(
        &self,
        app: &AppName,
        name: &str,
        version: u32,
    ) -> Result<Option<SealedSecret>, StoreError> {
        Ok(self
            .lock()?
            .secrets
            .get(&(app.clone(), name.to_string(), version))
            .cloned())
    }
    fn secrets(&self, app: &AppName) -> Result<Vec<SealedSecret>, StoreError> {
        Ok(self
            .lock()?
            .secrets
            .values()
            .filter(|s| &s.app == app)
            .cloned()
            .collect())
    }
    fn rewrap_secrets(&self, f: &mut RewrapFn<'_>) -> Result<usize, StoreError> {
        let mut g = self.lock()?;
        let mut next = g.secrets.clone();
        for s in next.values_mut() {
            f(s)?;
        }
        let n = next.len();
        g.secrets = next;
        Ok(n)
    }
    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.lock()?.tokens.insert(token.id.clone(), token.clone());
        Ok(())
    }
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self.lock()?.tokens.values().cloned().collect())
    }
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.lock()?.audit.push(entry.clone());
        Ok(())
    }
    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self.lock()?.audit.clone())
    }
}
