//! The HTTP/2 upstream client (`protocol: h2` over TLS, `protocol: h2c` with prior knowledge),
//! the sibling of the HTTP/1.1 pool, on hyper's `client::conn::http2`.
//!
//! Each worker keeps one multiplexed connection per target, made when the worker first needs it
//! and shared by all of the worker's requests to that target (its driver task lives on the
//! worker's runtime, like the h1 idle lists). A connection the upstream closed, or told to go
//! away (GOAWAY), takes no new requests: the next request opens a new one, while streams already
//! on the old one finish there. Concurrent requests that find no connection wait for the one
//! being made rather than each opening their own.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::uri::{Authority, Scheme};
use http::{header, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::h1::MAX_HEAD_BYTES;
use super::pool::ReadTimeout;
use super::read_timer::ReadTimer;
use super::stream::{connect, ConnectTarget, UpstreamStream, UpstreamTls};
use crate::body::{BoxError, LimitedBody};
use crate::per_worker::PerWorker;

/// The settings an HTTP/2 client is made from; a reload that keeps them keeps its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Settings {
    /// Time allowed to establish a connection: TCP, the TLS handshake, and HTTP/2's preface.
    pub connect_timeout: Duration,
    /// Where to connect for each target, in order.
    pub targets: Vec<ConnectTarget>,
    /// For `protocol: h2`: the TLS client, offering only `h2` by ALPN. `None` for `h2c`.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// One upstream's HTTP/2 connections, per worker and target.
#[derive(Debug)]
pub struct H2Client {
    settings: H2Settings,
    /// Each worker's connection slots, one per target, made when the worker first calls.
    slots: PerWorker<Box<[Slot]>>,
    /// Numbers the connections, so a request that found one unusable replaces only that one.
    opened: AtomicU64,
}

/// A worker's connection to one target. An async lock: whoever finds no usable connection
/// makes one while holding it, and requests arriving meanwhile wait for that one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(tokio::sync::Mutex<State>);

#[derive(Debug, Default)]
enum State {
    /// Nothing made yet, or the last connection was given up.
    #[default]
    None,
    /// A connection that takes requests, as far as is known.
    Open {
        id: u64,
        sender: SendRequest<Outbound>,
    },
    /// The last attempt to connect failed at `at`: requests that were waiting for it get its
    /// error instead of each trying again in turn.
    Failed {
        at: Instant,
        kind: io::ErrorKind,
        message: String,
    },
}

/// Why an HTTP/2 request failed.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// No connection (TCP, TLS with ALPN `h2`, HTTP/2 preface) could be made.
    #[error("connect to {target}: {source}")]
    Connect {
        /// `host:port`.
        target: String,
        /// Why.
        source: io::Error,
    },
    /// The stream failed after the connection was made.
    #[error("upstream HTTP/2 stream: {0}")]
    Exchange(#[source] hyper::Error),
    /// The client's request body failed (it went past the limit, or the client went away).
    #[error("request body: {0}")]
    RequestBody(#[source] BoxError),
}

impl H2Error {
    /// Whether no connection could be made (nothing was sent).
    pub fn is_connect(&self) -> bool {
        matches!(self, H2Error::Connect { .. })
    }
}

impl H2Client {
    /// A client with no connections yet.
    pub fn new(settings: H2Settings) -> Arc<Self> {
        Arc::new(H2Client {
            settings,
            slots: PerWorker::new(),
            opened: AtomicU64::new(0),
        })
    }

    /// Sends `request` (origin-form target, `Host` set) to target `target` on this worker's
    /// connection to it, and returns the response once its head has arrived. Both bodies stream
    /// with their trailers; the response body fails once the upstream sends nothing for
    /// `read_timeout` before its end.
    ///
    /// A request the connection refused before sending anything (it had closed or gone away
    /// since it was last used) is sent once more, on a new connection.
    ///
    /// The head is lent (see [`Upstream::call`](super::Upstream::call)); its URI, fields and
    /// extensions are taken out for the request hyper sends.
    pub async fn send(
        &self,
        target: usize,
        head: &mut Parts,
        body: LimitedBody,
        read_timeout: Duration,
    ) -> Result<Response<H2Body>, H2Error> {
        let mut headers = std::mem::take(&mut head.headers);
        // HTTP/2 carries the host as `:authority` (RFC 9113 8.3.1) and needs `:scheme`.
        let host = headers.remove(header::HOST);
        let authority = host
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .or_else(|| Authority::try_from(self.settings.targets[target].address.as_str()).ok());
        let mut uri = std::mem::take(&mut head.uri).into_parts();
        uri.scheme = Some(if self.settings.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        uri.authority = authority;
        let failure = Arc::new(Mutex::new(None));
        let body = Outbound {
            body,
            failure: Arc::clone(&failure),
        };
        let mut request = Request::new(body);
        *request.method_mut() = head.method.clone();
        *request.uri_mut() = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = headers;
        *request.extensions_mut() = std::mem::take(&mut head.extensions);
        let mut stale = None;
        loop {
            let (id, mut sender) = self.sender(target, stale).await?;
            let mut error = match sender.try_send_request(request).await {
                Ok(response) => {
                    return Ok(response.map(|incoming| H2Body::new(incoming, read_timeout)))
                }
                Err(error) => error,
            };
            match error.take_message() {
                Some(unsent) if stale.is_none() => {
                    tracing::debug!(
                        target = %self.settings.targets[target].address,
                        "upstream HTTP/2 connection closed; sending on a new one"
                    );
                    request = unsent;
                    stale = Some(id);
                }
                _ => {
                    let body_error = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
                    return Err(match body_error {
                        Some(body_error) => H2Error::RequestBody(body_error),
                        None => H2Error::Exchange(error.into_error()),
                    });
                }
            }
        }
    }

    /// This worker's connection to `target`, made if there is none that takes requests, or if
    /// the one there is connection `stale`.
    async fn sender(
        &self,
        target: usize,
        stale: Option<u64>,
    ) -> Result<(u64, SendRequest<Outbound>), H2Error> {
        let asked = Instant::now();
        let targets = self.settings.targets.len().max(1);
        let slots = self
            .slots
            .get_or_init(|| (0..targets).map(|_| Slot::default()).collect());
        let mut state = slots[target].0.lock().await;
        match &*state {
            State::Open { id, sender } if Some(*id) != stale && !sender.is_closed() => {
                return Ok((*id, sender.clone()));
            }
            State::Failed { at, kind, message } if *at >= asked => {
                return Err(self.connect_error(target, io::Error::new(*kind, message.clone())));
            }
            _ => {}
        }
        *state = State::None;
        match self.connect(target).await {
            Ok(sender) => {
                let id = self.opened.fetch_add(1, Ordering::Relaxed);
                *state = State::Open {
                    id,
                    sender: sender.clone(),
                };
                Ok((id, sender))
            }
            Err(error) => {
                *state = State::Failed {
                    at: Instant::now(),
                    kind: error.kind(),
                    message: error.to_string(),
                };
                Err(self.connect_error(target, error))
            }
        }
    }

    fn connect_error(&self, target: usize, source: io::Error) -> H2Error {
        H2Error::Connect {
            target: self.settings.targets[target].address.clone(),
            source,
        }
    }

    /// A new connection to `target`, its driver running on this worker.
    async fn connect(&self, target: usize) -> io::Result<SendRequest<Outbound>> {
        let connect_target = &self.settings.targets[target];
        let made = tokio::time::timeout(self.settings.connect_timeout, async {
            let stream = connect(connect_target, self.settings.tls.as_deref()).await?;
            if let UpstreamStream::Tls(tls) = &stream {
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the server did not agree on HTTP/2 by ALPN (`protocol: h2` needs it)",
                    ));
                }
            }
            Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                // Response heads as large as the HTTP/1.1 client takes.
                .max_header_list_size(MAX_HEAD_BYTES as u32)
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| io::Error::other(format!("HTTP/2 handshake: {e}")))
        })
        .await;
        let (sender, connection) = match made {
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            Ok(made) => made?,
        };
        let address = connect_target.address.clone();
        tokio::spawn(async move {
            match connection.await {
                Ok(()) => tracing::debug!(target = %address, "upstream HTTP/2 connection closed"),
                Err(error) => tracing::debug!(
                    target = %address,
                    %error,
                    "upstream HTTP/2 connection failed"
                ),
            }
        });
        Ok(sender)
    }
}

