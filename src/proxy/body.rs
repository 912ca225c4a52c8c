//! Bodies that stream through the gateway without being buffered whole.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Any error a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the gateway sends.
#[derive(Debug)]
pub enum ResponseBody {
    /// No body.
    Empty,
    /// A body known in full (gateway errors, `respond` routes).
    Full(Option<Bytes>),
    /// An upstream's body, streamed through.
    Upstream(crate::upstream::pool::UpstreamBody),
}

impl ResponseBody {
    /// A body of these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(bytes.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Empty => Poll::Ready(None),
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Upstream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Empty => true,
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Empty => SizeHint::with_exact(0),
            ResponseBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseBody::Upstream(body) => body.size_hint(),
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
    inner: Option<Incoming>,
    limit: u64,
    seen: u64,
    /// Where the byte count is reported when the body is dropped (for the access log).
    report: Option<Arc<AtomicU64>>,
}

impl LimitedBody {
    /// Streams `inner`, allowing at most `limit` bytes.
    pub fn new(inner: Incoming, limit: u64) -> Self {
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
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
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

/// Whether `error` (or anything it was caused by) is a body over its limit.
pub fn is_body_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTooLarge>() {
            return true;
        }
        current = e.source();
    }
    false
}

const DRAIN_MAX_BYTES: u64 = 1 << 20;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(2);

/// Reads and discards some of a body the gateway refused, in the background.
///
/// A client that is still sending when the gateway answers (413, for instance) would otherwise
/// get a TCP reset that can destroy the answer before it reads it; like nginx's lingering close,
/// reading a bounded amount gives the answer time to arrive.
pub fn drain(body: Incoming) {
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
