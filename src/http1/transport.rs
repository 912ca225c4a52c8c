//! What a client's HTTP/1.x connection is carried on: the plain socket, or TLS over it.
//!
//! The server's reader and writer share a connection through `&Transport`, as they share a plain
//! socket through `&TcpStream` (tokio's readiness API needs no `&mut`). Plain TCP keeps exactly
//! that path: a match, no lock, no allocation. TLS drives a `rustls::ServerConnection` sans-I/O
//! over the same `&TcpStream`: records are read with `read_tls` when the socket is readable and
//! decrypted by `process_new_packets`; plaintext is written into rustls and its records out with
//! `write_tls`. The session sits behind a `std::sync::Mutex`, taken only inside one poll (never
//! across an await): the reader and the writer normally run in the connection's task, so it is
//! not contended, and the lock order is always the read state's lock first, then this one.

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::sync::{Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use rustls::ServerConnection;
use tokio::net::TcpStream;

use super::io::{poll_read_buf, poll_write_vectored, try_read_buf, PollWrite, ReadSize};

/// A client connection's byte stream.
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, its handshake done (boxed: the session is large, and plain connections
    /// should not carry its size).
    Tls(Box<TlsTransport>),
}

/// A TLS session over a socket, driven without I/O of its own.
#[derive(Debug)]
pub struct TlsTransport {
    tcp: TcpStream,
    session: Mutex<Session>,
}

#[derive(Debug)]
struct Session {
    conn: ServerConnection,
    /// `close_notify` has been queued: nothing more is written.
    closing: bool,
}

/// The socket as the blocking `Read`/`Write` rustls wants; `WouldBlock` when it has nothing or
/// takes nothing now (which also clears tokio's readiness, so the next poll waits).
struct SocketIo<'a>(&'a TcpStream);

