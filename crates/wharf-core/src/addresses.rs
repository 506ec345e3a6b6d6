//! Addresses of replicas with their own network (`network = "isolated"`): an IPv4 subnet
//! (`--replica-subnet`, default [`DEFAULT_SUBNET`]) and the allocator handing out one
//! address of it per replica.
//!
//! Layout of a subnet: the network address and the broadcast address are never given;
//! the first host address (`.1` of `10.89.0.0/16`) is the host's side (the gateway on the
//! bridge); replicas get the others, one each.
//!
//! Invariants: pure (no I/O); an address is given to at most one holder until it is
//! released; allocation is next-fit (it continues after the last address given and wraps
//! around), so a just-released address is reused only when everything after it is taken,
//! which keeps stale neighbour (ARP) entries of a stopped replica from reaching its
//! successor; [`Addresses::reserve`] takes back what a restarted server finds running.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The default replica subnet: private (RFC 1918) and outside the ranges Docker, Podman,
/// libvirt and Kubernetes' common defaults use (172.17/16, 10.88/16, 192.168.122/24,
/// 10.244/16, 10.96/12).
pub const DEFAULT_SUBNET: &str = "10.89.0.0/16";

/// An IPv4 network: an address with its host bits zero, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    #[error("invalid subnet {0:?}; write it as ADDRESS/PREFIX, e.g. 10.89.0.0/16")]
    Syntax(String),
    #[error("subnet {given} has host bits set; did you mean {suggested}?")]
    HostBits { given: String, suggested: String },
    #[error("subnet {0} is too small; use a prefix of /30 or shorter (the host takes one address, each replica one)")]
    TooSmall(String),
}

impl Subnet {
    /// The network `network/prefix`; its host bits must be zero.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Subnet, SubnetError> {
        let text = format!("{network}/{prefix}");
        if prefix > 30 {
            return Err(SubnetError::TooSmall(text));
        }
        let mask = mask(prefix);
        if u32::from(network) & !mask != 0 {
            return Err(SubnetError::HostBits {
                given: text,
                suggested: format!("{}/{prefix}", Ipv4Addr::from(u32::from(network) & mask)),
            });
        }
        Ok(Subnet { network, prefix })
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The host's address in the subnet (the replicas' default gateway): the first one.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Whether `addr` is in the subnet.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    /// The addresses replicas may get: after the gateway, before the broadcast address.
    fn replica_range(&self) -> (u32, u32) {
        let first = u32::from(self.network) + 2;
        let broadcast = u32::from(self.network) | !mask(self.prefix);
        (first, broadcast - 1)
    }

    /// How many replicas the subnet holds.
    pub fn capacity(&self) -> u32 {
        let (first, last) = self.replica_range();
        last - first + 1
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = SubnetError;
    fn from_str(s: &str) -> Result<Subnet, SubnetError> {
        let syntax = || SubnetError::Syntax(s.to_string());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        Subnet::new(addr, prefix)
    }
}

/// The addresses of one subnet given to replicas.
#[derive(Debug, Clone)]
pub struct Addresses {
    subnet: Subnet,
    used: BTreeSet<u32>,
    /// Where the next search starts (next-fit).
    next: u32,
}

impl Addresses {
    pub fn new(subnet: Subnet) -> Addresses {
        Addresses {
            subnet,
            used: BTreeSet::new(),
            next: subnet.replica_range().0,
        }
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// A free address, now taken; `None` when every address is.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let (first, last) = self.subnet.replica_range();
        let start = self.next.clamp(first, last);
        let found = (start..=last)
            .chain(first..start)
            .find(|a| !self.used.contains(a))?;
        self.used.insert(found);
        self.next = if found == last { first } else { found + 1 };
        Some(Ipv4Addr::from(found))
    }

    /// Takes `addr` for a replica found running (after a server restart). False when it
    /// cannot be a replica's address of this subnet or is taken already.
    pub fn reserve(&mut self, addr: Ipv4Addr) -> bool {
        let (first, last) = self.subnet.replica_range();
        let a = u32::from(addr);
        if !(first..=last).contains(&a) {
            return false;
        }
        self.used.insert(a)
    }

    /// Gives `addr` back; releasing a free or foreign address does nothing.
    pub fn release(&mut self, addr: Ipv4Addr) {
        self.used.remove(&u32::from(addr));
    }

