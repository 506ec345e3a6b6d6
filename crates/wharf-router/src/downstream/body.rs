//! A request body read from the client's connection, delimited by its length or
//! chunked (the shared decoder of `codec::chunked`), while the proxy sends it on.
//!
//! The body holds the connection's [`Reader`] while it is read and gives it back
//! through its [`ReaderHome`]: `clean` once the body was read to its end (the next
//! request can follow on the connection), not clean when the body failed or was
//! dropped before its end (the connection closes after the answer, with a lingering
//! read of what the client still sends).
//!
//! A client that sent `Expect: 100-continue` waits for `100 Continue` before its body:
//! the body asks for it through the home ([`ReaderHome::wants_continue`]) the first
//! time it is polled with nothing read yet (so not when the request is answered
//! without its body, a 404 or 413), as hyper's server did.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::head::Framing;
use super::io::Reader;
use crate::codec::chunked::{self, Decoded};
use crate::error::BodyError;

/// The connection's reader, given back by a request body.
#[derive(Debug)]
pub(crate) struct Returned {
    pub reader: Box<Reader>,
    /// The body was read to its end: the connection can carry the next request.
    pub clean: bool,
}

/// Where a request body gives the reader back, and asks for `100 Continue`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReaderHome(Arc<Home>);

#[derive(Debug, Default)]
struct Home {
    returned: Mutex<Option<Returned>>,
    wants_continue: AtomicBool,
}

impl ReaderHome {
    fn put(&self, returned: Returned) {
        *self.0.returned.lock().unwrap_or_else(|e| e.into_inner()) = Some(returned);
    }

    /// The reader, once the body gave it back.
    pub(crate) fn take(&self) -> Option<Returned> {
        self.0
            .returned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The body was read to its end.
    pub(crate) fn is_clean(&self) -> bool {
        self.0
            .returned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|r| r.clean)
    }

    /// Whether the body asked for `100 Continue` since the last call.
    pub(crate) fn wants_continue(&self) -> bool {
        self.0.wants_continue.swap(false, Ordering::Relaxed)
    }
}

#[derive(Debug)]
enum Decoder {
    Length(u64),
    Chunked(chunked::Decoder),
}

#[derive(Debug)]
pub(crate) struct H1Body {
    /// `None` once the body ended or failed (the reader went home).
    reader: Option<Box<Reader>>,
    decoder: Decoder,
    home: ReaderHome,
    /// The client waits for `100 Continue` (not asked for yet).
    expect_continue: bool,
}

impl H1Body {
    /// The body that follows a head with `framing` (not `None`) on `reader`;
    /// `expect_continue`: the client waits for `100 Continue`.
    pub(crate) fn new(
        reader: Box<Reader>,
        framing: Framing,
        expect_continue: bool,
        home: ReaderHome,
    ) -> Self {
        let decoder = match framing {
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked | Framing::None => Decoder::Chunked(chunked::Decoder::new()),
        };
        H1Body {
            reader: Some(reader),
            decoder,
            home,
            expect_continue,
        }
    }

    fn give_back(&mut self, clean: bool) {
        if let Some(reader) = self.reader.take() {
            self.home.put(Returned { reader, clean });
        }
    }

