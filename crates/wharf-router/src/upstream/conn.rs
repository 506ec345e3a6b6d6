//! One upstream connection: the socket, the bytes read but not yet consumed, and the
//! bytes queued for writing. It has no task of its own: whoever holds it (the exchange
//! until the response head, then the response body) drives its reads and writes.
//!
//! Invariants: an idle connection (in the pool) has nothing buffered either way;
//! `read` holds only bytes of the current response.

use std::future::Future as _;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::deadline::Deadline;

/// Room made in the read buffer before each read; reads that fill it make the next
/// one larger, up to [`MAX_READ`].
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 128 * 1024;

#[derive(Debug)]
pub(crate) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) addr: SocketAddr,
    /// Read from the socket, not yet consumed.
    pub(super) read: BytesMut,
    /// The next read's room.
    read_size: usize,
    /// Queued for writing (a head, small body chunks and their framing) from `written`.
    pub(super) write: Vec<u8>,
    written: usize,
    /// The response timeout of the exchange in progress.
    pub(super) deadline: Deadline,
}

impl Conn {
    /// A connection made on `stream`: boxed, so that handing it between the pool, an
    /// exchange and a response body moves a pointer, not the buffers' state.
    pub(super) fn new(stream: TcpStream, addr: SocketAddr, deadline: Instant) -> Box<Self> {
        Box::new(Conn {
            stream,
            addr,
            read: BytesMut::new(),
            read_size: MIN_READ,
            write: Vec::new(),
            written: 0,
            deadline: Deadline::new(deadline),
        })
    }

    /// Reads more into `read`: `Ok(0)` at the end of the stream.
    pub(super) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < self.read_size / 2 {
            self.read.reserve(self.read_size);
        }
        let room = self.read.capacity() - self.read.len();
        let read = std::pin::pin!(self.stream.read_buf(&mut self.read)).poll(cx);
        if let Poll::Ready(Ok(n)) = read {
            self.read_size = match n {
                n if n == room => (self.read_size * 2).min(MAX_READ),
                _ => MIN_READ.max(self.read_size / 2),
            };
        }
        read
    }

    /// Bytes queued in `write` not yet written.
    pub(super) fn queued(&self) -> usize {
        self.write.len() - self.written
    }

    /// Writes the queue, then `more` after it, as far as the socket takes them: the
    /// count written from `more`.
    pub(super) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        more: &[&[u8]],
    ) -> Poll<io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); 3];
        let mut count = 0;
        if self.queued() > 0 {
            slices[0] = IoSlice::new(&self.write[self.written..]);
            count = 1;
        }
        for piece in more.iter().filter(|p| !p.is_empty()) {
            if count == slices.len() {
                break;
            }
            slices[count] = IoSlice::new(piece);
            count += 1;
        }
        if count == 0 {
            return Poll::Ready(Ok(0));
        }
        let n = match Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..count]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        let from_queue = n.min(self.queued());
        self.written += from_queue;
        if self.queued() == 0 {
            self.write.clear();
            self.written = 0;
        }
        Poll::Ready(Ok(n - from_queue))
    }

    /// Whether an idle connection can take a request: nothing arrived on it since its
    /// last response (the replica closing it, or sending bytes nobody asked for). Costs
    /// no system call unless the socket was reported readable.
    pub(super) fn idle_usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: at the end, or unexpected data; or a stale readiness.
            Poll::Ready(Ok(())) => matches!(
                self.stream.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            ),
        }
    }

    /// Whether the connection can go back to the pool: nothing left over either way.
    pub(super) fn is_clean(&self) -> bool {
        self.read.is_empty() && self.queued() == 0
    }
}
