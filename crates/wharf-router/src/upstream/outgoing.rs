//! The request on its way to the replica: the head, then the body's frames, framed
//! (by length or chunked, see `request`), written as they come. Small frames are copied
//! behind the head or the previous chunk so that they go in one write (a request
//! without a body is one write of its head); larger ones are written from their own
//! buffer, the framing around them in the same `writev`.
//!
//! Invariants: never more than a `Content-Length` body's length is written (a longer
//! body is an error); a body ends with its last chunk when chunked; the body is only
//! polled when the queue is short, so a slow replica holds back the client's upload.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf as _, Bytes};
use hyper::body::Body as _;

use super::conn::Conn;
use super::request::{encode, BodyFraming, Forward};
use crate::codec::chunked::{size_line, LAST_CHUNK};
use crate::downstream::head::RequestHead;
use crate::error::BodyError;
use crate::request_body::RequestBody;

/// Frames up to this size are copied into the write queue.
const COPY_MAX: usize = 4 * 1024;
/// The body is polled for more while less than this is queued.
const QUEUE_MAX: usize = 16 * 1024;

/// Why the request could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The client's body failed (too large, idle, client gone, wrong length).
    Body(BodyError),
    /// The socket refused a write.
    Write(io::Error),
}

/// The request's progress.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// `None` once the body ended (or there is none to send).
    body: Option<RequestBody>,
    framing: BodyFraming,
    /// A large frame being written after the queue, then what is left of the CRLF that
    /// ends its chunk.
    data: Bytes,
    tail: &'static [u8],
    /// Bytes of the request the socket took so far.
    pub(crate) sent: u64,
}

impl Outgoing {
    /// Queues the head on `conn`; the body follows as [`Outgoing::poll_send`] is called.
    pub(crate) fn start(
        conn: &mut Conn,
        request: &RequestHead,
        forward: &Forward<'_>,
        addr: SocketAddr,
        body: RequestBody,
    ) -> Self {
        let framing = encode(
            request,
            forward,
            addr,
            body.is_end_stream(),
            body.size_hint().exact(),
            &mut conn.write,
        );
        Outgoing {
            body: (framing != BodyFraming::Empty).then_some(body),
            framing,
            data: Bytes::new(),
            tail: b"",
            sent: 0,
        }
    }

    /// Writes what is queued and the body as it comes: `Ready(Ok(()))` once all of the
    /// request was written.
    pub(crate) fn poll_send(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        loop {
            while self.body.is_some()
                && self.data.is_empty()
                && self.tail.is_empty()
                && conn.queued() < QUEUE_MAX
            {
                match self.poll_body(conn, cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(SendError::Body(error))),
                    Poll::Pending => break,
                }
            }
            let queued = conn.queued() + self.data.len() + self.tail.len();
            if queued == 0 {
                return match self.body {
                    None => Poll::Ready(Ok(())),
                    // Waiting for the client's body.
                    Some(_) => Poll::Pending,
                };
            }
            let before = conn.queued();
            let n =
                ready!(conn.poll_write(cx, &[&self.data, self.tail])).map_err(SendError::Write)?;
            self.sent += (before - conn.queued() + n) as u64;
            let from_data = n.min(self.data.len());
            self.data.advance(from_data);
            self.tail = &self.tail[n - from_data..];
        }
    }

    /// Takes one frame of the body into the queue (or ends it).
    fn poll_body(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), BodyError>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let frame = match ready!(Pin::new(body).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Err(error)),
            None => {
                self.body = None;
                return Poll::Ready(match self.framing {
                    BodyFraming::Length(0) | BodyFraming::Empty => Ok(()),
                    BodyFraming::Length(_) => Err(BodyError::Length),
                    BodyFraming::Chunked => {
                        conn.write.extend_from_slice(LAST_CHUNK);
                        Ok(())
                    }
                });
            }
        };
        // Trailers are not forwarded (see `request`).
        let Ok(data) = frame.into_data() else {
            return Poll::Ready(Ok(()));
        };
        if data.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let chunked = self.framing == BodyFraming::Chunked;
        if let BodyFraming::Length(left) = &mut self.framing {
            *left = left
                .checked_sub(data.len() as u64)
                .ok_or(BodyError::Length)
                .inspect_err(|_| self.body = None)?;
            if *left == 0 {
                self.body = None;
            }
        }
        if chunked {
            size_line(data.len(), &mut conn.write);
        }
        if data.len() <= COPY_MAX {
            conn.write.extend_from_slice(&data);
            if chunked {
                conn.write.extend_from_slice(b"\r\n");
            }
        } else {
            self.data = data;
            self.tail = if chunked { b"\r\n" } else { b"" };
        }
        Poll::Ready(Ok(()))
    }
}