    fn fail(&mut self, error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BodyError {
        self.give_back(false);
        BodyError::Client(Arc::from(error.into()))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            let Some(reader) = this.reader.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.decoder {
                Decoder::Length(left) if !reader.buf.is_empty() => {
                    let n = usize::try_from(*left)
                        .map_or(reader.buf.len(), |l| l.min(reader.buf.len()));
                    let data = reader.buf.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        this.give_back(true);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoder::Length(0) => {
                    this.give_back(true);
                    return Poll::Ready(None);
                }
                Decoder::Length(_) => {}
                Decoder::Chunked(decoder) => match decoder.decode(&mut reader.buf) {
                    Ok(Some(Decoded::Data(data))) => {
                        return Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Ok(Some(Decoded::Trailers(trailers))) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Ok(Some(Decoded::End)) => {
                        this.give_back(true);
                        return Poll::Ready(None);
                    }
                    Ok(None) => {}
                    Err(error) => return Poll::Ready(Some(Err(this.fail(error)))),
                },
            }
            if std::mem::take(&mut this.expect_continue) && reader.buf.is_empty() {
                // Polled by the connection's own task: its loop sees the flag when
                // this returns.
                this.home.0.wants_continue.store(true, Ordering::Relaxed);
            }
            match ready!(reader.poll_fill(cx)) {
                Ok(0) => {
                    let what =
                        "the client closed the connection before the end of its request body";
                    return Poll::Ready(Some(Err(this.fail(what))));
                }
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(this.fail(error)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reader.is_none() || matches!(self.decoder, Decoder::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(left) if self.reader.is_some() => SizeHint::with_exact(left),
            Decoder::Length(_) => SizeHint::with_exact(0),
            Decoder::Chunked(_) => SizeHint::default(),
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        self.give_back(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncWriteExt as _;

    /// A body over a stream whose far end wrote `sent` (then closed, if `close`).
    async fn body(
        framing: Framing,
        buffered: &[u8],
        sent: &[u8],
        close: bool,
    ) -> (H1Body, ReaderHome, tokio::io::DuplexStream) {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        far.write_all(sent).await.expect("write");
        if close {
            far.shutdown().await.expect("shutdown");
        }
        let reader = Reader::new(Box::new(near), BytesMut::from(buffered));
        let home = ReaderHome::default();
        (H1Body::new(reader, framing, false, home.clone()), home, far)
    }

    #[tokio::test]
    async fn a_length_body_leaves_the_next_request_in_the_reader() {
        let (b, home, _far) =
            body(Framing::Length(5), b"he", b"lloGET / HTTP/1.1\r\n", false).await;
        assert_eq!(b.size_hint().exact(), Some(5));
        let collected = b.collect().await.expect("body").to_bytes();
        assert_eq!(&collected[..], b"hello");
        let back = home.take().expect("reader back");
        assert!(back.clean);
        assert_eq!(&back.reader.buf[..], b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_chunked_body_with_trailers() {
        let (b, home, _far) = body(
            Framing::Chunked,
            b"",
            b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\nnext",
            false,
        )
        .await;
        let collected = b.collect().await.expect("body");
        assert_eq!(
            collected.trailers().map(|t| t["x-t"].clone()),
            Some("1".parse().expect("value"))
        );
        assert_eq!(&collected.to_bytes()[..], b"abcde");
        let back = home.take().expect("back");
        assert!(back.clean);
        assert_eq!(&back.reader.buf[..], b"next");
    }

    #[tokio::test]
    async fn a_short_or_malformed_body_fails_and_is_not_clean() {
        let (b, home, _far) = body(Framing::Length(10), b"", b"short", true).await;
        assert!(b.collect().await.is_err());
        assert!(!home.take().expect("back").clean);
        let (b, home, _far) = body(Framing::Chunked, b"", b"zz\r\n", false).await;
        assert!(b.collect().await.is_err());
        assert!(!home.is_clean());
        assert!(home.take().is_some());
    }

    #[tokio::test]
    async fn continue_is_asked_for_once_when_the_body_is_first_wanted() {
        let (near, _far) = tokio::io::duplex(64);
        let home = ReaderHome::default();
        let reader = Reader::new(Box::new(near), BytesMut::new());
        let mut b = H1Body::new(reader, Framing::Length(3), true, home.clone());
        assert!(!home.wants_continue(), "not before the body is polled");
        let polled = futures_poll(&mut b);
        assert!(polled.is_pending());
        assert!(home.wants_continue());
        assert!(futures_poll(&mut b).is_pending());
        assert!(!home.wants_continue(), "once");
    }

    fn futures_poll(body: &mut H1Body) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(body).poll_frame(&mut cx)
    }

    #[tokio::test]
    async fn a_body_dropped_early_gives_the_reader_back_unclean() {
        let (mut b, home, _far) = body(Framing::Length(10), b"", b"abc", false).await;
        let first = b.frame().await.expect("frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "abc");
        assert!(home.take().is_none(), "still reading");
        drop(b);
        assert!(!home.take().expect("back").clean);
    }
}
