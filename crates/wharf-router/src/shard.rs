//! Shards of what every router worker thread would otherwise write on each request:
//! each worker writes its own shard (a cache line of its own), readers sum or visit
//! all of them. A worker thread says its index once ([`set_worker`]); other threads
//! (tests, the control plane) use shard 0.

use std::cell::Cell;

/// Shards of each sharded value; workers beyond it share (correct, only slower).
pub(crate) const SHARDS: usize = 8;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as router worker `index`.
pub(crate) fn set_worker(index: usize) {
    WORKER.with(|worker| worker.set(index));
}

/// The current thread's shard.
pub(crate) fn index() -> usize {
    WORKER.with(Cell::get) % SHARDS
}

/// A value on cache lines of its own (128 bytes: adjacent-line prefetch pairs lines).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_map_onto_shards_and_other_threads_use_the_first() {
        assert_eq!(std::thread::spawn(index).join().expect("thread"), 0);
        let shard = std::thread::spawn(|| {
            set_worker(SHARDS + 3);
            index()
        });
        assert_eq!(shard.join().expect("thread"), 3);
        assert_eq!(std::mem::align_of::<Padded<u8>>(), 128);
    }
}
