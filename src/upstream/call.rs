//! One call to an upstream, owned in one place: admit it, pick a target (passing over ejected
//! ones), send under the deadline, wait for the answer's first body bytes, and classify the
//! outcome once. That one classification feeds the metrics, the circuit breaker, outlier
//! detection and the log line, and becomes the [`UpstreamError`] the request path maps to a
//! status. The request path only shapes the request before and the response after.
//!
//! With `retry`, the same classification decides whether to try again: a retryable outcome,
//! for a method that is retried, with the body kept, attempts and retry budget left, and time
//! left before the call's deadline, goes to another target after a jittered backoff, with the
//! same headers (and so the same `X-Request-Id`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;

use super::answer::AnswerBody;
use super::balance::InFlight;
use super::breaker::BreakerPermit;
use super::pool::{ReadTimeout, SendError};
use super::retry::{RetryOn, RetryPolicy};
use super::upgrade::UpgradeRequested;
use super::{Admitted, Upstream};
use crate::body::{caused_by, BodyTooLarge, LimitedBody, RequestBody};
use crate::http1::inbound::ClientBodyError;
use crate::observability::metrics::UpstreamOutcome;

/// The largest request body (by its Content-Length) kept in memory so that a retry can send it
/// again. A larger body, or one without a Content-Length (chunked), streams to the first target
/// only, and that request is not retried.
pub const MAX_KEPT_BODY: u64 = 64 * 1024;

/// What a call needs besides the request.
#[derive(Debug, Clone, Copy)]
pub struct CallSettings<'a> {
    /// Time allowed until response headers arrive (the route's, else the upstream's).
    pub timeout: Duration,
    /// Time allowed between two reads of the response body.
    pub read_timeout: Duration,
    /// The request's `hash_on` value, for `balance: hash`.
    pub hash_key: Option<&'a [u8]>,
    /// Whether the request's `Host` is the picked target's (else it was set already).
    pub target_host: bool,
}

/// A response whose head and first body bytes (or end) arrived.
#[derive(Debug)]
pub struct Answered {
    /// The upstream's response; its body streams on.
    pub response: Response<AnswerBody>,
    /// The target that answered, as configured.
    pub target: Arc<str>,
    /// Time from sending to the response head.
    pub elapsed: Duration,
    /// Marks that count the request in flight until the body is done.
    pub marks: CallMarks,
}

/// The in-flight marks of one call (`least_requests` per target, `max_requests` per upstream);
/// the request counts until they are dropped with the response body.
#[derive(Debug, Default)]
pub struct CallMarks {
    /// Counted at the target, under `least_requests`.
    pub in_flight: Option<InFlight>,
    /// Counted at the upstream, under `circuit_breaker.max_requests`.
    pub admitted: Option<Admitted>,
}

impl CallMarks {
    /// Whether any mark is held (most calls hold none).
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_none() && self.admitted.is_none()
    }
}

/// Why a call to an upstream gave no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// `circuit_breaker.max_requests` were already in flight; nothing was sent.
    Overloaded,
    /// The upstream's circuit breaker is open; nothing was sent.
    CircuitOpen {
        /// Until the breaker lets a trial call through.
        retry_after: Duration,
    },
    /// The upstream has no target to send to.
    NoTarget,
    /// Every target failed its active health checks; nothing was sent.
    NoHealthy,
    /// No connection could be made.
    Connect,
    /// No response head within the timeout.
    Timeout,
    /// The exchange broke before a response head.
    Failed,
    /// The response body broke before its first byte reached anyone.
    BodyFailed,
    /// The response body stayed silent for `read_timeout` before its first byte.
    BodyTimeout,
    /// The client's body passed the route's `max_request_body`.
    BodyTooLarge,
    /// The client's body was malformed or cut short: the client's fault.
    ClientBody,
}

/// A call that failed: what went wrong (which also says whether the upstream may have seen the
/// request: the kinds documented "nothing was sent" never reached it), where, and at which target.
#[derive(Debug, Clone, thiserror::Error)]
#[error("upstream {upstream}: {kind:?}")]
pub struct UpstreamError {
    /// What went wrong.
    pub kind: UpstreamErrorKind,
    /// The upstream's name.
    pub upstream: Arc<str>,
    /// The target tried last, when one was picked.
    pub target: Option<Arc<str>>,
}

/// How one attempt went, classified once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A response head arrived (and its body's first bytes, or its end).
    Answer(StatusCode),
    /// An error of the upstream's or of the client's.
    Error(UpstreamErrorKind),
}

