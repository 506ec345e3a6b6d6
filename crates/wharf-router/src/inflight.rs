//! Per-replica in-flight request counters and the RAII guard that holds one up.
//!
//! The registry maps a replica id to a weak reference: tables and guards own the
//! counter, so a replica that is in consecutive tables keeps its counter, and a
//! removed one keeps reporting until its last guard is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The in-flight counter of one replica.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    inflight: AtomicUsize,
    /// Passive health, shared by every table that lists this replica.
    pub(crate) health: crate::outlier::Health,
}

impl Slot {
    pub(crate) fn load(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }
}

/// Counts one request in flight to a replica for as long as it lives.
#[derive(Debug)]
pub(crate) struct InflightGuard {
    slot: Arc<Slot>,
}

impl InflightGuard {
    pub(crate) fn new(slot: Arc<Slot>) -> Self {
        slot.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard { slot }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.slot.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Replica id -> its counter, as long as a table or a request still holds it.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    map: Mutex<HashMap<Arc<str>, Weak<Slot>>>,
}

impl Counters {
    /// The live counter of `replica`, or a fresh one.
    pub(crate) fn slot(&self, replica: &Arc<str>) -> Arc<Slot> {
        let mut map = self.lock();
        if let Some(slot) = map.get(replica).and_then(Weak::upgrade) {
            return slot;
        }
        let slot = Arc::new(Slot::default());
        map.insert(replica.clone(), Arc::downgrade(&slot));
        slot
    }

    /// Forget replicas that no table and no request refers to any more.
    pub(crate) fn prune(&self) {
        self.lock().retain(|_, slot| slot.strong_count() > 0);
    }

    pub(crate) fn get(&self, replica: &str) -> usize {
        self.lock()
            .get(replica)
            .and_then(Weak::upgrade)
            .map_or(0, |slot| slot.load())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Weak<Slot>>> {
        // Poisoning cannot leave the map inconsistent: every critical section is a
        // single map operation.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_and_counter_outlives_the_table() {
        let counters = Counters::default();
        let id: Arc<str> = Arc::from("r1");
        let table_ref = counters.slot(&id);
        let guard = InflightGuard::new(table_ref.clone());
        assert_eq!(counters.get("r1"), 1);
        assert!(Arc::ptr_eq(&counters.slot(&id), &table_ref));
        drop(table_ref); // the replica left the table
        counters.prune();
        assert_eq!(counters.get("r1"), 1);
        drop(guard);
        assert_eq!(counters.get("r1"), 0);
        counters.prune();
        assert_eq!(counters.lock().len(), 0);
    }
}
