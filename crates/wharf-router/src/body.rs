//! The response body the proxy hands to hyper: either a replica's streamed body, which
//! keeps the replica counted in flight until it ends, gives its upstream connection
//! back to the pool when it ended cleanly, and is cut off when the replica pauses
//! longer than the route's idle timeout, or a short local answer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::error::BodyError;
use crate::idle::IdleTimer;
use crate::inflight::InflightGuard;
use crate::upstream::Lease;

#[derive(Debug)]
pub(crate) struct ProxyBody {
    kind: Kind,
    /// Released when the upstream body ends, fails, or this body is dropped.
    guard: Option<InflightGuard>,
    /// The upstream connection, back to the pool at a clean end, else dropped (closed).
    lease: Option<Lease>,
    /// Counts the bytes sent; written to the access log when this body is dropped.
    log: Option<Box<crate::access::Entry>>,
}

#[derive(Debug)]
enum Kind {
    /// The replica's body and its idle timer.
    Upstream(Incoming, IdleTimer),
    Local(Option<Bytes>),
}

impl ProxyBody {
    pub(crate) fn upstream(
        body: Incoming,
        guard: InflightGuard,
        lease: Lease,
        idle: Duration,
    ) -> Self {
        let (guard, lease) = if body.is_end_stream() {
            lease.release();
            (None, None)
        } else {
            (Some(guard), Some(lease))
        };
        ProxyBody {
            kind: Kind::Upstream(body, IdleTimer::new(idle)),
            guard,
            lease,
            log: None,
        }
    }

    /// No body (a 101 answer: the connection becomes a tunnel).
    pub(crate) fn empty() -> Self {
        ProxyBody {
            kind: Kind::Local(None),
            guard: None,
            lease: None,
            log: None,
        }
    }

    pub(crate) fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody {
            kind: Kind::Local(Some(text.into())),
            guard: None,
            lease: None,
            log: None,
        }
    }

    /// Attaches the request's access-log entry, written when the body is done.
    pub(crate) fn log(&mut self, entry: crate::access::Entry) {
        self.log = Some(Box::new(entry));
    }

    fn count(&mut self, frame: &Poll<Option<Result<Frame<Bytes>, BodyError>>>) {
        if let (Some(log), Poll::Ready(Some(Ok(frame)))) = (self.log.as_mut(), frame) {
            if let Some(data) = frame.data_ref() {
                log.bytes += data.len() as u64;
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Local(text) => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
            Kind::Upstream(body, idle) => {
                let polled = match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending if idle.expired(cx) => {
                        Poll::Ready(Some(Err(BodyError::Idle(idle.after))))
                    }
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(frame) => {
                        idle.activity();
                        Poll::Ready(frame.map(|f| f.map_err(|e| BodyError::Upstream(Arc::new(e)))))
                    }
                };
                let failed = matches!(polled, Poll::Ready(Some(Err(_))));
                if failed || matches!(polled, Poll::Ready(None)) || body.is_end_stream() {
                    this.guard = None;
                    // Cleanly ended: reusable; failed: dropped, so the connection closes.
                    if let Some(lease) = this.lease.take().filter(|_| !failed) {
                        lease.release();
                    }
                }
                polled
            }
        };
        this.count(&polled);
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Local(text) => text.is_none(),
            Kind::Upstream(body, ..) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Local(text) => SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64)),
            Kind::Upstream(body, ..) => body.size_hint(),
        }
    }
}