impl Outcome {
    /// How an attempt ended.
    fn of(attempt: &Result<Response<AnswerBody>, UpstreamErrorKind>) -> Self {
        match attempt {
            Ok(response) => Outcome::Answer(response.status()),
            Err(kind) => Outcome::Error(*kind),
        }
    }

    /// What `retry.on` calls this outcome, when it can name it.
    fn retry_on(self) -> Option<RetryOn> {
        match self {
            Outcome::Answer(status) => Some(RetryOn::Status(status.as_u16())),
            Outcome::Error(UpstreamErrorKind::Connect) => Some(RetryOn::ConnectError),
            Outcome::Error(UpstreamErrorKind::Timeout) => Some(RetryOn::Timeout),
            Outcome::Error(UpstreamErrorKind::Failed) => Some(RetryOn::Reset),
            // A body that broke after its head: the upstream answered, so it acted.
            Outcome::Error(_) => None,
        }
    }

    /// Whether this counts against the target for outlier detection: connect errors, timeouts,
    /// broken exchanges and 5xx answers.
    fn target_failed(self) -> bool {
        match self {
            Outcome::Answer(status) => status.is_server_error(),
            Outcome::Error(kind) => matches!(
                kind,
                UpstreamErrorKind::Connect
                    | UpstreamErrorKind::Timeout
                    | UpstreamErrorKind::Failed
                    | UpstreamErrorKind::BodyFailed
                    | UpstreamErrorKind::BodyTimeout
            ),
        }
    }

    /// Whether this counts against the upstream for its circuit breaker: connect errors,
    /// timeouts, exchanges that broke before an answer, and the breaker's `failure_statuses`;
    /// `None` for the client's own faults, which say nothing about the upstream.
    fn upstream_failed(self, is_failure_status: impl Fn(StatusCode) -> bool) -> Option<bool> {
        match self {
            Outcome::Answer(status) => Some(is_failure_status(status)),
            Outcome::Error(UpstreamErrorKind::BodyTooLarge | UpstreamErrorKind::ClientBody) => None,
            Outcome::Error(_) => Some(true),
        }
    }

    /// The outcome label of `gatehouse_upstream_requests_total`.
    fn metric(self) -> UpstreamOutcome {
        match self {
            Outcome::Answer(_)
            | Outcome::Error(UpstreamErrorKind::BodyFailed | UpstreamErrorKind::BodyTimeout) => {
                UpstreamOutcome::Response
            }
            Outcome::Error(UpstreamErrorKind::Connect) => UpstreamOutcome::ConnectError,
            Outcome::Error(UpstreamErrorKind::Timeout) => UpstreamOutcome::Timeout,
            Outcome::Error(UpstreamErrorKind::Overloaded) => UpstreamOutcome::Overloaded,
            Outcome::Error(UpstreamErrorKind::CircuitOpen { .. }) => UpstreamOutcome::CircuitOpen,
            Outcome::Error(_) => UpstreamOutcome::Error,
        }
    }
}

impl UpstreamError {
    fn new(upstream: &Upstream, kind: UpstreamErrorKind, target: Option<usize>) -> Self {
        UpstreamError {
            kind,
            upstream: Arc::clone(&upstream.name),
            target: target.map(|i| Arc::clone(&upstream.targets[i].url)),
        }
    }
}

