//! The upstream client: HTTP/1.1 to replicas over keep-alive connections, one pool per
//! router worker (see `server`), so nothing in it is shared between threads.
//!
//! wharf's own small HTTP/1.1 client, driven by the request's own task: no connection
//! task, no channel between the request and its connection. [`Upstream::send`] takes an
//! idle connection to the replica (`pool`) or connects within the route's connect
//! timeout (`TCP_NODELAY`), writes the request head (`request`) and body
//! (`outgoing`) while reading the response head (`exchange`, `response`), and returns
//! the response with a body (`body`) that streams from the connection and gives it
//! back to the pool once it ended cleanly. A `101` hands the connection over
//! ([`UpstreamBody::into_tunnel`]). One deadline (the connection's, see `deadline`) bounds a request until its response head
//! (the route's response timeout, and the connect timeout while connecting).
//!
//! A reused idle connection can turn out closed by the replica (its keep-alive timeout
//! raced the request). The request then goes again on the next idle or a new
//! connection, which is not a retry in `retry`'s sense, when it is known not to have
//! been processed: no byte of it was taken by the socket, or the replica closed
//! without a byte of answer and the method is idempotent (what `retry` would retry
//! anyway); in both cases only while the body can be sent again from its start. Any
//! other failure goes to the caller, classified for `retry` ([`UpstreamError`]):
//! connect failure, reset or close before a complete response head, anything else.

mod body;
mod conn;
mod exchange;
mod outgoing;
mod pool;
mod request;
mod response;

#[cfg(test)]
mod tests;

use std::future::{poll_fn, Future as _};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

pub(crate) use body::UpstreamBody;
pub(crate) use pool::PoolConfig;
pub(crate) use request::Forward;
pub(crate) use response::{Framing, Head, ProtocolError};

use conn::Conn;
use exchange::Failed;
use outgoing::Outgoing;
use pool::{lock, Home, Pool};

use crate::downstream::head::RequestHead;
use crate::error::BodyError;
use crate::request_body::Shared;
use crate::retry::is_idempotent;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection was made (refused, unreachable, or the connect timeout expired).
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        timed_out: bool,
        #[source]
        source: io::Error,
    },
    /// The connection was reset or closed before a complete response head.
    #[error("connection closed before a response head: {0}")]
    Reset(#[source] io::Error),
    /// The connection failed otherwise before a complete response head.
    #[error("connection failed: {0}")]
    Io(#[source] io::Error),
    /// The replica's answer was not valid HTTP/1.1 (or was ambiguous).
    #[error("invalid response: {0}")]
    Protocol(#[from] ProtocolError),
    /// The client's request body failed while it was sent.
    #[error("request body: {0}")]
    Body(BodyError),
    /// No response head within the route's response timeout.
    #[error("no response head in time")]
    Timeout,
}

impl From<Failed> for UpstreamError {
    fn from(failed: Failed) -> Self {
        use io::ErrorKind::*;
        match failed {
            Failed::Timeout => UpstreamError::Timeout,
            Failed::Body(error) => UpstreamError::Body(error),
            Failed::Protocol(error) => UpstreamError::Protocol(error),
            Failed::Closed { error, .. } => match error.kind() {
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                    UpstreamError::Reset(error)
                }
                _ => UpstreamError::Io(error),
            },
        }
    }
}

/// One worker's client: its idle connections by replica address.
#[derive(Debug)]
pub(crate) struct Upstream {
    pool: Arc<Mutex<Pool>>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream::new(PoolConfig::default())
    }
}

/// The timeouts of one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// Making a connection.
    pub connect: Duration,
    /// From the start of `send` to the response head.
    pub response: Duration,
}

impl Upstream {
    pub(crate) fn new(config: PoolConfig) -> Self {
        Upstream {
            pool: Pool::new(config),
        }
    }

    /// Sends `request` (with the forwarding fields of `forward`) and an attempt of
    /// `body` to `addr`, on an idle connection, else on a new one: the response head,
    /// and its body streaming from the connection. The response timeout counts from
    /// `now` (the caller's clock reading: one less per request).
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        deadlines: Deadlines,
        now: Instant,
        request: &RequestHead,
        forward: &Forward<'_>,
        body: &Shared,
    ) -> Result<(Head, UpstreamBody), UpstreamError> {
        let deadline = now + deadlines.response;
        loop {
            let idle = lock(&self.pool).checkout(addr, now);
            let (mut conn, reused) = match idle {
                Some(mut conn) => {
                    conn.deadline.set(deadline);
                    (conn, true)
                }
                // Boxed: the rare path should not make every request's future larger.
                None => {
                    let connecting = connect(addr, deadlines.connect, deadline);
                    (Box::pin(connecting).await?, false)
                }
            };
            let attempt = body.attempt();
            let mut outgoing = Some(Outgoing::start(&mut conn, request, forward, addr, attempt));
            let method = request.method();
            match exchange::head(&mut conn, &mut outgoing, method).await {
                Ok((head, _)) if head.framing == Framing::Switch && request.upgrade().is_none() => {
                    return Err(ProtocolError::UnaskedSwitch.into());
                }
                Ok((head, complete)) => {
                    let keep_alive = head.keep_alive && complete;
                    let home = Home::of(&self.pool);
                    let body = UpstreamBody::new(conn, head.framing, keep_alive, outgoing, home);
                    return Ok((head, body));
                }
                Err(Failed::Closed {
                    answered: false,
                    sent,
                    error,
                }) if reused
                    && (sent == 0 || is_idempotent(request.method()))
                    && body.replayable() =>
                {
                    tracing::debug!(%addr, %error, "idle upstream connection was closed; sending again");
                }
                Err(failed) => return Err(failed.into()),
            }
        }
    }

    /// Idle connections pooled for `addr`.
    #[cfg(test)]
    fn idle(&self, addr: SocketAddr) -> usize {
        lock(&self.pool).idle(addr)
    }
}

/// The head `send` would write for `request` to `addr`, with a body at its end (for
/// the fuzz target: the upstream request must always parse).
pub(crate) fn encode_head(
    request: &RequestHead,
    forward: &Forward<'_>,
    addr: SocketAddr,
    out: &mut Vec<u8>,
) {
    request::encode(request, forward, addr, true, Some(0), out);
}

/// Connects to `addr` within `timeout`, or until `deadline` (the response timeout's)
/// if that comes first; the connection's response deadline is `deadline`.
async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    deadline: Instant,
) -> Result<Box<Conn>, UpstreamError> {
    let by_connect = Instant::now() + timeout;
    let timer = tokio::time::sleep_until(by_connect.min(deadline));
    tokio::pin!(timer);
    let connecting = TcpStream::connect(addr);
    tokio::pin!(connecting);
    let made = poll_fn(|cx| match connecting.as_mut().poll(cx) {
        Poll::Ready(made) => Poll::Ready(Some(made)),
        Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
    })
    .await;
    let failed = |timed_out, source| UpstreamError::Connect {
        addr,
        timed_out,
        source,
    };
    match made {
        Some(Ok(stream)) => {
            stream
                .set_nodelay(true)
                .map_err(|error| failed(false, error))?;
            Ok(Conn::new(stream, addr, deadline))
        }
        Some(Err(error)) => Err(failed(false, error)),
        None if by_connect <= deadline => Err(failed(true, io::ErrorKind::TimedOut.into())),
        None => Err(UpstreamError::Timeout),
    }
}
