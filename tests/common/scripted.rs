//! An upstream that answers each path with a response the test sets: status, headers and a
//! body that is sent whole, in chunks of unknown total length, or held after its first chunk
//! until the test releases it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// How a scripted body is sent.
#[derive(Clone)]
pub enum Sent {
    /// All at once with its Content-Length (unless the headers set one).
    Whole(Bytes),
    /// In these chunks, chunked (no Content-Length).
    Chunks(Vec<Bytes>),
    /// `first`, then nothing until `release` is notified, then `rest`; chunked.
    Held {
        first: Bytes,
        rest: Bytes,
        release: Arc<Notify>,
    },
}

/// The answer to one path.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Sent,
}

impl Reply {
    /// 200 with these headers and the whole body.
    pub fn ok(headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Sent::Whole(body.into()),
        }
    }

    /// The same with another status.
    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    /// The same with another way of sending the body.
    pub fn sent(mut self, body: Sent) -> Reply {
        self.body = body;
        self
    }
}

/// The upstream; stops when dropped.
pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedUpstream {
    pub async fn start() -> ScriptedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let replies: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let shared = Arc::clone(&replies);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let replies = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, Arc::clone(&replies)));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ScriptedUpstream {
            addr,
            replies,
            task,
        }
    }

    /// Answers `path` with `reply` from now on.
    pub fn set(&self, path: &str, reply: Reply) {
        self.replies.lock().unwrap().insert(path.to_string(), reply);
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<Incoming>,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
) -> Result<Response<UpBody>, Infallible> {
    let reply = replies.lock().unwrap().get(req.uri().path()).cloned();
    let Some(reply) = reply else {
        let mut response = Response::new(Full::new(Bytes::from_static(b"no script")).boxed());
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    };
    let body = match reply.body {
        Sent::Whole(bytes) => Full::new(bytes).boxed(),
        Sent::Chunks(chunks) => {
            let frames = chunks.into_iter().map(|c| Ok(Frame::data(c)));
            StreamBody::new(futures_util::stream::iter(frames)).boxed()
        }
        Sent::Held {
            first,
            rest,
            release,
        } => {
            let stream = futures_util::stream::unfold(0u8, move |step| {
                let (first, rest, release) = (first.clone(), rest.clone(), release.clone());
                async move {
                    match step {
                        0 => Some((Ok(Frame::data(first)), 1)),
                        1 => {
                            release.notified().await;
                            Some((Ok(Frame::data(rest)), 2))
                        }
                        _ => None,
                    }
                }
            });
            StreamBody::new(stream).boxed()
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(reply.status).expect("status");
    for (name, value) in &reply.headers {
        response.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    Ok(response)
}
