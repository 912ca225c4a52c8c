//! The read side of a client's HTTP/1.x connection: request heads for the connection's loop,
//! and the body of the request being served for whoever forwards it.
//!
//! The loop and the body share one socket and one read buffer (bytes past a head belong to its
//! body, bytes past a body to the next head). Both run in the connection's task, so the lock
//! that guards them is never contended; it exists so the body can be `Send`. Each body belongs
//! to one request: once the connection moves on, an old body reads nothing more.
//!
//! While the connection waits for its next request it holds no buffer at all: one is taken when
//! the socket has bytes to read and given back when the request is done, which is what lets an
//! idle keep-alive connection cost a few hundred bytes instead of a buffer's worth.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::chunked::{take_bytes, ChunkedDecoder, ChunkedError, Decoded};
use super::io::{PollWrite, ReadSize};
use super::request::{parse_request_head, raw_target_path, HeadError, RequestHead};
use super::transport::Transport;
use super::RequestFraming;
use crate::body::{BoxError, DRAIN_MAX_BYTES};

/// Room taken for reading a request head, at first (nginx's `client_header_buffer_size`): most
/// heads fit, and every request in flight holds this much. Heads that need more get twice as
/// much room at each read, up to the head limit.
const HEAD_READ: usize = 1 << 10;
/// Room for each read of bytes that are only thrown away (a closing connection's last bytes).
const DISCARD_READ: usize = 16 << 10;
/// The interim answer to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A client connection's socket and read state.
#[derive(Debug)]
pub struct Inbound {
    transport: Transport,
    state: Mutex<ReadState>,
}

#[derive(Debug)]
struct ReadState {
    buf: BytesMut,
    /// The request whose body may read now; bumped when the connection moves on.
    request: u64,
    body: BodyState,
    /// Bytes of the `100 Continue` answer still to write before the body is read.
    continue_left: usize,
    read_size: ReadSize,
}

#[derive(Debug)]
enum BodyState {
    /// No body, or all of it was read.
    Done,
    /// This many bytes are still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// The body broke its framing, or the client went away mid-body: the connection is done.
    Failed,
}

/// Why a request head could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadReadError {
    /// The head was refused.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The client closed the connection or it failed in the middle of a head.
    #[error("connection closed in the middle of a request head")]
    Closed(#[source] Option<io::Error>),
}

/// How the last request's body stands once its response has been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLeft {
    /// Read to its end: the next request can follow.
    Nothing,
    /// Not all read; this many bytes remain when the length is known.
    Unread(Option<u64>),
    /// Broken or cut short: the connection cannot carry another request.
    Broken,
}

