//! Active health checks (upstream `health_check:`): one background task per upstream probes
//! every target each `interval`, all targets at once. A probe is a fresh TCP connection and
//! `GET <path>` over HTTP/1.1 with `Connection: close`; a status 200 to 399 whose head arrives
//! within `timeout` (connect included) is a success, anything else a failure.
//! `unhealthy_threshold` failures in a row take a target out of the rotation,
//! `healthy_threshold` successes in a row bring it back.
//!
//! Targets start healthy: a freshly started gateway serves at once instead of refusing traffic
//! for `healthy_threshold` intervals, and a dead target leaves after `unhealthy_threshold`
//! failed probes (meanwhile passive outlier detection and retries may already route around it).
//!
//! The state is one atomic flag per target, written only by the task: the request path reads a
//! bool. The config registry hands the same [`HealthChecker`] to every reload whose targets and
//! settings are unchanged, so a reload keeps both the state and the one running task. The task
//! ends as soon as the checker is dropped (the last snapshot using it is gone), even mid-probe.
//!
//! Probes use the gateway's own HTTP/1.1 codec (`upstream/h1.rs`) rather than hyper's client:
//! a probe then reads a target's answer exactly as real traffic does (a head the proxy would
//! refuse fails the probe too), and the head it reads is bounded by [`MAX_PROBE_HEAD_BYTES`]
//! with no buffer of hyper's own in between.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::Method;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::h1::{encode_request_head, parse_response_head, ProtocolError, RequestFraming};
use super::stream::{connect, ConnectTarget, UpstreamTls};
use super::{connect_address, Target};
use crate::background::{BackgroundTask, StopSignal};
use crate::observability::metrics::{Metrics, TargetHealthMetrics};

/// `path` when not configured.
pub const DEFAULT_PATH: &str = "/health";
/// `interval` when not configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// `timeout` when not configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// `healthy_threshold` when not configured.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// `unhealthy_threshold` when not configured.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Largest response head a probe reads; a longer one fails the probe. A health answer's head is
/// a status line and a few fields, so this leaves ample room while bounding what a broken
/// target can make the gateway buffer.
pub const MAX_PROBE_HEAD_BYTES: usize = 8 << 10;
/// Longest `path` accepted in config.
pub const MAX_PATH_BYTES: usize = 2048;
/// The `User-Agent` of probes, so targets can tell them from traffic (and leave them out of
/// their access logs).
pub const USER_AGENT: &str = "gatehouse-health-check";

/// `health_check:` as config builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// Request target of probes, in origin form (`/health`, `/status?deep=1`).
    pub path: Box<str>,
    /// Time between the starts of two probe rounds.
    pub interval: Duration,
    /// Time allowed for one probe: connect, send, and the response head; at most `interval`.
    pub timeout: Duration,
    /// Successes in a row that bring an unhealthy target back.
    pub healthy_threshold: u32,
    /// Failures in a row that take a healthy target out.
    pub unhealthy_threshold: u32,
    /// The upstream's TLS client, which probes of `https://` targets go through as requests do.
    pub tls: Option<Arc<UpstreamTls>>,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            path: DEFAULT_PATH.into(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
            tls: None,
        }
    }
}

/// Checks a probe path: origin form (`/` then path and optional query), visible ASCII only, no
/// fragment, at most [`MAX_PATH_BYTES`]. It is written into the request line as is.
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "health check `path` `{path}` must start with `/` (origin form, e.g. /health)"
        ));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!(
            "health check `path` is longer than {MAX_PATH_BYTES} bytes"
        ));
    }
    if let Some(bad) = path.bytes().find(|&b| !b.is_ascii_graphic() || b == b'#') {
        return Err(format!(
            "health check `path` `{}` holds `{}`: use visible ASCII without `#` \
             (percent-encode anything else)",
            path.escape_debug(),
            (bad as char).escape_debug()
        ));
    }
    http::uri::PathAndQuery::try_from(path)
        .map(|_| ())
        .map_err(|e| format!("health check `path` `{path}` is not a valid request target: {e}"))
}

/// A change of a target's state, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    /// Left the rotation.
    Unhealthy,
    /// Came back.
    Healthy,
}

