//! The router's own HTTP/1.1 server, one task per client connection (on the worker
//! that accepted it, see `server`): read a request head into a buffer the connection
//! reuses (`head`), hand it with its body (`body`) to the proxy, write the answer
//! (`respond`), and go on with the next request (keep-alive, pipelining), all without
//! a header map, a channel or a task per request. HTTP/2 goes to hyper (`h2`).
//!
//! - A client has [`HEAD_TIMEOUT`] to send a complete request head, counted from its
//!   connection or the end of the previous answer (so idle keep-alive connections
//!   close after it too).
//! - A head the router refuses (`head::HeadError`: malformed, too large, a smuggling
//!   shape) gets its 400 or 431 and the connection closes.
//! - `Expect: 100-continue` is answered with `100 Continue` when the proxy first wants
//!   the body (not for a request answered without it).
//! - The connection closes after an answer when the client asked for it, when the
//!   router is draining (`Connection: close` in the answer), or when the request body
//!   was not read to its end by the time the answer's head was written; then what the
//!   client still sends is read away for a moment (a lingering close) so that the
//!   answer is not lost to a reset.
//! - A client that closes its connection before its answer cancels its request.
//! - A `101` to a request that asked for an upgrade turns the connection into a tunnel
//!   to the replica (`upgrade`).
//! - Once the listener stops (`stop`), a connection waiting for a request closes; one
//!   with a request in flight closes after its answer.

pub(crate) mod body;
pub(crate) mod head;
mod io;
mod respond;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Buf as _;
use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) use body::H1Body;
pub(crate) use io::{Reader, Writer};

use crate::answer::{Answer, Fields};
use crate::deadline::Deadline;
use crate::request_body::ClientBody;
use crate::server::{Conn, Local};
use body::ReaderHome;
use head::{Framing, HeadError, RequestHead};

/// How long a client has to send a complete request head.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A lingering close reads away at most this much, for at most [`LINGER_TIME`].
const LINGER_BYTES: usize = 1 << 20;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Resolves when the listener stopped (or its stop signal is gone).
type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves the HTTP/1.1 connection of `reader` and `writer` until it ends.
pub(crate) async fn serve(
    local: Arc<Local>,
    mut reader: Box<Reader>,
    mut writer: Writer,
    conn: Conn,
    stop: watch::Receiver<bool>,
) {
    let mut stopped: Stopped = Box::pin(async move {
        let mut stop = stop;
        drop(stop.wait_for(|stop| *stop).await);
    });
    let mut head = RequestHead::default();
    let mut timer = Deadline::new(Instant::now() + HEAD_TIMEOUT);
    loop {
        timer.set(Instant::now() + HEAD_TIMEOUT);
        match next_head(&mut reader, &mut head, &mut timer, &mut stopped).await {
            Next::Head => {}
            Next::End => return,
            Next::Refused(error) => {
                tracing::debug!(peer = %conn.peer, %error, "request head refused");
                refuse(&local, &mut writer, &error).await;
                linger(&mut reader).await;
                return;
            }
        }
        let home = ReaderHome::default();
        let (body, mut held) = match head.framing() {
            Framing::None => (ClientBody::Empty, Some(reader)),
            framing => {
                let body = H1Body::new(reader, framing, head.expect_continue(), home.clone());
                (ClientBody::H1(body), None)
            }
        };
        // Pinned where it is made: the request's future is large, and moving it into
        // `watching` would copy it.
        let handling = std::pin::pin!(crate::proxy::handle(&local, &head, body, conn));
        let mut answer = match held {
            Some(ref mut reader) => match watching(reader, handling).await {
                Some(answer) => answer,
                None => return,
            },
            None => match continuing(&mut writer, &home, handling).await {
                Some(answer) => answer,
                None => return,
            },
        };
        if let Some(tunnel) = answer.tunnel.take() {
            if respond::write(&mut writer, &head, &mut answer, false)
                .await
                .is_ok()
            {
                if let Some(reader) = held.or_else(|| home.take().map(|r| r.reader)) {
                    crate::upgrade::splice(reader, writer, tunnel);
                }
            }
            return;
        }
        // A body still being read when the head goes out: the client cannot be told
        // where the next request starts, so there is none.
        let body_done = held.is_some() || home.is_clean();
        // After a CONNECT the client may take the connection for a tunnel, which the
        // router does not make: it ends.
        let connect = *head.method() == http::Method::CONNECT;
        let close = answer.close || !head.keep_alive() || !body_done || connect;
        let written = respond::write(&mut writer, &head, &mut answer, close).await;
        drop(answer);
        let (next, clean) = match held {
            Some(reader) => (reader, true),
            // The body is gone with the answer: its reader is home.
            None => match home.take() {
                Some(returned) => (returned.reader, returned.clean),
                None => return,
            },
        };
        reader = next;
        match written {
            Ok(true) if clean => {}
            Ok(_) => {
                writer.shutdown().await;
                if !clean {
                    linger(&mut reader).await;
                }
                return;
            }
            Err(error) => {
                tracing::debug!(peer = %conn.peer, %error, "client connection failed");
                return;
            }
        }
    }
}

