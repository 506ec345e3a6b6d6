//! One exchange on one connection, up to the final response head: the request is
//! written (head, then body) while the response is read, so a replica may answer
//! before it read the whole request; informational (1xx) heads other than `101` are
//! skipped. Driven by the request's own task, bounded by the connection's deadline.

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use http::{Method, StatusCode};

use super::conn::Conn;
use super::outgoing::{Outgoing, SendError};
use super::response::{self, Head, ProtocolError};
use crate::error::BodyError;

/// Why an exchange got no response head.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The timer expired.
    Timeout,
    /// The client's request body failed.
    Body(BodyError),
    /// The replica's answer was not valid HTTP/1.1.
    Protocol(ProtocolError),
    /// The connection ended or failed before a complete response head.
    Closed {
        error: io::Error,
        /// Some bytes of a response had arrived.
        answered: bool,
        /// Bytes of the request the socket had taken.
        sent: u64,
    },
}

/// Writes the request of `outgoing` on `conn` and reads the final response head.
/// `outgoing` is `None` afterwards if the whole request was written; `complete` says
/// whether the request can still be completed (no write failed).
pub(crate) async fn head(
    conn: &mut Conn,
    outgoing: &mut Option<Outgoing>,
    method: &Method,
) -> Result<(Head, bool), Failed> {
    let mut write_error = None;
    let mut sent = 0;
    let mut answered = false;
    poll_fn(|cx| {
        if let Some(out) = outgoing.as_mut() {
            let polled = out.poll_send(conn, cx);
            sent = out.sent;
            match polled {
                Poll::Ready(Ok(())) => *outgoing = None,
                Poll::Ready(Err(SendError::Body(error))) => {
                    return Poll::Ready(Err(Failed::Body(error)));
                }
                // The replica may have answered already (and closed): read on.
                Poll::Ready(Err(SendError::Write(error))) => {
                    *outgoing = None;
                    write_error = Some(error);
                }
                Poll::Pending => {}
            }
        }
        loop {
            match response::parse(&mut conn.read, method) {
                Err(error) => return Poll::Ready(Err(Failed::Protocol(error))),
                Ok(Some(head))
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS =>
                {
                    answered = true;
                    continue;
                }
                Ok(Some(head)) => return Poll::Ready(Ok((head, write_error.is_none()))),
                Ok(None) => answered |= !conn.read.is_empty(),
            }
            let closed = match conn.poll_read(cx) {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) => write_error.take().unwrap_or_else(|| {
                    let what = "the replica closed the connection before a response head";
                    io::Error::new(io::ErrorKind::UnexpectedEof, what)
                }),
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(error)) => error,
            };
            return Poll::Ready(Err(Failed::Closed {
                error: closed,
                answered,
                sent,
            }));
        }
        match conn.deadline.poll_expired(cx) {
            true => Poll::Ready(Err(Failed::Timeout)),
            false => Poll::Pending,
        }
    })
    .await
}