/// Methods a retry cannot make do something twice (RFC 9110 9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl Upstream {
    /// Calls this upstream with the request `head` (origin-form target, headers as they should
    /// arrive) and `body`.
    ///
    /// The head is lent, not given: it is only encoded (HTTP/1.1) or has its fields taken
    /// (HTTP/2), and a head moved through this future, an attempt's and the client's (on into
    /// their locals) is copied each time, copies `panic = "unwind"` builds do not elide. What
    /// is left of it is the caller's to drop.
    pub async fn call(
        &self,
        head: &mut Parts,
        body: LimitedBody,
        settings: CallSettings<'_>,
    ) -> Result<Answered, UpstreamError> {
        // Once sent, an upgrade may have switched the upstream's side already: never again.
        let upgrade = head.extensions.get::<UpgradeRequested>().is_some();
        let admitted = match &self.bulkhead {
            None => None,
            Some(bulkhead) => match bulkhead.admit() {
                Some(admitted) => Some(admitted),
                None => {
                    body.drain_rest();
                    let outcome = Outcome::Error(UpstreamErrorKind::Overloaded);
                    self.metrics.record(outcome.metric(), Duration::ZERO);
                    return Err(UpstreamError::new(
                        self,
                        UpstreamErrorKind::Overloaded,
                        None,
                    ));
                }
            },
        };
        // After the bulkhead, so a request it refuses never takes a half-open trial slot.
        let mut permit = match &self.breaker {
            None => None,
            Some(breaker) => match breaker.admit() {
                Ok(permit) => Some(permit),
                Err(open) => {
                    body.drain_rest();
                    let kind = UpstreamErrorKind::CircuitOpen {
                        retry_after: open.retry_after,
                    };
                    self.metrics
                        .record(Outcome::Error(kind).metric(), Duration::ZERO);
                    return Err(UpstreamError::new(self, kind, None));
                }
            },
        };
        let started = Instant::now();
        let deadline = started
            .checked_add(settings.timeout)
            .unwrap_or(started + FAR_FUTURE);
        if let Some(budget) = &self.retry_budget {
            budget.note_request(started);
        }
        // A request that is not retried is sent as it is, once: the common case, kept free of
        // the retry loop's state.
        let Some(policy) = self
            .retry
            .as_ref()
            .filter(|p| !upgrade && p.retries_method(&head.method) && can_keep(&body))
        else {
            let Some((target, in_flight)) = self.pick(settings.hash_key, |_| true) else {
                body.drain_rest();
                return Err(self.no_target());
            };
            let attempt = self
                .attempt(target, head, body, settings, settings.timeout)
                .await;
            let elapsed = started.elapsed();
            self.feed(target, Outcome::of(&attempt), elapsed, permit);
            let marks = CallMarks {
                in_flight,
                admitted,
            };
            return self.answered(attempt, target, elapsed, marks);
        };
        // Retried requests are sent from kept parts, rebuilt for every attempt.
        let body = match tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            read_whole(body),
        )
        .await
        {
            Ok(Ok(body)) => body,
            Ok(Err(kind)) => return Err(UpstreamError::new(self, kind, None)),
            Err(_) => {
                let kind = UpstreamErrorKind::Timeout;
                return Err(UpstreamError::new(self, kind, None));
            }
        };
        let kept = Kept {
            uri: std::mem::take(&mut head.uri),
            version: head.version,
            headers: std::mem::take(&mut head.headers),
            body,
        };
        let mut tried: Vec<usize> = Vec::new();
        let mut retries = 0u32;
        loop {
            let (mut attempt_head, attempt_body) = kept.request(&head.method);
            // Another target where one is left; the same one when every target was tried.
            let picked = self
                .pick(settings.hash_key, |i| !tried.contains(&i))
                .or_else(|| {
                    self.pick(settings.hash_key, |_| true)
                        .filter(|_| !tried.is_empty())
                });
            let Some((target, in_flight)) = picked else {
                attempt_body.drain_rest();
                return Err(self.no_target());
            };
            let attempt_started = Instant::now();
            let remaining = deadline.saturating_duration_since(attempt_started);
            // A timed-out attempt leaves time for the retries still possible after it.
            let timeout = if policy.retries_on(RetryOn::Timeout) {
                remaining / (policy.attempts - retries + 1)
            } else {
                remaining
            };
            let attempt = self
                .attempt(target, &mut attempt_head, attempt_body, settings, timeout)
                .await;
            let elapsed = attempt_started.elapsed();
            let outcome = Outcome::of(&attempt);
            self.feed(target, outcome, elapsed, permit.take());
            let retry = retries + 1;
            let wanted = retries < policy.attempts
                && outcome.retry_on().is_some_and(|on| policy.retries_on(on));
            // Each attempt is a call the breaker admits and learns from; one it refuses ends
            // the retries with this attempt's answer.
            let next_permit = match (&self.breaker, wanted) {
                (_, false) => None,
                (None, true) => Some(None),
                (Some(breaker), true) => breaker.admit().ok().map(Some),
            };
            if let Some(wait) = next_permit
                .is_some()
                .then(|| self.retry_wait(policy, retry, deadline))
                .flatten()
            {
                permit = next_permit.flatten();
                tracing::debug!(
                    upstream = %self.name,
                    target = %self.targets[target].url,
                    retry,
                    outcome = ?outcome,
                    wait_ms = wait.as_millis() as u64,
                    "retrying the request"
                );
                drop((attempt, in_flight));
                tried.push(target);
                tokio::time::sleep(wait).await;
                self.metrics.retried();
                retries = retry;
                continue;
            }
            let marks = CallMarks {
                in_flight,
                admitted,
            };
            return self.answered(attempt, target, elapsed, marks);
        }
    }

    /// The error when no target can be picked: none healthy, or none at all.
    fn no_target(&self) -> UpstreamError {
        let kind = if self.none_healthy() {
            UpstreamErrorKind::NoHealthy
        } else {
            UpstreamErrorKind::NoTarget
        };
        UpstreamError::new(self, kind, None)
    }

    /// The call's result from its last attempt.
    fn answered(
        &self,
        attempt: Result<Response<AnswerBody>, UpstreamErrorKind>,
        target: usize,
        elapsed: Duration,
        marks: CallMarks,
    ) -> Result<Answered, UpstreamError> {
        match attempt {
            Ok(response) => Ok(Answered {
                response,
                target: Arc::clone(&self.targets[target].url),
                elapsed,
                marks,
            }),
            Err(kind) => Err(UpstreamError::new(self, kind, Some(target))),
        }
    }

    /// The wait before retry number `retry`, if the retry may be made: it must start before
    /// `deadline`, and the budget must allow it (spent here; a refusal is counted).
    fn retry_wait(&self, policy: &RetryPolicy, retry: u32, deadline: Instant) -> Option<Duration> {
        let wait = policy.jittered_backoff(retry);
        let now = Instant::now();
        if now.checked_add(wait).is_none_or(|start| start >= deadline) {
            return None;
        }
        if let Some(budget) = &self.retry_budget {
            if !budget.try_spend(now) {
                self.metrics.retry_budget_exhausted();
                tracing::debug!(upstream = %self.name, "retry budget spent; not retrying");
                return None;
            }
        }
        Some(wait)
    }

    /// Feeds one attempt's outcome to everything that learns from it.
    fn feed(
        &self,
        target: usize,
        outcome: Outcome,
        elapsed: Duration,
        permit: Option<BreakerPermit>,
    ) {
        self.metrics.record(outcome.metric(), elapsed);
        if let (Some(permit), Some(breaker)) = (permit, &self.breaker) {
            // A client's fault drops the permit unfinished: no result, and a half-open trial
            // slot goes to the next request.
            if let Some(failed) = outcome.upstream_failed(|s| breaker.is_failure_status(s)) {
                permit.finish(failed);
            }
        }
        let clients_fault = matches!(
            outcome,
            Outcome::Error(UpstreamErrorKind::BodyTooLarge | UpstreamErrorKind::ClientBody)
        );
        if let (Some(outliers), false) = (&self.outliers, clients_fault) {
            if outliers.record(target, outcome.target_failed(), &self.name) {
                self.metrics.ejection();
            }
        }
    }

    /// One attempt at `target`: the response once its head and first body bytes arrived, or
    /// what went wrong (logged here, once).
    async fn attempt(
        &self,
        target: usize,
        head: &mut Parts,
        body: LimitedBody,
        settings: CallSettings<'_>,
        timeout: Duration,
    ) -> Result<Response<AnswerBody>, UpstreamErrorKind> {
        let url = &self.targets[target].url;
        if settings.target_host {
            let host = self.targets[target].host_header.clone();
            head.headers.insert(http::header::HOST, host);
        }
        let started = Instant::now();
        // The one place the protocols part: everything around the exchange is the same.
        let sent = async {
            match &self.h2 {
                None => match self
                    .pool
                    .send(target, head, body, settings.read_timeout)
                    .await
                {
                    Ok(response) => Ok(response.map(AnswerBody::H1)),
                    Err(error) => {
                        let connect = matches!(error, SendError::Connect { .. });
                        Err(self.classify_send_error(url, &error, connect, started))
                    }
                },
                Some(h2) => match h2.send(target, head, body, settings.read_timeout).await {
                    Ok(response) => Ok(response.map(|b| AnswerBody::H2(Box::new(b)))),
                    Err(error) => {
                        Err(self.classify_send_error(url, &error, error.is_connect(), started))
                    }
                },
            }
        };
        let mut response = match tokio::time::timeout(timeout, sent).await {
            Err(_) => {
                tracing::warn!(upstream = %self.name, target = %url, ?timeout, "upstream timed out");
                return Err(UpstreamErrorKind::Timeout);
            }
            Ok(Err(kind)) => return Err(kind),
            Ok(Ok(response)) => response,
        };
        // The head waits for the first body bytes (bounded by read_timeout), so a body that
        // breaks before any of it was relayed is answered with an error status instead of a
        // good head and a cut. A body that is already buffered (the usual small answer) costs
        // no wait.
        if let Err(error) = response.body_mut().wait_for_data().await {
            self.note_body_error(&*error);
            return Err(if caused_by::<ReadTimeout>(&*error) {
                UpstreamErrorKind::BodyTimeout
            } else {
                UpstreamErrorKind::BodyFailed
            });
        }
        Ok(response)
    }

    /// What a failed send (`connect`: no connection could be made) was, logged once.
    fn classify_send_error(
        &self,
        url: &str,
        error: &(dyn std::error::Error + 'static),
        connect: bool,
        started: Instant,
    ) -> UpstreamErrorKind {
        if caused_by::<BodyTooLarge>(error) {
            return UpstreamErrorKind::BodyTooLarge;
        }
        if caused_by::<ClientBodyError>(error) {
            // The client's fault (a broken chunked body, a body cut short), not the
            // upstream's; the connection closes after this answer.
            tracing::debug!(upstream = %self.name, error = %error_chain(error), "request body failed");
            return UpstreamErrorKind::ClientBody;
        }
        tracing::warn!(
            upstream = %self.name,
            target = %url,
            error = %error_chain(error),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "upstream request failed"
        );
        if connect {
            UpstreamErrorKind::Connect
        } else {
            UpstreamErrorKind::Failed
        }
    }

    /// Counts and logs a broken response body.
    pub fn note_body_error(&self, error: &(dyn std::error::Error + 'static)) {
        self.metrics.body_error();
        tracing::warn!(
            upstream = %self.name,
            error = %error_chain(error),
            "upstream response body failed"
        );
    }
}

/// Where a call's deadline is put when its timeout is too long to add to a clock reading.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a retried request is sent from, again for each attempt.
struct Kept {
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Option<Bytes>,
}

impl Kept {
    /// The head and body of one attempt.
    fn request(&self, method: &Method) -> (Parts, LimitedBody) {
        // Read whole already and within the route's limit: no limit to apply again.
        let body = LimitedBody::new(RequestBody::Kept(self.body.clone()), u64::MAX);
        let mut request = Request::new(());
        *request.method_mut() = method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        (request.into_parts().0, body)
    }
}

/// Whether `body` can be kept for a retry: none at all, or a Content-Length of at most
/// [`MAX_KEPT_BODY`].
fn can_keep(body: &LimitedBody) -> bool {
    body.is_end_stream()
        || body
            .size_hint()
            .exact()
            .is_some_and(|length| length <= MAX_KEPT_BODY)
}

/// Reads all of a body [`can_keep`] accepted; `None` for an empty one.
async fn read_whole(mut body: LimitedBody) -> Result<Option<Bytes>, UpstreamErrorKind> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut length = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            if caused_by::<BodyTooLarge>(&*error) {
                UpstreamErrorKind::BodyTooLarge
            } else {
                UpstreamErrorKind::ClientBody
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        length = length.saturating_add(data.len() as u64);
        // The framing layer holds a body to its Content-Length; this only guards the memory.
        if length > MAX_KEPT_BODY {
            return Err(UpstreamErrorKind::ClientBody);
        }
        if !data.is_empty() {
            chunks.push(data);
        }
    }
    Ok(match chunks.len() {
        0 => None,
        1 => chunks.pop(),
        _ => Some(chunks.concat().into()),
    })
}

