//! wharf-store: durable desired state.
//!
//! [`RedbStore`] keeps apps and their releases in one embedded redb file under the data
//! dir; [`MemStore`] is the same contract in memory, for tests. Both implement
//! [`wharf_core::ports::Store`].
//!
//! Invariants: every write is one committed transaction before the call returns (redb's
//! immediate durability: `kill -9` loses nothing acknowledged); a release, once written,
//! is never overwritten; deleting an app deletes its releases in the same transaction.

mod mem;
mod redb_store;

pub use mem::MemStore;
pub use redb_store::RedbStore;

#[cfg(test)]
mod tests;
