//! Real parts for end-to-end tests: the gateway started in-process on port 0 from YAML written
//! to a temp dir, upstream HTTP servers on port 0 that echo what they received, and clients.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse::config::MapEnv;
use gatehouse::{Gateway, GatewayHandle, StartOptions};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod captured_log;
pub mod origin;
pub mod redis;
pub mod scripted;

/// Generous bound for anything a test waits on; a loaded 2-core CI machine is slow.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A gateway running in this process, with its config in a temp dir.
pub struct TestGateway {
    pub handle: GatewayHandle,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    /// Starts a gateway from `gateway_yaml` plus files under `routes/`. The YAML should listen
    /// on `127.0.0.1:0`; [`server_yaml`] makes such a section.
    pub async fn start_with(
        gateway_yaml: &str,
        route_files: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        if !route_files.is_empty() {
            std::fs::create_dir(dir.path().join("routes")).expect("routes dir");
        }
        for (name, content) in route_files {
            std::fs::write(dir.path().join("routes").join(name), content)
                .expect("write routes file");
        }
        let handle = start_in(dir.path(), gateway_yaml, env, true).await;
        let addr = handle.local_addr();
        TestGateway { handle, addr, dir }
    }

    /// Starts a gateway whose whole config is `gateway_yaml`.
    pub async fn start(gateway_yaml: &str) -> Self {
        Self::start_with(gateway_yaml, &[], &[]).await
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Path of a file in the config dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Writes `gateway_yaml` as `dir/gateway.yaml` (next to whatever files the test put there) and
/// starts a gateway on it with environment `env`, watching the config dir when `watch`.
pub async fn start_in(
    dir: &Path,
    gateway_yaml: &str,
    env: &[(&str, &str)],
    watch: bool,
) -> GatewayHandle {
    std::fs::write(dir.join("gateway.yaml"), gateway_yaml).expect("write gateway.yaml");
    let env: std::collections::HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let options = StartOptions {
        config_path: dir.join("gateway.yaml"),
        env: Arc::new(MapEnv(env)),
        watch,
    };
    match Gateway::start(options).await {
        Ok(handle) => handle,
        Err(e) => panic!("gateway did not start:\n{e}"),
    }
}

/// A `server:` section listening on port 0, with extra indented settings appended.
pub fn server_yaml(extra: &str) -> String {
    let mut yaml = String::from("server:\n  listen: 127.0.0.1:0\n");
    for line in extra.lines() {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

/// What an echo upstream saw, returned as its JSON body.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Echo {
    pub method: String,
    /// Path and query exactly as received on the wire.
    pub target: String,
    pub version: String,
    /// Header values by lower-case name, in order.
    pub headers: BTreeMap<String, Vec<String>>,
    pub body_len: u64,
    pub body_fnv: String,
    /// Which upstream server answered.
    pub server: String,
}

impl Echo {
    /// The single value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// FNV-1a 64 over bytes, as hex: enough to prove a body arrived unchanged.
pub fn fnv(bytes: &[u8]) -> String {
    let mut h = Fnv::default();
    h.update(bytes);
    h.hex()
}

/// Incremental FNV-1a 64.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Deterministic, non-repeating-looking bytes for large bodies: byte i of a stream.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// The pattern repeats every 2 MiB (a byte depends only on bits 13..21 of `i * K`).
pub const PATTERN_PERIOD: usize = 2 << 20;

/// One period of the pattern, built once, so large streams are slices, not per-byte work.
pub fn pattern_period() -> Bytes {
    static PERIOD: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    PERIOD
        .get_or_init(|| Bytes::from(pattern(0, PATTERN_PERIOD)))
        .clone()
}

/// `len` pattern bytes starting at stream offset `start`.
pub fn pattern(start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern_byte(start + i)).collect()
}

/// An upstream HTTP/1.1 server on 127.0.0.1:0. Routes:
/// - `/slow/<ms>/...` waits that long before answering (then echoes);
/// - `/bytes/<n>` streams n pattern bytes in 64 KiB chunks;
/// - `/status/<code>` answers with that status (and echoes);
/// - anything else echoes the request as JSON ([`Echo`]), after reading the whole body.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    pub name: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoUpstream {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let name_owned = name.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = Arc::clone(&counter);
                let name = name_owned.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        echo(req, name.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        EchoUpstream {
            addr,
            name: name.to_string(),
            requests,
            task,
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests it has received.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn echo(req: Request<Incoming>, server: String) -> Result<Response<UpBody>, Infallible> {
    let path = req.uri().path().to_string();
    let mut segments = path.trim_start_matches('/').split('/');
    let mut status = StatusCode::OK;
    match (segments.next(), segments.next()) {
        (Some("slow"), Some(ms)) => {
            let ms: u64 = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        (Some("bytes"), Some(n)) => {
            let total: u64 = n.parse().unwrap_or(0);
            let stream = futures_util::stream::unfold(0u64, move |sent| async move {
                if sent >= total {
                    return None;
                }
                let at = (sent % PATTERN_PERIOD as u64) as usize;
                let len = ((total - sent) as usize)
                    .min(64 * 1024)
                    .min(PATTERN_PERIOD - at);
                let chunk = pattern_period().slice(at..at + len);
                Some((Ok::<_, Infallible>(Frame::data(chunk)), sent + len as u64))
            });
            let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            response
                .headers_mut()
                .insert("content-length", total.into());
            return Ok(response);
        }
        (Some("status"), Some(code)) => {
            status = code
                .parse()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
        }
        _ => {}
    }
    let method = req.method().to_string();
    // The request target exactly as sent: origin-form `/p?q`, or `http://h/p` if a proxy
    // wrongly sent absolute-form.
    let target = req.uri().to_string();
    let version = format!("{:?}", req.version());
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let mut body = req.into_body();
    let mut hash = Fnv::default();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            hash.update(data);
            len += data.len() as u64;
        }
    }
    let json = serde_json::json!({
        "method": method, "target": target, "version": version, "headers": headers,
        "body_len": len, "body_fnv": hash.hex(), "server": server,
    });
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(json.to_string()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
        .headers_mut()
        .insert("server", "echo-upstream".parse().unwrap());
    Ok(response)
}

/// A response read in full.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn echo(&self) -> Echo {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A pooled HTTP/1.1 client (no path normalisation: URIs are sent exactly as given).
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends a request and reads the whole response, within [`DEADLINE`].
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Got {
    let response = within(client.request(request))
        .await
        .expect("request failed");
    let (parts, body) = response.into_parts();
    let body = within(body.collect())
        .await
        .expect("body failed")
        .to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Reads one request head from a raw connection, byte by byte so nothing after it is taken;
/// `None` when the connection ends first.
pub async fn read_request_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8(head).expect("a UTF-8 request head"))
}

/// GET `url` with a fresh client.
pub async fn get(url: &str) -> Got {
    send(&client(), Request::get(url).body(Full::default()).unwrap()).await
}

/// Sends raw bytes on a new connection and reads until the server closes it or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one response with a Content-Length (or none: no body) from `stream`: status, body.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> (u16, Vec<u8>) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = within(stream.read(&mut tmp)).await.expect("read");
        assert!(
            n > 0,
            "closed before a full head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().expect("status code");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("content-length"));
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = within(stream.read(&mut tmp)).await.expect("read");
        assert!(n > 0, "closed mid-body after {} of {len} bytes", body.len());
        body.extend_from_slice(&tmp[..n]);
    }
    assert_eq!(body.len(), len, "more bytes than the response declared");
    (status, body)
}

/// Waits (bounded by [`DEADLINE`]) for the gateway to close the connection; returns how long.
pub async fn wait_for_close<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Duration {
    let started = Instant::now();
    let mut tmp = [0u8; 1024];
    match within(stream.read(&mut tmp)).await {
        Ok(0) => {}
        Ok(n) => panic!(
            "expected a close, got {:?}",
            String::from_utf8_lossy(&tmp[..n])
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected a close, got {e}"),
    }
    started.elapsed()
}

/// Awaits `future`, panicking if it takes longer than [`DEADLINE`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("timed out")
}

/// Polls `check` until it returns true, panicking after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within {DEADLINE:?}: {what}");
}

/// Path of the built `gatehouse` binary, for command-line tests.
pub fn gatehouse_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gatehouse"))
}

/// A config dir holding `files` (paths relative to it; their directories are made).
pub fn config_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write config file");
    }
    dir
}

