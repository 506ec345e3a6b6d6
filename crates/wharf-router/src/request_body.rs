//! The client's request body on its way upstream: limited in size, bounded in idle
//! time, and kept (up to [`REPLAY_LIMIT`]) so that a failed attempt can be replayed on
//! another replica.
//!
//! One [`Shared`] state per request owns the client's body; each attempt is a
//! [`RequestBody`] reading it through its own cursor: first the frames already read
//! (and kept), then fresh ones from the client, which are kept too while the total
//! stays within the limit. A connection that fails before the body is polled (every
//! connect failure: the upstream client writes the body only on an established
//! connection) leaves the body untouched, so such a request can always be retried,
//! however large.
//!
//! Invariants: at most `max_body` bytes are ever forwarded (the frame that crosses the
//! limit is not); memory kept for replay never exceeds [`REPLAY_LIMIT`] plus one frame;
//! a second attempt is only made while [`Shared::replayable`] holds.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::downstream::H1Body;
use crate::error::BodyError;
use crate::idle::IdleTimer;

/// The client's request body, as the connection it came on delivers it.
#[derive(Debug)]
pub(crate) enum ClientBody {
    /// None, or one already at its end.
    Empty,
    /// From the router's HTTP/1.1 connection.
    H1(H1Body),
    /// An HTTP/2 stream's data (hyper).
    H2(Incoming),
}

impl ClientBody {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(body) => Pin::new(body).poll_frame(cx),
            ClientBody::H2(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|e| BodyError::Client(Arc::new(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(body) => body.is_end_stream(),
            ClientBody::H2(body) => body.is_end_stream(),
        }
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1(body) => body.size_hint(),
            ClientBody::H2(body) => body.size_hint(),
        }
    }
}

/// Request bodies up to this size are kept while sent, so that an idempotent request
/// reset before its response can be sent again.
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// A request body shared by the attempts of one request.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    /// `None` for a request without a body (most of them): nothing to share.
    state: Option<Arc<Mutex<State>>>,
    hint: SizeHint,
    max_body: u64,
    idle: Duration,
}

#[derive(Debug)]
struct State {
    /// The client's body while more may come.
    source: Option<ClientBody>,
    /// Data read so far, kept for replay while `replayable`.
    kept: Vec<Bytes>,
    kept_bytes: usize,
    replayable: bool,
    received: u64,
    /// How the body ended: `None` while open, `Some(None)` at its end, else the error.
    ended: Option<Option<BodyError>>,
}

impl Shared {
    pub(crate) fn new(body: ClientBody, max_body: u64, idle: Duration) -> Self {
        let hint = body.size_hint();
        let state = (!body.is_end_stream()).then(|| {
            Arc::new(Mutex::new(State {
                source: Some(body),
                kept: Vec::new(),
                kept_bytes: 0,
                replayable: true,
                received: 0,
                ended: None,
            }))
        });
        Shared {
            state,
            hint,
            max_body,
            idle,
        }
    }

    /// No body (tests of the upstream client).
    #[cfg(test)]
    pub(crate) fn empty() -> Self {
        Shared {
            state: None,
            hint: SizeHint::with_exact(0),
            max_body: 0,
            idle: Duration::from_secs(1),
        }
    }

    /// An attempt: the body from its start.
    pub(crate) fn attempt(&self) -> RequestBody {
        RequestBody {
            shared: self.clone(),
            cursor: 0,
            idle: IdleTimer::new(self.idle),
        }
    }

    /// Whether another attempt can send the whole body again.
    pub(crate) fn replayable(&self) -> bool {
        self.lock().is_none_or(|state| state.replayable)
    }

    /// The body error that ended the body (too large, idle, client gone), if any.
    pub(crate) fn failure(&self) -> Option<BodyError> {
        self.lock()?.ended.clone().flatten()
    }

    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        // Every critical section leaves the state consistent; poisoning is harmless.
        let state = self.state.as_ref()?;
        Some(state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One attempt's view of the request body.
#[derive(Debug)]
pub(crate) struct RequestBody {
    shared: Shared,
    cursor: usize,
    idle: IdleTimer,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let shared = this.shared.clone();
        let Some(mut state) = shared.lock() else {
            return Poll::Ready(None);
        };
        if let Some(data) = state.kept.get(this.cursor) {
            this.cursor += 1;
            return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
        }
        let Some(source) = state.source.as_mut() else {
            return Poll::Ready(state.ended.clone().flatten().map(Err));
        };
        match source.poll_frame(cx) {
            Poll::Pending if this.idle.expired(cx) => {
                Poll::Ready(Some(Err(state.end(BodyError::Idle(shared.idle)))))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                state.source = None;
                state.ended = Some(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(state.end(error)))),
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.activity();
                let Some(data) = frame.data_ref() else {
                    // Trailers are passed on once, never replayed.
                    state.replayable = false;
                    return Poll::Ready(Some(Ok(frame)));
                };
                state.received += data.len() as u64;
                if state.received > shared.max_body {
                    let error = BodyError::TooLarge(shared.max_body);
                    return Poll::Ready(Some(Err(state.end(error))));
                }
                if state.replayable {
                    state.kept_bytes += data.len();
                    if state.kept_bytes > REPLAY_LIMIT {
                        state.replayable = false;
                        state.kept = Vec::new();
                    } else {
                        state.kept.push(data.clone());
                        this.cursor = state.kept.len();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.shared.state.is_none() || self.shared.hint.exact() == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.shared.state {
            None => SizeHint::with_exact(0),
            Some(_) => self.shared.hint,
        }
    }
}

impl State {
    /// Ends the body with `error`: the client's body is dropped, nothing is replayed.
    fn end(&mut self, error: BodyError) -> BodyError {
        self.source = None;
        self.replayable = false;
        self.kept = Vec::new();
        self.ended = Some(Some(error.clone()));
        error
    }
}
