//! A minimal rtnetlink client: the handful of requests a replica's network needs (create
//! a bridge or a veth pair, set a link's master and state, add an IPv4 address or a
//! default route, delete a link), each sent on a `NETLINK_ROUTE` socket of the calling
//! thread's network namespace and acknowledged by the kernel.
//!
//! Hand-written rather than a crate: five request shapes are about 200 lines, where
//! `rtnetlink` brings an async stack and a dozen `netlink-packet-*` crates. Messages are
//! built by pure functions ([`Request`]) and unit-tested byte for byte; the socket goes
//! through `nix`, so this file has no `unsafe`.
//!
//! Invariant: every request asks for an acknowledgement (`NLM_F_ACK`) and [`Netlink::run`]
//! returns only after the kernel answered it, with the kernel's errno on failure.

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

/// `VETH_INFO_PEER` of `linux/veth.h` (not in the libc crate).
const VETH_INFO_PEER: u16 = 1;
/// Size of `struct nlmsghdr`.
const HEADER: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error(
        "cannot open a netlink socket: {0} (the kernel must allow NETLINK_ROUTE; are we root?)"
    )]
    Socket(Errno),
    #[error("netlink {what}: {errno}")]
    Request { what: String, errno: Errno },
    #[error("netlink {what}: the kernel's answer was malformed")]
    Malformed { what: String },
}

impl NetlinkError {
    /// The kernel's errno, when it refused a request.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Request { errno, .. } => Some(*errno),
            NetlinkError::Socket(e) => Some(*e),
            NetlinkError::Malformed { .. } => None,
        }
    }
}

/// One rtnetlink request being built: a header, a fixed part, then attributes.
#[derive(Debug, Clone)]
pub struct Request {
    buf: Vec<u8>,
    /// For error messages: "create bridge wharf0".
    what: String,
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

impl Request {
    fn new(kind: u16, create: bool, what: String) -> Request {
        let mut flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK;
        if create {
            flags |= libc::NLM_F_CREATE | libc::NLM_F_EXCL;
        }
        let mut buf = vec![0u8; HEADER];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        // The flags fit in 16 bits (0x605 at most).
        buf[6..8].copy_from_slice(&(flags as u16).to_ne_bytes());
        Request { buf, what }
    }

    /// `struct ifinfomsg`: family, type, index, flags, change mask.
    fn ifinfo(mut self, index: u32, flags: u32, change: u32) -> Request {
        push_ifinfo(&mut self.buf, index, flags, change);
        self
    }

    fn attr(mut self, kind: u16, payload: &[u8]) -> Request {
        push_attr(&mut self.buf, kind, payload);
        self
    }

    /// The finished message with sequence number `seq`.
    pub fn bytes(&self, seq: u32) -> Vec<u8> {
        let mut b = self.buf.clone();
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        b[0..4].copy_from_slice(&len.to_ne_bytes());
        b[8..12].copy_from_slice(&seq.to_ne_bytes());
        b
    }

    /// A bridge named `name`.
    pub fn new_bridge(name: &str) -> Request {
        let mut kind = Vec::new();
        push_attr(&mut kind, libc::IFLA_INFO_KIND, b"bridge");
        Request::new(libc::RTM_NEWLINK, true, format!("create bridge {name}"))
            .ifinfo(0, 0, 0)
            .attr(libc::IFLA_IFNAME, &cstr(name))
            .attr(libc::IFLA_LINKINFO, &kind)
    }

    /// A veth pair: `host` here, `peer` in the network namespace of process `pid`.
    pub fn new_veth(host: &str, peer: &str, pid: u32) -> Request {
        let mut peer_msg = Vec::new();
        push_ifinfo(&mut peer_msg, 0, 0, 0);
        push_attr(&mut peer_msg, libc::IFLA_IFNAME, &cstr(peer));
        push_attr(&mut peer_msg, libc::IFLA_NET_NS_PID, &pid.to_ne_bytes());
        let mut data = Vec::new();
        push_attr(&mut data, VETH_INFO_PEER, &peer_msg);
        let mut info = Vec::new();
        push_attr(&mut info, libc::IFLA_INFO_KIND, b"veth");
        push_attr(&mut info, libc::IFLA_INFO_DATA, &data);
        Request::new(
            libc::RTM_NEWLINK,
            true,
            format!("create veth pair {host} (peer {peer} of pid {pid})"),
        )
        .ifinfo(0, 0, 0)
        .attr(libc::IFLA_IFNAME, &cstr(host))
        .attr(libc::IFLA_LINKINFO, &info)
    }