    /// How many addresses are given.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_parse_and_say_what_is_wrong() {
        let s = net("10.89.0.0/16");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 89, 0, 1));
        assert_eq!(s.capacity(), 65_533);
        assert_eq!(s.to_string(), "10.89.0.0/16");
        assert!(s.contains(Ipv4Addr::new(10, 89, 255, 255)));
        assert!(!s.contains(Ipv4Addr::new(10, 90, 0, 1)));
        assert_eq!(net(DEFAULT_SUBNET), s);
        assert_eq!(
            net("10.89.4.0/30").capacity(),
            1,
            "a /30: the host and one replica"
        );
        let e = "10.89.0.1/16".parse::<Subnet>().unwrap_err();
        assert!(e.to_string().contains("did you mean 10.89.0.0/16"), "{e}");
        let e = "10.89.0.0/31".parse::<Subnet>().unwrap_err();
        assert!(e.to_string().contains("too small"), "{e}");
        for bad in [
            "10.89.0.0",
            "10.89.0/16",
            "10.89.0.0/33",
            "x/8",
            "10.89.0.0/-1",
            "",
        ] {
            let e = bad.parse::<Subnet>().unwrap_err();
            assert!(e.to_string().contains("ADDRESS/PREFIX"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_address_is_given_once_then_exhaustion() {
        let s = net("10.1.2.0/28"); // .2 ..= .14: 13 replicas
        let mut a = Addresses::new(s);
        let got: Vec<Ipv4Addr> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(got.len(), 13);
        assert_eq!(got.first(), Some(&Ipv4Addr::new(10, 1, 2, 2)));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 1, 2, 14)));
        let distinct: BTreeSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), 13, "no address twice");
        for addr in &got {
            assert!(s.contains(*addr));
            assert_ne!(*addr, s.gateway(), "the host's address is never given");
            assert_ne!(
                *addr,
                Ipv4Addr::new(10, 1, 2, 15),
                "nor the broadcast address"
            );
        }
        assert_eq!(a.allocate(), None, "exhausted");
        assert_eq!(a.in_use(), 13);
        a.release(Ipv4Addr::new(10, 1, 2, 7));
        assert_eq!(
            a.allocate(),
            Some(Ipv4Addr::new(10, 1, 2, 7)),
            "the one freed"
        );
        assert_eq!(a.allocate(), None);
    }

    #[test]
    fn a_released_address_waits_for_its_turn() {
        let mut a = Addresses::new(net("10.1.2.0/29")); // .2 ..= .6
        let first = a.allocate().unwrap();
        let second = a.allocate().unwrap();
        a.release(first);
        assert_eq!(
            a.allocate(),
            Some(Ipv4Addr::new(10, 1, 2, 4)),
            "next-fit goes on after the last given"
        );
        a.release(second);
        let rest: Vec<Ipv4Addr> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(
            rest,
            [5, 6, 2, 3].map(|h| Ipv4Addr::new(10, 1, 2, h)),
            "wraps around to the freed ones last"
        );
    }

    #[test]
    fn found_replicas_keep_their_addresses() {
        let mut a = Addresses::new(net("10.1.2.0/29"));
        assert!(a.reserve(Ipv4Addr::new(10, 1, 2, 2)));
        assert!(a.reserve(Ipv4Addr::new(10, 1, 2, 4)));
        assert!(!a.reserve(Ipv4Addr::new(10, 1, 2, 4)), "already taken");
        for foreign in [[10, 1, 2, 1], [10, 1, 2, 0], [10, 1, 2, 7], [10, 9, 9, 9]] {
            assert!(!a.reserve(Ipv4Addr::from(foreign)), "{foreign:?}");
        }
        a.release(Ipv4Addr::new(10, 9, 9, 9)); // foreign: nothing happens
        let got: Vec<Ipv4Addr> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(got, [3, 5, 6].map(|h| Ipv4Addr::new(10, 1, 2, h)));
    }

    #[test]
    fn exhaustive_allocation_and_release_on_a_small_subnet() {
        // Every sequence of 7 steps (allocate, or release the i-th held) against a model.
        let s = net("10.1.2.0/29");
        let steps = 7u32;
        for pattern in 0..(6u32.pow(steps)) {
            let mut a = Addresses::new(s);
            let mut held: Vec<Ipv4Addr> = Vec::new();
            let mut p = pattern;
            for _ in 0..steps {
                let op = p % 6;
                p /= 6;
                if op == 0 || held.is_empty() {
                    match a.allocate() {
                        Some(addr) => {
                            assert!(!held.contains(&addr), "{addr} given twice");
                            assert!(s.contains(addr) && addr != s.gateway());
                            held.push(addr);
                        }
                        None => assert_eq!(held.len(), 5, "exhausted early"),
                    }
                } else {
                    let i = (op as usize - 1) % held.len();
                    a.release(held.remove(i));
                }
                assert_eq!(a.in_use(), held.len());
            }
        }
    }
}