/// Why reading a client's request body failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// The chunked framing was malformed.
    #[error(transparent)]
    Framing(#[from] ChunkedError),
    /// The client closed the connection before the end of the body.
    #[error("client closed the connection before the end of the request body")]
    CutShort,
    /// Reading or writing the socket failed.
    #[error("client connection: {0}")]
    Io(#[from] io::Error),
    /// The connection has moved on to another request.
    #[error("request body read after its request ended")]
    Stale,
}

impl Inbound {
    /// The read side of a newly accepted plain connection, holding no buffer yet.
    pub fn new(stream: TcpStream) -> Arc<Self> {
        Self::over(Transport::Plain(stream))
    }

    /// The read side of a connection carried on `transport`, holding no buffer yet.
    pub fn over(transport: Transport) -> Arc<Self> {
        Arc::new(Inbound {
            transport,
            state: Mutex::new(ReadState {
                buf: BytesMut::new(),
                request: 0,
                body: BodyState::Done,
                continue_left: 0,
                read_size: ReadSize::default(),
            }),
        })
    }

    /// The connection, for writing responses.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Takes the plain socket and whatever was read from it but not consumed (for handing the
    /// connection to another protocol); `Err` gives the connection back if a body still holds
    /// it, or if it is TLS (whose protocol ALPN chose before any byte was read).
    pub fn into_parts(self: Arc<Self>) -> Result<(TcpStream, Bytes), Arc<Self>> {
        let Inbound { transport, state } = Arc::try_unwrap(self)?;
        match transport {
            Transport::Plain(stream) => {
                let state = state.into_inner().unwrap_or_else(|p| p.into_inner());
                Ok((stream, state.buf.freeze()))
            }
            tls => Err(Arc::new(Inbound {
                transport: tls,
                state,
            })),
        }
    }

    /// Takes what was read past the last head and not consumed: after a protocol switch, the
    /// first bytes of the new protocol.
    pub fn take_buffered(&self) -> Bytes {
        self.lock().buf.split().freeze()
    }

    fn lock(&self) -> MutexGuard<'_, ReadState> {
        // The state stays consistent at every point a panic could leave it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes read and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.lock().buf.len()
    }

    /// Whether the buffered bytes start with `prefix` (or are a beginning of it): `Some(true)`
    /// when they do and there are enough of them, `None` when more are needed to tell.
    pub fn starts_with(&self, prefix: &[u8]) -> Option<bool> {
        let state = self.lock();
        let n = state.buf.len().min(prefix.len());
        if state.buf[..n] != prefix[..n] {
            Some(false)
        } else if n == prefix.len() {
            Some(true)
        } else {
            None
        }
    }

    /// The path of the request line still buffered (one that was refused), for its log line.
    pub fn refused_path(&self) -> Option<Box<str>> {
        let state = self.lock();
        raw_target_path(&state.buf).map(|path| String::from_utf8_lossy(path).into())
    }

    /// Reads until a whole request head is buffered and parses it. `Ok(None)`: the client
    /// closed the connection cleanly between requests.
    pub fn poll_head(
        &self,
        cx: &mut Context<'_>,
        limit: usize,
    ) -> Poll<Result<Option<RequestHead>, HeadReadError>> {
        let mut state = self.lock();
        loop {
            if !state.buf.is_empty() {
                if let Some(head) = parse_request_head(&mut state.buf, limit)? {
                    return Poll::Ready(Ok(Some(head)));
                }
            }
            match ready!(state.poll_read_head(&self.transport, cx, limit)) {
                Ok(0) if state.buf.is_empty() => return Poll::Ready(Ok(None)),
                Ok(0) => return Poll::Ready(Err(HeadReadError::Closed(None))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(HeadReadError::Closed(Some(e)))),
            }
        }
    }

    /// Only reads: waits until the socket has bytes and buffers them (for telling protocols
    /// apart before any head is parsed). `Ok(0)` is the end of the stream.
    pub fn poll_read_some(&self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.lock().poll_read_head(&self.transport, cx, HEAD_READ)
    }

    /// Starts serving a request whose head said `framing`: its body reads from this connection
    /// until the next call.
    pub fn start_body(
        self: &Arc<Self>,
        framing: RequestFraming,
        expect_continue: bool,
    ) -> ClientBody {
        let mut state = self.lock();
        state.request += 1;
        state.body = match framing {
            RequestFraming::None | RequestFraming::Length(0) => BodyState::Done,
            RequestFraming::Length(n) => BodyState::Length(n),
            RequestFraming::Chunked => BodyState::Chunked(ChunkedDecoder::strict()),
        };
        let has_body = !matches!(state.body, BodyState::Done);
        state.continue_left = if expect_continue && has_body {
            CONTINUE.len()
        } else {
            0
        };
        ClientBody {
            inbound: Arc::clone(self),
            request: state.request,
        }
    }

    /// The response has started: a `100 Continue` would now come too late.
    pub fn response_started(&self) {
        self.lock().continue_left = 0;
    }

    /// Whether the client is still waiting for a `100 Continue` it will now never get.
    pub fn awaits_continue(&self) -> bool {
        self.lock().continue_left == CONTINUE.len()
    }

    /// Takes the connection back from the current request's body and says what is left of it.
    pub fn finish_body(&self) -> BodyLeft {
        let mut state = self.lock();
        state.request += 1;
        state.body.left()
    }

    /// Whether, as its answer goes out, the current request already rules out another one on
    /// this connection: the client still waits for a `100 Continue` (it sends the body only if
    /// it gives up waiting), the body broke its framing or was cut short, or nothing reads the
    /// body any more and more of it is left than is worth reading past.
    pub fn ends_connection(self: &Arc<Self>) -> bool {
        // The connection holds one reference; each live body holds another.
        let abandoned = Arc::strong_count(self) == 1;
        let state = self.lock();
        state.continue_left == CONTINUE.len()
            || match state.body.left() {
                BodyLeft::Broken => true,
                BodyLeft::Unread(Some(left)) => abandoned && left > DRAIN_MAX_BYTES,
                BodyLeft::Nothing | BodyLeft::Unread(None) => false,
            }
    }

    /// Reads and discards the rest of the last request's body, at most `budget` more bytes of
    /// it. `Ok(true)`: it ended within the budget.
    pub fn poll_discard_body(
        &self,
        cx: &mut Context<'_>,
        budget: &mut u64,
    ) -> Poll<Result<bool, ClientBodyError>> {
        let mut state = self.lock();
        state.continue_left = 0;
        loop {
            match ready!(state.poll_body(&self.transport, cx)) {
                None => return Poll::Ready(Ok(true)),
                Some(Ok(data)) => match budget.checked_sub(data.len() as u64) {
                    Some(left) => *budget = left,
                    None => return Poll::Ready(Ok(false)),
                },
                Some(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Reads what the client sends and drops it (after the connection's last answer); `Ok(0)` is
    /// its end of stream.
    pub fn poll_discard(&self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut state = self.lock();
        state.buf.clear();
        let n = ready!(self
            .transport
            .poll_read_buf(cx, &mut state.buf, DISCARD_READ))?;
        state.buf.clear();
        Poll::Ready(Ok(n))
    }

    /// Gives the read buffer back to the allocator when nothing is buffered, before the
    /// connection waits for its next request.
    pub fn release_buffer(&self) {
        let mut state = self.lock();
        if state.buf.is_empty() {
            state.buf = BytesMut::new();
            state.read_size.reset();
        }
    }
}

impl BodyState {
    fn left(&self) -> BodyLeft {
        match self {
            BodyState::Done => BodyLeft::Nothing,
            BodyState::Length(n) => BodyLeft::Unread(Some(*n)),
            BodyState::Chunked(_) => BodyLeft::Unread(None),
            BodyState::Failed => BodyLeft::Broken,
        }
    }
}

impl ReadState {
    /// Reads more of a head: room for [`HEAD_READ`] bytes at first, then as much again as is
    /// buffered, never room past `limit`. An empty buffer is only made once the socket is
    /// readable, so a connection waiting for its next request holds none.
    fn poll_read_head(
        &mut self,
        stream: &Transport,
        cx: &mut Context<'_>,
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            loop {
                ready!(stream.poll_read_ready(cx))?;
                self.buf.reserve(HEAD_READ);
                match stream.try_read_buf(&mut self.buf) {
                    // Readiness was stale: give the buffer back before waiting again.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.buf = BytesMut::new(),
                    result => return Poll::Ready(result),
                }
            }
        }
        let room = HEAD_READ
            .max(self.buf.len())
            .min(limit.saturating_sub(self.buf.len()).max(1));
        stream.poll_read_buf(cx, &mut self.buf, room)
    }

    /// The next piece of the body: data, its end (`None`), or why it failed.
    fn poll_body(
        &mut self,
        stream: &Transport,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, ClientBodyError>>> {
        loop {
            let data = match &mut self.body {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Failed => return Poll::Ready(Some(Err(ClientBodyError::CutShort))),
                BodyState::Length(left) if !self.buf.is_empty() => {
                    let n = (*left).min(self.buf.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        self.body = BodyState::Done;
                    }
                    Some(take_bytes(&mut self.buf, n as usize))
                }
                BodyState::Chunked(decoder) if !self.buf.is_empty() => {
                    match decoder.decode(&mut self.buf) {
                        Ok(Decoded::Data(data)) => Some(data),
                        Ok(Decoded::End) => {
                            self.body = BodyState::Done;
                            return Poll::Ready(None);
                        }
                        Ok(Decoded::NeedMore) => None,
                        Err(e) => {
                            self.body = BodyState::Failed;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                }
                _ => None,
            };
            if let Some(data) = data {
                return Poll::Ready(Some(Ok(data)));
            }
            if let Err(e) = ready!(self.poll_send_continue(stream, cx)) {
                self.body = BodyState::Failed;
                return Poll::Ready(Some(Err(e.into())));
            }
            match ready!(stream.poll_fill(&mut self.read_size, cx, &mut self.buf)) {
                Ok(0) => {
                    self.body = BodyState::Failed;
                    return Poll::Ready(Some(Err(ClientBodyError::CutShort)));
                }
                Ok(_) => {}
                Err(e) => {
                    self.body = BodyState::Failed;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    /// Writes what is left of a due `100 Continue`.
    fn poll_send_continue(
        &mut self,
        mut stream: &Transport,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if self.continue_left == 0 {
            return Poll::Ready(Ok(()));
        }
        while self.continue_left > 0 {
            let unsent = &CONTINUE[CONTINUE.len() - self.continue_left..];
            let slice = [io::IoSlice::new(unsent)];
            let n = ready!(stream.poll_write_vectored(cx, &slice))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.continue_left -= n;
        }
        // Under TLS the answer may still sit in a record not yet sent; the client waits for it.
        stream.poll_flush(cx)
    }
}

/// A request body read straight from the client's connection.
#[derive(Debug)]
pub struct ClientBody {
    inbound: Arc<Inbound>,
    request: u64,
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut state = this.inbound.lock();
        if state.request != this.request {
            return Poll::Ready(Some(Err(ClientBodyError::Stale.into())));
        }
        state
            .poll_body(&this.inbound.transport, cx)
            .map(|next| next.map(|piece| piece.map(Frame::data).map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        let state = self.inbound.lock();
        state.request != self.request || matches!(state.body, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        let state = self.inbound.lock();
        match state.body {
            _ if state.request != self.request => SizeHint::with_exact(0),
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Length(n) => SizeHint::with_exact(n),
            BodyState::Chunked(_) | BodyState::Failed => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
