//! `network = "isolated"`: a replica in a network namespace of its own, plugged into a
//! host bridge by a veth pair.
//!
//! ```text
//!  host netns                                     replica netns (PID 1 and the app)
//!  wharf0 (bridge) 10.89.0.1/16                   lo 127.0.0.1 (its own loopback)
//!    └─ wharf0a590002 (veth, host end) ─────────── eth0 10.89.0.2/16, default via 10.89.0.1
//! ```
//!
//! Who does what: the server ([`Network`]) creates the bridge (named by `--bridge`,
//! default `wharf0`, with the subnet's first address) when the first isolated replica
//! starts, and gives each replica an address ([`wharf_core::addresses`]) recorded in its
//! launch file ([`NetSpec`]) and `handle.json`. The replica's init clones PID 1 into a new
//! network namespace and creates the veth pair from the host side ([`plug`]): the host end
//! `wharf` + the address in hex (so its name says whose it is), attached to the bridge;
//! the other end created directly inside the namespace as `eth0`; and the host forgets
//! any neighbour (ARP) entry of the address, which may be a stopped replica's (a new
//! replica has a new MAC address). PID 1 waits for that, then brings `lo` and `eth0` up
//! with the address and a default route via the host ([`configure`]). The router and the
//! probes reach the replica at `ADDRESS:PORT`; the replica reaches the host at the
//! gateway address (services listening there or on `0.0.0.0`) but not the host's
//! `127.0.0.1`, which is not its loopback. Replicas on one bridge can reach each other
//! (as on Docker's default bridge); nothing is forwarded or NATed beyond the host.
//!
//! Invariants: the namespace lives exactly as long as the replica's processes (nothing
//! pins it: no `/run/netns` mount), and the kernel deletes both veth ends with it, so a
//! replica that crashes leaves no interface; [`Network::unplug`] deletes the host end
//! anyway at cleanup (a namespace can outlive its last process for a moment) and releases
//! the address; [`Network::sweep`] deletes `wharf<hex>` links of this subnet that no live
//! replica holds. Only links attached to this server's bridge are ever deleted. The
//! bridge stays while the server runs (it is shared; removing it would cut the replicas
//! still running).

use super::netlink::{index_of, Netlink, NetlinkError, Request};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;
use wharf_core::addresses::{Addresses, Subnet, DEFAULT_SUBNET};

/// The replica's end of its veth pair, inside its namespace.
pub const REPLICA_IF: &str = "eth0";
/// Default name of the host bridge.
pub const DEFAULT_BRIDGE: &str = "wharf0";
/// Prefix of the host ends of replicas' veth pairs.
const HOST_IF_PREFIX: &str = "wharf";

/// Settings of replica networks (server flags `--bridge`, `--replica-subnet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub bridge: String,
    pub subnet: Subnet,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            bridge: DEFAULT_BRIDGE.into(),
            // A constant that parses (unit-tested in wharf-core).
            subnet: DEFAULT_SUBNET.parse().unwrap_or_else(|_| unreachable!()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("every address of the replica subnet {0} is in use; stop replicas or pass a larger --replica-subnet")]
    Exhausted(Subnet),
    #[error("invalid bridge name {0:?}: use 1 to 15 letters, digits, '-' or '_' (and not wharf + 8 hex digits, the names of replicas' links)")]
    BadBridge(String),
    #[error("cannot set up the bridge {bridge} ({subnet}): {source}")]
    Bridge {
        bridge: String,
        subnet: Subnet,
        source: NetlinkError,
    },
    #[error("the bridge {0} is gone; restart the server to create it again")]
    NoBridge(String),
    #[error("cannot plug the replica into {bridge}: {source}{hint}")]
    Plug {
        bridge: String,
        source: NetlinkError,
        hint: &'static str,
    },
    #[error("cannot configure the replica's network: {0}")]
    Configure(NetlinkError),
    #[error("the replica's network has no interface {0}")]
    Missing(&'static str),
}

/// A replica's network, as its init and PID 1 set it up; part of its launch file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSpec {
    pub bridge: String,
    /// The host end of the veth pair.
    pub host_if: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// The host end's name for the replica at `addr`: `wharf` + 8 hex digits (13 characters,
/// within the kernel's 15).
pub fn host_if_name(addr: Ipv4Addr) -> String {
    format!("{HOST_IF_PREFIX}{:08x}", u32::from(addr))
}

/// The address a host end's name encodes, if it is one.
pub fn addr_of_host_if(name: &str) -> Option<Ipv4Addr> {
    let hex = name.strip_prefix(HOST_IF_PREFIX)?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(Ipv4Addr::from)
}

fn valid_bridge(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && addr_of_host_if(name).is_none()
}

/// Checks a `--bridge` value (for the command line, before anything starts).
pub fn parse_bridge(name: &str) -> Result<String, NetworkError> {
    if valid_bridge(name) {
        Ok(name.to_string())
    } else {
        Err(NetworkError::BadBridge(name.to_string()))
    }
}

/// The server's side: the bridge and the addresses.
#[derive(Debug)]
pub struct Network {
    cfg: NetworkConfig,
    addresses: Mutex<Addresses>,
}