/// One target's health. Written only by the checker task; the request path reads `healthy`.
#[derive(Debug)]
struct TargetHealth {
    healthy: AtomicBool,
    /// Failures in a row while healthy, successes in a row while unhealthy.
    run: AtomicU32,
}

impl TargetHealth {
    fn new() -> Self {
        TargetHealth {
            healthy: AtomicBool::new(true),
            run: AtomicU32::new(0),
        }
    }

    /// Counts one probe's result; says when it completes a run that changes the state.
    fn record(&self, ok: bool, settings: &HealthSettings) -> Option<Transition> {
        let healthy = self.healthy.load(Ordering::Relaxed);
        if ok == healthy {
            // A result that agrees with the state breaks any run towards the other state.
            self.run.store(0, Ordering::Relaxed);
            return None;
        }
        let run = self.run.load(Ordering::Relaxed).saturating_add(1);
        let threshold = if healthy {
            settings.unhealthy_threshold
        } else {
            settings.healthy_threshold
        };
        if run < threshold {
            self.run.store(run, Ordering::Relaxed);
            return None;
        }
        self.run.store(0, Ordering::Relaxed);
        self.healthy.store(ok, Ordering::Relaxed);
        Some(if ok {
            Transition::Healthy
        } else {
            Transition::Unhealthy
        })
    }
}

/// What one target's probes need, built once.
#[derive(Debug)]
struct ProbeTarget {
    url: Arc<str>,
    /// Where to connect, and for `https://` the TLS server name.
    connect: ConnectTarget,
    /// The whole request, head only.
    request: Box<[u8]>,
    state: TargetHealth,
    metrics: TargetHealthMetrics,
}

/// What the task shares with the checker.
#[derive(Debug)]
struct Shared {
    upstream: Arc<str>,
    settings: HealthSettings,
    targets: Box<[ProbeTarget]>,
}

/// The active health checks of one upstream: its targets' state and the task that probes them.
pub struct HealthChecker {
    shared: Arc<Shared>,
    /// The probing task; dropping the checker ends it.
    task: BackgroundTask,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker")
            .field("upstream", &self.shared.upstream)
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl HealthChecker {
    /// Checks for `targets` of upstream `name`, every target healthy; nothing is probed until
    /// [`HealthChecker::start`].
    pub fn new(
        name: &str,
        targets: &[Target],
        settings: HealthSettings,
        metrics: &Metrics,
    ) -> Arc<HealthChecker> {
        let targets = targets
            .iter()
            .map(|t| {
                let mut headers = HeaderMap::with_capacity(3);
                headers.insert(header::HOST, t.host_header.clone());
                headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                let mut request = Vec::new();
                encode_request_head(
                    &Method::GET,
                    &settings.path,
                    &headers,
                    RequestFraming::None,
                    &mut request,
                );
                ProbeTarget {
                    url: Arc::clone(&t.url),
                    connect: ConnectTarget {
                        address: connect_address(&t.scheme, &t.authority),
                        // The name was checked when the config was built.
                        tls_name: settings
                            .tls
                            .as_ref()
                            .filter(|_| t.scheme == http::uri::Scheme::HTTPS)
                            .and_then(|tls| tls.server_name_for(t.authority.host()).ok()),
                    },
                    request: request.into(),
                    state: TargetHealth::new(),
                    metrics: metrics.target_health(name, &t.url),
                }
            })
            .collect();
        Arc::new(HealthChecker {
            shared: Arc::new(Shared {
                upstream: name.into(),
                settings,
                targets,
            }),
            task: BackgroundTask::default(),
        })
    }

    /// Whether target `index` is in the rotation. One relaxed atomic load.
    pub fn is_healthy(&self, index: usize) -> bool {
        self.shared
            .targets
            .get(index)
            .is_none_or(|t| t.state.healthy.load(Ordering::Relaxed))
    }

    /// The settings the checker runs with.
    pub fn settings(&self) -> &HealthSettings {
        &self.shared.settings
    }

    /// Starts the probing task on the current Tokio runtime; later calls do nothing. Called
    /// when a snapshot goes live, never by `check` or `explain`.
    pub fn start(self: &Arc<Self>) {
        self.task.start(|stopped| {
            for target in self.shared.targets.iter() {
                target
                    .metrics
                    .set_healthy(target.state.healthy.load(Ordering::Relaxed));
            }
            probe_loop(Arc::clone(&self.shared), stopped)
        });
    }

    #[cfg(test)]
    fn shared(&self) -> std::sync::Weak<Shared> {
        Arc::downgrade(&self.shared)
    }
}

/// Starts the checks of every upstream that has them (a checker kept across a reload is
/// already running and stays as it is). Needs a Tokio runtime.
pub fn start_all(upstreams: &[Arc<super::Upstream>]) {
    for checker in upstreams.iter().filter_map(|u| u.health.as_ref()) {
        checker.start();
    }
}

/// Up to a quarter of `interval` before the first round, so upstreams configured alike (or
/// gateways started together) do not probe in lockstep.
fn first_delay(interval: Duration) -> Duration {
    let quarter = u64::try_from((interval / 4).as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=quarter))
}

