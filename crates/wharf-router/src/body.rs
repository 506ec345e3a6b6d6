//! The response body the proxy hands to hyper: either a replica's streamed body, which
//! keeps the replica counted in flight until it ends and is cut off when the replica
//! pauses longer than the route's idle timeout (its connection goes back to the pool
//! when it ended cleanly: see `upstream::UpstreamBody`), or a short local answer.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::error::BodyError;
use crate::idle::IdleTimer;
use crate::inflight::InflightGuard;
use crate::upstream::UpstreamBody;

#[derive(Debug)]
pub(crate) struct ProxyBody {
    kind: Kind,
    /// Released when the upstream body ends, fails, or this body is dropped.
    guard: Option<InflightGuard>,
    /// Counts the bytes sent; written to the access log when this body is dropped.
    log: Option<Box<crate::access::Entry>>,
}

#[derive(Debug)]
enum Kind {
    /// The replica's body and its idle timer.
    Upstream(UpstreamBody, IdleTimer),
    Local(Option<Bytes>),
}

impl ProxyBody {
    pub(crate) fn upstream(body: UpstreamBody, guard: InflightGuard, idle: Duration) -> Self {
        let guard = (!body.is_end_stream()).then_some(guard);
        ProxyBody {
            kind: Kind::Upstream(body, IdleTimer::new(idle)),
            guard,
            log: None,
        }
    }

    /// No body (a 101 answer: the connection becomes a tunnel).
    pub(crate) fn empty() -> Self {
        ProxyBody {
            kind: Kind::Local(None),
            guard: None,
            log: None,
        }
    }

    pub(crate) fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody {
            kind: Kind::Local(Some(text.into())),
            guard: None,
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
                        Poll::Ready(frame)
                    }
                };
                let failed = matches!(polled, Poll::Ready(Some(Err(_))));
                if failed || matches!(polled, Poll::Ready(None)) || body.is_end_stream() {
                    this.guard = None;
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
