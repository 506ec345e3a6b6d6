//! The two halves of a client connection: what reads requests (with the bytes read but
//! not yet consumed: the rest of a head, a body, pipelined requests) and what writes
//! answers (with a buffer that gathers a head and small body pieces into one write).
//! Split so that a request body can be read while its answer is written.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use std::future::Future as _;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Room made in the read buffer before a read.
const READ_SIZE: usize = 8 * 1024;
/// A write buffer that grew beyond this is not kept for the next answer.
const KEEP_CAPACITY: usize = 256 * 1024;

pub(crate) struct Reader {
    io: Box<dyn AsyncRead + Send + Unpin>,
    /// Read, not consumed yet.
    pub(crate) buf: BytesMut,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl Reader {
    /// A reader of `io`, starting with the bytes already read from it.
    pub(crate) fn new(io: Box<dyn AsyncRead + Send + Unpin>, buffered: BytesMut) -> Box<Self> {
        Box::new(Reader { io, buf: buffered })
    }

    /// Reads more into `buf`: `Ok(0)` at the end of the stream.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 2 {
            self.buf.reserve(READ_SIZE);
        }
        std::pin::pin!(self.io.read_buf(&mut self.buf)).poll(cx)
    }

    /// Reads and discards up to `limit` bytes, until the end of the stream (a lingering
    /// close: the client's unread request must not turn the close into a reset that
    /// destroys the answer on its way).
    pub(crate) async fn discard(&mut self, limit: usize) {
        let mut left = limit;
        self.buf.clear();
        while left > 0 {
            match std::future::poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    left = left.saturating_sub(n);
                    self.buf.clear();
                }
            }
        }
    }
}

pub(crate) struct Writer {
    io: Box<dyn AsyncWrite + Send + Unpin>,
    /// Queued for writing.
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(io: Box<dyn AsyncWrite + Send + Unpin>) -> Self {
        Writer {
            io,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Writes what is queued, then `more`, in as few writes as the socket allows.
    pub(crate) async fn flush_with(&mut self, more: &[u8]) -> io::Result<()> {
        let (mut queued, mut more) = (0, more);
        while queued < self.buf.len() || !more.is_empty() {
            let slices = [IoSlice::new(&self.buf[queued..]), IoSlice::new(more)];
            let n =
                std::future::poll_fn(|cx| Pin::new(&mut self.io).poll_write_vectored(cx, &slices))
                    .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_queue = n.min(self.buf.len() - queued);
            queued += from_queue;
            more = &more[n - from_queue..];
        }
        self.buf.clear();
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::with_capacity(4096);
        }
        self.io.flush().await
    }

    /// Writes some of `bytes` directly (nothing may be queued).
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        debug_assert!(self.buf.is_empty());
        Pin::new(&mut self.io).poll_write(cx, bytes)
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Ends the stream (a FIN, or TLS's close_notify then a FIN).
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }

    /// The writing half, for a tunnel.
    pub(crate) fn into_inner(self) -> Box<dyn AsyncWrite + Send + Unpin> {
        self.io
    }
}

impl Reader {
    /// The reading half and the bytes read but not consumed, for a tunnel.
    pub(crate) fn into_parts(self) -> (Box<dyn AsyncRead + Send + Unpin>, BytesMut) {
        (self.io, self.buf)
    }
}
