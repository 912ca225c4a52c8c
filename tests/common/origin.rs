//! An origin whose answers a test scripts per path, which counts and records the requests it
//! gets: what the cache tests need to see whether a request reached it, and with which
//! conditional headers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body; `{n}` in it becomes the number of the request (1 for the first).
    pub body: String,
    /// A pause before answering.
    pub delay: Duration,
}

impl Answer {
    /// 200 with `body` and these headers.
    pub fn ok(body: &str, headers: &[(&str, &str)]) -> Answer {
        Answer::status(200, body, headers)
    }

    /// `status` with `body` and these headers.
    pub fn status(status: u16, body: &str, headers: &[(&str, &str)]) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// The same answer after `delay`.
    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// A request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its method.
    pub method: Method,
    /// Path and query.
    pub target: String,
    /// Its headers.
    pub headers: HeaderMap,
}

#[derive(Default)]
struct State {
    answers: HashMap<String, Answer>,
    /// Answers given once each, before `answers`, for a path.
    queued: HashMap<String, Vec<Answer>>,
    seen: Vec<Seen>,
}

/// The origin: a real HTTP/1.1 server on a port of its own.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    /// Set by [`stop`](Origin::stop): connections are closed as soon as they are accepted.
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl Origin {
    /// Starts it; every path answers 404 until scripted.
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("addr");
        let state: Arc<Mutex<State>> = Arc::default();
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let down: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (shared, conns, closing) = (
            Arc::clone(&state),
            Arc::clone(&connections),
            Arc::clone(&down),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if closing.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let state = Arc::clone(&shared);
                let conn = tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, Arc::clone(&state)));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                conns.lock().unwrap().push(conn.abort_handle());
            }
        });
        Origin {
            addr,
            state,
            task,
            connections,
            down,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on `path` (path and query) answers `answer`.
    pub fn set(&self, path: &str, answer: Answer) {
        self.state
            .lock()
            .unwrap()
            .answers
            .insert(path.into(), answer);
    }

    /// The next request to `path` answers `answer`, once, before what [`set`](Self::set) says.
    pub fn once(&self, path: &str, answer: Answer) {
        let mut state = self.state.lock().unwrap();
        state.queued.entry(path.into()).or_default().push(answer);
    }

    /// Requests received for `path` (path and query), any method.
    pub fn count(&self, path: &str) -> usize {
        let state = self.state.lock().unwrap();
        state.seen.iter().filter(|s| s.target == path).count()
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The last request received for `path`.
    pub fn last(&self, path: &str) -> Option<Seen> {
        let state = self.state.lock().unwrap();
        state.seen.iter().rev().find(|s| s.target == path).cloned()
    }

    /// Drops every connection and closes each new one at once, as a crashed origin would,
    /// keeping its port so no other test's server can take it meanwhile.
    pub fn stop(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for conn in self.connections.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
        self.task.abort();
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Body>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |pq| pq.as_str().to_string());
    let (answer, n) = {
        let mut state = state.lock().unwrap();
        state.seen.push(Seen {
            method: req.method().clone(),
            target: target.clone(),
            headers: req.headers().clone(),
        });
        let n = state.seen.iter().filter(|s| s.target == target).count();
        let queued = state.queued.get_mut(&target).filter(|q| !q.is_empty());
        let answer = match queued {
            Some(queue) => Some(queue.remove(0)),
            None => state.answers.get(&target).cloned(),
        };
        (answer, n)
    };
    let _ = req.into_body().collect().await;
    let Some(answer) = answer else {
        let mut response = Response::new(Full::new(Bytes::from_static(b"unscripted")).boxed());
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    };
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let body = answer.body.replace("{n}", &n.to_string());
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = answer.status;
    for (name, value) in &answer.headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    Ok(response)
}