/// Probes every target each `interval` until `stopped` fires (the checker was dropped).
async fn probe_loop(shared: Arc<Shared>, mut stopped: StopSignal) {
    let settings = &shared.settings;
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + first_delay(settings.interval),
        settings.interval,
    );
    // A round late by a stalled runtime is not made up with a burst of rounds.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => return,
            _ = ticks.tick() => {}
        }
        let round = futures_util::future::join_all(shared.targets.iter().map(|target| async {
            let result = probe(target, settings).await;
            note(&shared, target, result);
        }));
        tokio::select! {
            biased;
            _ = &mut stopped => return,
            _ = round => {}
        }
    }
}

/// Counts one probe's result, and logs and exports a change of state.
fn note(shared: &Shared, target: &ProbeTarget, result: Result<(), ProbeFailure>) {
    target.metrics.probed(result.is_ok());
    let upstream = &*shared.upstream;
    if let Err(failure) = &result {
        tracing::debug!(upstream, target = %target.url, reason = %failure, "health probe failed");
    }
    match target.state.record(result.is_ok(), &shared.settings) {
        None => {}
        Some(Transition::Unhealthy) => {
            target.metrics.set_healthy(false);
            let reason = result.err().map(|f| f.to_string()).unwrap_or_default();
            tracing::warn!(
                upstream,
                target = %target.url,
                reason,
                failures = shared.settings.unhealthy_threshold,
                "upstream target failed its health checks; out of rotation"
            );
        }
        Some(Transition::Healthy) => {
            target.metrics.set_healthy(true);
            tracing::info!(
                upstream,
                target = %target.url,
                reason = "passed its health checks",
                successes = shared.settings.healthy_threshold,
                "upstream target healthy again; back in rotation"
            );
        }
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
enum ProbeFailure {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("connection failed: {0}")]
    Io(std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before a response head")]
    Closed,
    #[error("response head larger than {MAX_PROBE_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("status {0}")]
    Status(u16),
}

/// One probe of `target`: connect, send, read the head, all within `timeout`.
async fn probe(target: &ProbeTarget, settings: &HealthSettings) -> Result<(), ProbeFailure> {
    let exchange = async {
        let mut stream = connect(&target.connect, settings.tls.as_deref())
            .await
            .map_err(|e| ProbeFailure::Connect(e.into()))?;
        stream
            .write_all(&target.request)
            .await
            .map_err(ProbeFailure::Io)?;
        // A TLS stream may hold the request's records back until flushed.
        stream.flush().await.map_err(ProbeFailure::Io)?;
        let status = read_status(&mut stream, MAX_PROBE_HEAD_BYTES).await?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(ProbeFailure::Status(status))
        }
    };
    tokio::time::timeout(settings.timeout, exchange)
        .await
        .unwrap_or(Err(ProbeFailure::Timeout(settings.timeout)))
}

/// Reads a response head of at most `cap` bytes from `io` and returns its status; the body is
/// never read (the connection is closed after the head).
async fn read_status<R: AsyncRead + Unpin>(io: &mut R, cap: usize) -> Result<u16, ProbeFailure> {
    let mut buf = BytesMut::with_capacity(cap);
    loop {
        if let Some(head) = parse_response_head(&mut buf, &Method::GET)? {
            return Ok(head.status.as_u16());
        }
        let room = cap.saturating_sub(buf.len());
        if room == 0 {
            return Err(ProbeFailure::HeadTooLarge);
        }
        // `take` keeps the buffer, and so what a target can make us hold, within `cap`.
        let read = (&mut *io)
            .take(u64::try_from(room).unwrap_or(u64::MAX))
            .read_buf(&mut buf)
            .await
            .map_err(ProbeFailure::Io)?;
        if read == 0 {
            return Err(ProbeFailure::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::net::TcpListener;

    fn settings(healthy: u32, unhealthy: u32) -> HealthSettings {
        HealthSettings {
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
            ..HealthSettings::default()
        }
    }

    #[test]
    fn thresholds_take_a_target_out_and_bring_it_back() {
        let s = settings(2, 3);
        let t = TargetHealth::new();
        assert!(t.healthy.load(Ordering::Relaxed), "targets start healthy");
        assert_eq!(t.record(false, &s), None);
        assert_eq!(t.record(false, &s), None, "unhealthy_threshold - 1");
        assert_eq!(t.record(true, &s), None, "a success breaks the run");
        assert_eq!(t.record(false, &s), None);
        assert_eq!(t.record(false, &s), None);
        assert!(t.healthy.load(Ordering::Relaxed));
        assert_eq!(t.record(false, &s), Some(Transition::Unhealthy));
        assert!(!t.healthy.load(Ordering::Relaxed));
        assert_eq!(t.record(false, &s), None, "already out");
        assert_eq!(t.record(true, &s), None, "healthy_threshold - 1");
        assert_eq!(t.record(false, &s), None, "a failure breaks the run");
        assert_eq!(t.record(true, &s), None);
        assert!(!t.healthy.load(Ordering::Relaxed));
        assert_eq!(t.record(true, &s), Some(Transition::Healthy));
        assert!(t.healthy.load(Ordering::Relaxed));
        assert_eq!(t.record(true, &s), None);
    }

    #[test]
    fn thresholds_of_one_switch_on_every_disagreeing_result() {
        let s = settings(1, 1);
        let t = TargetHealth::new();
        assert_eq!(t.record(false, &s), Some(Transition::Unhealthy));
        assert_eq!(t.record(true, &s), Some(Transition::Healthy));
    }

    #[test]
    fn paths_are_origin_form() {
        for good in ["/", "/health", "/status?deep=1", "/a%20b"] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("health", "must start with `/`"),
            ("http://x/health", "must start with `/`"),
            ("*", "must start with `/`"),
            ("/a b", "visible ASCII"),
            ("/a#b", "visible ASCII without `#`"),
            ("/\u{e9}", "visible ASCII"),
            ("/a\r\nx: y", "visible ASCII"),
        ] {
            let err = check_path(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
        assert_eq!(check_path(&long), Ok(()));
        assert!(check_path(&format!("{long}a"))
            .unwrap_err()
            .contains("longer"));
    }

    /// A head of exactly `len` bytes with status 204.
    fn head_of(len: usize) -> Vec<u8> {
        let start = b"HTTP/1.1 204 No Content\r\nx: ";
        let end = b"\r\n\r\n";
        let mut head = start.to_vec();
        head.resize(len - end.len(), b'a');
        head.extend_from_slice(end);
        assert_eq!(head.len(), len);
        head
    }

    #[tokio::test]
    async fn a_probe_reads_a_head_of_at_most_the_cap() {
        for len in [MAX_PROBE_HEAD_BYTES - 1, MAX_PROBE_HEAD_BYTES] {
            let head = head_of(len);
            let status = read_status(&mut &head[..], MAX_PROBE_HEAD_BYTES).await;
            assert_eq!(status.unwrap(), 204, "{len}");
        }
        // One byte over: refused once the cap is read, whatever follows.
        let mut over = head_of(MAX_PROBE_HEAD_BYTES + 1);
        over.extend_from_slice(&[b'z'; 100_000]);
        let mut reader = &over[..];
        let failure = read_status(&mut reader, MAX_PROBE_HEAD_BYTES).await;
        assert!(
            matches!(failure, Err(ProbeFailure::HeadTooLarge)),
            "{failure:?}"
        );
        assert_eq!(
            over.len() - reader.len(),
            MAX_PROBE_HEAD_BYTES,
            "reads stop at the cap"
        );
        // A head in pieces, a body never read, an early close, and garbage.
        let split = b"HTTP/1.1 302 Found\r\nlocation: /x\r\n\r\nbody".to_vec();
        assert_eq!(read_status(&mut &split[..], 64).await.unwrap(), 302);
        let cut = b"HTTP/1.1 200 OK\r\nx: y\r\n".to_vec();
        assert!(matches!(
            read_status(&mut &cut[..], 64).await,
            Err(ProbeFailure::Closed)
        ));
        let junk = b"SSH-2.0-OpenSSH\r\n\r\n".to_vec();
        assert!(matches!(
            read_status(&mut &junk[..], 64).await,
            Err(ProbeFailure::Protocol(_))
        ));
    }

    /// A target that answers every probe with `status` after `delay`, counting them.
    async fn target(status: u16, delay: Duration) -> (Target, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let probes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&probes);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = vec![0u8; 1024];
                    let _ = stream.read(&mut request).await;
                    tokio::time::sleep(delay).await;
                    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        let (scheme, authority) = super::super::parse_target(&url).unwrap();
        let target = Target {
            url: url.as_str().into(),
            host_header: HeaderValue::from_str(authority.as_str()).unwrap(),
            scheme,
            authority,
            weight: 1,
        };
        (target, probes)
    }

    fn quick(healthy: u32, unhealthy: u32) -> HealthSettings {
        HealthSettings {
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(200),
            ..settings(healthy, unhealthy)
        }
    }

    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn failing_and_slow_targets_leave_and_the_task_ends_with_the_checker() {
        let (ok, ok_probes) = target(204, Duration::ZERO).await;
        let (failing, _) = target(503, Duration::ZERO).await;
        let (slow, _) = target(200, Duration::from_secs(5)).await;
        let metrics = Metrics::new();
        let checker = HealthChecker::new("u", &[ok, failing, slow], quick(1, 2), &metrics);
        checker.start();
        checker.start();
        wait_until("failing and slow targets out", || {
            !checker.is_healthy(1) && !checker.is_healthy(2)
        })
        .await;
        assert!(checker.is_healthy(0));
        let text = metrics.encode();
        assert!(text.contains(r#"gatehouse_upstream_target_healthy{upstream="u",target="#));
        assert!(text.contains(r#"result="failed"} "#), "{text}");

        let shared = checker.shared();
        drop(checker);
        wait_until("the task ended", || shared.upgrade().is_none()).await;
        let after = ok_probes.load(Ordering::SeqCst);
        // Several intervals later, nothing more was probed.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(ok_probes.load(Ordering::SeqCst), after);
    }

    #[tokio::test]
    async fn probes_send_the_configured_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (scheme, authority) = super::super::parse_target(&url).unwrap();
        let target = Target {
            url: url.as_str().into(),
            host_header: HeaderValue::from_str(authority.as_str()).unwrap(),
            scheme,
            authority: authority.clone(),
            weight: 1,
        };
        let s = HealthSettings {
            path: "/ready?x=1".into(),
            ..quick(1, 1)
        };
        let checker = HealthChecker::new("u", &[target], s, &Metrics::new());
        checker.start();
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1);
            request.push(byte[0]);
        }
        let request = String::from_utf8(request).unwrap();
        assert!(
            request.starts_with("GET /ready?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains(&format!("host: {authority}\r\n")),
            "{request}"
        );
        assert!(request.contains("user-agent: gatehouse-health-check\r\n"));
        assert!(request.contains("connection: close\r\n"));
    }

    #[test]
    fn the_first_round_waits_at_most_a_quarter_interval() {
        for _ in 0..100 {
            assert!(first_delay(Duration::from_secs(4)) <= Duration::from_secs(1));
        }
        assert_eq!(first_delay(Duration::from_millis(3)), Duration::ZERO);
    }
}