/// One config error as tests state it: file relative to the config dir, line, column, message.
pub type Found = (String, usize, usize, String);

/// Writes `files` into a fresh config dir and loads its `gateway.yaml` in this process, as
/// `gatehouse check` would; errors come back with their positions.
pub fn load_files(
    files: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Result<gatehouse::config::Snapshot, Vec<Found>> {
    let dir = config_dir(files);
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let result = gatehouse::config::load(
        &dir.path().join("gateway.yaml"),
        &MapEnv(env.collect()),
        &gatehouse::registry::Registries::default(),
    );
    result.map_err(|errors| {
        let prefix = format!("{}/", dir.path().display());
        errors
            .0
            .iter()
            .map(|e| {
                let (line, column) = e.mark.map_or((0, 0), |m| (m.line, m.column));
                let file = e.file.strip_prefix(dir.path()).unwrap_or(&e.file);
                // Messages that cite another file name it by full path; strip the temp dir so
                // tables can state it.
                let message = e.message.replace(&prefix, "");
                (file.display().to_string(), line, column, message)
            })
            .collect()
    })
}

/// `gatehouse args...` with stdin closed and without the caller's variables that would change
/// what it does: `-c` falls back to `GATEHOUSE_CONFIG`, and `RUST_LOG` overrides `logging.level`.
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(gatehouse_bin());
    command
        .args(args)
        .env_remove("GATEHOUSE_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// Runs `gatehouse args...` to completion, killing it if it outlives [`DEADLINE`].
pub fn gatehouse(args: &[&str]) -> Output {
    gatehouse_with_env(args, &[])
}

/// [`gatehouse`] with `env` set for the child.
pub fn gatehouse_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = command(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gatehouse");
    let pid = child.id();
    // `wait_with_output` cannot time out, so it waits on a thread and the test waits on that.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(output) => output.expect("wait for gatehouse"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("gatehouse {args:?} did not finish within {DEADLINE:?}");
        }
    }
}

