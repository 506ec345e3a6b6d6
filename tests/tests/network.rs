//! `network = "isolated"`: replicas in network namespaces of their own, plugged into a
//! host bridge, routed at their own addresses (root only: skipped with a printed reason
//! otherwise). Each test's server gets its own bridge and /24, so tests run in parallel
//! and the bridge is deleted when the test ends.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use wharf_e2e::isolation::{root_or_skip, sh};
use wharf_e2e::{is_gone, wait_until, Server, TestApp};

/// A sandboxed server with its own bridge and subnet; the bridge goes with it.
struct NetServer {
    server: Option<Server>,
    bridge: String,
    /// `10.249.N`
    net: String,
}

impl NetServer {
    fn start() -> NetServer {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() % 50) * 5 + NEXT.fetch_add(1, Ordering::SeqCst) % 5 + 1;
        let bridge = format!("wharft{n}");
        let net = format!("10.249.{n}");
        let subnet = format!("{net}.0/24");
        delete_link(&bridge); // a leftover of a killed test run
        let server = Server::start_with(&[
            "--isolation",
            "sandbox",
            "--bridge",
            &bridge,
            "--replica-subnet",
            &subnet,
        ]);
        NetServer {
            server: Some(server),
            bridge,
            net,
        }
    }

    fn s(&self) -> &Server {
        self.server.as_ref().expect("server")
    }

    fn s_mut(&mut self) -> &mut Server {
        self.server.as_mut().expect("server")
    }

    fn gateway(&self) -> Ipv4Addr {
        format!("{}.1", self.net).parse().expect("gateway")
    }
}

impl Drop for NetServer {
    fn drop(&mut self) {
        drop(self.server.take()); // kills its replicas first
        delete_link(&self.bridge);
    }
}

/// Deletes a link this test made (the bridge), with iproute2.
fn delete_link(name: &str) {
    if std::path::Path::new("/sys/class/net").join(name).exists() {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", name])
            .status();
    }
}

/// The app: testapp listening on every address of its own namespace.
fn isolated_app(name: &str, replicas: u32) -> TestApp {
    TestApp::new(name)
        .replicas(replicas)
        .web("network = \"isolated\"")
        .env("TESTAPP_HOST", "0.0.0.0")
}

/// The address column of `ps --json` rows.
fn addrs(ps: &[serde_json::Value]) -> Vec<SocketAddr> {
    ps.iter()
        .map(|r| {
            r["address"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("replica without an address: {r:#}"))
        })
        .collect()
}

/// The host end of the veth pair of the replica at `ip`.
fn host_link(ip: Ipv4Addr) -> std::path::PathBuf {
    std::path::Path::new("/sys/class/net").join(format!("wharf{:08x}", u32::from(ip)))
}

fn ipv4(a: &SocketAddr) -> Ipv4Addr {
    match a.ip() {
        std::net::IpAddr::V4(v4) => v4,
        other => panic!("not IPv4: {other}"),
    }
}

/// The network namespace (`net:[INODE]`) of process `pid`.
fn netns(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Whether any process is still in the network namespace `ns`.
fn netns_alive(ns: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| netns(pid).as_deref() == Some(ns))
}

/// Exit code of a TCP connect from inside a replica of `host` to `to` (python3).
fn connect_from_inside(s: &Server, host: &str, to: SocketAddr) -> (i32, String) {
    sh(
        s,
        host,
        &format!(
            "python3 -c 'import socket; socket.create_connection((\"{}\", {}), 2); print(\"connected\")'",
            to.ip(),
            to.port()
        ),
    )
}