impl Read for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsTransport {
    /// A session whose handshake `conn` finished on `tcp`.
    pub fn new(tcp: TcpStream, conn: ServerConnection) -> Self {
        TlsTransport {
            tcp,
            session: Mutex::new(Session {
                conn,
                closing: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Session> {
        // rustls keeps the session consistent between calls, which is all a panic can cut.
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the records rustls has queued, as far as the socket takes them now; `Ok(true)`
    /// when none are left.
    fn try_flush(&self, conn: &mut ServerConnection) -> io::Result<bool> {
        while conn.wants_write() {
            match conn.write_tls(&mut SocketIo(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn poll_flush_session(
        &self,
        conn: &mut ServerConnection,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.try_flush(conn)? {
                return Poll::Ready(Ok(()));
            }
            ready!(self.tcp.poll_write_ready(cx))?;
        }
    }

    /// Reads and decrypts records until there is plaintext to read, or the stream ended (the
    /// reader then says how), or it failed.
    fn poll_plaintext(
        &self,
        conn: &mut ServerConnection,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let state = match conn.process_new_packets() {
                Ok(state) => state,
                Err(error) => {
                    // rustls queued an alert saying why; the peer should see it.
                    let _ = self.try_flush(conn);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
                }
            };
            if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
                return Poll::Ready(Ok(()));
            }
            // What reading produced (a key update's answer) goes out without waiting; the
            // next write flushes the rest.
            self.try_flush(conn)?;
            ready!(self.tcp.poll_read_ready(cx))?;
            match conn.read_tls(&mut SocketIo(&self.tcp)) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Copies the plaintext rustls holds into `buf`, at most `room` bytes (at least one);
    /// `WouldBlock` when it holds none. The end of the stream is `Ok(0)`, whether the client
    /// sent `close_notify` or only closed the socket: requests are delimited by their own
    /// framing, so a cut one is noticed as cut either way.
    fn read_plaintext(
        conn: &mut ServerConnection,
        buf: &mut BytesMut,
        room: usize,
    ) -> io::Result<usize> {
        let room = room.max(1);
        let mut reader = conn.reader();
        let mut n = 0;
        while n < room {
            // Borrowed rather than read into the buffer's spare room, which would have to be
            // zeroed first.
            let chunk = match reader.fill_buf() {
                Ok(chunk) => chunk,
                // What ends the plaintext is said by the next call, after these bytes.
                Err(_) if n > 0 => break,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break; // close_notify
            }
            let take = chunk.len().min(room - n);
            buf.extend_from_slice(&chunk[..take]);
            reader.consume(take);
            n += take;
        }
        Ok(n)
    }

    fn poll_read_buf(
        &self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        room: usize,
    ) -> Poll<io::Result<usize>> {
        let mut session = self.lock();
        loop {
            match Self::read_plaintext(&mut session.conn, buf, room) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.poll_plaintext(&mut session.conn, cx))?;
                }
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut session = self.lock();
        if session.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        loop {
            // rustls takes plaintext up to its buffer limit, then nothing until records go out.
            let n = session.conn.writer().write_vectored(bufs)?;
            let flushed = self.try_flush(&mut session.conn)?;
            if n > 0 || (flushed && bufs.iter().all(|b| b.is_empty())) {
                return Poll::Ready(Ok(n));
            }
            ready!(self.tcp.poll_write_ready(cx))?;
        }
    }

    fn poll_shutdown_write(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut session = self.lock();
        if !session.closing {
            session.closing = true;
            session.conn.send_close_notify();
        }
        ready!(self.poll_flush_session(&mut session.conn, cx))?;
        socket2::SockRef::from(&self.tcp).shutdown(std::net::Shutdown::Write)?;
        Poll::Ready(Ok(()))
    }
}

impl Transport {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => &tls.tcp,
        }
    }

    /// Whether it is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Waits until a read would find bytes (or the end of the stream), without a buffer.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(tcp) => tcp.poll_read_ready(cx),
            Transport::Tls(tls) => tls.poll_plaintext(&mut tls.lock().conn, cx),
        }
    }

    /// Reads what there is into the free room of `buf` without waiting (`WouldBlock`: nothing).
    pub fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => try_read_buf(tcp, buf),
            Transport::Tls(tls) => {
                let room = buf.capacity() - buf.len();
                TlsTransport::read_plaintext(&mut tls.lock().conn, buf, room)
            }
        }
    }

    /// Reads into `buf` (made at least `room` bytes first), or waits until there is something.
    /// `Ok(0)` is the end of the stream.
    pub fn poll_read_buf(
        &self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        room: usize,
    ) -> Poll<io::Result<usize>> {
        match self {
            Transport::Plain(tcp) => poll_read_buf(tcp, cx, buf, room),
            Transport::Tls(tls) => tls.poll_read_buf(cx, buf, room),
        }
    }

    /// Reads a piece of a body into `buf`, sized by `size` (see [`ReadSize::poll_fill`]).
    pub fn poll_fill(
        &self,
        size: &mut ReadSize,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            Transport::Plain(tcp) => size.poll_fill(tcp, cx, buf),
            Transport::Tls(tls) => {
                // As for a socket: no buffer is made before there is something to put in it.
                if buf.capacity() == 0 {
                    ready!(self.poll_read_ready(cx))?;
                }
                let room = size.make_room(buf);
                let n = ready!(tls.poll_read_buf(cx, buf, room))?;
                size.adapt(room, n);
                Poll::Ready(Ok(n))
            }
        }
    }

    /// Ends the sending side: for TLS, `close_notify` first. Then the peer reads its end of
    /// stream after everything sent before.
    pub fn poll_shutdown_write(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(tcp) => {
                Poll::Ready(socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write))
            }
            Transport::Tls(tls) => tls.poll_shutdown_write(cx),
        }
    }
}

impl PollWrite for &Transport {
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self {
            Transport::Plain(tcp) => poll_write_vectored(tcp, cx, bufs),
            Transport::Tls(tls) => tls.poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(_) => Poll::Ready(Ok(())),
            Transport::Tls(tls) => {
                let mut session = tls.lock();
                tls.poll_flush_session(&mut session.conn, cx)
            }
        }
    }
}
