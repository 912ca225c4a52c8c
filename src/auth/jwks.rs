//! `jwt.providers.NAME.jwks_url`: keys fetched from the identity provider and kept fresh.
//!
//! One [`RemoteJwks`] per provider holds the fetched [`JwksKeys`] and runs one background task
//! that refetches them:
//!
//! - on a schedule: `jwks_refresh` when configured, else the response's `Cache-Control: max-age`
//!   clamped to [`MIN_MAX_AGE`]..=[`MAX_MAX_AGE`], else [`DEFAULT_REFRESH`];
//! - when a token names a `kid` the set lacks (the IdP may have rotated), at most once per
//!   [`UNKNOWN_KID_MIN_GAP`], so a flood of made-up kids cannot make the gateway hammer the IdP;
//! - after a failure, sooner: [`FIRST_RETRY`], doubling, up to the normal interval.
//!
//! A failed fetch (network, timeout, non-200, bad JSON, no usable key, over 1 MiB) keeps the last
//! good set: tokens signed with known keys keep verifying while the IdP is down.
//!
//! The config registry hands the same `RemoteJwks` to every reload whose provider settings are
//! unchanged, so a reload neither loses the keys nor starts a second task. The task holds only a
//! `Weak` and ends when the last snapshot using it is gone.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use tokio::sync::watch;
use tokio::time::Instant;

use super::jwks_fetch::{Fetcher, JwksUrl, FETCH_TIMEOUT};
use super::jwt::JwksKeys;
use crate::background::{BackgroundTask, StopSignal};
use crate::observability::metrics::JwksMetrics;

/// Refresh interval when neither `jwks_refresh` nor a `max-age` says otherwise.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10 * 60);
/// A `max-age` below this is raised to it: an IdP sending `no-cache` or `max-age=0` must not
/// turn the gateway into a polling loop.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(60);
/// A `max-age` above this is lowered to it, so a rotation is picked up within a day at worst.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Least time between two fetches caused by unknown kids, per provider.
pub const UNKNOWN_KID_MIN_GAP: Duration = Duration::from_secs(30);
/// Delay before the first retry after a failed fetch; doubles per failure, up to the interval.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Shortest and longest `jwks_refresh` accepted in config.
pub const REFRESH_RANGE: (Duration, Duration) = (Duration::from_secs(1), MAX_MAX_AGE);

/// What a provider's remote key set is made from; a reload with equal settings keeps the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwksSettings {
    /// Where the JWKS is fetched from.
    pub url: JwksUrl,
    /// The provider's algorithms: keys serving none of them are not kept.
    pub algorithms: Vec<Algorithm>,
    /// `jwks_refresh`: a fixed interval instead of the response's `max-age`.
    pub refresh: Option<Duration>,
}

/// A provider's fetched key set and its refresher.
pub struct RemoteJwks {
    name: String,
    settings: RemoteJwksSettings,
    keys: Arc<JwksKeys>,
    fetcher: Fetcher,
    metrics: JwksMetrics,
    /// The refresher; dropping `RemoteJwks` ends it, even while it sleeps until a refresh due
    /// in hours.
    task: BackgroundTask,
    /// Becomes true once the first fetch attempt has finished, successful or not.
    first_attempt: watch::Sender<bool>,
    /// Why keys were skipped in the last fetch, so the same reasons are not logged every time.
    last_skipped: Mutex<Vec<String>>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("provider", &self.name)
            .field("url", &self.settings.url.to_string())
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    /// An empty key set for provider `name`; nothing is fetched until [`RemoteJwks::start`].
    pub fn new(name: &str, settings: RemoteJwksSettings, metrics: JwksMetrics) -> Arc<RemoteJwks> {
        Self::with_fetcher(name, settings, metrics, Fetcher::default())
    }

