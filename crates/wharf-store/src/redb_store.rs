//! The redb-backed store. Records are JSON values in two tables.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard};
use wharf_core::ports::{RewrapFn, Store, StoreError};
use wharf_types::access::{AuditEntry, TokenRecord};
use wharf_types::secret::SealedSecret;
use wharf_types::{AppName, AppRecord, Release};

const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
const RELEASES: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("releases");
/// (app, name, version) -> sealed secret (ciphertexts only).
const SECRETS: TableDefinition<(&str, &str, u32), &[u8]> = TableDefinition::new("secrets");
/// token id -> token record (a hash of the token, never the token).
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// sequence number -> audit entry.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// The store of a data dir: `wharf.redb`.
pub struct RedbStore {
    /// `None` once [`RedbStore::close`]d.
    db: RwLock<Option<Database>>,
}

/// The open database, borrowed for the start of one transaction.
struct Open<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for Open<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        match self.0.as_ref() {
            Some(db) => db,
            // `RedbStore::open_db` only builds an `Open` around `Some`.
            None => unreachable!("an Open guard always holds a database"),
        }
    }
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
        tx.open_table(SECRETS).map_err(err)?;
        tx.open_table(TOKENS).map_err(err)?;
        tx.open_table(AUDIT).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self {
            db: RwLock::new(Some(db)),
        })
    }

    /// Closes the database and releases its file, so that another server can open it
    /// (a hand-over to a new server). Every later call fails with a clear error.
    pub fn close(&self) {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        *db = None;
    }

    fn open_db(&self) -> Result<Open<'_>, StoreError> {
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            return Err(StoreError(
                "the store was handed over to another wharf server".into(),
            ));
        }
        Ok(Open(guard))
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
        let tx = self.open_db()?.begin_read().map_err(err)?;
        let table = tx.open_table(APPS).map_err(err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(err)? {
            let (_, v) = row.map_err(err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn app(&self, name: &AppName) -> Result<Option<AppRecord>, StoreError> {
        let tx = self.open_db()?.begin_read().map_err(err)?;
        let table = tx.open_table(APPS).map_err(err)?;
        let row = table.get(name.as_str()).map_err(err)?;
        row.map(|v| decode(v.value())).transpose()
    }

    fn put(&self, app: &AppRecord, release: Option<&Release>) -> Result<(), StoreError> {
        let tx = self.open_db()?.begin_write().map_err(err)?;
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
        let tx = self.open_db()?.begin_read().map_err(err)?;
        let table = tx.open_table(RELEASES).map_err(err)?;
        let row = table.get((app.as_str(), version)).map_err(err)?;
        row.map(|v| decode(v.value())).transpose()
    }

    fn releases(&self, app: &AppName) -> Result<Vec<Release>, StoreError> {
        let tx = self.open_db()?.begin_read().map_err(err)?;
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
        let tx = self.open_db()?.begin_write().map_err(err)?;
        {
            let mut apps = tx.open_table(APPS).map_err(err)?;
            apps.remove(app.as_str()).map_err(err)?;
            let mut releases = tx.open_table(RELEASES).map_err(err)?;
            releases
                .retain_in((app.as_str(), 0)..=(app.as_str(), u32::MAX), |_, _| false)
                .map_err(err)?;
            let mut secrets = tx.open_table(SECRETS).map_err(err)?;
            secrets
                .retain(|(a, _, _), _| a != app.as_str())
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn put_secrets(&self, secrets: &[SealedSecret]) -> Result<(), StoreError> {
        let tx = self.open_db()?.begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(SECRETS).map_err(err)?;
            for s in secrets {
                table
                    .insert(
                        (s.app.as_str(), s.name.as_str(), s.version),
                        encode(s)?.as_slice(),
                    )
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn secret(
        &self,
        app: &AppName,
        name: &str,
        version: u32,
    ) -> Result<Option<SealedSecret>, StoreError> {
        let tx = self.open_db()?.begin_read().map_err(err)?;
        let table = tx.open_table(SECRETS).map_err(err)?;
        let row = table.get((app.as_str(), name, version)).map_err(err)?;
        row.map(|v| decode(v.value())).transpose()
    }

    fn secrets(&self, app: &AppName) -> Result<Vec<SealedSecret>, StoreError> {
        let tx = self.open_db()?.begin_read().map_err(err)?;
        let table = tx.open_table(SECRETS).map_err(err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            if k.value().0 == app.as_str() {
                out.push(decode(v.value())?);
            }
        }
        Ok(out)
    }

    fn rewrap_secrets(&self, f: &mut RewrapFn<'_>) -> Result<usize, StoreError> {
        let tx = self.open_db()?.begin_write().map_err(err)?;
        let mut n = 0;
        {
            let mut table = tx.open_table(SECRETS).map_err(err)?;
            let mut all: Vec<SealedSecret> = Vec::new();
            for row in table.iter().map_err(err)? {
                let (_, v) = row.map_err(err)?;
                all.push(decode(v.value())?);
            }
            for mut s in all {
                // An error returns before commit: the transaction is dropped, nothing changes.
                f(&mut s)?;
                table
                    .insert(
                        (s.app.as_str(), s.name.as_str(), s.version),
                        encode(&s)?.as_slice(),
                    )
                    .map_err(err)?;
                n += 1;
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let tx = self.open_db()?.begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(TOKENS).map_err(err)?;
            table
                .insert(token.id.as_str(), encode(token)?.as_slice())
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let tx = self.open_db()?.begin_read().map_err(err)?;
        let table = tx.open_table(TOKENS).map_err(err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(err)? {
            let (_, v) = row.map_err(err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let tx = self.open_db()?.begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(AUDIT).map_err(err)?;
            let next = table.last().map_err(err)?.map_or(0, |(k, _)| k.value() + 1);
            table.insert(next, encode(entry)?.as_slice()).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let tx = self.open_db()?.begin_read().map_err(err)?;
        let table = tx.open_table(AUDIT).map_err(err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(err)? {
            let (_, v) = row.map_err(err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }
}