    /// Link `index` up, and attached to the bridge `master` when given.
    pub fn link_up(index: u32, master: Option<u32>) -> Request {
        let up = libc::IFF_UP as u32;
        let r = Request::new(libc::RTM_NEWLINK, false, format!("set link {index} up"))
            .ifinfo(index, up, up);
        match master {
            Some(m) => r.attr(libc::IFLA_MASTER, &m.to_ne_bytes()),
            None => r,
        }
    }

    /// Deletes the link named `name`.
    pub fn del_link(name: &str) -> Request {
        Request::new(libc::RTM_DELLINK, false, format!("delete link {name}"))
            .ifinfo(0, 0, 0)
            .attr(libc::IFLA_IFNAME, &cstr(name))
    }

    /// Forgets the neighbour (ARP) entry of `addr` on link `index`: a new replica at a
    /// reused address has a new MAC address, which the host must ask for again.
    pub fn del_neigh(index: u32, addr: Ipv4Addr) -> Request {
        let mut r = Request::new(
            libc::RTM_DELNEIGH,
            false,
            format!("forget the neighbour {addr} of link {index}"),
        );
        // struct ndmsg: family, pad, pad (u16), ifindex, state (u16), flags, type.
        r.buf.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
        r.buf.extend_from_slice(&index.to_ne_bytes());
        r.buf.extend_from_slice(&[0, 0, 0, 0]);
        r.attr(libc::NDA_DST, &addr.octets())
    }

    /// `addr/prefix` on link `index`.
    pub fn new_addr(index: u32, addr: Ipv4Addr, prefix: u8) -> Request {
        let mut r = Request::new(
            libc::RTM_NEWADDR,
            true,
            format!("add address {addr}/{prefix} to link {index}"),
        );
        // struct ifaddrmsg: family, prefixlen, flags, scope (universe), index.
        r.buf
            .extend_from_slice(&[libc::AF_INET as u8, prefix, 0, libc::RT_SCOPE_UNIVERSE]);
        r.buf.extend_from_slice(&index.to_ne_bytes());
        r.attr(libc::IFA_LOCAL, &addr.octets())
            .attr(libc::IFA_ADDRESS, &addr.octets())
    }

    /// The default route via `gateway` out of link `index`.
    pub fn default_route(gateway: Ipv4Addr, index: u32) -> Request {
        let mut r = Request::new(
            libc::RTM_NEWROUTE,
            true,
            format!("add the default route via {gateway}"),
        );
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        r.buf.extend_from_slice(&[
            libc::AF_INET as u8,
            0,
            0,
            0,
            libc::RT_TABLE_MAIN,
            libc::RTPROT_BOOT,
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNICAST,
        ]);
        r.buf.extend_from_slice(&0u32.to_ne_bytes());
        r.attr(libc::RTA_GATEWAY, &gateway.octets())
            .attr(libc::RTA_OIF, &index.to_ne_bytes())
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn push_ifinfo(buf: &mut Vec<u8>, index: u32, flags: u32, change: u32) {
    buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]); // family, pad, type
    buf.extend_from_slice(&index.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&change.to_ne_bytes());
}

/// `struct nlattr` (length, type) + payload, padded to 4 bytes.
fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align(buf.len()), 0);
}