    /// As [`RemoteJwks::new`], trusting what `fetcher` trusts (tests use their own CA).
    pub fn with_fetcher(
        name: &str,
        settings: RemoteJwksSettings,
        metrics: JwksMetrics,
        fetcher: Fetcher,
    ) -> Arc<RemoteJwks> {
        Arc::new(RemoteJwks {
            name: name.to_string(),
            keys: Arc::new(JwksKeys::empty(&settings.algorithms)),
            settings,
            fetcher,
            metrics,
            task: BackgroundTask::default(),
            first_attempt: watch::Sender::new(false),
            last_skipped: Mutex::new(Vec::new()),
        })
    }

    /// The key set providers verify with.
    pub fn keys(&self) -> &Arc<JwksKeys> {
        &self.keys
    }

    /// The URL keys come from.
    pub fn url(&self) -> &JwksUrl {
        &self.settings.url
    }

    /// Starts the refresher task, which fetches at once; later calls do nothing. Needs a Tokio
    /// runtime. Called when a snapshot goes live, never by `check` or `explain`.
    pub fn start(self: &Arc<Self>) {
        self.task.start(|stopped| {
            self.metrics.set_keys(self.keys.len());
            refresh_loop(Arc::downgrade(self), Arc::clone(&self.keys), stopped)
        });
    }

