//! Sandboxed replicas, proven from inside them (root only: skipped with a printed reason
//! otherwise). The server runs with `--isolation sandbox`, so a
//! sandbox that cannot be set up fails these tests instead of degrading.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use wharf_e2e::isolation::{cgroup_cpu_ns, cgroup_dir, cgroup_value, root_or_skip, sh};
use wharf_e2e::{descendants, is_gone, process_alive, wait_until, Server, TestApp};

/// Tests that load the whole machine (fork bomb, CPU shares) run one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn sandboxed_server() -> Server {
    Server::start_with(&["--isolation", "sandbox"])
}

fn pid_of(r: &serde_json::Value) -> u32 {
    r["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or_else(|| panic!("replica without a pid: {r:#}"))
}

#[test]
fn a_replica_sees_and_touches_only_its_own_world() {
    if !root_or_skip("a_replica_sees_and_touches_only_its_own_world") {
        return;
    }
    let s = sandboxed_server();
    let a = TestApp::new("box-a").write();
    let b = TestApp::new("box-b").write();
    s.deploy(a.path()).ok("deploy box-a");
    s.deploy(b.path()).ok("deploy box-b");
    let pa = s.wait_ready("box-a", 1, Duration::from_secs(10));
    let pb = s.wait_ready("box-b", 1, Duration::from_secs(10));
    let b_procs: Vec<u32> = std::iter::once(pid_of(&pb[0]))
        .chain(descendants(pid_of(&pb[0])))
        .collect();
    let data = s.data_dir().to_str().unwrap().to_string();

    // Processes: only its own PID namespace (PID 1, the app, this probe).
    let (code, out) = sh(
        &s,
        "box-a.localhost",
        "hostname; cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo; ls -d /proc/[0-9]* | wc -l",
    );
    assert_eq!(code, 0, "{out}");
    let host_id = pa[0]["id"].as_str().unwrap();
    assert_eq!(
        out.lines().next(),
        Some(host_id),
        "hostname is the replica id: {out}"
    );
    assert!(
        !out.contains("box-b"),
        "box-b's processes are visible from box-a:\n{out}"
    );
    let count: usize = out.lines().last().unwrap().trim().parse().unwrap();
    assert!(
        count <= 8,
        "a replica sees only its own few processes, saw {count}:\n{out}"
    );
    for p in &b_procs {
        let (code, out) = sh(&s, "box-a.localhost", &format!("kill -0 {p}"));
        assert_ne!(code, 0, "box-a can signal box-b's host pid {p}: {out}");
    }

    // Identity: a uid of its own, no capabilities, no_new_privs, seccomp.
    let status = |host: &str| {
        sh(
            &s,
            host,
            "id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status",
        )
        .1
    };
    let sa = status("box-a.localhost");
    let sb = status("box-b.localhost");
    let uid_a = sa.lines().next().unwrap().to_string();
    assert_ne!(uid_a, "0", "{sa}");
    assert_ne!(
        uid_a,
        sb.lines().next().unwrap(),
        "apps share a uid:\n{sa}\n{sb}"
    );
    for want in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(sa.contains(want), "expected {want:?} in\n{sa}");
    }

    // Files: the host's are read-only, writes stay in the replica's own layer.
    let probe = format!("wharf-probe-{}", std::process::id());
    let (code, out) = sh(
        &s,
        "box-a.localhost",
        &format!("touch /etc/{probe} /usr/bin/{probe} /{probe}"),
    );
    assert_ne!(code, 0, "{out}");
    let (code, out) = sh(&s, "box-a.localhost", &format!("echo x > /var/tmp/{probe} && cat /var/tmp/{probe} && touch /tmp/{probe} /dev/shm/{probe} && echo > /dev/null"));
    assert_eq!(code, 0, "the replica's own writable places: {out}");
    // Its /dev: working device nodes of its own, and no way to make more.
    let (code, out) = sh(
        &s,
        "box-a.localhost",
        "head -c 8 /dev/zero | wc -c; head -c 8 /dev/urandom | wc -c; (echo x > /dev/full) 2>/dev/null || echo full; echo $(ls /dev); mknod /tmp/mem c 1 1 2>/dev/null || echo no-mknod",
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["8", "8", "full"], "{out}");
    for node in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "stdout",
    ] {
        assert!(
            lines[3].split(' ').any(|n| n == node),
            "/dev/{node} missing: {out}"
        );
    }
    assert_eq!(lines[4], "no-mknod", "{out}");
    for p in ["/etc", "/usr/bin", "/", "/var/tmp", "/tmp", "/dev/shm"] {
        let host = std::path::Path::new(p).join(&probe);
        assert!(
            !host.exists(),
            "the replica wrote {} on the host",
            host.display()
        );
    }
    let (code, out) = sh(&s, "box-a.localhost", "pwd; ls /app; touch /app/x");
    assert_ne!(code, 0, "/app is read-only: {out}");
    assert!(
        out.starts_with("/app\n") && out.contains("wharf.toml"),
        "{out}"
    );

    // Another app's files (and wharf's own) are not there at all.
    for path in [
        format!("{data}/logs/box-b/app.log"),
        format!("{data}/run/box-b"),
        format!("{data}/artifacts"),
        format!("{data}/wharf.redb"),
    ] {
        let (code, out) = sh(&s, "box-a.localhost", &format!("ls {path}/* || cat {path}"));
        assert_ne!(code, 0, "box-a can read {path}: {out}");
    }

    // Mount, ptrace and new user namespaces fail.
    let (code, out) = sh(&s, "box-a.localhost", "mount -t tmpfs none /mnt");
    assert_ne!(code, 0, "{out}");
    let (code, out) = sh(&s, "box-a.localhost", "unshare -U true");
    assert_ne!(code, 0, "{out}");
    // PTRACE_TRACEME (0) is allowed to anyone without the filter; it must fail with EPERM.
    let (code, out) = sh(
        &s,
        "box-a.localhost",
        "python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); r = l.ptrace(0, 0, 0, 0); print(r, ctypes.get_errno())'",
    );
    assert_eq!(
        (code, out.trim()),
        (0, "-1 1"),
        "ptrace must fail with EPERM: {out}"
    );
}

