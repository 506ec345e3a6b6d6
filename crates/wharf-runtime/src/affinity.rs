//! CPU affinity of the calling thread: which CPUs this process may run on, and pinning
//! a thread to one of them (the router's workers, one per CPU, as nginx's
//! `worker_cpu_affinity auto`).

use std::io;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The CPUs the calling thread may run on, in order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::from)?;
    Ok((0..CpuSet::count())
        .filter(|cpu| set.is_set(*cpu).unwrap_or(false))
        .collect())
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(io::Error::from)?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_pinned_to_an_allowed_cpu_runs_only_there() {
        let cpus = allowed_cpus().expect("affinity");
        assert!(!cpus.is_empty());
        let last = *cpus.last().expect("a cpu");
        let after = std::thread::spawn(move || {
            pin_current_thread(last).expect("pin");
            allowed_cpus().expect("affinity")
        })
        .join()
        .expect("thread");
        assert_eq!(after, vec![last]);
        assert_eq!(
            allowed_cpus().expect("affinity"),
            cpus,
            "other threads keep theirs"
        );
        assert!(pin_current_thread(CpuSet::count() + 1).is_err());
    }
}