#[test]
fn isolated_replicas_serve_at_their_own_addresses_and_leave_nothing_behind() {
    if !root_or_skip("isolated_replicas_serve_at_their_own_addresses_and_leave_nothing_behind") {
        return;
    }
    let ns = NetServer::start();
    let s = ns.s();
    let app = isolated_app("iso", 2).write();
    s.deploy(app.path()).ok("deploy");
    let ps = s.wait_ready("iso", 2, Duration::from_secs(15));
    let addrs = addrs(&ps);
    let ips: BTreeSet<Ipv4Addr> = addrs.iter().map(ipv4).collect();
    assert_eq!(ips.len(), 2, "two replicas, two addresses: {addrs:?}");
    for ip in &ips {
        assert!(
            ip.to_string().starts_with(&format!("{}.", ns.net)) && *ip != ns.gateway(),
            "{ip} is a replica address of {}.0/24",
            ns.net
        );
        assert!(host_link(*ip).exists(), "the host end of {ip}'s veth");
    }

    // Through the router, both replicas answer.
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let r = s.get("iso.localhost", "/");
        assert_eq!(r.status, 200, "{r:?}");
        seen.insert(r.body.clone());
    }
    assert_eq!(seen.len(), 2, "both replicas served: {seen:?}");

    // Inside: its own address and loopback, a route to the host's side only.
    let (code, out) = sh(
        s,
        "iso.localhost",
        "echo $WHARF_ADDR; cat /sys/class/net/eth0/operstate; ls /sys/class/net | tr '\\n' ' '",
    );
    assert_eq!(code, 0, "{out}");
    let mut lines = out.lines();
    let inside: Ipv4Addr = lines
        .next()
        .unwrap_or_default()
        .parse()
        .expect("WHARF_ADDR");
    assert!(
        ips.contains(&inside),
        "WHARF_ADDR {inside} is one of {ips:?}"
    );
    assert_eq!(lines.next(), Some("up"), "{out}");
    assert_eq!(
        lines.next().map(str::trim),
        Some("eth0 lo"),
        "only its own links: {out}"
    );

    let loopback_only = TcpListener::bind("127.0.0.1:0").expect("host loopback listener");
    let on_gateway = TcpListener::bind((ns.gateway(), 0)).expect("listener on the bridge");
    let (code, out) = connect_from_inside(
        s,
        "iso.localhost",
        loopback_only.local_addr().expect("addr"),
    );
    assert_ne!(
        code, 0,
        "the host's loopback is not reachable from inside: {out}"
    );
    let (code, out) =
        connect_from_inside(s, "iso.localhost", on_gateway.local_addr().expect("addr"));
    assert_eq!(
        (code, out.trim()),
        (0, "connected"),
        "the host's side of the bridge is"
    );

    // Stop one (scale down), then destroy: every veth and namespace goes.
    let pids: Vec<u32> = ps
        .iter()
        .filter_map(|r| r["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
        .collect();
    let namespaces: Vec<String> = pids
        .iter()
        .flat_map(|p| wharf_e2e::descendants(*p))
        .filter_map(netns)
        .filter(|n| netns(std::process::id()).as_deref() != Some(n.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        namespaces.len(),
        2,
        "a namespace per replica: {namespaces:?}"
    );
    s.wharf(&["scale", "iso", "web=1"]).ok("scale down");
    let gone_one = wait_until(Duration::from_secs(15), || {
        ips.iter().filter(|ip| host_link(**ip).exists()).count() == 1
    });
    assert!(gone_one, "the stopped replica's veth is gone");
    s.wharf(&["destroy", "iso", "--yes"]).ok("destroy");
    let clean = wait_until(Duration::from_secs(15), || {
        pids.iter().all(|p| is_gone(*p))
            && ips.iter().all(|ip| !host_link(*ip).exists())
            && namespaces.iter().all(|n| !netns_alive(n))
    });
    assert!(
        clean,
        "after destroy: links {:?}, namespaces alive {:?}",
        ips.iter()
            .filter(|ip| host_link(**ip).exists())
            .collect::<Vec<_>>(),
        namespaces
            .iter()
            .filter(|n| netns_alive(n))
            .collect::<Vec<_>>()
    );
    let pinned = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().contains("iso"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(pinned, 0, "no namespace is pinned in /run/netns");
    assert!(
        std::path::Path::new("/sys/class/net")
            .join(&ns.bridge)
            .exists(),
        "the bridge stays while the server runs"
    );
}

#[test]
fn isolated_replicas_are_readopted_after_a_server_crash() {
    if !root_or_skip("isolated_replicas_are_readopted_after_a_server_crash") {
        return;
    }
    let mut ns = NetServer::start();
    // A fixed port: each isolated replica has its own network, so all may use it.
    let app = isolated_app("phoenix", 1).web("port = 5000").write();
    ns.s().deploy(app.path()).ok("deploy");
    let before = ns.s().wait_ready("phoenix", 1, Duration::from_secs(15));
    let addr = addrs(&before)[0];

    ns.s_mut().kill9();
    ns.s_mut().restart_same_data_dir();
    let s = ns.s();
    let after = s.wait_ready("phoenix", 1, Duration::from_secs(15));
    assert_eq!(
        after[0]["pid"], before[0]["pid"],
        "re-adopted, not restarted"
    );
    assert_eq!(addrs(&after)[0], addr, "at the same address");
    let r = s.get("phoenix.localhost", "/");
    assert_eq!(r.status, 200, "routed again: {r:?}");

    // The address is taken: a new replica gets another one.
    s.wharf(&["scale", "phoenix", "web=2"]).ok("scale up");
    let two = s.wait_ready("phoenix", 2, Duration::from_secs(15));
    let ips: BTreeSet<Ipv4Addr> = addrs(&two).iter().map(ipv4).collect();
    assert_eq!(
        ips.len(),
        2,
        "distinct addresses after re-adoption: {two:#?}"
    );
    assert!(
        addrs(&two).iter().all(|a| a.port() == 5000),
        "both on the fixed port: {two:#?}"
    );

    // A replica that dies (its init killed) takes its veth with it and comes back.
    let victim = two
        .iter()
        .find(|r| r["address"].as_str() == Some(&addr.to_string()))
        .expect("the adopted replica");
    let pid = victim["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .expect("pid");
    wharf_e2e::kill9(pid);
    let healed = wait_until(Duration::from_secs(20), || {
        let ps = s.ps("phoenix");
        ps.len() == 2
            && ps.iter().all(|r| r["state"] == "ready")
            && ps.iter().all(|r| r["pid"].as_u64() != Some(u64::from(pid)))
    });
    assert!(
        healed,
        "the killed replica was restarted: {:#?}",
        s.ps("phoenix")
    );
    let live =
        |s: &Server| -> BTreeSet<Ipv4Addr> { addrs(&s.ps("phoenix")).iter().map(ipv4).collect() };
    let exact = wait_until(Duration::from_secs(10), || {
        replica_links(&ns.net) == live(s)
    });
    assert!(
        exact,
        "one veth per live replica, none for the dead one: live {:?}, links {:?}",
        live(s),
        replica_links(&ns.net)
    );
    for _ in 0..5 {
        let r = s.get("phoenix.localhost", "/");
        assert_eq!(r.status, 200, "{r:?}");
    }

    // A replica that dies while the server is down: its veth goes with it, its address
    // is released at the restart, and its replacement is plugged in.
    let ps = s.ps("phoenix");
    let dead = ps[0]["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .expect("pid");
    ns.s_mut().kill9();
    wharf_e2e::kill9(dead);
    ns.s_mut().restart_same_data_dir();
    let s = ns.s();
    let back = wait_until(Duration::from_secs(20), || {
        let ps = s.ps("phoenix");
        ps.len() == 2
            && ps.iter().all(|r| r["state"] == "ready")
            && ps
                .iter()
                .all(|r| r["pid"].as_u64() != Some(u64::from(dead)))
    });
    assert!(back, "replaced after the restart: {:#?}", s.ps("phoenix"));
    let exact = wait_until(Duration::from_secs(10), || {
        replica_links(&ns.net) == live(s)
    });
    assert!(
        exact,
        "after a crash while the server was down: live {:?}, links {:?}",
        live(s),
        replica_links(&ns.net)
    );
    assert_eq!(s.get("phoenix.localhost", "/").status, 200);
}

/// Addresses of `NET.0/24` whose host end (`wharf<hex>`) exists.
fn replica_links(net: &str) -> BTreeSet<Ipv4Addr> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let hex = name.strip_prefix("wharf").filter(|h| h.len() == 8)?;
                    let ip = Ipv4Addr::from(u32::from_str_radix(hex, 16).ok()?);
                    ip.to_string().starts_with(&format!("{net}.")).then_some(ip)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Plain processes cannot have their own network: the deploy says so, before building.
#[test]
fn isolated_network_is_refused_without_the_sandbox() {
    let s = Server::start_with(&["--isolation", "none"]);
    let app = isolated_app("flat", 1).write();
    let out = s.deploy(app.path());
    out.expect_code(2, "deploy with network = \"isolated\" and plain processes");
    assert!(
        out.all().contains("network = \"isolated\"") && out.all().contains("--isolation"),
        "{}",
        out.all()
    );
    assert!(s.apps().is_empty(), "nothing was released: {:?}", s.apps());
}

/// Secrets reach a replica with its own network: it claims them on the host's side of
/// its bridge, since the host's loopback is out of its reach.
#[test]
fn secrets_reach_isolated_replicas() {
    if !root_or_skip("secrets_reach_isolated_replicas") {
        return;
    }
    let ns = NetServer::start();
    let s = ns.s();
    s.wharf(&["secrets", "set", "hushed", "API_TOKEN=tok-isolated-42"])
        .ok("stage a secret before the first deploy");
    let app = isolated_app("hushed", 1).write();
    s.deploy(app.path()).ok("deploy");
    s.wait_ready("hushed", 1, Duration::from_secs(15));
    let r = s.get("hushed.localhost", "/env/API_TOKEN");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "tok-isolated-42"),
        "{r:?}"
    );
}

/// An address whose link name is taken (another server's replica on a clashing subnet):
/// that start fails saying what to do, the foreign link is left alone, and the replica
/// comes up at the next address.
#[test]
fn a_clashing_address_is_reported_and_skipped() {
    if !root_or_skip("a_clashing_address_is_reported_and_skipped") {
        return;
    }
    let ns = NetServer::start();
    let s = ns.s();
    let taken: Ipv4Addr = format!("{}.2", ns.net).parse().expect("address");
    let foreign = host_link(taken);
    let name = foreign
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    // Someone else's link with that name (a bridge: any kind will do).
    let made = std::process::Command::new("ip")
        .args(["link", "add", &name, "type", "bridge"])
        .status()
        .expect("ip");
    assert!(made.success(), "ip link add {name}");
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            delete_link(&self.0);
        }
    }
    let _gone = Gone(name.clone());

    let app = isolated_app("clash", 1).write();
    s.deploy(app.path()).ok("deploy (after one failed start)");
    let ps = s.wait_ready("clash", 1, Duration::from_secs(15));
    let got = ipv4(&addrs(&ps)[0]);
    assert_ne!(got, taken, "the clashing address was skipped");
    assert!(foreign.exists(), "the foreign link {name} was left alone");
    let logs = s.wharf(&["logs", "clash"]).stdout;
    assert!(
        logs.contains("give each server its own --replica-subnet"),
        "the failed start says what to do:\n{logs}"
    );
    let r = s.get("clash.localhost", "/");
    assert_eq!(r.status, 200, "{r:?}");
}
