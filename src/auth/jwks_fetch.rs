//! One HTTP GET for a JWKS document, over `https://` (rustls) or `http://`.
//!
//! A general-purpose client would be more than this needs: one request at a time, a few times an
//! hour, to one URL. So it drives `hyper::client::conn::http1` over a stream it opened itself,
//! in the calling task, with `Connection: close` (no pooling). The whole exchange — DNS,
//! connect, TLS, response head and body — runs under one timeout, and the body is capped, so a
//! slow or hostile IdP can cost the gateway at most that long and that much memory.
//!
//! Redirects are not followed and only `200` counts as an answer: the URL is configuration, and
//! what it points at should be exactly what is configured.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use crate::net::connect_any;
use crate::tls::client;

/// Time allowed for a whole fetch: resolving, connecting, TLS, and reading the full response.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest JWKS response body read; real ones are a few KiB. A larger body is a failed fetch.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A checked `jwks_url`: `http://` or `https://`, a host, an optional port, a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUrl {
    text: String,
    tls: bool,
    /// Without IPv6 brackets, as resolved and as sent in SNI.
    host: String,
    port: u16,
    /// The `Host` header: the authority as written.
    authority: String,
    path_and_query: String,
}

impl JwksUrl {
    /// Checks `text`; the error says what to change.
    pub fn parse(text: &str) -> Result<JwksUrl, String> {
        let text = text.trim();
        if text.contains('#') {
            return Err(format!("`{text}` has a #fragment; remove it"));
        }
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("`{text}` is not a valid URL ({e})"))?;
        let tls = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            Some(other) => {
                return Err(format!(
                    "`{text}`: scheme `{other}` is not supported; use https:// (or http:// for a \
                     local identity provider)"
                ))
            }
            None => {
                return Err(format!(
                    "`{text}` is not an absolute URL; write it as https://host/path"
                ))
            }
        };
        let Some(authority) = uri.authority() else {
            return Err(format!("`{text}` has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "`{text}` carries credentials; JWKS are public documents, remove the user:password@ part"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{text}` has no host"));
        }
        let port = match authority.port_u16() {
            Some(0) => return Err(format!("`{text}`: port 0 is not a port to fetch from")),
            Some(port) => port,
            None if authority.as_str().ends_with(':') => {
                return Err(format!("`{text}` has an empty port"))
            }
            None if tls => 443,
            None => 80,
        };
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let path_and_query = if path_and_query.is_empty() {
            "/".to_string()
        } else {
            path_and_query
        };
        Ok(JwksUrl {
            text: text.to_string(),
            tls,
            host: host.to_string(),
            port,
            authority: authority.as_str().to_string(),
            path_and_query,
        })
    }

    /// Whether the fetch uses TLS.
    pub fn is_https(&self) -> bool {
        self.tls
    }
}

impl fmt::Display for JwksUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A successful fetch.
#[derive(Debug)]
pub struct Fetched {
    /// The response body (at most [`MAX_BODY_BYTES`]).
    pub body: Bytes,
    /// `Cache-Control: max-age`, unclamped; `Some(0)` for `no-cache`/`no-store`.
    pub max_age: Option<Duration>,
}

/// Why a fetch failed. The text goes to logs; none of it is shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The whole exchange took longer than its timeout.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The host name did not resolve, or no address accepted a connection.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// The TLS handshake failed (certificate not trusted, wrong name, protocol).
    #[error("tls: {0}")]
    Tls(io::Error),
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// An answer other than 200 (redirects are not followed).
    #[error("answered {0}, not 200")]
    Status(StatusCode),
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("the body is over {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The body could not be read.
    #[error("reading the body: {0}")]
    Body(String),
}

/// Fetches JWKS documents; cheap to clone (the TLS settings are shared).
#[derive(Clone)]
pub struct Fetcher {
    tls: TlsConnector,
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher").finish_non_exhaustive()
    }
}

impl Default for Fetcher {
    /// Trusts the Mozilla root programme (compiled in).
    fn default() -> Self {
        static DEFAULT: OnceLock<Fetcher> = OnceLock::new();
        DEFAULT
            .get_or_init(|| Fetcher::with_roots(client::webpki_roots()))
            .clone()
    }
}

impl Fetcher {
    /// A fetcher trusting exactly `roots` for `https://` URLs.
    pub fn with_roots(roots: RootCertStore) -> Fetcher {
        let config = client::client_config(client::Trust::Roots(roots), None, &[b"http/1.1"])
            .expect("ring supports the default TLS versions");
        Fetcher {
            tls: TlsConnector::from(Arc::new(config)),
        }
    }

    /// GETs `url`; the whole exchange must finish within `timeout`.
    pub async fn get(&self, url: &JwksUrl, timeout: Duration) -> Result<Fetched, FetchError> {
        tokio::time::timeout(timeout, self.get_unbounded(url))
            .await
            .unwrap_or(Err(FetchError::Timeout(timeout)))
    }

    async fn get_unbounded(&self, url: &JwksUrl) -> Result<Fetched, FetchError> {
        let tcp = connect_any((url.host.as_str(), url.port))
            .await
            .map_err(FetchError::Connect)?;
        let _ = tcp.set_nodelay(true);
        if !url.tls {
            return exchange(tcp, url).await;
        }
        let name = ServerName::try_from(url.host.clone())
            .map_err(|e| FetchError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let stream = self.tls.connect(name, tcp).await.map_err(FetchError::Tls)?;
        exchange(stream, url).await
    }
}

/// One request on a fresh connection, driven in this task until the whole body is read.
async fn exchange<S>(io: S, url: &JwksUrl) -> Result<Fetched, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await?;
    let request = Request::get(url.path_and_query.as_str())
        .header(header::HOST, url.authority.as_str())
        .header(header::ACCEPT, "application/jwk-set+json, application/json")
        .header(
            header::USER_AGENT,
            concat!("gatehouse/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::CONNECTION, "close")
        .body(Empty::new())
        .expect("a path checked by JwksUrl::parse and fixed headers make a valid request");
    let response = async move {
        let response = sender.send_request(request).await?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status(response.status()));
        }
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(FetchError::TooLarge);
        }
        let max_age = max_age(response.headers());
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge
                } else {
                    FetchError::Body(e.to_string())
                }
            })?
            .to_bytes();
        Ok(Fetched { body, max_age })
    };
    let mut response = std::pin::pin!(response);
    let mut conn = std::pin::pin!(conn);
    let mut conn_done = false;
    poll_fn(|cx| {
        if let Poll::Ready(result) = response.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if !conn_done {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                conn_done = true;
                // What the connection delivered before it ended (a response head, body bytes)
                // is still readable by the response side, which decides first: a head that
                // declares too large a body is reported as that, not as the broken connection.
                let answer = response.as_mut().poll(cx);
                return match (answer, result) {
                    (Poll::Pending, Err(e)) => Poll::Ready(Err(FetchError::Http(e))),
                    (answer, _) => answer,
                };
            }
        }
        Poll::Pending
    })
    .await
}

/// `Cache-Control: max-age=N` in seconds; `no-store` / `no-cache` count as 0 (refetch as soon
/// as the caller allows). Unparsable values count as absent.
pub fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age") {
                if let Some(seconds) = argument.and_then(|a| a.parse::<u64>().ok()) {
                    max_age = Some(Duration::from_secs(seconds));
                }
            }
        }
    }
    max_age
}

#[cfg(test)]
mod tests;
