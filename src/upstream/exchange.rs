//! One request/response exchange on an upstream HTTP/1.1 connection, driven by the task that
//! serves the client: the request head and body are written, the response head is read, and
//! the response body is read (while any rest of the request body is still written) from inside
//! the body the client is sent. At the end of a clean exchange the connection goes back to its
//! pool.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Response;
use http_body::{Body, Frame, SizeHint};

use super::h1::{
    parse_response_head, parse_upgrade_response_head, BodyDecoder, BodyFraming, ProtocolError,
    MAX_HEAD_BYTES,
};
use super::pool::Pool;
use super::read_timer::ReadTimer;
use super::stream::UpstreamStream;
use super::upgrade::{UpgradeSlot, Upgraded};
use crate::body::{BoxError, LimitedBody};
use crate::http1::chunked::Decoded;
use crate::http1::io::{BodySender, ReadSize, SendError};

/// An open HTTP/1.1 connection to one target.
pub struct Connection {
    stream: UpstreamStream,
    read_buf: BytesMut,
    /// How much room the next read gets (adapts to how much the upstream sends at once).
    read_size: ReadSize,
    /// Index of its idle list in the pool (target and worker).
    pub(super) slot: usize,
}

impl Connection {
    /// A fresh connection over `stream`, belonging to idle list `slot`.
    pub(super) fn new(stream: UpstreamStream, slot: usize) -> Self {
        Connection {
            stream,
            read_buf: BytesMut::new(),
            read_size: ReadSize::default(),
            slot,
        }
    }

    /// Whether an idle connection is still open (see [`UpstreamStream::is_open`]).
    pub(super) fn is_open(&mut self) -> bool {
        self.stream.is_open()
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.stream
            .poll_fill(&mut self.read_size, cx, &mut self.read_buf)
    }

    /// Gives the read buffer back before the connection idles in the pool (only a clean
    /// exchange, which left nothing buffered, gets here): hundreds of idle upstream connections
    /// would otherwise hold a buffer each, and the next exchange takes a fresh one from the
    /// allocator's thread cache as cheaply.
    pub(super) fn release_buffer_for_idle(&mut self) {
        self.read_buf = BytesMut::new();
        self.read_size.reset();
    }
}

/// Why an exchange failed after the connection was made.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Reading or writing the socket failed.
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before a whole response head arrived.
    #[error("upstream closed the connection before answering")]
    ClosedEarly,
    /// The upstream's answer was not valid HTTP/1.x.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The client's request body failed (it went past the limit, or the client went away).
    #[error("request body: {0}")]
    RequestBody(#[source] BoxError),
}

/// A request head and body still being written upstream. When it ends early (an early answer,
/// an error) with the client still sending, the rest of the body is drained.
pub(super) struct Upload(BodySender<LimitedBody>);

impl Upload {
    /// The head, followed by `body` framed as chunked or not.
    pub(super) fn new(head: Bytes, body: Option<LimitedBody>, chunked: bool) -> Self {
        Upload(BodySender::new(head, body, chunked))
    }

    /// Takes the body back if it was never polled, for a retry on another connection.
    pub(super) fn take_untouched_body(&mut self) -> Option<Option<LimitedBody>> {
        (!self.0.touched).then(|| self.0.take_body())
    }

    /// Takes the upload out, leaving one with nothing left to send.
    fn take(&mut self) -> Upload {
        std::mem::replace(self, Upload::new(Bytes::new(), None, false))
    }

    fn is_done(&self) -> bool {
        self.0.is_done()
    }

