//! Router workers pinned to CPUs: with one worker per CPU (the default), worker `i`
//! runs only on the `i`-th CPU this process may use, as nginx's `worker_cpu_affinity
//! auto`. On a busy machine the scheduler otherwise moves a woken worker to the CPU of
//! whoever woke it, leaving the other idle for a tick: measured here, about 15% of the
//! machine idle under full load and a third less throughput (docs/benchmarks.md).

use std::sync::Arc;

use wharf_router::WorkerStart;
use wharf_runtime::affinity::{allowed_cpus, pin_current_thread};

/// The hook that pins `workers` router workers, when they are one per allowed CPU
/// (and there are at least two): else none.
pub fn router_workers(workers: usize) -> Option<WorkerStart> {
    let cpus = allowed_cpus().ok()?;
    if cpus.len() < 2 || cpus.len() != workers {
        return None;
    }
    Some(WorkerStart(Arc::new(move |index| {
        let cpu = cpus[index % cpus.len()];
        if let Err(error) = pin_current_thread(cpu) {
            tracing::warn!(%error, cpu, "router worker {index} not pinned to its CPU");
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_per_cpu_is_pinned_each_to_its_own() {
        let cpus = allowed_cpus().expect("affinity");
        assert!(router_workers(cpus.len() + 1).is_none(), "not one per CPU");
        let Some(hook) = router_workers(cpus.len()) else {
            assert!(
                cpus.len() < 2,
                "pinned on a machine with {} CPUs",
                cpus.len()
            );
            return;
        };
        for (index, cpu) in cpus.iter().enumerate() {
            let hook = hook.clone();
            let now = std::thread::spawn(move || {
                (hook.0)(index);
                allowed_cpus().expect("affinity")
            })
            .join()
            .expect("thread");
            assert_eq!(now, vec![*cpu], "worker {index}");
        }
    }
}
