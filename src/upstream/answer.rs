//! The body of an upstream's answer, whichever protocol carried it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::h2::H2Body;
use super::pool::UpstreamBody;
use crate::body::BoxError;

/// An upstream's response body: read from an HTTP/1.1 connection by the gateway's own client,
/// or an HTTP/2 stream's frames from hyper (trailers included).
///
/// Boxed: inline, either one's connection and decoder state (~200 bytes) sized every response
/// of the request path, which is copied at each async layer it passes on its way to the client.
#[derive(Debug)]
pub enum AnswerBody {
    /// From `protocol: http1`.
    H1(Box<UpstreamBody>),
    /// From `protocol: h2` or `h2c`.
    H2(Box<H2Body>),
}

impl AnswerBody {
    /// Reads until the first body bytes (or the end of the body) are in hand, so a body that
    /// breaks before any of it was relayed can still be answered with an error status.
    pub async fn wait_for_data(&mut self) -> Result<(), BoxError> {
        match self {
            AnswerBody::H1(body) => body.wait_for_data().await,
            AnswerBody::H2(body) => body.wait_for_data().await,
        }
    }
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            AnswerBody::H1(body) => Pin::new(body).poll_frame(cx),
            AnswerBody::H2(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            AnswerBody::H1(body) => body.is_end_stream(),
            AnswerBody::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AnswerBody::H1(body) => body.size_hint(),
            AnswerBody::H2(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_response_is_small() {
        // Moved from the exchange up through every attempt and call layer, each move a copy.
        let size = std::mem::size_of::<http::Response<AnswerBody>>();
        eprintln!("upstream response: {size} bytes");
        assert!(size <= 128, "an upstream response is {size} bytes");
    }
}