    /// Writes what it can; `Ready(Ok)` once the whole request is written.
    fn poll_send(
        &mut self,
        stream: &mut UpstreamStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>> {
        self.0.poll_send(stream, cx).map_err(|e| match e {
            SendError::Io(e) => ExchangeError::Io(e),
            SendError::Body(e) => ExchangeError::RequestBody(e),
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(body) = self.0.take_body() {
            body.drain_rest();
        }
    }
}

/// An exchange that failed, and whether the request can be sent again on another connection
/// (nothing of the body was consumed and the upstream cannot have acted on it).
pub(super) struct Failed {
    pub(super) error: ExchangeError,
    /// The upstream closed or reset the connection before a byte of answer (an interim 1xx
    /// answer counts: the request was seen), so a reused connection was probably closed while
    /// idle.
    pub(super) closed_before_answer: bool,
}

/// Sends the request and waits for the response head. The body of the returned response reads
/// the rest from the connection, and takes what is left of `upload` to finish it. With
/// `upgrade` (the request asked to switch protocols) a `101` hands the connection over in the
/// response's [`UpgradeSlot`], and any other answer leaves the connection unpooled after its
/// body.
///
/// `upload` is lent rather than given: moved in (and back out in [`Failed`] for a retry), it
/// was copied several times per request, copies `panic = "unwind"` builds do not elide.
pub(super) async fn exchange(
    mut connection: Connection,
    upload: &mut Upload,
    method: &http::Method,
    upgrade: bool,
    read_timeout: Duration,
    pool: Weak<Pool>,
) -> Result<Response<Box<UpstreamBody>>, Failed> {
    let mut write_error = None;
    // Any byte of answer, an interim one included: then the upstream has seen the request.
    let mut answered = false;
    let head = poll_fn(|cx| {
        if write_error.is_none() && !upload.is_done() {
            match upload.poll_send(&mut connection.stream, cx) {
                Poll::Ready(Err(e)) => {
                    if let ExchangeError::RequestBody(_) = e {
                        return Poll::Ready(Err(e));
                    }
                    // The upstream may still have answered (a 413 before reading the body, say);
                    // the error stands only if no answer comes.
                    write_error = Some(e);
                }
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        loop {
            // Nothing to parse until the upstream has sent something.
            if !connection.read_buf.is_empty() {
                let parsed = if upgrade {
                    parse_upgrade_response_head(&mut connection.read_buf, method)?
                } else {
                    parse_response_head(&mut connection.read_buf, method)?
                };
                if let Some(head) = parsed {
                    return Poll::Ready(Ok(head));
                }
                if connection.read_buf.len() >= MAX_HEAD_BYTES {
                    return Poll::Ready(Err(ProtocolError::HeadTooLarge.into()));
                }
            }
            match ready!(connection.poll_fill(cx)) {
                Ok(0) => {
                    return Poll::Ready(Err(write_error
                        .take()
                        .unwrap_or(ExchangeError::ClosedEarly)))
                }
                Ok(_) => answered = true,
                Err(e) => return Poll::Ready(Err(write_error.take().unwrap_or(e.into()))),
            }
        }
    })
    .await;
    let head = match head {
        Ok(head) => head,
        Err(error) => {
            let closed_before_answer = !answered
                && match &error {
                    ExchangeError::ClosedEarly => true,
                    ExchangeError::Io(e) => matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::BrokenPipe
                            | io::ErrorKind::ConnectionAborted
                    ),
                    _ => false,
                };
            return Err(Failed {
                error,
                closed_before_answer,
            });
        }
    };
    let switched = upgrade && head.status == http::StatusCode::SWITCHING_PROTOCOLS;
    let (connection, slot) = if switched {
        let Connection {
            stream, read_buf, ..
        } = connection;
        let read = read_buf.freeze();
        (None, Some(UpgradeSlot::new(Upgraded { stream, read })))
    } else {
        (Some(connection), None)
    };
    let bodiless = head.framing == BodyFraming::Empty;
    // Boxed here, where it is made: see `AnswerBody`.
    let mut response = Response::new(Box::new(UpstreamBody {
        connection,
        upload: (!upload.is_done()).then(|| Box::new(upload.take())),
        decoder: BodyDecoder::new(head.framing),
        // A connection that was asked to upgrade is not reused, whatever the answer.
        keep_alive: head.keep_alive && !upgrade,
        bodiless,
        first: None,
        read_timer: ReadTimer::new(read_timeout),
        pool,
    }));
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    if let Some(slot) = slot {
        response.extensions_mut().insert(slot);
    }
    let body = response.body_mut();
    if body.is_end_stream() {
        body.finish();
    }
    Ok(response)
}

/// The upstream sent nothing for longer than the read timeout in the middle of a body.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("upstream sent no body bytes for {0:?} (read_timeout)")]
pub struct ReadTimeout(pub Duration);

/// An upstream response body. Reading it drives the connection; at its end the connection goes
/// back to the pool when it can carry another request.
pub struct UpstreamBody {
    connection: Option<Connection>,
    /// The rest of the request body, for upstreams that answer while still reading it (boxed:
    /// rare, and it would double the size of every response body).
    upload: Option<Box<Upload>>,
    decoder: BodyDecoder,
    keep_alive: bool,
    /// The answer has no body (HEAD, 204, 304): its length fields describe one not sent.
    bodiless: bool,
    /// Body bytes already read by [`UpstreamBody::wait_for_data`], handed out first.
    first: Option<Bytes>,
    /// Longest wait for the next body bytes.
    read_timer: ReadTimer,
    pool: Weak<Pool>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// Reads until the first body bytes (or the end of the body) are in hand, so a body that
    /// breaks before any of it was relayed can still be answered with an error status. What was
    /// read is handed out first by `poll_frame`.
    pub async fn wait_for_data(&mut self) -> Result<(), BoxError> {
        if self.first.is_some() || self.is_end_stream() {
            return Ok(());
        }
        match poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                self.first = frame.into_data().ok();
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Ok(()),
        }
    }

    /// The body is fully read: the connection is pooled if the exchange left it clean.
    fn finish(&mut self) {
        self.decoder = BodyDecoder::Done;
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        let clean = self.keep_alive && self.upload.is_none() && connection.read_buf.is_empty();
        if clean {
            connection.release_buffer_for_idle();
            if let Some(pool) = self.pool.upgrade() {
                pool.checkin(connection);
            }
        }
    }

    /// Ends the body with `error`; the connection is closed, never pooled.
    fn fail(&mut self, error: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.connection = None;
        self.upload = None;
        self.read_timer.stop();
        self.decoder = BodyDecoder::Done;
        Poll::Ready(Some(Err(error.into())))
    }

    /// Reads more from the upstream. An orderly close ends a close-delimited body; anywhere
    /// else it means the body was cut short.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let connection = self
            .connection
            .as_mut()
            .expect("reading needs the connection");
        match ready!(connection.poll_fill(cx)) {
            Ok(0) => {
                self.keep_alive = false;
                Poll::Ready(self.decoder.closed().map_err(Into::into))
            }
            Ok(_) => {
                self.read_timer.progressed();
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(data) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(connection) = this.connection.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(upload) = this.upload.as_mut() {
            match upload.poll_send(&mut connection.stream, cx) {
                Poll::Ready(Ok(())) => this.upload = None,
                // The upstream stopped reading the request; its answer may still be whole.
                Poll::Ready(Err(ExchangeError::Io(_))) => {
                    this.keep_alive = false;
                    this.upload = None;
                }
                Poll::Ready(Err(e)) => return this.fail(e),
                Poll::Pending => {}
            }
        }
        loop {
            let connection = this.connection.as_mut().expect("checked above");
            match this.decoder.decode(&mut connection.read_buf) {
                Ok(Decoded::Data(data)) => {
                    if this.decoder.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => return this.fail(e),
            }
            match this.fill(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return this.fail(e),
                Poll::Pending => {
                    return match this.read_timer.poll_expired(cx) {
                        Poll::Ready(()) => this.fail(ReadTimeout(this.read_timer.timeout())),
                        Poll::Pending => Poll::Pending,
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        if self.bodiless {
            // Not "exactly 0": that would announce a length the upstream never gave.
            return SizeHint::default();
        }
        let first = self.first.as_ref().map_or(0, |b| b.len() as u64);
        match self.decoder.exact_left() {
            Some(left) => SizeHint::with_exact(left.saturating_add(first)),
            None => {
                let mut hint = SizeHint::default();
                hint.set_lower(first);
                hint
            }
        }
    }
}