/// The kernel's answer to request `seq`: `Ok(())`, its errno, or `None` when `msg` holds
/// no acknowledgement of it.
pub fn parse_ack(msg: &[u8], seq: u32) -> Option<Result<(), Errno>> {
    let mut at = 0;
    while at + HEADER <= msg.len() {
        let word = |o: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(
                msg.get(at + o..at + o + 4)?.try_into().ok()?,
            ))
        };
        let len = usize::try_from(word(0)?).ok()?;
        let kind = u16::from_ne_bytes(msg.get(at + 4..at + 6)?.try_into().ok()?);
        if len < HEADER || at + len > msg.len() {
            return None;
        }
        if i32::from(kind) == libc::NLMSG_ERROR && word(8)? == seq {
            let code = i32::from_ne_bytes(msg.get(at + HEADER..at + HEADER + 4)?.try_into().ok()?);
            return Some(if code == 0 {
                Ok(())
            } else {
                Err(Errno::from_raw(-code))
            });
        }
        at += align(len);
    }
    None
}

/// A `NETLINK_ROUTE` socket in the caller's network namespace.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> Result<Netlink, NetlinkError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            socket::SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(NetlinkError::Socket)?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(NetlinkError::Socket)?;
        Ok(Netlink { fd, seq: 0 })
    }

    /// Sends `req` and waits for the kernel's acknowledgement.
    pub fn run(&mut self, req: &Request) -> Result<(), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let fail = |errno| NetlinkError::Request {
            what: req.what.clone(),
            errno,
        };
        let kernel = NetlinkAddr::new(0, 0);
        socket::sendto(
            self.fd.as_raw_fd(),
            &req.bytes(seq),
            &kernel,
            MsgFlags::empty(),
        )
        .map_err(fail)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(fail(e)),
            };
            if n == 0 {
                return Err(NetlinkError::Malformed {
                    what: req.what.clone(),
                });
            }
            if let Some(answer) = parse_ack(&buf[..n], seq) {
                return answer.map_err(fail);
            }
        }
    }

    /// Like [`Netlink::run`], with `ok` errnos counting as success (EEXIST of an
    /// idempotent create, ENODEV of a delete).
    pub fn run_allowing(&mut self, req: &Request, ok: &[Errno]) -> Result<(), NetlinkError> {
        match self.run(req) {
            Err(e) if e.errno().is_some_and(|n| ok.contains(&n)) => Ok(()),
            other => other,
        }
    }
}