/// An error and its causes on one line, for logs. Many errors already end their message with
/// their cause's (`connect to 10.0.0.1:80: Connection refused`); such a cause is not repeated.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_learns_from_the_upstreams_faults_only() {
        let statuses = |s: StatusCode| s == StatusCode::BAD_GATEWAY;
        let failed = |outcome: Outcome| outcome.upstream_failed(statuses);
        assert_eq!(failed(Outcome::Answer(StatusCode::BAD_GATEWAY)), Some(true));
        assert_eq!(
            failed(Outcome::Answer(StatusCode::INTERNAL_SERVER_ERROR)),
            Some(false),
            "a status not in failure_statuses"
        );
        assert_eq!(failed(Outcome::Answer(StatusCode::OK)), Some(false));
        for kind in [
            UpstreamErrorKind::Connect,
            UpstreamErrorKind::Timeout,
            UpstreamErrorKind::Failed,
            UpstreamErrorKind::BodyFailed,
            UpstreamErrorKind::BodyTimeout,
        ] {
            assert_eq!(failed(Outcome::Error(kind)), Some(true), "{kind:?}");
        }
        for kind in [
            UpstreamErrorKind::BodyTooLarge,
            UpstreamErrorKind::ClientBody,
        ] {
            assert_eq!(failed(Outcome::Error(kind)), None, "{kind:?}");
        }
    }
}