/// A finished command's stdout, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A finished command's stderr, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A path as a command-line argument; temp paths are UTF-8.
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// One config that must fail to load with exactly one error: its name, its files, where the
/// error is (file, line, column) and words it contains.
pub struct ConfigCase {
    pub name: &'static str,
    pub files: Vec<(&'static str, String)>,
    pub at: (&'static str, usize, usize),
    pub says: &'static str,
}

/// Loads every case, reporting all that do not fail as expected at once.
pub fn check_config_cases(cases: Vec<ConfigCase>) {
    let mut failures = Vec::new();
    for case in cases {
        let files: Vec<(&str, &str)> = case.files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        match load_files(&files, &[]) {
            Ok(_) => failures.push(format!("{}: loaded, expected an error", case.name)),
            Err(errors) => {
                let (file, line, column) = case.at;
                let hit = errors.iter().any(|(f, l, c, m)| {
                    f == file && *l == line && *c == column && m.contains(case.says)
                });
                if !hit || errors.len() != 1 {
                    failures.push(format!(
                        "{}: expected only {file}:{line}:{column} `{}`, got {errors:#?}",
                        case.name, case.says
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `Bearer` + an HS256 token for `sub`, signed with `secret`, valid for ten minutes.
pub fn bearer(secret: &str, sub: &str) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"sub": sub, "exp": now + 600, "iat": now});
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    format!("Bearer {token}")
}

/// A port nothing listens on right now: bound, then released. A child told to listen on it may
/// lose a race for it, so callers retry with another.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A local port that refuses connections while this value lives: bound but never listening, so
/// no parallel test can take it meanwhile, as it could a port from [`free_port`].
pub struct RefusingPort {
    _socket: tokio::net::TcpSocket,
    /// The port on 127.0.0.1.
    pub port: u16,
}

impl RefusingPort {
    /// Binds a fresh port on 127.0.0.1 without listening on it.
    pub fn new() -> RefusingPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let port = socket.local_addr().expect("addr").port();
        RefusingPort {
            _socket: socket,
            port,
        }
    }
}

/// A `gatehouse` child, killed if the test ends without stopping it. Its stdout (the logs) and
/// stderr go to files, so a test can read them while it runs and show them when it fails.
pub struct Running {
    /// The process, for `try_wait` and its id.
    pub child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    /// Starts `gatehouse run -c config args...` with `env` added; its output goes to files
    /// beside `config`.
    pub fn spawn(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let stdout = config.with_file_name("gatehouse.stdout");
        let stderr = config.with_file_name("gatehouse.stderr");
        let child = command(&["run", "-c", path_str(config)])
            .args(args)
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn gatehouse run");
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// What it has written to stdout (its log lines) so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it has written to stderr (startup errors) so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its log lines so far that are JSON (`logging.format: json`).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Sends the signal `name` (`TERM`, `HUP`, ...) to it.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// The exit status, waiting at most until `deadline`; blocks the thread, so not for async
    /// tests (see [`Running::wait_exit`]).
    pub fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The exit status, which must come within [`DEADLINE`]; yields to the runtime meanwhile.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gatehouse did not exit within {DEADLINE:?}:\n{}{}",
                self.stdout(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `gatehouse run` serving on a free port: the binary as an operator runs it, where an
/// in-process [`TestGateway`] cannot show signals, exit codes or what reaches stdout.
pub struct GatehouseProcess {
    // Declared before `dir`, so the child is stopped before its config is deleted.
    running: Running,
    /// Where its main listener accepts connections.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl GatehouseProcess {
    /// Starts the binary on `config` (with `PORT` replaced by a free port) and waits until its
    /// /health answers 200.
    pub async fn start(config: &str, args: &[&str]) -> GatehouseProcess {
        Self::start_env(config, args, &[]).await
    }

    /// [`GatehouseProcess::start`] with extra environment variables for the child.
    pub async fn start_env(config: &str, args: &[&str], env: &[(&str, &str)]) -> GatehouseProcess {
        for _ in 0..3 {
            let port = free_port();
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("gateway.yaml");
            std::fs::write(&path, config.replace("PORT", &port.to_string()))
                .expect("write gateway.yaml");
            let mut running = Running::spawn(&path, args, env);
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let deadline = Instant::now() + DEADLINE;
            loop {
                if let Ok(Some(_)) = running.child.try_wait() {
                    break; // most likely the port was taken; try another
                }
                if TcpStream::connect(addr).await.is_ok() {
                    let process = GatehouseProcess { running, addr, dir };
                    let url = process.url("/health");
                    eventually("healthy", || async { get(&url).await.status == 200 }).await;
                    return process;
                }
                assert!(
                    Instant::now() < deadline,
                    "gatehouse never listened:\n{}",
                    running.stderr()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("could not start gatehouse on a free port in three tries");
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The config file it runs, with `PORT` already replaced.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }
}

// Signals, logs and exit status are the child's: tests reach them through the process.
impl Deref for GatehouseProcess {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.running
    }
}

impl DerefMut for GatehouseProcess {
    fn deref_mut(&mut self) -> &mut Running {
        &mut self.running
    }
}

/// The value of the metric `series` (name and labels exactly as exposed) on the gateway's
/// /metrics, or 0 when it is not exposed yet.
pub async fn metric(gw: &TestGateway, series: &str) -> f64 {
    let text = get(&gw.url("/metrics")).await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Runs the `openssl` command in `dir` and returns its stdout; panics with its stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Writes a new RSA-2048 private key (PKCS#8 PEM) to `dir/private`.
pub fn rsa_private_key(dir: &Path, private: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            private,
        ],
    );
}

/// Writes a new RSA-2048 private key to `dir/private` and its PEM public key to `dir/public`.
pub fn rsa_key_pair(dir: &Path, private: &str, public: &str) {
    rsa_private_key(dir, private);
    openssl(dir, &["pkey", "-in", private, "-pubout", "-out", public]);
}

/// A self-signed certificate and its key, as PEM, and the certificate as DER.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

/// A new key and a self-signed certificate for `names`, valid until midnight UTC of
/// `(year, month, day)`.
pub fn self_signed_until(names: &[&str], not_after: (i32, u8, u8)) -> SelfSigned {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = params.self_signed(&key).unwrap();
    SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
    }
}

/// Unpadded base64url, as JWS and JWK use.
pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
