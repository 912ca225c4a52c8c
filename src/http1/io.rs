//! Socket reads and writes driven from inside a `poll` function, on a shared `&TcpStream`, and a
//! sender that writes a message head and its body, framed, with as few system calls as it can.
//!
//! Both directions work on `&TcpStream` (tokio's readiness API), so the task that writes a
//! response and the request body that reads from the same socket need no lock or split halves.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use tokio::io::{AsyncRead, Interest};
use tokio::net::TcpStream;

use super::chunked::chunk_size_line;
use crate::body::BoxError;
use crate::net::held_writes::wake_after_round;

/// Body bytes queued for writing before the body is polled again.
const WRITE_QUEUE_MAX: usize = 64 << 10;

/// Writes what the socket takes of `bufs` now, or waits until it can take something.
pub fn poll_write_vectored(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_write_vectored(bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}

/// Where a [`BodySender`] writes: a socket, or a stream that may hold written bytes back (TLS
/// records being built) until flushed.
pub trait PollWrite {
    /// Writes what the stream takes of `bufs` now, or waits until it can take something.
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;

    /// Sends what the stream holds back; a socket holds nothing.
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl PollWrite for &TcpStream {
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_write_vectored(self, cx, bufs)
    }
}

/// Reads what the socket has into the free room of `buf` (made at least `room` bytes first), or
/// waits until it has something. `Ok(0)` is the peer's end of stream.
pub fn poll_read_buf(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    room: usize,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < room {
        buf.reserve(room);
    }
    loop {
        ready!(stream.poll_read_ready(cx))?;
        match try_read_buf(stream, buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}

/// Reads what the socket has into the free room of `buf` without waiting.
///
/// A read that returns less than the room it was given took all the socket had queued (a
/// stream socket returns what it holds, up to the room), so the next one would only say
/// `EWOULDBLOCK`: like nginx, the socket is then marked not readable at once, which saves that
/// system call on every request. Bytes arriving later raise a new event, which marks it
/// readable again; an end of stream already seen stays marked (tokio never clears it).
pub fn try_read_buf(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let room = buf.capacity() - buf.len();
    let n = stream.try_read_buf(buf)?;
    if n > 0 && n < room {
        let _ = stream.try_io(Interest::READABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
    }
    Ok(n)
}

/// Room kept free in a read buffer before each read of a body, at first: one page, as nginx's
/// `proxy_buffer_size`, which holds a typical response head and small body. Every exchange in
/// flight holds this much; larger bodies get larger reads.
pub const READ_CHUNK: usize = 4 << 10;
/// The most a read of a body asks for: reads that fill the room double it up to this, so large
/// bodies move in few system calls.
pub const MAX_READ_CHUNK: usize = 256 << 10;

/// How much room the next read of a body gets, adapting to how much the peer sends at once.
#[derive(Debug, Clone, Copy)]
pub struct ReadSize(usize);

impl Default for ReadSize {
    fn default() -> Self {
        ReadSize(READ_CHUNK)
    }
}

impl ReadSize {
    /// Back to the first size (the buffer is about to be given up).
    pub fn reset(&mut self) {
        self.0 = READ_CHUNK;
    }

    /// Reads into `buf` with room for the current size, then adapts the size to what came.
    pub fn poll_fill(
        &mut self,
        stream: &TcpStream,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        // An empty buffer is only made once the socket has bytes: a request waiting for its
        // answer then holds none.
        if buf.capacity() == 0 {
            ready!(stream.poll_read_ready(cx))?;
        }
        let room = self.make_room(buf);
        let n = ready!(poll_read_buf(stream, cx, buf, 0))?;
        self.adapt(room, n);
        Poll::Ready(Ok(n))
    }

    /// [`ReadSize::poll_fill`] from a stream that has no readiness to wait for before the
    /// buffer is made (a TLS stream: bytes on the socket may not be application data).
    pub fn poll_fill_from<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        let room = self.make_room(buf);
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf))?;
        self.adapt(room, n);
        Poll::Ready(Ok(n))
    }

    pub(crate) fn make_room(&self, buf: &mut BytesMut) -> usize {
        if buf.capacity() - buf.len() < self.0 / 4 {
            buf.reserve(self.0);
        }
        buf.capacity() - buf.len()
    }

    pub(crate) fn adapt(&mut self, room: usize, n: usize) {
        if n == room {
            self.0 = (self.0 * 2).min(MAX_READ_CHUNK);
        } else if n < self.0 / 8 {
            self.0 = READ_CHUNK;
        }
    }
}

/// Why a [`BodySender`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Writing to the socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The body being sent failed.
    #[error("body: {0}")]
    Body(#[source] BoxError),
}

/// A message head and body on their way out: queued bytes, and the body they come from.
pub struct BodySender<B> {
    /// The part of the head not yet written (kept apart from `queue` so a message without a
    /// body needs no queue allocation).
    head: Bytes,
    queue: VecDeque<Bytes>,
    queued: usize,
    body: Option<B>,
    chunked: bool,
    /// Whether the body has been polled (so it can no longer be sent again elsewhere).
    pub touched: bool,
    /// Payload bytes taken from the body so far.
    pub body_bytes: u64,
    /// The body's error, reported once what was taken before it is written.
    broken: Option<BoxError>,
    /// Whether the worker's round has ended since the message was made ready: its first write
    /// waits for that, so the messages of one round leave together
    /// ([`crate::net::held_writes`]).
    round_over: bool,
}

impl<B> BodySender<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// `head`, followed by `body` framed as chunked or sent as it is.
    pub fn new(head: Bytes, body: Option<B>, chunked: bool) -> Self {
        let queued = head.len();
        BodySender {
            head,
            queue: VecDeque::new(),
            queued,
            body,
            chunked,
            touched: false,
            body_bytes: 0,
            broken: None,
            round_over: false,
        }
    }

    /// Takes the body out, whatever state it is in (the sender then only flushes its queue).
    pub fn take_body(&mut self) -> Option<B> {
        self.body.take()
    }

    /// Whether everything was written.
    pub fn is_done(&self) -> bool {
        self.body.is_none() && self.nothing_queued()
    }

    fn nothing_queued(&self) -> bool {
        self.head.is_empty() && self.queue.is_empty()
    }

    fn push(&mut self, bytes: Bytes) {
        self.queued += bytes.len();
        self.queue.push_back(bytes);
    }

    /// Writes what it can; `Ready(Ok)` once the head and the whole body are written.
    pub fn poll_send(
        &mut self,
        mut stream: impl PollWrite,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        if !self.round_over {
            self.round_over = true;
            wake_after_round(cx);
            return Poll::Pending;
        }
        loop {
            let mut body_pending = false;
            while self.queued < WRITE_QUEUE_MAX {
                let Some(body) = self.body.as_mut() else {
                    break;
                };
                self.touched = true;
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        // Trailers are not sent on.
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        if data.is_empty() {
                            continue;
                        }
                        self.body_bytes += data.len() as u64;
                        if self.chunked {
                            self.push(chunk_size_line(data.len()));
                            self.push(data);
                            self.push(Bytes::from_static(b"\r\n"));
                        } else {
                            self.push(data);
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // The head and the bytes before the break still go out: the peer
                        // then sees a cut answer (and why it closed), not a silent close.
                        self.body = None;
                        self.broken = Some(e.into());
                        break;
                    }
                    Poll::Ready(None) => {
                        self.body = None;
                        if self.chunked {
                            self.push(Bytes::from_static(b"0\r\n\r\n"));
                        }
                    }
                    Poll::Pending => {
                        body_pending = true;
                        break;
                    }
                }
            }
            if self.nothing_queued() {
                ready!(stream.poll_flush(cx))?;
                return match (&self.body, self.broken.take()) {
                    (_, Some(e)) => Poll::Ready(Err(SendError::Body(e))),
                    (None, None) => Poll::Ready(Ok(())),
                    (Some(_), None) => Poll::Pending,
                };
            }
            let written = {
                let mut slices = [IoSlice::new(&[]); 8];
                let head = (!self.head.is_empty()).then_some(&self.head);
                let pending = head.into_iter().chain(self.queue.iter());
                let mut count = 0;
                for (slice, bytes) in slices.iter_mut().zip(pending) {
                    *slice = IoSlice::new(bytes);
                    count += 1;
                }
                ready!(stream.poll_write_vectored(cx, &slices[..count]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
            }
            self.advance(written);
            if body_pending && self.nothing_queued() {
                ready!(stream.poll_flush(cx))?;
                return Poll::Pending;
            }
        }
    }

    fn advance(&mut self, mut written: usize) {
        self.queued -= written;
        let from_head = written.min(self.head.len());
        self.head.advance(from_head);
        written -= from_head;
        while written > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if written >= front.len() {
                written -= front.len();
                self.queue.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (listener.accept().await.unwrap().0, client)
    }

    async fn read(stream: &TcpStream, buf: &mut BytesMut) -> usize {
        let read = poll_fn(|cx| poll_read_buf(stream, cx, buf, 64));
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("woken in time")
            .unwrap()
    }

    #[tokio::test]
    async fn a_short_read_still_sees_what_comes_next() {
        let (server, mut client) = pair().await;
        let mut buf = BytesMut::new();
        client.write_all(b"abc").await.unwrap();
        assert_eq!(read(&server, &mut buf).await, 3);
        // The socket was marked not readable without asking it; new bytes must still wake us.
        client.write_all(b"def").await.unwrap();
        assert_eq!(read(&server, &mut buf).await, 3);
        assert_eq!(&buf[..], b"abcdef");
    }

    #[tokio::test]
    async fn a_short_read_before_the_end_of_stream_still_sees_the_end() {
        let (server, mut client) = pair().await;
        client.write_all(b"abc").await.unwrap();
        client.shutdown().await.unwrap();
        // Let the bytes and the FIN both arrive before the first read.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut buf = BytesMut::new();
        assert_eq!(read(&server, &mut buf).await, 3);
        assert_eq!(
            read(&server, &mut buf).await,
            0,
            "the end of stream is not lost"
        );
    }

    #[tokio::test]
    async fn a_message_waits_for_the_end_of_the_round_before_its_first_write() {
        use std::sync::atomic::Ordering;

        let (server, client) = pair().await;
        let head = Bytes::from_static(b"HTTP/1.1 204 No Content\r\n\r\n");
        let mut sender = BodySender::<http_body_util::Empty<Bytes>>::new(head.clone(), None, false);
        let (waker, task_waker) = crate::test_support::CountingWaker::pair();
        let mut cx = Context::from_waker(&task_waker);
        assert!(sender.poll_send(&server, &mut cx).is_pending());
        let mut buf = [0u8; 64];
        assert_eq!(
            client.try_read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "nothing is written before the round ends"
        );
        assert_eq!(waker.0.load(Ordering::SeqCst), 0);
        tokio::task::yield_now().await;
        assert_eq!(
            waker.0.load(Ordering::SeqCst),
            1,
            "woken once the round ended"
        );
        assert!(matches!(
            sender.poll_send(&server, &mut cx),
            Poll::Ready(Ok(()))
        ));
        let mut got = BytesMut::new();
        while got.len() < head.len() {
            read(&client, &mut got).await;
        }
        assert_eq!(&got[..], &head[..]);
    }
}
