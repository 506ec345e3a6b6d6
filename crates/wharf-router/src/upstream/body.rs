//! The replica's response body, streamed from its connection as the proxy's client
//! takes it: decoded by its framing (length, chunked, until close), while the rest of
//! the request body, if the response head came before it was all sent, is still
//! written. Nothing is buffered beyond one read.
//!
//! The connection goes back to the pool when the body ended cleanly and the connection
//! can carry another request: the response allowed keep-alive (HTTP/1.1, no
//! `Connection: close`, not delimited by the close), the whole request was written,
//! and the replica sent nothing past the response. Any other end (an error, the client
//! gone, this body dropped early, a request body that failed) drops the connection,
//! which closes it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::conn::Conn;
use super::outgoing::{Outgoing, SendError};
use super::pool::Home;
use super::response::Framing;
use crate::codec::chunked::{self, Decoded};
use crate::error::BodyError;

#[derive(Debug)]
enum Decoder {
    Length(u64),
    Chunked(chunked::Decoder),
    Close,
    /// The body ended (or there was none).
    Done,
    /// The body failed; the error is reported at the next poll (see `fail`).
    Failed(Option<BodyError>),
}

/// A response body read from an upstream connection.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    /// `None` once the body ended or failed.
    conn: Option<Box<Conn>>,
    decoder: Decoder,
    /// The request body still being sent (boxed: rare, and large).
    outgoing: Option<Box<Outgoing>>,
    keep_alive: bool,
    home: Home,
}

fn failed(
    kind: io::ErrorKind,
    what: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> BodyError {
    BodyError::Upstream(Arc::new(io::Error::new(kind, what)))
}

impl UpstreamBody {
    /// The body that follows a response head with `framing` on `conn`; `outgoing` is
    /// the request, done or not.
    pub(crate) fn new(
        conn: Box<Conn>,
        framing: Framing,
        keep_alive: bool,
        outgoing: Option<Outgoing>,
        home: Home,
    ) -> Self {
        let decoder = match framing {
            Framing::Empty | Framing::Switch => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(chunked::Decoder::new()),
            Framing::Close => Decoder::Close,
        };
        let mut body = UpstreamBody {
            conn: Some(conn),
            decoder,
            outgoing: outgoing.map(Box::new),
            keep_alive,
            home,
        };
        if framing == Framing::Empty {
            body.finish();
        }
        body
    }

    /// The connection of a `101 Switching Protocols`, with the bytes the replica sent
    /// after its head: the tunnel's first bytes.
    pub(crate) fn into_tunnel(mut self) -> Option<(TcpStream, Bytes)> {
        let Conn {
            stream, mut read, ..
        } = *self.conn.take()?;
        Some((stream, read.split().freeze()))
    }

    /// The body ended: the connection goes back to the pool if it can.
    fn finish(&mut self) {
        self.decoder = Decoder::Done;
        let Some(conn) = self.conn.take() else { return };
        if self.keep_alive && self.outgoing.is_none() && conn.is_clean() {
            self.home.checkin(conn);
        }
        self.outgoing = None;
    }

    /// Drops the connection: the body failed with `error`. The error comes at the next
    /// poll, after a `Pending` (woken at once): hyper's server gives up a connection at
    /// a body error without writing what it buffered, so the head and the data passed
    /// on so far are flushed to the client first.
    fn fail(
        &mut self,
        error: BodyError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.conn = None;
        self.outgoing = None;
        self.decoder = Decoder::Failed(Some(error));
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Takes the next piece of the body out of what was read: `None` when more must be
    /// read first.
    fn decode(&mut self) -> Result<Option<Decoded>, BodyError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Some(Decoded::End));
        };
        let read = &mut conn.read;
        match &mut self.decoder {
            Decoder::Done | Decoder::Failed(_) => Ok(Some(Decoded::End)),
            Decoder::Chunked(chunked) => chunked
                .decode(read)
                .map_err(|e| failed(io::ErrorKind::InvalidData, e)),
            _ if read.is_empty() => Ok(None),
            Decoder::Close => Ok(Some(Decoded::Data(read.split().freeze()))),
            Decoder::Length(left) => {
                let n = usize::try_from(*left).map_or(read.len(), |left| left.min(read.len()));
                *left -= n as u64;
                Ok(Some(Decoded::Data(read.split_to(n).freeze())))
            }
        }
    }

    fn is_done(&self) -> bool {
        match &self.decoder {
            Decoder::Done | Decoder::Length(0) => true,
            Decoder::Chunked(chunked) => chunked.is_done(),
            _ => false,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Decoder::Failed(error) = &mut this.decoder {
            return Poll::Ready(error.take().map(Err));
        }
        if let (Some(outgoing), Some(conn)) = (this.outgoing.as_mut(), this.conn.as_mut()) {
            match outgoing.poll_send(conn, cx) {
                Poll::Ready(Ok(())) => this.outgoing = None,
                // The client's upload failed: the replica must not take it as complete.
                Poll::Ready(Err(SendError::Body(error))) => return this.fail(error, cx),
                // The replica stopped reading; it may still have answered in full.
                Poll::Ready(Err(SendError::Write(_))) => {
                    this.outgoing = None;
                    this.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            match this.decode() {
                Err(error) => return this.fail(error, cx),
                Ok(Some(Decoded::End)) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Some(Decoded::Data(data))) => {
                    if this.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Some(Decoded::Trailers(trailers))) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(None) => {}
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match conn.poll_read(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if matches!(this.decoder, Decoder::Close) => {
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    let error = "the replica closed the connection before the end of the body";
                    return this.fail(failed(io::ErrorKind::UnexpectedEof, error), cx);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    return this.fail(BodyError::Upstream(Arc::new(error)), cx)
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decoder, Decoder::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Done => SizeHint::with_exact(0),
            Decoder::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
