//! Request bodies on their way through the gateway, whichever protocol brought them, and the
//! limit every route puts on them. Below both the request path and the upstream client, which
//! only see these types.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::http1::inbound::ClientBody;

/// Any error a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body, as its protocol delivers it.
#[derive(Debug)]
pub enum RequestBody {
    /// Read from an HTTP/1.x connection by the gateway's own server.
    Http1(ClientBody),
    /// An HTTP/2 stream's data, from hyper.
    Http2(Incoming),
    /// No body: a request the gateway makes itself (a background cache refresh).
    Empty,
    /// A body read whole and kept, so a retry can send it again; each attempt sends a clone
    /// (of the same shared bytes). `None` once sent.
    Kept(Option<Bytes>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Http1(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Kept(kept) => Poll::Ready(
                kept.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Http1(body) => body.is_end_stream(),
            RequestBody::Http2(body) => body.is_end_stream(),
            RequestBody::Empty => true,
            RequestBody::Kept(kept) => kept.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Http1(body) => body.size_hint(),
            RequestBody::Http2(body) => body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Kept(kept) => {
                SizeHint::with_exact(kept.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// The request body went past the route's `max_request_body`.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit that was passed.
    pub limit: u64,
}

/// A client's request body on its way upstream, cut off with an error once it passes the limit,
/// so the upstream never reads past it.
#[derive(Debug)]
pub struct LimitedBody {
    inner: Option<RequestBody>,
    limit: u64,
    seen: u64,
    /// Where the byte count is reported when the body is dropped (for the access log).
    report: Option<Arc<AtomicU64>>,
}

impl LimitedBody {
    /// Streams `inner`, allowing at most `limit` bytes.
    pub fn new(inner: RequestBody, limit: u64) -> Self {
        LimitedBody {
            inner: Some(inner),
            limit,
            seen: 0,
            report: None,
        }
    }

    /// Gives up on forwarding the rest: what the client still sends is read and discarded for
    /// a while (see [`drain`]), so the answer it gets instead is not lost to a reset.
    pub fn drain_rest(mut self) {
        if let Some(inner) = self.inner.take() {
            drain(inner);
        }
    }

    /// Also stores the number of bytes read into `report` when dropped.
    pub fn reporting_to(mut self, report: Arc<AtomicU64>) -> Self {
        self.report = Some(report);
        self
    }
}

impl Drop for LimitedBody {
    fn drop(&mut self) {
        if let Some(report) = &self.report {
            report.store(self.seen, Ordering::Relaxed);
        }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        if let Some(rest) = this.inner.take() {
                            drain(rest);
                        }
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// Whether `error`, or anything it was caused by, is a `T`: body errors reach the request path
/// wrapped in the upstream client's errors.
pub fn caused_by<T: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<T>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// The most of a refused body read and discarded.
pub const DRAIN_MAX_BYTES: u64 = 1 << 20;
/// The longest a refused body is read and discarded.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(2);

/// Reads and discards some of a body the gateway refused.
///
/// A client that is still sending when the gateway answers (413, for instance) would otherwise
/// get a TCP reset that can destroy the answer before it reads it; like nginx's lingering close,
/// reading a bounded amount gives the answer time to arrive. An HTTP/1.1 connection does that
/// itself once the answer is sent (and then knows whether it can read the next request); an
/// HTTP/2 stream's rest is read here, in the background.
pub fn drain(body: RequestBody) {
    let body = match body {
        RequestBody::Http1(_) | RequestBody::Empty | RequestBody::Kept(_) => return,
        RequestBody::Http2(body) => body,
    };
    if body.is_end_stream() {
        return;
    }
    // Bodies can be dropped while a runtime shuts down; then there is nobody left to answer.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut body = body;
        let mut read = 0u64;
        let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
                if read > DRAIN_MAX_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}
