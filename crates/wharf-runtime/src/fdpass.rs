//! Passing open file descriptors between processes over a unix socket (`SCM_RIGHTS`):
//! how a new server takes the listening sockets over from the one it replaces, so that
//! no connection is refused while they swap (like Envoy's hot restart).
//!
//! The sockets are `SOCK_SEQPACKET`, so every [`send`] arrives as one [`recv`]: message
//! boundaries hold, and descriptors travel with the message they belong to.
//!
//! Invariants: descriptors arrive close-on-exec and owned (closed when dropped); a
//! message carries at most [`MAX_FDS`] of them; a message that was cut short (buffer or
//! descriptor space too small) is an error, never a partial success; the listening
//! socket's file is mode 0600.

use nix::sys::socket::{
    recvmsg, sendmsg, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

fn seqpacket() -> std::io::Result<OwnedFd> {
    Ok(nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// A listening `SOCK_SEQPACKET` unix socket.
pub struct Listener(OwnedFd);

impl Listener {
    /// Binds `path` (replacing a stale file) with mode 0600.
    pub fn bind(path: &Path) -> std::io::Result<Listener> {
        let _ = std::fs::remove_file(path);
        let fd = seqpacket()?;
        nix::sys::socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        nix::sys::socket::listen(&fd, Backlog::new(4)?)?;
        Ok(Listener(fd))
    }

    /// Waits for the next connection. The stream is a `SOCK_SEQPACKET` socket: use
    /// [`send`] and [`recv`] on it (timeouts work as on any socket).
    pub fn accept(&self) -> std::io::Result<UnixStream> {
        let fd = nix::sys::socket::accept4(self.0.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
        // SAFETY: accept4 just created this descriptor for this process; it has no other
        // owner.
        #[allow(unsafe_code)]
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(UnixStream::from(owned))
    }
}

/// Connects to a [`Listener`] at `path`.
pub fn connect(path: &Path) -> std::io::Result<UnixStream> {
    let fd = seqpacket()?;
    nix::sys::socket::connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(UnixStream::from(fd))
}

/// Most descriptors one message carries.
pub const MAX_FDS: usize = 16;

/// Sends `payload` (not empty) with `fds` attached.
pub fn send(stream: &UnixStream, payload: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    if payload.is_empty() || fds.len() > MAX_FDS {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a descriptor message needs a payload and at most 16 descriptors",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let iov = [IoSlice::new(payload)];
    let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)?;
    if sent != payload.len() {
        return Err(std::io::Error::other(
            "the descriptor message was cut short",
        ));
    }
    Ok(())
}

/// Receives one message of at most `max` bytes and the descriptors attached to it.
/// An empty payload means the peer closed the connection.
pub fn recv(stream: &UnixStream, max: usize) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; max];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (bytes, flags, raw) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut raw = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                raw.extend(fds);
            }
        }
        (msg.bytes, msg.flags, raw)
    };
    // SAFETY: the kernel just installed these descriptors in this process for this
    // message (SCM_RIGHTS); nothing else knows or owns them, so each gets one owner.
    #[allow(unsafe_code)]
    let fds: Vec<OwnedFd> = raw
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
        return Err(std::io::Error::other(
            "the descriptor message did not fit and was cut short",
        ));
    }
    buf.truncate(bytes);
    Ok((buf, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    /// A connected pair through a listener in a temp dir.
    fn pair() -> (UnixStream, UnixStream, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handoff.sock");
        let listener = Listener::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let a = connect(&path).unwrap();
        let b = listener.accept().unwrap();
        (a, b, dir)
    }

    #[test]
    fn a_listening_socket_crosses_and_still_accepts() {
        let (a, b, _dir) = pair();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        send(&a, b"router\n", &[listener.as_fd()]).unwrap();
        drop(listener);
        let (payload, mut fds) = recv(&b, 64).unwrap();
        assert_eq!(payload, b"router\n");
        assert_eq!(fds.len(), 1);
        let taken = std::net::TcpListener::from(fds.remove(0));
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (mut server, _) = taken.accept().unwrap();
        client.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }

    #[test]
    fn messages_keep_their_boundaries_and_closed_peers_read_empty() {
        let (a, b, _dir) = pair();
        send(&a, b"one\n", &[]).unwrap();
        send(&a, b"released\n", &[]).unwrap();
        let (payload, _) = recv(&b, 64).unwrap();
        assert_eq!(payload, b"one\n");
        let (payload, fds) = recv(&b, 64).unwrap();
        assert_eq!((payload.as_slice(), fds.len()), (&b"released\n"[..], 0));
        drop(a);
        let (payload, fds) = recv(&b, 64).unwrap();
        assert!(payload.is_empty() && fds.is_empty());
        assert!(send(&b, b"", &[]).is_err());
    }

    #[test]
    fn a_message_too_big_for_the_buffer_is_an_error() {
        let (a, b, _dir) = pair();
        send(&a, &[b'x'; 100], &[]).unwrap();
        assert!(recv(&b, 10).is_err());
    }
}