    /// Waits until the first fetch attempt has finished, at most `limit`. Returns whether it
    /// did; the keys may still be empty if it failed.
    pub async fn first_attempt_done(&self, limit: Duration) -> bool {
        let mut done = self.first_attempt.subscribe();
        tokio::time::timeout(limit, done.wait_for(|done| *done))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Fetches once now and replaces the keys on success; returns the number of keys, or why
    /// not. The refresher calls this; so does `gatehouse explain`, which starts no task.
    pub async fn fetch_now(&self) -> Result<usize, String> {
        self.refresh().await.map(|(count, _)| count)
    }

    /// One fetch: on success the keys and the interval until the next scheduled fetch.
    async fn refresh(&self) -> Result<(usize, Duration), String> {
        let url = &self.settings.url;
        let result = match self.fetcher.get(url, FETCH_TIMEOUT).await {
            Ok(fetched) => self
                .keys
                .replace(&fetched.body)
                .map(|(count, skipped)| (count, skipped, fetched.max_age)),
            Err(e) => Err(e.to_string()),
        };
        let outcome = match result {
            Ok((count, skipped, max_age)) => {
                self.metrics.refreshed(true);
                self.metrics.set_keys(count);
                self.log_skipped(skipped);
                let interval = self.interval(max_age);
                tracing::debug!(
                    provider = %self.name,
                    url = %url,
                    keys = count,
                    next_in = ?interval,
                    "jwks fetched"
                );
                Ok((count, interval))
            }
            Err(error) => {
                self.metrics.refreshed(false);
                tracing::warn!(
                    provider = %self.name,
                    url = %url,
                    keys_kept = self.keys.len(),
                    error = %error,
                    "jwks fetch failed; keeping the last good keys"
                );
                Err(error)
            }
        };
        self.first_attempt.send_replace(true);
        outcome
    }

    /// The scheduled interval after a successful fetch.
    fn interval(&self, max_age: Option<Duration>) -> Duration {
        match (self.settings.refresh, max_age) {
            (Some(fixed), _) => fixed,
            (None, Some(max_age)) => max_age.clamp(MIN_MAX_AGE, MAX_MAX_AGE),
            (None, None) => DEFAULT_REFRESH,
        }
    }

    /// The wait after `failures` failed fetches in a row (at least 1).
    fn retry_after(&self, failures: u32) -> Duration {
        let cap = self.settings.refresh.unwrap_or(DEFAULT_REFRESH);
        FIRST_RETRY
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(cap)
    }

    fn log_skipped(&self, skipped: Vec<String>) {
        let mut last = self.last_skipped.lock().unwrap_or_else(|p| p.into_inner());
        if *last != skipped {
            for reason in &skipped {
                tracing::warn!(provider = %self.name, "jwks: {reason}");
            }
            *last = skipped;
        }
    }
}

/// The refresher: waits for the next scheduled time or an unknown-kid notification (rate
/// limited), fetches, and repeats until the `RemoteJwks` is gone.
async fn refresh_loop(remote: Weak<RemoteJwks>, keys: Arc<JwksKeys>, mut stopped: StopSignal) {
    let mut next = Instant::now();
    let mut failures = 0u32;
    let mut last_unknown_fetch: Option<Instant> = None;
    let mut pending_unknown = false;
    loop {
        let unknown_due = pending_unknown
            .then(|| last_unknown_fetch.map_or_else(Instant::now, |t| t + UNKNOWN_KID_MIN_GAP));
        let wake = unknown_due.map_or(next, |due| due.min(next));
        tokio::select! {
            biased;
            _ = &mut stopped => return,
            _ = keys.unknown_kid().notified(), if !pending_unknown => {
                pending_unknown = true;
                continue;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if unknown_due.is_some_and(|due| due <= now) {
            last_unknown_fetch = Some(now);
        }
        // Any fetch answers the kids seen so far.
        pending_unknown = false;
        let Some(this) = remote.upgrade() else {
            return;
        };
        next = match this.refresh().await {
            Ok((_, interval)) => {
                failures = 0;
                Instant::now() + interval
            }
            Err(_) => {
                failures = failures.saturating_add(1);
                Instant::now() + this.retry_after(failures)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::metrics::Metrics;

    fn remote(refresh: Option<Duration>, url: &str) -> Arc<RemoteJwks> {
        let settings = RemoteJwksSettings {
            url: JwksUrl::parse(url).unwrap(),
            algorithms: vec![Algorithm::ES256],
            refresh,
        };
        RemoteJwks::new("idp", settings, Metrics::new().jwks("idp"))
    }

    #[test]
    fn intervals_follow_max_age_within_clamps_unless_configured() {
        let secs = Duration::from_secs;
        let by_max_age = remote(None, "http://127.0.0.1:1/jwks");
        assert_eq!(by_max_age.interval(None), DEFAULT_REFRESH);
        assert_eq!(by_max_age.interval(Some(secs(0))), MIN_MAX_AGE);
        assert_eq!(by_max_age.interval(Some(secs(900))), secs(900));
        assert_eq!(by_max_age.interval(Some(secs(30 * 86_400))), MAX_MAX_AGE);
        let retries: Vec<Duration> = (1..=9).map(|n| by_max_age.retry_after(n)).collect();
        assert_eq!(
            retries,
            [5, 10, 20, 40, 80, 160, 320, 600, 600].map(secs).to_vec()
        );
        assert_eq!(by_max_age.retry_after(u32::MAX), DEFAULT_REFRESH);

        let fixed = remote(Some(secs(2)), "http://127.0.0.1:1/jwks");
        assert_eq!(fixed.interval(Some(secs(3600))), secs(2));
        assert_eq!(fixed.interval(None), secs(2));
        assert_eq!(fixed.retry_after(1), secs(2), "retries never wait longer");
    }

    #[tokio::test]
    async fn the_refresher_ends_with_its_key_set() {
        // Nothing listens there: the first attempt fails fast, and the task then sleeps.
        let closed = crate::test_support::RefusingPort::new();
        let remote = remote(None, &format!("http://127.0.0.1:{}/jwks", closed.port));
        remote.start();
        remote.start();
        assert!(remote.first_attempt_done(Duration::from_secs(20)).await);
        assert!(remote.keys().is_empty());
        // The task holds the key set (to wait for unknown kids) and nothing else of `remote`.
        let keys = Arc::downgrade(remote.keys());
        drop(remote);
        let deadline = Instant::now() + Duration::from_secs(20);
        while keys.upgrade().is_some() {
            assert!(Instant::now() < deadline, "the refresher did not end");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