#[test]
fn a_memory_hog_is_oom_killed_alone_and_restarted() {
    if !root_or_skip("a_memory_hog_is_oom_killed_alone_and_restarted") {
        return;
    }
    let s = sandboxed_server();
    let app = TestApp::new("hog")
        .replicas(2)
        .web("memory = \"64Mi\"")
        .write();
    s.deploy(app.path()).ok("deploy");
    let before = s.wait_ready("hog", 2, Duration::from_secs(10));
    // A POST: the router retries a GET cut off by its replica's death on the other
    // replica, which would then be killed by the same allocation.
    let _ = wharf_e2e::http_post(s.router(), "hog.localhost", "/alloc?mb=256");
    let mut ps = Vec::new();
    let healed = wait_until(Duration::from_secs(20), || {
        ps = s.ps("hog");
        ps.len() == 2
            && ps.iter().all(|r| r["state"] == "ready")
            && ps.iter().any(|r| r["restarts"].as_u64() >= Some(1))
    });
    assert!(healed, "the hog should be killed and restarted: {ps:#?}");
    let victim = ps
        .iter()
        .find(|r| r["restarts"].as_u64() >= Some(1))
        .unwrap();
    assert!(
        victim["last_exit"]
            .as_str()
            .unwrap_or_default()
            .contains("OOM killed"),
        "ps should say OOM killed: {victim:#}"
    );
    let other = ps.iter().find(|r| r["id"] != victim["id"]).unwrap();
    let other_before = before.iter().find(|r| r["id"] == other["id"]).unwrap();
    assert_eq!(
        (other["pid"].clone(), other["restarts"].clone()),
        (other_before["pid"].clone(), 0.into()),
        "the other replica is untouched"
    );
    let table = s.wharf(&["ps", "hog"]);
    assert!(table.stdout.contains("OOM killed"), "{}", table.stdout);
    let logs = s.wharf(&["logs", "hog"]);
    assert!(logs.stdout.contains("OOM killed"), "{}", logs.stdout);
    let r = s.get("hog.localhost", "/");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit_and_everything_goes_on_destroy() {
    if !root_or_skip("a_fork_bomb_stops_at_the_pids_limit_and_everything_goes_on_destroy") {
        return;
    }
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let s = sandboxed_server();
    let bomb = TestApp::new("bomb")
        .web("memory = \"512Mi\"")
        .web("cpu = 64")
        .write();
    let calm = TestApp::new("calm").write();
    s.deploy(bomb.path()).ok("deploy bomb");
    s.deploy(calm.path()).ok("deploy calm");
    let init = pid_of(&s.wait_ready("bomb", 1, Duration::from_secs(10))[0]);
    let pids_dir = cgroup_dir(init, "pids").expect("the replica has a pids cgroup");
    assert_eq!(cgroup_value(&pids_dir, "pids.max", None), Some(512));

    let (code, out) = sh(
        &s,
        "bomb.localhost",
        "(b() { b | b & }; b) </dev/null >/dev/null 2>&1 & echo lit",
    );
    assert_eq!((code, out.trim()), (0, "lit"));
    let limited = wait_until(Duration::from_secs(20), || {
        cgroup_value(&pids_dir, "pids.events", Some("max")).is_some_and(|n| n > 0)
    });
    assert!(limited, "the bomb never reached the pids limit");
    let current = cgroup_value(&pids_dir, "pids.current", None).unwrap_or(0);
    assert!(current <= 512, "{current} processes, more than the limit");

    // The machine, the platform and other apps stay responsive.
    for _ in 0..3 {
        let t = Instant::now();
        s.wharf_quiet(&["apps"]).ok("apps during the bomb");
        let r = s.get("calm.localhost", "/");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
    }

    let all: Vec<u32> = std::iter::once(init).chain(descendants(init)).collect();
    s.wharf(&["destroy", "bomb", "--yes"]).ok("destroy");
    assert!(
        wait_until(Duration::from_secs(20), || all.iter().all(|&p| is_gone(p))),
        "processes of the bomb survived: {:?}",
        all.iter().filter(|&&p| process_alive(p)).count()
    );
    assert!(
        wait_until(Duration::from_secs(10), || !pids_dir.exists()),
        "the cgroup {} was left behind",
        pids_dir.display()
    );
}

/// The CPU time testapp's `/burn` reports (`cpu_ms=N ...`).
#[track_caller]
fn burnt_ms(r: std::io::Result<wharf_e2e::Response>) -> f64 {
    let r = r.expect("burn request");
    assert_eq!(r.status, 200, "{r:?}");
    r.body
        .split_whitespace()
        .find_map(|f| f.strip_prefix("cpu_ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no cpu_ms in {:?}", r.body))
}

#[test]
fn cpu_units_shape_the_cpu_share_of_busy_replicas() {
    if !root_or_skip("cpu_units_shape_the_cpu_share_of_busy_replicas") {
        return;
    }
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let s = sandboxed_server();
    let light = TestApp::new("light").web("cpu = 256").write();
    let heavy = TestApp::new("heavy").web("cpu = 768").write();
    s.deploy(light.path()).ok("deploy light");
    s.deploy(heavy.path()).ok("deploy heavy");
    // More busy threads than cores, in both, so that both always want more CPU.
    let burn = "/burn?ms=4000&threads=4";
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let measure = || {
        let router = s.router().to_string();
        let r2 = router.clone();
        let l =
            std::thread::spawn(move || wharf_e2e::http_get(&router, "light.localhost", burn, &[]));
        let h = std::thread::spawn(move || wharf_e2e::http_get(&r2, "heavy.localhost", burn, &[]));
        (burnt_ms(l.join().unwrap()), burnt_ms(h.join().unwrap()))
    };
    // Shares divide what the two replicas get between them; when something else on the
    // machine took most of the CPU meanwhile, the window says little: measure again
    // (at most five times, then judge the last window anyway).
    let (mut l, mut h) = measure();
    for _ in 0..4 {
        if l + h >= 0.6 * cores * 4000.0 {
            break;
        }
        eprintln!(
            "cpu: the machine was busy (the replicas got {:.0} of {:.0} ms); measuring again",
            l + h,
            cores * 4000.0
        );
        (l, h) = measure();
    }
    let ratio = h / l;
    eprintln!("cpu: light {l} ms, heavy {h} ms, ratio {ratio:.2} (configured 3.0)");
    assert!(
        (2.4..=3.6).contains(&ratio),
        "cpu 768 vs 256 should get 3x the CPU within 20%: light {l} ms, heavy {h} ms, ratio {ratio:.2}"
    );
}

/// `cpu_limit = 0.2`: a replica that wants two cores gets a fifth of one, measured on
/// its cgroup from the host over two seconds.
#[test]
fn a_hard_cpu_limit_caps_a_busy_replica() {
    if !root_or_skip("a_hard_cpu_limit_caps_a_busy_replica") {
        return;
    }
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let s = sandboxed_server();
    let app = TestApp::new("capped").web("cpu_limit = 0.2").write();
    s.deploy(app.path()).ok("deploy");
    let init = pid_of(&s.wait_ready("capped", 1, Duration::from_secs(10))[0]);
    let cpu_dir = cgroup_dir(init, "cpu").expect("the replica has a cpu cgroup");
    let v2 = cpu_dir.join("cpu.max").exists();
    let quota = if v2 {
        std::fs::read_to_string(cpu_dir.join("cpu.max")).unwrap_or_default()
    } else {
        format!(
            "{} {}",
            cgroup_value(&cpu_dir, "cpu.cfs_quota_us", None).unwrap_or(0),
            cgroup_value(&cpu_dir, "cpu.cfs_period_us", None).unwrap_or(0)
        )
    };
    assert_eq!(quota.trim(), "20000 100000", "in {}", cpu_dir.display());

    // Two spinning threads for 3.5 s; the window is the 2 s in the middle.
    let router = s.router().to_string();
    let burn = std::thread::spawn(move || {
        wharf_e2e::http_get(&router, "capped.localhost", "/burn?ms=3500&threads=2", &[])
    });
    std::thread::sleep(Duration::from_millis(700));
    let throttled_before = cgroup_value(&cpu_dir, "cpu.stat", Some("nr_throttled")).unwrap_or(0);
    let (t0, c0) = (Instant::now(), cgroup_cpu_ns(&cpu_dir));
    std::thread::sleep(Duration::from_secs(2));
    let (t1, c1) = (Instant::now(), cgroup_cpu_ns(&cpu_dir));
    let throttled = cgroup_value(&cpu_dir, "cpu.stat", Some("nr_throttled")).unwrap_or(0);
    let cores = (c1.saturating_sub(c0)) as f64 / (t1 - t0).as_nanos() as f64;
    let app_ms = burnt_ms(burn.join().unwrap());
    eprintln!(
        "capped at 0.2 cores: used {cores:.3} cores over 2 s; throttled {} times; the app counted {app_ms} ms in 3.5 s",
        throttled - throttled_before,
    );
    assert!(
        (0.12..=0.28).contains(&cores),
        "a 0.2-core limit should hold two busy threads to about 0.2 cores, got {cores:.3}"
    );
    assert!(
        throttled > throttled_before,
        "the kernel throttled the replica (cpu.stat nr_throttled)"
    );
    assert!(
        app_ms < 0.3 * 3500.0,
        "the app's own count agrees: {app_ms} ms of CPU in 3.5 s"
    );
}

#[test]
fn a_server_crash_leaves_no_cgroup_behind() {
    if !root_or_skip("a_server_crash_leaves_no_cgroup_behind") {
        return;
    }
    let mut s = sandboxed_server();
    let app = TestApp::new("crashy").replicas(2).write();
    s.deploy(app.path()).ok("deploy");
    let ps = s.wait_ready("crashy", 2, Duration::from_secs(10));
    let victim = pid_of(&ps[0]);
    let victim_all: Vec<u32> = std::iter::once(victim).chain(descendants(victim)).collect();
    let victim_cg = cgroup_dir(victim, "pids").expect("pids cgroup");
    let survivor = pid_of(&ps[1]);

    s.kill9();
    // The replica's init dies while the server is down; its sandbox dies with it.
    wharf_e2e::kill9(victim);
    assert!(
        wait_until(Duration::from_secs(5), || victim_all
            .iter()
            .all(|&p| is_gone(p))),
        "the sandbox of a killed init survived it"
    );
    // And a cgroup whose replica left no run dir at all (a crash between the cgroup's
    // creation and the run dir's) is swept at the next start.
    let stray = victim_cg.with_file_name("crashy.web-9-v1");
    std::fs::create_dir(&stray).expect("stray cgroup");

    s.restart_same_data_dir();
    let now = s.wait_ready("crashy", 2, Duration::from_secs(15));
    assert!(
        now.iter().any(|r| pid_of(r) == survivor),
        "re-adopted: {now:#?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !stray.exists()),
        "the stray cgroup {} was not swept",
        stray.display()
    );
    let replaced = now
        .iter()
        .find(|r| r["id"] == ps[0]["id"])
        .expect("replaced");
    let procs = std::fs::read_to_string(victim_cg.join("cgroup.procs")).unwrap_or_default();
    let procs: Vec<u32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(
        procs.contains(&pid_of(replaced)),
        "the replacement runs in the replica's cgroup: {procs:?}"
    );
    assert!(
        victim_all.iter().all(|p| !procs.contains(p)),
        "old processes in the new cgroup: {procs:?}"
    );
}

/// An app that opens `/dev/stdout` or `/dev/stderr` by path (nginx, many loggers) can,
/// and what it writes there reaches the app's log.
#[test]
fn the_app_can_open_its_standard_streams_by_path() {
    if !root_or_skip("the_app_can_open_its_standard_streams_by_path") {
        return;
    }
    let s = sandboxed_server();
    let app = wharf_e2e::app_with_file(
        "streams",
        "Procfile",
        "web: sh -c 'echo to-stdout-by-path > /dev/stdout && echo to-stderr-by-path > /dev/stderr && exec ./testapp'\n",
    );
    s.deploy(app.path()).ok("deploy");
    s.wait_ready("streams", 1, Duration::from_secs(10));
    let logs = wait_until(Duration::from_secs(5), || {
        let out = s.wharf(&["logs", "streams"]).stdout;
        out.contains("to-stdout-by-path") && out.contains("to-stderr-by-path")
    });
    assert!(logs, "{}", s.wharf(&["logs", "streams"]).stdout);
}

/// `[secrets] as = "files"`: each value is a file on the replica's private tmpfs at
/// `/run/secrets/NAME`, readable by the app only, and not in its environment.
#[test]
fn secrets_as_files_land_on_a_private_tmpfs() {
    if !root_or_skip("secrets_as_files_land_on_a_private_tmpfs") {
        return;
    }
    let s = sandboxed_server();
    let app = TestApp::new("filed")
        .extra("[secrets]\nas = \"files\"\n")
        .write();
    s.wharf(&["secrets", "set", "filed", "API_TOKEN=tok-1234-files"])
        .ok("stage a secret before the first deploy");
    s.deploy(app.path()).ok("deploy");
    s.wait_ready("filed", 1, Duration::from_secs(10));
    let (code, out) = sh(
        &s,
        "filed.localhost",
        "cat /run/secrets/API_TOKEN; echo; stat -c '%a %U' /run/secrets/API_TOKEN; stat -f -c %T /run/secrets; env | grep -c API_TOKEN || true",
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "tok-1234-files", "{out}");
    assert!(
        lines[1].starts_with("400 "),
        "readable by its owner only: {out}"
    );
    assert_eq!(lines[2], "tmpfs", "{out}");
    assert_eq!(lines[3], "0", "not in the environment: {out}");
}

#[test]
fn one_offs_and_rotate_commands_run_in_the_apps_sandbox() {
    if !root_or_skip("one_offs_and_rotate_commands_run_in_the_apps_sandbox") {
        return;
    }
    let s = sandboxed_server();
    let app = TestApp::new("chores")
        .extra(concat!(
            "[secrets.rotate]\n",
            "TOKEN = { every = \"1h\", ",
            "command = 'echo \"$(id -u):$(hostname):$(touch /usr/wharf-probe 2>/dev/null && echo rw || echo ro)\"', ",
            "check = 'case \"$(hostname)\" in check-*) test -n \"$TOKEN\";; *) exit 1;; esac' }\n",
        ))
        .write();
    s.deploy(app.path()).ok("deploy chores");
    s.wait_ready("chores", 1, Duration::from_secs(10));
    let (_, uid) = sh(&s, "chores.localhost", "id -u");
    let app_uid = uid.trim().to_string();
    assert_ne!(app_uid, "0", "the app runs as its own user");

    // The rotate command ran as the app's user, in a sandbox of its own, read-only /usr.
    let rotated = wharf_e2e::wait_for(Duration::from_secs(30), || {
        s.try_get("chores.localhost", "/env/TOKEN")
            .ok()
            .filter(|r| r.status == 200 && r.body.contains(':'))
            .map(|r| r.body)
    })
    .unwrap_or_else(|| panic!("no rotated value\n{}", s.log_tail(60)));
    let parts: Vec<&str> = rotated.split(':').collect();
    assert_eq!(parts.len(), 3, "{rotated}");
    assert_eq!(parts[0], app_uid, "rotate command's uid: {rotated}");
    assert!(parts[1].starts_with("rotate-"), "hostname: {rotated}");
    assert_eq!(
        parts[2], "ro",
        "the rotate command could write /usr: {rotated}"
    );

    // `wharf run`: the app's user, its own PID namespace and hostname, read-only host.
    let out = s.wharf(&[
        "run",
        "chores",
        "--",
        "sh",
        "-c",
        "id -u; hostname; ls -d /proc/[0-9]* | wc -l; touch /usr/wharf-probe 2>/dev/null && echo rw || echo ro; test -n \"$TOKEN\" && echo has-token",
    ]);
    out.ok("wharf run");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", out.all());
    assert_eq!(lines[0], app_uid, "{}", out.all());
    assert!(lines[1].starts_with("run-"), "{}", out.all());
    let procs: usize = lines[2].trim().parse().unwrap();
    assert!(procs <= 4, "the one-off sees {procs} processes");
    assert_eq!(lines[3], "ro", "{}", out.all());
    assert_eq!(lines[4], "has-token", "{}", out.all());

    // Nothing of either one-off is left: no run dir, no cgroup beside the replica's.
    let replicas = s.wait_ready("chores", 1, Duration::from_secs(10));
    let pids_dir = cgroup_dir(pid_of(&replicas[0]), "pids").expect("replica cgroup");
    let base = pids_dir.parent().unwrap().to_path_buf();
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(&base)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| {
                        n.contains(".run-") || n.contains(".rotate-") || n.contains(".check-")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(5), || leftovers().is_empty()),
        "one-off cgroups left in {}: {:?}",
        base.display(),
        leftovers()
    );
    let left: Vec<_> = std::fs::read_dir(s.data_dir().join("oneoff"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "one-off run dirs left: {left:?}");
}

#[test]
fn exec_probes_enter_the_replicas_namespaces_as_its_user() {
    if !root_or_skip("exec_probes_enter_the_replicas_namespaces_as_its_user") {
        return;
    }
    let s = sandboxed_server();
    // Each condition holds only inside the replica: its hostname, its user, its private
    // /tmp (the app writes the marker there first), its PID namespace.
    let app = TestApp::new("entered")
        .extra(concat!(
            "[process.web.startup]\n",
            "exec = 'test \"$(hostname)\" = \"$WHARF_REPLICA\" && test \"$(id -u)\" != 0 && test -f /tmp/entered-marker && test -d /proc/1 && ! touch /usr/wharf-probe 2>/dev/null'\n",
            "interval = \"250ms\"\n",
            "failure_threshold = 200\n",
        ))
        .deploy_timeout("40s")
        .write();
    s.wharf(&["deploy", app.path().to_str().unwrap(), "--detach"])
        .ok("deploy --detach");
    // The startup check holds readiness, but the app answers on its address: reach it
    // directly to leave the marker inside its /tmp.
    let address = wharf_e2e::wait_for(Duration::from_secs(15), || {
        s.ps("entered")
            .first()
            .and_then(|r| r["address"].as_str().map(str::to_string))
    })
    .expect("replica address");
    let marked = wait_until(Duration::from_secs(10), || {
        wharf_e2e::http_get(
            &address,
            "entered.localhost",
            &format!(
                "/sh?c={}",
                wharf_e2e::isolation::encode("touch /tmp/entered-marker")
            ),
            &[],
        )
        .is_ok_and(|r| r.status == 200)
    });
    assert!(marked, "could not reach the replica at {address}");
    let ready = wait_until(Duration::from_secs(20), || {
        s.ps("entered")
            .first()
            .is_some_and(|r| r["state"] == "ready")
    });
    assert!(
        ready,
        "the startup check never passed inside the replica\n{}",
        s.log_tail(40)
    );
    assert!(
        !std::path::Path::new("/tmp/entered-marker").exists(),
        "the marker must be in the replica's private /tmp"
    );
}

#[test]
fn builds_run_in_the_apps_sandbox_and_leave_a_root_owned_artifact() {
    if !root_or_skip("builds_run_in_the_apps_sandbox_and_leave_a_root_owned_artifact") {
        return;
    }
    let s = sandboxed_server();
    let app = TestApp::new("built")
        .build(concat!(
            "id -u > built-by; hostname > built-host; ",
            "(touch /usr/wharf-probe 2>/dev/null && echo rw || echo ro) > host-fs; ",
            "ls -d /proc/[0-9]* | wc -l > build-procs"
        ))
        .write();
    s.deploy(app.path()).ok("deploy with a sandboxed build");
    s.wait_ready("built", 1, Duration::from_secs(10));
    let (code, out) = sh(
        &s,
        "built.localhost",
        "cat built-by built-host host-fs build-procs; id -u; stat -c %u built-by",
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[0], lines[4], "the build ran as the app's user: {out}");
    assert_ne!(lines[0], "0", "{out}");
    assert!(lines[1].starts_with("build-"), "own hostname: {out}");
    assert_eq!(
        lines[2], "ro",
        "the build could write the host's /usr: {out}"
    );
    let procs: usize = lines[3].trim().parse().unwrap();
    assert!(procs <= 5, "the build saw {procs} processes");
    assert_eq!(lines[5], "0", "the artifact is given back to root: {out}");
    let left: Vec<_> = std::fs::read_dir(s.data_dir().join("oneoff"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "build leftovers: {left:?}");
}

#[test]
fn a_process_runs_on_an_oci_image_instead_of_the_hosts_root() {
    if !root_or_skip("a_process_runs_on_an_oci_image_instead_of_the_hosts_root") {
        return;
    }
    use wharf_e2e::oci::{write_layout, Entry};
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let s = sandboxed_server();
    let app = tempfile::tempdir().unwrap();
    write_layout(
        &app.path().join("image"),
        &[
            vec![
                Entry::File {
                    path: "bin/busybox",
                    data: &busybox,
                    mode: 0o755,
                },
                Entry::Symlink {
                    path: "bin/sh",
                    to: "busybox",
                },
                Entry::File {
                    path: "etc/removed",
                    data: b"gone",
                    mode: 0o644,
                },
            ],
            vec![
                Entry::File {
                    path: "etc/image-marker",
                    data: b"from-image",
                    mode: 0o644,
                },
                Entry::Whiteout {
                    path: "etc/removed",
                },
            ],
        ],
        &["PATH=/bin", "IMAGE_VAR=hello"],
        "v1",
    );
    std::fs::write(app.path().join("index.html"), "served from the image\n").unwrap();
    std::fs::write(
        app.path().join("wharf.toml"),
        concat!(
            "app = \"imaged\"\n",
            "[process.web]\n",
            "command = \"busybox httpd -f -p $PORT -h /app\"\n",
            "image = \"oci:image:v1\"\n",
            "stop_timeout = \"1s\"\n",
            "[process.web.readiness]\nhttp = \"/index.html\"\ninterval = \"250ms\"\n",
        ),
    )
    .unwrap();
    let out = s.deploy(app.path());
    out.ok("deploy on an image");
    assert!(out.stdout.contains("(2 layers)"), "{}", out.all());
    let r = s.get("imaged.localhost", "/index.html");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "served from the image\n")
    );

    // Inside: the image's files, whiteouts applied, its environment; not the host's root.
    let out = s.wharf(&[
        "run",
        "imaged",
        "--",
        "sh",
        "-c",
        "cat /etc/image-marker; echo; echo $IMAGE_VAR; test -e /etc/removed && echo removed-visible; test -e /usr/bin/node && echo host-visible; busybox id -u; ls /app",
    ]);
    out.ok("wharf run on the image");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "from-image", "{}", out.all());
    assert_eq!(lines[1], "hello", "{}", out.all());
    assert!(!out.stdout.contains("removed-visible"), "{}", out.all());
    assert!(!out.stdout.contains("host-visible"), "{}", out.all());
    assert_ne!(lines[2], "0", "runs as the app's user: {}", out.all());
    assert!(out.stdout.contains("index.html"), "{}", out.all());

    // A second release reuses the unpacked layers.
    let layers = || {
        std::fs::read_dir(s.data_dir().join("images/layers"))
            .unwrap()
            .count()
    };
    let before = layers();
    s.deploy(app.path()).ok("redeploy");
    assert_eq!(layers(), before);

    // A bad reference is the user's mistake, named.
    std::fs::write(
        app.path().join("wharf.toml"),
        "app = \"imaged\"\n[process.web]\ncommand = \"x\"\nimage = \"oci:image:v9\"\n",
    )
    .unwrap();
    let out = s.deploy(app.path());
    out.expect_code(2, "unknown tag");
    assert!(
        out.stderr.contains("no image is tagged \"v9\""),
        "{}",
        out.all()
    );
}

/// The app's `HOME` is a place it can write (its private `/tmp`), not the server's
/// `/root`; a `HOME` in the app's config wins.
#[test]
fn the_app_has_a_writable_home() {
    if !root_or_skip("the_app_has_a_writable_home") {
        return;
    }
    let s = sandboxed_server();
    let app = TestApp::new("homey").write();
    s.deploy(app.path()).ok("deploy");
    s.wait_ready("homey", 1, Duration::from_secs(10));
    let (code, out) = sh(
        &s,
        "homey.localhost",
        "echo \"$HOME\"; mkdir -p ~/.cache/app && echo kept > ~/.cache/app/x && cat ~/.cache/app/x",
    );
    assert_eq!((code, out.as_str()), (0, "/tmp\nkept\n"), "{out}");

    let own = TestApp::new("homey").env("HOME", "/var/tmp").write();
    s.deploy(own.path()).ok("deploy with HOME in the config");
    s.wait_ready("homey", 1, Duration::from_secs(10));
    let (code, out) = sh(&s, "homey.localhost", "echo \"$HOME\"");
    assert_eq!((code, out.trim()), (0, "/var/tmp"), "the config's HOME");
}