/// The request body as hyper sends it: the client's body, whose error is kept aside so the call
/// can tell a client's fault (a body over the limit, a client gone) from the upstream's.
struct Outbound {
    body: LimitedBody,
    failure: Arc<Mutex<Option<BoxError>>>,
}

/// What hyper is told when the request body failed; the real error is kept for the call.
#[derive(Debug, thiserror::Error)]
#[error("the request body failed")]
struct RequestBodyFailed;

impl Body for Outbound {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Err(error))) => {
                *this.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                Poll::Ready(Some(Err(Box::new(RequestBodyFailed))))
            }
            polled => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An HTTP/2 upstream's response body: its data and trailers frames as they arrive, failing
/// after `read_timeout` without any.
pub struct H2Body {
    incoming: Incoming,
    /// A frame already read by [`H2Body::wait_for_data`], handed out first.
    first: Option<Frame<Bytes>>,
    read_timer: ReadTimer,
}

impl std::fmt::Debug for H2Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Body").finish_non_exhaustive()
    }
}

impl H2Body {
    fn new(incoming: Incoming, read_timeout: Duration) -> Self {
        H2Body {
            incoming,
            first: None,
            read_timer: ReadTimer::new(read_timeout),
        }
    }

    /// Reads until the first frame (data or trailers) or the end of the body is in hand; what
    /// was read is handed out first by `poll_frame`.
    pub async fn wait_for_data(&mut self) -> Result<(), BoxError> {
        if self.first.is_some() || self.is_end_stream() {
            return Ok(());
        }
        match std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                self.first = Some(frame);
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Ok(()),
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(frame) = this.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.read_timer.progressed();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => {
                this.read_timer.stop();
                Poll::Ready(None)
            }
            Poll::Pending => match this.read_timer.poll_expired(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err(ReadTimeout(this.read_timer.timeout()).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.first {
            None => self.incoming.size_hint(),
            Some(first) => {
                let extra = first.data_ref().map_or(0, |d| d.len() as u64);
                let hint = self.incoming.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower().saturating_add(extra));
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper.saturating_add(extra));
                }
                sum
            }
        }
    }
}
