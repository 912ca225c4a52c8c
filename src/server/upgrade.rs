//! The servers' side of an upgrade: the `101` head goes to the client, then the connection
//! becomes a [`tunnel`](super::tunnel) to the upstream connection the `101` came on, under
//! `server.idle_timeout`, for as long as the gateway runs (a shutdown's `Terminate` drops it).
//!
//! The request's access-log line and metrics are finished when the tunnel ends, so its
//! duration is the tunnel's and its byte counts are the tunnel's.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use super::connection::RequestGuard;
use super::listener::Phase;
use super::tunnel::{self, Carried, End};
use crate::http1::inbound::Inbound;
use crate::http1::io::PollWrite;
use crate::http1::transport::Transport;
use crate::observability::access_log::Completion;
use crate::observability::metrics::TunnelMetrics;
use crate::proxy::body::ResponseBody;
use crate::upstream::upgrade::Upgraded;

/// An upgrade whose `101` went to the client: what its tunnel needs.
pub(super) struct Switch {
    /// The upstream connection, with what it sent past its `101`.
    pub upstream: Upgraded,
    /// The route's tunnel metrics.
    pub metrics: TunnelMetrics,
    /// The request's accounting, finished when the tunnel ends.
    pub completion: Completion,
    /// The answer's body: it holds the call's in-flight marks (`least_requests`,
    /// `max_requests`), so a tunnel counts at its target for as long as it is open.
    pub body: ResponseBody,
    /// `server.idle_timeout`.
    pub idle_timeout: Duration,
    /// Over HTTP/2, the tunnel is a request in flight on its connection (which must not idle
    /// out under it).
    pub guard: Option<RequestGuard>,
}

impl Switch {
    /// Copies both ways between `client` (after `client_read`) and the upstream until the
    /// tunnel ends, then finishes the request's accounting.
    pub(super) async fn run<C>(self, client: C, client_read: Bytes)
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let Switch {
            upstream,
            metrics,
            mut completion,
            body,
            idle_timeout,
            guard,
        } = self;
        let open = metrics.opened();
        let carried = tunnel::run(
            client,
            client_read,
            upstream.stream,
            upstream.read,
            idle_timeout,
        )
        .await;
        drop(open);
        finish(&metrics, &mut completion, &carried);
        drop((body, guard));
    }
}

fn finish(metrics: &TunnelMetrics, completion: &mut Completion, carried: &Carried) {
    metrics.bytes(carried.to_upstream, carried.to_client);
    let clean = match &carried.end {
        End::Closed => true,
        End::Idle => {
            tracing::debug!("tunnel closed after idle_timeout without traffic");
            false
        }
        End::Failed(error) => {
            tracing::debug!(%error, "tunnel ended with an error");
            false
        }
    };
    completion.tunnelled(carried.to_upstream, carried.to_client, clean);
}

/// The own HTTP/1.1 server's hook: writes the `101` head of `response` to the client, then
/// tunnels. The client's bytes that arrived with or after its request head are not lost.
pub(super) async fn serve_http1(
    inbound: &Inbound,
    response: Response<ResponseBody>,
    switch: Switch,
) {
    let mut client = SharedTransport {
        transport: inbound.transport(),
        buf: BytesMut::new(),
    };
    let head = encode_101_head(response.headers());
    drop(response);
    let mut switch = switch;
    if let Err(error) = client.write_all(&head).await {
        tracing::debug!(%error, "101 head not sent");
        switch.completion.completed = false;
        return;
    }
    let early = inbound.take_buffered();
    switch.run(client, early).await;
}

/// `HTTP/1.1 101 Switching Protocols` and the answer's fields (which carry `Connection:
/// upgrade` and `Upgrade`); no framing fields, as no body follows.
fn encode_101_head(headers: &HeaderMap) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    crate::http1::write_fields(headers, &[], &mut head);
    head.extend_from_slice(b"\r\n");
    head
}

/// hyper's servers' hook: once hyper wrote the `101` (HTTP/1.1) or the `200` (an HTTP/2
/// extended CONNECT) and handed the connection or stream over, tunnels it; a `Terminate` of
/// the gateway (the end of `shutdown_grace`) closes it.
pub(super) async fn serve_hyper(
    on_upgrade: hyper::upgrade::OnUpgrade,
    switch: Switch,
    mut phase: watch::Receiver<Phase>,
) {
    let run = async {
        match on_upgrade.await {
            Ok(upgraded) => {
                let client = hyper_util::rt::TokioIo::new(upgraded);
                switch.run(client, Bytes::new()).await;
            }
            Err(error) => tracing::debug!(%error, "connection not handed over after its 101"),
        }
    };
    tokio::select! {
        () = run => {}
        () = terminated(&mut phase) => {}
    }
}

/// Resolves once the phase is `Terminate` or the gateway is gone.
async fn terminated(phase: &mut watch::Receiver<Phase>) {
    while *phase.borrow_and_update() != Phase::Terminate {
        if phase.changed().await.is_err() {
            return;
        }
    }
}

/// The client's connection (plain or TLS) as a stream, borrowed from the own server (which
/// keeps it for the close). Reads go through `buf`, which holds what a read brought beyond
/// the caller's room.
struct SharedTransport<'a> {
    transport: &'a Transport,
    buf: BytesMut,
}

/// Bytes one read asks the connection for at most.
const READ_ROOM: usize = 16 << 10;

impl AsyncRead for SharedTransport<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buf.is_empty() {
            let room = out.remaining().clamp(1, READ_ROOM);
            // `Ok(0)` is the end of the stream: `out` stays unfilled, as AsyncRead says it.
            ready!(this.transport.poll_read_buf(cx, &mut this.buf, room))?;
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SharedTransport<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut transport = self.transport;
        transport.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut transport = self.transport;
        transport.poll_flush(cx)
    }

    /// Over TLS: what rustls holds, then `close_notify`, then the socket's write side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.transport.poll_shutdown_write(cx)
    }
}
