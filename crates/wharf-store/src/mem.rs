//! An in-memory store with the same contract, for tests of the controller.

use std::collections::BTreeMap;
use std::sync::Mutex;
use wharf_core::ports::{Store, StoreError};
use wharf_types::{AppName, AppRecord, Release};

#[derive(Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    apps: BTreeMap<AppName, AppRecord>,
    releases: BTreeMap<(AppName, u32), Release>,
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
        Ok(())
    }
}
