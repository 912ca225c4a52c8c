//! The body of every response the gateway sends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::BoxError;
use crate::compress::Compressing;
use crate::upstream::answer::AnswerBody;
use crate::upstream::call::CallMarks;
use crate::upstream::Upstream;

/// The body of every response the gateway sends.
#[derive(Debug, Default)]
pub enum ResponseBody {
    /// No body.
    #[default]
    Empty,
    /// A body known in full (gateway errors, `respond` routes).
    Full(Option<Bytes>),
    /// An upstream's body, streamed through (over HTTP/2, with its trailers).
    Upstream(Relayed),
    /// An upstream's body, streamed through and kept for the cache.
    Filling(Box<crate::cache::fill::Filling<ResponseBody>>),
    /// Another body, compressed on its way out.
    Compressed(Box<Compressing<ResponseBody>>),
}

impl From<Compressing<ResponseBody>> for ResponseBody {
    fn from(body: Compressing<ResponseBody>) -> Self {
        ResponseBody::Compressed(Box::new(body))
    }
}

impl ResponseBody {
    /// A body of these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(bytes.into()))
    }
}

/// An upstream's response body on its way to the client. If it breaks, that is counted and
/// logged as it happens; the client connection sees the error, notes it for the access log and
/// closes.
#[derive(Debug)]
pub struct Relayed {
    body: AnswerBody,
    upstream: Arc<Upstream>,
    /// Count the request in flight at its target (`least_requests`) and at its upstream
    /// (`max_requests`) until the body is done; boxed, and only when either applies, so the
    /// common body stays small.
    _marks: Option<Box<CallMarks>>,
}

impl Relayed {
    /// Relays `body` from `upstream`, holding the in-flight marks until it is dropped.
    pub fn new(body: AnswerBody, upstream: Arc<Upstream>, marks: CallMarks) -> Self {
        Relayed {
            body,
            upstream,
            _marks: (!marks.is_empty()).then(|| Box::new(marks)),
        }
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
            ResponseBody::Upstream(relayed) => {
                let polled = Pin::new(&mut relayed.body).poll_frame(cx);
                if let Poll::Ready(Some(Err(error))) = &polled {
                    relayed.upstream.note_body_error(&**error);
                }
                polled
            }
            ResponseBody::Filling(filling) => Pin::new(&mut **filling).poll_frame(cx),
            ResponseBody::Compressed(body) => Pin::new(&mut **body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Empty => true,
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Upstream(relayed) => relayed.body.is_end_stream(),
            ResponseBody::Filling(filling) => filling.is_end_stream(),
            ResponseBody::Compressed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Empty => SizeHint::with_exact(0),
            ResponseBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseBody::Upstream(relayed) => relayed.body.size_hint(),
            ResponseBody::Filling(filling) => filling.size_hint(),
            ResponseBody::Compressed(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_small() {
        // A response is moved through every async layer between the upstream call and the
        // client connection, and each move is a copy; the body must not carry its upstream
        // state inline.
        let size = std::mem::size_of::<http::Response<ResponseBody>>();
        eprintln!("response: {size} bytes");
        assert!(size <= 160, "a response is {size} bytes");
    }
}