impl Network {
    pub fn new(cfg: NetworkConfig) -> Result<Network, NetworkError> {
        if !valid_bridge(&cfg.bridge) {
            return Err(NetworkError::BadBridge(cfg.bridge));
        }
        Ok(Network {
            addresses: Mutex::new(Addresses::new(cfg.subnet)),
            cfg,
        })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    fn addresses(&self) -> std::sync::MutexGuard<'_, Addresses> {
        self.addresses.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the bridge with the gateway address, up; what exists already is kept.
    pub fn ensure_bridge(&self) -> Result<(), NetworkError> {
        let fail = |source| NetworkError::Bridge {
            bridge: self.cfg.bridge.clone(),
            subnet: self.cfg.subnet,
            source,
        };
        let mut nl = Netlink::open().map_err(fail)?;
        nl.run_allowing(&Request::new_bridge(&self.cfg.bridge), &[Errno::EEXIST])
            .map_err(fail)?;
        let index = index_of(&self.cfg.bridge)
            .ok_or_else(|| NetworkError::NoBridge(self.cfg.bridge.clone()))?;
        let gateway = self.cfg.subnet.gateway();
        nl.run_allowing(
            &Request::new_addr(index, gateway, self.cfg.subnet.prefix()),
            &[Errno::EEXIST],
        )
        .map_err(fail)?;
        nl.run(&Request::link_up(index, None)).map_err(fail)
    }

    /// The bridge (created if needed) and a free address for a new replica.
    pub fn plan(&self) -> Result<NetSpec, NetworkError> {
        self.ensure_bridge()?;
        let addr = self
            .addresses()
            .allocate()
            .ok_or(NetworkError::Exhausted(self.cfg.subnet))?;
        Ok(NetSpec {
            bridge: self.cfg.bridge.clone(),
            host_if: host_if_name(addr),
            addr,
            prefix: self.cfg.subnet.prefix(),
            gateway: self.cfg.subnet.gateway(),
        })
    }

    /// Takes `addr` for a replica found running after a restart.
    pub fn reserve(&self, addr: Ipv4Addr) -> bool {
        self.addresses().reserve(addr)
    }

    /// Deletes the host end of the replica at `addr` if it is still there (the kernel
    /// normally deleted it with the namespace) and releases the address.
    pub fn unplug(&self, addr: Ipv4Addr) {
        let name = host_if_name(addr);
        if self.cfg.subnet.contains(addr) && self.owns(&name) {
            delete_link(&name);
        }
        self.addresses().release(addr);
    }

    /// Whether the link `name` hangs on this server's bridge: a `wharf<hex>` link
    /// elsewhere (another server's replica with a clashing subnet) is never touched.
    fn owns(&self, name: &str) -> bool {
        std::fs::read_link(Path::new("/sys/class/net").join(name).join("master"))
            .is_ok_and(|m| m.file_name() == Some(OsStr::new(&self.cfg.bridge)))
    }

    /// Deletes the `wharf<hex>` links of this subnet whose address is not in `keep`, as
    /// found in `names` (the host's `/sys/class/net`).
    pub fn sweep(&self, names: &[String], keep: &HashSet<Ipv4Addr>) {
        for name in names {
            match addr_of_host_if(name) {
                Some(a) if self.cfg.subnet.contains(a) && !keep.contains(&a) && self.owns(name) => {
                    tracing::info!("removing the network link {name} of a replica that is gone");
                    delete_link(name);
                }
                _ => {}
            }
        }
    }

    /// A notice line for the server's start.
    pub fn notice(&self) -> String {
        format!(
            "network = \"isolated\": bridge {} at {} (subnet {})",
            self.cfg.bridge,
            self.cfg.subnet.gateway(),
            self.cfg.subnet
        )
    }
}

fn delete_link(name: &str) {
    let res = Netlink::open().and_then(|mut nl| {
        nl.run_allowing(&Request::del_link(name), &[Errno::ENODEV, Errno::ENOENT])
    });
    if let Err(e) = res {
        tracing::warn!("cannot delete the network link {name}: {e}");
    }
}

/// The names of the host's network links.
pub fn host_links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// From the init (host namespace): the veth pair of the replica whose PID 1 is `pid`,
/// its host end on the bridge and up. Undone when a step fails.
pub fn plug(pid: u32, spec: &NetSpec) -> Result<(), NetworkError> {
    let fail = |source: NetlinkError| {
        let hint = match source.errno() {
            Some(Errno::EEXIST) => "; another replica (of another wharf server?) has this address: give each server its own --replica-subnet",
            _ => "",
        };
        NetworkError::Plug {
            bridge: spec.bridge.clone(),
            source,
            hint,
        }
    };
    let bridge =
        index_of(&spec.bridge).ok_or_else(|| NetworkError::NoBridge(spec.bridge.clone()))?;
    let mut nl = Netlink::open().map_err(fail)?;
    nl.run(&Request::new_veth(&spec.host_if, REPLICA_IF, pid))
        .map_err(fail)?;
    let attached = index_of(&spec.host_if)
        .ok_or(NetworkError::Missing("host end"))
        .and_then(|i| nl.run(&Request::link_up(i, Some(bridge))).map_err(fail));
    if attached.is_err() {
        delete_link(&spec.host_if);
        return attached;
    }
    // The address may have been a stopped replica's: the host must not keep sending to
    // that one's MAC address (until its entry goes stale, several seconds).
    nl.run_allowing(
        &Request::del_neigh(bridge, spec.addr),
        &[Errno::ENOENT, Errno::ENODEV],
    )
    .map_err(fail)
}

/// From PID 1 (the replica's namespace): loopback and `eth0` up, the address, the
/// default route via the host.
pub fn configure(spec: &NetSpec) -> Result<(), NetworkError> {
    let mut nl = Netlink::open().map_err(NetworkError::Configure)?;
    let lo = index_of("lo").ok_or(NetworkError::Missing("lo"))?;
    nl.run(&Request::link_up(lo, None))
        .map_err(NetworkError::Configure)?;
    let eth = index_of(REPLICA_IF).ok_or(NetworkError::Missing(REPLICA_IF))?;
    nl.run(&Request::new_addr(eth, spec.addr, spec.prefix))
        .map_err(NetworkError::Configure)?;
    nl.run(&Request::link_up(eth, None))
        .map_err(NetworkError::Configure)?;
    nl.run(&Request::default_route(spec.gateway, eth))
        .map_err(NetworkError::Configure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ends_are_named_after_their_address() {
        let a = Ipv4Addr::new(10, 89, 0, 2);
        let name = host_if_name(a);
        assert_eq!(name, "wharf0a590002");
        assert!(name.len() <= 15, "the kernel's limit");
        assert_eq!(addr_of_host_if(&name), Some(a));
        for other in [
            "wharf0",
            "eth0",
            "wharf0a59000",
            "wharf0a5900021",
            "wharfzzzzzzzz",
        ] {
            assert_eq!(addr_of_host_if(other), None, "{other}");
        }
    }

    #[test]
    fn bridge_names_are_checked() {
        let net = |bridge: &str| {
            Network::new(NetworkConfig {
                bridge: bridge.into(),
                ..NetworkConfig::default()
            })
        };
        assert!(net("wharf0").is_ok());
        assert!(net("wharf-test_1").is_ok());
        for bad in ["", "a name", "sixteen-chars-xx", "wharf0a590002"] {
            assert!(
                matches!(net(bad), Err(NetworkError::BadBridge(_))),
                "{bad:?} (a replica's link name cannot be the bridge)"
            );
        }
        assert_eq!(NetworkConfig::default().subnet.to_string(), "10.89.0.0/16");
    }

    /// Against the kernel (root only): the bridge is created once with its address and
    /// up, a second `ensure_bridge` changes nothing, deleting a missing link is no error.
    #[test]
    fn a_bridge_is_made_idempotently_and_deleted() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped a_bridge_is_made_idempotently_and_deleted: needs root");
            return;
        }
        let bridge = format!("wharfu{}", std::process::id() % 100_000);
        let net = Network::new(NetworkConfig {
            bridge: bridge.clone(),
            subnet: "10.254.252.0/24".parse().unwrap(),
        })
        .unwrap();
        net.ensure_bridge().unwrap();
        net.ensure_bridge().expect("a second time: already there");
        let sys = std::path::Path::new("/sys/class/net").join(&bridge);
        let flags = std::fs::read_to_string(sys.join("flags")).unwrap_or_default();
        let cleanup = || delete_link(&bridge);
        let up = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0) & 1;
        let is_bridge = sys.join("bridge").is_dir();
        let spec = net.plan().unwrap();
        cleanup();
        assert!(is_bridge, "{bridge} is a bridge");
        assert_eq!(up, 1, "{bridge} is up (flags {flags})");
        assert_eq!(spec.addr, Ipv4Addr::new(10, 254, 252, 2));
        assert_eq!(spec.gateway, Ipv4Addr::new(10, 254, 252, 1));
        assert_eq!(spec.host_if, "wharf0afefc02");
        assert!(!sys.exists(), "deleted");
        let mut nl = Netlink::open().unwrap();
        nl.run_allowing(&Request::del_link(&bridge), &[Errno::ENODEV])
            .expect("a missing link is ENODEV");
    }

    #[test]
    fn sweeping_spares_live_replicas_and_other_subnets() {
        // Only names are decided here; deleting a missing link is harmless (ENODEV), so
        // the test uses addresses nobody has on this machine.
        let net = Network::new(NetworkConfig {
            bridge: "wharft-sweep".into(),
            subnet: "10.254.253.0/24".parse().unwrap(),
        })
        .unwrap();
        let mine = Ipv4Addr::new(10, 254, 253, 9);
        assert!(net.reserve(mine));
        assert!(!net.reserve(mine), "reserved once");
        net.unplug(mine);
        assert!(net.reserve(mine), "released by unplug");
        let keep = HashSet::from([mine]);
        let names: Vec<String> = vec!["eth0".into(), host_if_name(mine)];
        net.sweep(&names, &keep); // nothing to delete: kept, or not ours
    }
}