/// Awaits `handling` while watching the client's connection: a client that closes
/// (or fails) before its answer cancels the request (and so its upstream exchange),
/// as when it closes during an answer. Bytes of pipelined requests are kept, up to
/// [`head::MAX_HEAD`].
async fn watching<F: Future<Output = Answer>>(
    reader: &mut Reader,
    mut handling: Pin<&mut F>,
) -> Option<Answer> {
    poll_fn(|cx| {
        if let Poll::Ready(answer) = handling.as_mut().poll(cx) {
            return Poll::Ready(Some(answer));
        }
        while reader.buf.len() < head::MAX_HEAD {
            match reader.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => break,
            }
        }
        Poll::Pending
    })
    .await
}

/// Awaits `handling` of a request with a body, writing `100 Continue` when the body
/// asks for it (`None`: the client's connection failed).
async fn continuing<F: Future<Output = Answer>>(
    writer: &mut Writer,
    home: &ReaderHome,
    mut handling: Pin<&mut F>,
) -> Option<Answer> {
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut interim: &[u8] = b"";
    poll_fn(|cx| {
        if let Poll::Ready(answer) = handling.as_mut().poll(cx) {
            // An interim answer begun is finished first: the answer follows it.
            return match interim.is_empty() {
                true => Poll::Ready(Some(answer)),
                false => Poll::Ready(None),
            };
        }
        if home.wants_continue() {
            interim = CONTINUE;
        }
        while !interim.is_empty() {
            match writer.poll_write(cx, interim) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    interim = &interim[n..];
                    if interim.is_empty() {
                        // Out now, not with the answer (TLS buffers records).
                        let _ = writer.poll_flush(cx);
                    }
                }
                Poll::Ready(_) => return Poll::Ready(None),
                Poll::Pending => break,
            }
        }
        Poll::Pending
    })
    .await
}

enum Next {
    Head,
    /// The client closed, failed, took too long, or the listener stopped.
    End,
    Refused(HeadError),
}

/// Reads until `head` holds the next request head (taken off the reader's buffer).
async fn next_head(
    reader: &mut Reader,
    head: &mut RequestHead,
    timer: &mut Deadline,
    stopped: &mut Stopped,
) -> Next {
    loop {
        if !reader.buf.is_empty() {
            match head.parse(&reader.buf) {
                Ok(Some(len)) => {
                    reader.buf.advance(len);
                    return Next::Head;
                }
                Ok(None) => {}
                Err(error) => return Next::Refused(error),
            }
        }
        let filled = poll_fn(|cx| {
            if let Poll::Ready(filled) = reader.poll_fill(cx) {
                return Poll::Ready(filled.ok().filter(|n| *n > 0));
            }
            // A request begun is read to its end; only a waiting connection stops.
            if reader.buf.is_empty() && stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            if timer.poll_expired(cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        if filled.is_none() {
            return Next::End;
        }
    }
}

/// Answers a refused head (400 or 431) and says the connection closes.
async fn refuse(local: &Local, writer: &mut Writer, error: &HeadError) {
    let (headers, body) = crate::error::plain_text(error);
    let mut answer = Answer {
        status: error.status(),
        fields: Fields::Local(headers),
        body,
        request_id: local.ids.of(None),
        hsts: false,
        close: true,
        tunnel: None,
    };
    // A fresh head: the refused one may hold a previous request's method.
    let _ = respond::write(writer, &RequestHead::default(), &mut answer, true).await;
    writer.shutdown().await;
}

/// Reads away what the client still sends, for a moment, before the connection closes.
async fn linger(reader: &mut Reader) {
    let _ = tokio::time::timeout(LINGER_TIME, reader.discard(LINGER_BYTES)).await;
}
