//! wharf-store: durable desired state.
//!
//! [`RedbStore`] keeps apps, releases, sealed secrets, API token hashes and the audit log
//! in one embedded redb file under the data dir; [`MemStore`] is the same contract in
//! memory, for tests. Both implement [`wharf_core::ports::Store`]. [`KeyVault`] is the
//! envelope encryption of secrets (the master key lives outside the store).
//!
//! Invariants: every write is one committed transaction before the call returns (redb's
//! immediate durability: `kill -9` loses nothing acknowledged); a release, once written,
//! is never overwritten; deleting an app deletes its releases and secrets in the same transaction; the store
//! never holds a plaintext secret or token; a master-key rotation rewrites every sealed
//! secret in one transaction.

mod mem;
mod redb_store;
pub mod vault;

pub use mem::MemStore;
pub use redb_store::RedbStore;
pub use vault::KeyVault;

#[cfg(test)]
mod tests;
