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

use bytes::Bytes;
use http::{HeaderMap, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::connection::RequestGuard;
use super::listener::Phase;
use super::tunnel::{self, Carried, End};
use crate::http1::inbound::Inbound;
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
    let mut client = SharedTcp(inbound.stream());
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

/// The client's socket as a stream, borrowed from its connection (which keeps it for the
/// close). Both halves work on readiness, like the rest of the own server.
struct SharedTcp<'a>(&'a TcpStream);

impl AsyncRead for SharedTcp<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(self.0).shutdown(std::net::Shutdown::Write))
    }
}
