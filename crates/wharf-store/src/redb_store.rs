//! The redb-backed store. Records are JSON values in two tables.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use wharf_core::ports::{Store, StoreError};
use wharf_types::{AppName, AppRecord, Release};

const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
const RELEASES: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("releases");

/// The store of a data dir: `wharf.redb`.
pub struct RedbStore {
    db: Database,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl RedbStore {
    /// Opens (creating if needed) the database file; fails clearly if another server
    /// holds it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError(format!(
                "{} is in use by another wharf server; stop it or pass a different --data-dir",
                path.display()
            )),
            other => StoreError(format!("cannot open {}: {other}", path.display())),
        })?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(APPS).map_err(err)?;
        tx.open_table(RELEASES).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self { db })
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError(format!("corrupt record: {e}")))
}
fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(err)
}

impl Store for RedbStore {
    fn apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(APPS).map_err(err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(err)? {
            let (_, v) = row.map_err(err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn app(&self, name: &AppName) -> Result<Option<AppRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(APPS).map_err(err)?;
        let row = table.get(name.as_str()).map_err(err)?;
        row.map(|v| decode(v.value())).transpose()
    }

    fn put(&self, app: &AppRecord, release: Option<&Release>) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut apps = tx.open_table(APPS).map_err(err)?;
            apps.insert(app.name.as_str(), encode(app)?.as_slice())
                .map_err(err)?;
            if let Some(r) = release {
                let mut releases = tx.open_table(RELEASES).map_err(err)?;
                let key = (r.app.as_str(), r.version);
                if releases.get(key).map_err(err)?.is_some() {
                    return Err(StoreError(format!(
                        "release v{} of {} already exists; releases are immutable",
                        r.version, r.app
                    )));
                }
                releases.insert(key, encode(r)?.as_slice()).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn release(&self, app: &AppName, version: u32) -> Result<Option<Release>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(RELEASES).map_err(err)?;
        let row = table.get((app.as_str(), version)).map_err(err)?;
        row.map(|v| decode(v.value())).transpose()
    }

    fn releases(&self, app: &AppName) -> Result<Vec<Release>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(RELEASES).map_err(err)?;
        let mut out = Vec::new();
        for row in table
            .range((app.as_str(), 0)..=(app.as_str(), u32::MAX))
            .map_err(err)?
        {
            let (_, v) = row.map_err(err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn delete(&self, app: &AppName) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut apps = tx.open_table(APPS).map_err(err)?;
            apps.remove(app.as_str()).map_err(err)?;
            let mut releases = tx.open_table(RELEASES).map_err(err)?;
            releases
                .retain_in((app.as_str(), 0)..=(app.as_str(), u32::MAX), |_, _| false)
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}