/// The index of the link named `name` in the caller's network namespace.
pub fn index_of(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok().filter(|i| *i > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes(b[at..at + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn header_carries_length_kind_flags_and_sequence() {
        let b = Request::del_link("wharf0").bytes(7);
        assert_eq!(u32_at(&b, 0) as usize, b.len());
        assert_eq!(u16_at(&b, 4), libc::RTM_DELLINK);
        assert_eq!(u16_at(&b, 6), 0x5, "request + ack, no create");
        assert_eq!(u32_at(&b, 8), 7);
        // ifinfomsg (16 bytes), then IFLA_IFNAME "wharf0\0" padded to 8 + 4.
        assert_eq!(b.len(), 16 + 16 + 12);
        assert_eq!(u16_at(&b, 32), 11, "attr length: 4 + 7");
        assert_eq!(u16_at(&b, 34), libc::IFLA_IFNAME);
        assert_eq!(&b[36..43], b"wharf0\0");
        assert_eq!(b[43], 0, "padding");
    }

    #[test]
    fn a_veth_request_nests_the_peer_in_its_namespace() {
        let b = Request::new_veth("wharf0a590002", "eth0", 4242).bytes(1);
        assert_eq!(u16_at(&b, 6), 0x605, "request, ack, create, excl");
        let mut at = 32;
        // IFLA_IFNAME of the host end.
        assert_eq!(u16_at(&b, at + 2), libc::IFLA_IFNAME);
        assert_eq!(&b[at + 4..at + 18], b"wharf0a590002\0");
        at += align(usize::from(u16_at(&b, at)));
        // IFLA_LINKINFO { KIND "veth", DATA { PEER { ifinfomsg, IFNAME, NET_NS_PID } } }
        assert_eq!(u16_at(&b, at + 2), libc::IFLA_LINKINFO);
        assert_eq!(
            at + usize::from(u16_at(&b, at)),
            b.len(),
            "the last attribute"
        );
        let kind = at + 4;
        assert_eq!(u16_at(&b, kind + 2), libc::IFLA_INFO_KIND);
        assert_eq!(&b[kind + 4..kind + 8], b"veth");
        let data = kind + 8;
        assert_eq!(u16_at(&b, data + 2), libc::IFLA_INFO_DATA);
        let peer = data + 4;
        assert_eq!(u16_at(&b, peer + 2), VETH_INFO_PEER);
        let name = peer + 4 + 16;
        assert_eq!(u16_at(&b, name + 2), libc::IFLA_IFNAME);
        assert_eq!(&b[name + 4..name + 9], b"eth0\0");
        let pid = name + 12;
        assert_eq!(u16_at(&b, pid + 2), libc::IFLA_NET_NS_PID);
        assert_eq!(u32_at(&b, pid + 4), 4242);
        assert_eq!(pid + 8, b.len());
    }

    #[test]
    fn address_and_route_requests() {
        let b = Request::new_addr(3, Ipv4Addr::new(10, 89, 0, 2), 16).bytes(2);
        assert_eq!(u16_at(&b, 4), libc::RTM_NEWADDR);
        assert_eq!(&b[16..20], &[libc::AF_INET as u8, 16, 0, 0]);
        assert_eq!(u32_at(&b, 20), 3);
        assert_eq!(u16_at(&b, 26), libc::IFA_LOCAL);
        assert_eq!(&b[28..32], &[10, 89, 0, 2]);
        assert_eq!(u16_at(&b, 34), libc::IFA_ADDRESS);
        assert_eq!(b.len(), 40);

        let b = Request::default_route(Ipv4Addr::new(10, 89, 0, 1), 3).bytes(3);
        assert_eq!(u16_at(&b, 4), libc::RTM_NEWROUTE);
        assert_eq!(b[16 + 1], 0, "dst_len 0: the default route");
        assert_eq!(b[16 + 4], libc::RT_TABLE_MAIN);
        assert_eq!(u16_at(&b, 30), libc::RTA_GATEWAY);
        assert_eq!(&b[32..36], &[10, 89, 0, 1]);
        assert_eq!(u16_at(&b, 38), libc::RTA_OIF);
        assert_eq!(u32_at(&b, 40), 3);

        let b = Request::del_neigh(7, Ipv4Addr::new(10, 89, 0, 9)).bytes(5);
        assert_eq!(u16_at(&b, 4), libc::RTM_DELNEIGH);
        assert_eq!(b[16], libc::AF_INET as u8);
        assert_eq!(u32_at(&b, 20), 7, "ifindex");
        assert_eq!(u16_at(&b, 30), libc::NDA_DST);
        assert_eq!(&b[32..36], &[10, 89, 0, 9]);
        assert_eq!(b.len(), 36);

        let b = Request::link_up(5, Some(9)).bytes(4);
        assert_eq!(u32_at(&b, 20), 5, "index");
        assert_eq!(u32_at(&b, 24) & 1, 1, "IFF_UP set");
        assert_eq!(u32_at(&b, 28) & 1, 1, "and in the change mask");
        assert_eq!(u16_at(&b, 34), libc::IFLA_MASTER);
        assert_eq!(u32_at(&b, 36), 9);
    }

    #[test]
    fn acks_are_matched_by_sequence() {
        let ack = |seq: u32, code: i32| {
            let mut m = vec![0u8; 36];
            m[0..4].copy_from_slice(&36u32.to_ne_bytes());
            m[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
            m[8..12].copy_from_slice(&seq.to_ne_bytes());
            m[16..20].copy_from_slice(&code.to_ne_bytes());
            m
        };
        assert_eq!(parse_ack(&ack(5, 0), 5), Some(Ok(())));
        assert_eq!(
            parse_ack(&ack(5, -libc::EEXIST), 5),
            Some(Err(Errno::EEXIST))
        );
        assert_eq!(parse_ack(&ack(4, 0), 5), None, "another request's answer");
        let mut two = ack(4, -1);
        two.extend(ack(5, 0));
        assert_eq!(
            parse_ack(&two, 5),
            Some(Ok(())),
            "the second of two messages"
        );
        assert_eq!(parse_ack(&[1, 2, 3], 5), None, "truncated");
        let mut bad = ack(5, 0);
        bad[0..4].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(parse_ack(&bad, 5), None, "a length past the end");
    }
}
