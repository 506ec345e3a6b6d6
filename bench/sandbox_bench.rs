//! Benchmark: create a sandbox, run `/bin/true` in it, clean everything up — wharf's
//! sandboxed runtime against `runc run` of an equivalent busybox bundle, in one run,
//! alternating, so both see the same machine. Prints both medians and the ratio.
//!
//! Run through `bench/sandbox.sh` (root; it installs runc and busybox-static and builds
//! in release mode). Arguments: `WHARF_BINARY RUNC_BUNDLE [ITERATIONS]`.
//!
//! One wharf iteration is exactly what the server does for a replica: `start` (uid,
//! cgroup with limits, mount plan, launch file in the run directory on a tmpfs, the init forked by the launcher, which
//! makes its own session;
//! the init joins the cgroup and clones PID 1 into new PID/mount/IPC/UTS namespaces,
//! which mounts the overlay root, `/app`, `/proc`, `/sys`, `/dev`, `/tmp`, pivots,
//! installs the seccomp filter, forks the app, which drops to the app's uid without
//! capabilities and execs `/bin/true` directly), then waits for the init's end (on a pidfd, as
//! `runc run` waits for its child) and `poll`s the recorded exit, then
//! `cleanup` (cgroup and run dir removed). The same loop without the sandbox is printed
//! too, to show what isolation itself costs. One runc iteration is `runc run -b BUNDLE ID`
//! (create, start, wait, delete).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wharf_core::ports::{Launch, Liveness, Runtime};
use wharf_runtime::launcher::Launcher;
use wharf_runtime::sandbox::{Sandbox, SandboxConfig};
use wharf_runtime::{Layout, ProcessRuntime};
use wharf_types::{AppName, ProcessType};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One iteration's parts: `start` returned, the exit was seen, `cleanup` returned.
#[derive(Clone, Copy)]
struct Phases {
    start: Duration,
    run: Duration,
    cleanup: Duration,
}

impl Phases {
    fn total(&self) -> Duration {
        self.start + self.run + self.cleanup
    }
}

fn wharf_once(rt: &ProcessRuntime, launch: &Launch) -> Phases {
    let t = Instant::now();
    let h = rt.start(launch).expect("start");
    let started = t.elapsed();
    loop {
        match rt.poll(&h) {
            Liveness::Running => {
                rt.wait_exit(&h, Duration::from_secs(5));
            }
            Liveness::Exited(e) => {
                assert_eq!(e.code, Some(0), "/bin/true failed: {}", e.reason);
                break;
            }
        }
    }
    let exited = t.elapsed();
    rt.cleanup(&h);
    Phases {
        start: started,
        run: exited - started,
        cleanup: t.elapsed() - exited,
    }
}

/// "median 5.20 ms (start 0.60, run 4.00, cleanup 0.60)": the medians of the total and
/// of each part (which need not add up).
fn summary(v: &[Phases]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let med =
        |f: &dyn Fn(&Phases) -> Duration| ms(median(&mut v.iter().map(f).collect::<Vec<_>>()));
    format!(
        "median {:.2} ms (start {:.2}, run to exit {:.2}, cleanup {:.2})",
        med(&|p| p.total()),
        med(&|p| p.start),
        med(&|p| p.run),
        med(&|p| p.cleanup)
    )
}

fn runc_once(bundle: &Path, id: &str) -> Duration {
    let t = Instant::now();
    let st = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .status()
        .expect("runc");
    assert!(st.success(), "runc run failed: {st}");
    t.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(wharf), Some(bundle)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: sandbox_bench WHARF_BINARY RUNC_BUNDLE [ITERATIONS]");
        std::process::exit(2);
    };
    let n: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(50);
    // As in the server: inits are forked by launchers started while single-threaded.
    let launchers = (Launcher::start(&[]), Launcher::start(&[]));
    let (Ok(plain_launcher), Ok(sandbox_launcher)) = launchers else {
        eprintln!("cannot start the launchers");
        std::process::exit(1)
    };
    let data = tempfile::Builder::new()
        .prefix("wharf-bench-")
        .tempdir()
        .expect("temp dir");
    // As in the server: run directories on a tmpfs.
    let run_state = wharf_runtime::run_state::of_data_dir(data.path()).unwrap_or_else(|e| {
        eprintln!("cannot keep run directories in memory: {e}");
        std::process::exit(1)
    });
    let layout = Layout::new(data.path()).with_run_state(&run_state);
    let artifact: PathBuf = data.path().join("artifacts/sha256-bench");
    std::fs::create_dir_all(&artifact).expect("artifact dir");
    let sandbox = Sandbox::new(&layout, SandboxConfig::default()).unwrap_or_else(|e| {
        eprintln!("cannot sandbox: {e}");
        std::process::exit(1)
    });
    let init = vec![OsString::from(wharf), OsString::from("init")];
    // The same supervision without the sandbox: what isolation itself costs.
    // (As in a server without isolation, its run directories are in the data dir.)
    let plain =
        ProcessRuntime::new(Layout::new(data.path()), init.clone()).with_launcher(plain_launcher);
    let rt = ProcessRuntime::sandboxed(layout, init, sandbox).with_launcher(sandbox_launcher);
    let launch = Launch {
        app: AppName::new("bench".to_string()).expect("name"),
        process: ProcessType::new("web".to_string()).expect("process"),
        release: 1,
        id: "web-1-v1".into(),
        command: "/bin/true".into(),
        dir: artifact,
        env: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
        port: 1,
        network: wharf_types::Network::Host,
        cpu: Some(1024),
        cpu_limit: None,
        memory: Some(256 << 20),
        writable_dir: false,
        secret_files: false,
        image: Vec::new(),
    };
    // Warm-up: page cache, binaries.
    for i in 0..3 {
        wharf_once(&rt, &launch);
        runc_once(Path::new(bundle), &format!("wharf-bench-warm-{i}"));
    }
    let (mut w, mut r, mut p) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        w.push(wharf_once(&rt, &launch));
        r.push(runc_once(Path::new(bundle), &format!("wharf-bench-{i}")));
        p.push(wharf_once(&plain, &launch));
    }
    if let Some(sb) = rt.sandbox() {
        sb.retire();
    }
    wharf_runtime::run_state::release(&run_state);
    let wm = median(&mut w.iter().map(Phases::total).collect::<Vec<_>>());
    let rm = median(&mut r);
    println!("iterations: {n} each, alternating");
    println!(
        "wharf plain process (no isolation, same supervision): {}",
        summary(&p)
    );
    println!(
        "wharf sandbox (create, exec /bin/true, clean up): {}",
        summary(&w)
    );
    println!(
        "runc run busybox /bin/true (create, start, delete): median {:.2} ms",
        rm.as_secs_f64() * 1e3
    );
    println!(
        "ratio wharf/runc: {:.3}",
        wm.as_secs_f64() / rm.as_secs_f64()
    );
}
