//! Buckets in Redis, shared by every gatehouse instance that uses it.
//!
//! One decision is one round trip: a Lua script (run with EVALSHA; loaded when the connection
//! is made and again whenever Redis answers NOSCRIPT, after a restart or SCRIPT FLUSH) reads
//! the bucket, decides and writes it atomically, so two instances can never both spend the
//! last request. The time comes from Redis (`TIME` inside the script), so instances whose
//! clocks disagree still agree on every bucket. A bucket's key expires when the bucket is full
//! again, so Redis never fills with dead buckets.
//!
//! A store is one multiplexed connection (one per worker, whose runtime drives it), kept up by
//! a background task that reconnects with exponential backoff. A decision never waits for
//! that: without a connection it fails at once, and with one it fails after
//! `command_timeout` at most.
//!
//! Decisions are batched: while [`MAX_BATCHES_IN_FLIGHT`] script calls are out, the decisions
//! asked meanwhile queue and then go together, as one script call over all their keys (in a
//! Cluster, one call per key, all sent at once). A lone decision goes out at once; under load
//! one call decides many requests, which costs Redis and the client far less than a call each.
//! Each request still gets its own decision, taken in order inside one atomic script run.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisError};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use super::gcra::Decision;
use super::{RateLimit, StoreError};

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (or a proxy in front of several): `redis://` or `rediss://` (TLS).
    Url(String),
    /// The seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

/// `redis:` with defaults applied.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Where to connect.
    pub target: RedisTarget,
    /// AUTH password, when set.
    pub password: Option<String>,
    /// Time allowed to connect (TCP, TLS and handshake).
    pub connect_timeout: Duration,
    /// Time allowed for one command, from sending to the answer.
    pub command_timeout: Duration,
    /// The longest pause between two reconnect attempts.
    pub reconnect_max_backoff: Duration,
}

// The password stays out of logs and panics.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("target", &self.target)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("reconnect_max_backoff", &self.reconnect_max_backoff)
            .finish()
    }
}

/// The first pause before reconnecting; it doubles up to `reconnect_max_backoff`.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Client keys longer than this, or with bytes outside a safe set, are replaced in the Redis
/// key by a digest, so a 64 KiB header costs Redis no more than an address does.
const MAX_RAW_KEY: usize = 64;

/// Decisions asked of one store that are waiting for a script call; more are refused as
/// [`StoreError::Busy`] rather than queued without bound behind a slow Redis.
pub const MAX_QUEUED: usize = 4096;

/// The most decisions one script call takes.
const MAX_BATCH: usize = 64;

/// Script calls one store has out at once; decisions asked meanwhile wait and go together.
const MAX_BATCHES_IN_FLIGHT: usize = 2;

/// GCRA as in [`super::gcra::Gcra::decide`], in microseconds, for each key in turn (a key
/// named twice is decided twice, the second time on the first's result; it is read once and
/// written once per call, since one key is always one limit). ARGV: interval and tolerance of
/// each key. Returns one integer per key, because decoding the reply is most of a decision's
/// cost in the client: allowed, the microseconds until the bucket is full again (at least one
/// interval, so > 0); refused, minus the microseconds until it is full (more than
/// `tolerance - interval` >= 0, so < 0). The rest of the decision follows from these and the
/// limit ([`decision_of`]). Numbers are Lua doubles, exact below 2^53 µs (285 years); the TAT
/// is written with %d so it is never rounded to scientific notation.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out, tats, spent = {}, {}, {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tats[key]
  if tat == nil then tat = tonumber(redis.call('GET', key)) or now end
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat > now + tolerance then
    tats[key] = tat
    out[i] = now - tat
  else
    tats[key] = new_tat
    spent[key] = true
    out[i] = new_tat - now
  end
end
for key in pairs(spent) do
  local tat = tats[key]
  redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
end
return out
"#;

/// One decision waiting for a script call.
struct Pending {
    key: String,
    interval: u64,
    tolerance: u64,
    answer: oneshot::Sender<Result<i64, StoreError>>,
}

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

struct Shared {
    settings: RedisSettings,
    script: redis::Script,
    conn: ArcSwapOption<Conn>,
    /// Woken when the connection is found broken.
    lost: Notify,
    /// Woken when a connection is made.
    up: Notify,
    /// Decisions for the batching task.
    queue: mpsc::Sender<Pending>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A Redis bucket store over one connection. Clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
    /// The reconnecting and the batching task, which end with the last clone.
    _tasks: Arc<[AbortOnDrop; 2]>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.shared.settings.target)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl RedisStore {
    /// Starts connecting in the background and returns at once; decisions fail with
    /// [`StoreError::Disconnected`] until the connection is up. Must be called on the tokio
    /// runtime that will use the store: its connection is driven there.
    pub fn start(settings: RedisSettings) -> RedisStore {
        let (queue, queued) = mpsc::channel(MAX_QUEUED);
        let shared = Arc::new(Shared {
            settings,
            script: redis::Script::new(SCRIPT),
            conn: ArcSwapOption::empty(),
            lost: Notify::new(),
            up: Notify::new(),
            queue,
        });
        let reconnect = tokio::spawn(maintain(Arc::clone(&shared)));
        let batching = tokio::spawn(batch(Arc::clone(&shared), queued));
        RedisStore {
            shared,
            _tasks: Arc::new([AbortOnDrop(reconnect), AbortOnDrop(batching)]),
        }
    }

    /// Whether a connection is up (as far as the last command could tell).
    pub fn is_connected(&self) -> bool {
        self.shared.conn.load().is_some()
    }

    /// Waits up to `within` for a connection; whether one is up.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.up.notified();
                tokio::pin!(notified);
                // Registered before the check, so a connection made in between still wakes it.
                notified.as_mut().enable();
                if self.is_connected() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    /// Decides one request by `limit` for the client `key`: one round trip, shared with the
    /// decisions asked while it waits for its turn, all within `command_timeout`.
    pub async fn check(&self, limit: &RateLimit, key: &[u8]) -> Result<Decision, StoreError> {
        if !self.is_connected() {
            return Err(StoreError::Disconnected);
        }
        let timeout = self.shared.settings.command_timeout;
        let (interval, tolerance) = (
            limit.gcra.interval_in(1_000),
            limit.gcra.tolerance_in(1_000),
        );
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            key: bucket_key(limit, key),
            interval,
            tolerance,
            answer,
        };
        if self.shared.queue.try_send(pending).is_err() {
            return Err(StoreError::Busy(MAX_QUEUED));
        }
        let reply = match tokio::time::timeout(timeout, answered).await {
            Err(_) => return Err(StoreError::Timeout(timeout)),
            Ok(Err(_)) => return Err(StoreError::Disconnected),
            Ok(Ok(reply)) => reply?,
        };
        Ok(decision_of(
            reply,
            interval,
            tolerance,
            limit.gcra.capacity(),
        ))
    }
}

impl Shared {
    /// Drops `broken` (unless a newer connection already replaced it) and wakes the reconnect.
    fn lose(&self, broken: &Arc<Conn>) {
        let previous = self.conn.compare_and_swap(broken, None);
        if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, broken)) {
            tracing::warn!(target: "gatehouse::ratelimit", "redis connection lost; reconnecting in the background");
            self.lost.notify_one();
        }
    }
}

/// Takes the queued decisions and sends them as script calls, at most
/// [`MAX_BATCHES_IN_FLIGHT`] at a time, so what queues meanwhile goes out together.
async fn batch(shared: Arc<Shared>, mut queued: mpsc::Receiver<Pending>) {
    let mut in_flight = FuturesUnordered::new();
    let mut taken = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            // Finished calls first: each one frees room for the next batch.
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            count = queued.recv_many(&mut taken, MAX_BATCH),
                if in_flight.len() < MAX_BATCHES_IN_FLIGHT =>
            {
                if count == 0 {
                    break;
                }
                // A request that stopped waiting (its timeout passed) is not decided: its budget
                // stays unspent.
                taken.retain(|p| !p.answer.is_closed());
                if !taken.is_empty() {
                    let batch = std::mem::replace(&mut taken, Vec::with_capacity(MAX_BATCH));
                    in_flight.push(decide_batch(&shared, batch));
                }
            }
        }
    }
}

/// Decides `batch` in one script call (in a Cluster, one per distinct key, sent together) and
/// answers each decision.
async fn decide_batch(shared: &Shared, mut batch: Vec<Pending>) {
    let Some(current) = shared.conn.load_full() else {
        for pending in batch {
            let _ = pending.answer.send(Err(StoreError::Disconnected));
        }
        return;
    };
    match &*current {
        Conn::Single(c) => call(shared, &current, c.clone(), batch).await,
        Conn::Cluster(c) => {
            // A script's keys must share a slot. A stable sort keeps each key's decisions in
            // the order they were asked.
            batch.sort_by(|a, b| a.key.cmp(&b.key));
            let mut calls = Vec::new();
            while !batch.is_empty() {
                let same = batch.iter().take_while(|p| p.key == batch[0].key).count();
                let rest = batch.split_off(same);
                calls.push(call(shared, &current, c.clone(), batch));
                batch = rest;
            }
            futures_util::future::join_all(calls).await;
        }
    }
}

/// One script call over `batch`'s keys on `conn`, its results (or its error) sent to each.
async fn call<C: ConnectionLike>(
    shared: &Shared,
    current: &Arc<Conn>,
    mut conn: C,
    batch: Vec<Pending>,
) {
    let timeout = shared.settings.command_timeout;
    let mut invocation = shared.script.prepare_invoke();
    for pending in &batch {
        invocation
            .key(pending.key.as_str())
            .arg(pending.interval)
            .arg(pending.tolerance);
    }
    let result = match tokio::time::timeout(timeout, invocation.invoke_async(&mut conn)).await {
        Err(_) => Err(StoreError::Timeout(timeout)),
        // The connection's own response timeout is the same bound; the connection stays
        // usable (late answers are matched and dropped), so it is kept.
        Ok(Err(e)) if e.is_timeout() => Err(StoreError::Timeout(timeout)),
        Ok(Err(e)) => {
            if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                shared.lose(current);
            }
            Err(StoreError::Failed(e.to_string()))
        }
        Ok(Ok(replies)) => {
            let replies: Vec<i64> = replies;
            if replies.len() == batch.len() {
                Ok(replies)
            } else {
                Err(StoreError::Failed(format!(
                    "the script answered {} decisions for {}",
                    replies.len(),
                    batch.len()
                )))
            }
        }
    };
    match result {
        Ok(replies) => {
            for (pending, reply) in batch.into_iter().zip(replies) {
                let _ = pending.answer.send(Ok(reply));
            }
        }
        Err(error) => {
            for pending in batch {
                let _ = pending.answer.send(Err(error.clone()));
            }
        }
    }
}

/// The decision the script's one integer stands for (see [`SCRIPT`]), with the limit's
/// `interval` and `tolerance` in microseconds. A reply of 0 never comes from the script; it is
/// read as refused with nothing to wait for rather than trusted as an allowance.
fn decision_of(reply: i64, interval: u64, tolerance: u64, capacity: u64) -> Decision {
    let us = Duration::from_micros;
    if reply > 0 {
        let full_in = reply.unsigned_abs();
        Decision {
            allowed: true,
            limit: capacity,
            remaining: tolerance.saturating_sub(full_in) / interval,
            reset_after: us(full_in),
            retry_after: Duration::ZERO,
        }
    } else {
        let full_in = reply.unsigned_abs();
        Decision {
            allowed: false,
            limit: capacity,
            remaining: 0,
            reset_after: us(full_in),
            // new_tat - horizon = (tat - now) + interval - tolerance.
            retry_after: us((full_in + interval).saturating_sub(tolerance)),
        }
    }
}

/// `gatehouse:rl:{NAMESPACE:CLIENT}`: all of it in the hash tag, so in a Cluster the bucket's
/// slot follows from the whole name. Built by appending, not `format!`: it runs once per
/// decision.
pub fn bucket_key(limit: &RateLimit, key: &[u8]) -> String {
    const PREFIX: &str = "gatehouse:rl:{";
    const DIGEST_BYTES: usize = 16;
    let safe = key.len() <= MAX_RAW_KEY
        && key
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-' | b'_' | b'@'));
    let client_len = if safe {
        key.len()
    } else {
        1 + 2 * DIGEST_BYTES
    };
    let mut out = String::with_capacity(PREFIX.len() + limit.namespace.len() + 2 + client_len);
    out.push_str(PREFIX);
    out.push_str(&limit.namespace);
    out.push(':');
    if safe {
        // Safe bytes are ASCII.
        out.extend(key.iter().map(|&b| char::from(b)));
    } else {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = ring::digest::digest(&ring::digest::SHA256, key);
        out.push('#');
        for &b in &digest.as_ref()[..DIGEST_BYTES] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out.push('}');
    out
}

/// Keeps a connection up: connects, waits until a command finds it broken, and connects again,
/// pausing between failed attempts from [`INITIAL_BACKOFF`] doubling to the configured maximum.
async fn maintain(shared: Arc<Shared>) {
    let settings = &shared.settings;
    loop {
        let mut backoff = INITIAL_BACKOFF.min(settings.reconnect_max_backoff);
        let mut failures = 0u32;
        loop {
            let attempt = tokio::time::timeout(settings.connect_timeout, connect(&shared));
            let error = match attempt.await {
                Ok(Ok(conn)) => {
                    shared.conn.store(Some(Arc::new(conn)));
                    shared.up.notify_waiters();
                    tracing::info!(target: "gatehouse::ratelimit", "redis connected");
                    break;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no connection within {:?}", settings.connect_timeout),
            };
            if failures == 0 {
                tracing::warn!(target: "gatehouse::ratelimit", error = %error, "cannot connect to redis; retrying with backoff");
            }
            failures = failures.saturating_add(1);
            // Jitter spreads the reconnects of many workers and instances after an outage.
            let jitter = backoff.mul_f64(fastrand::f64() * 0.2);
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(settings.reconnect_max_backoff);
        }
        shared.lost.notified().await;
    }
}

async fn connect(shared: &Shared) -> Result<Conn, RedisError> {
    let s = &shared.settings;
    let mut conn = match &s.target {
        RedisTarget::Url(url) => {
            let mut info = url.as_str().into_connection_info()?;
            if let Some(password) = &s.password {
                let redis = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(redis);
            }
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(s.connect_timeout))
                .set_response_timeout(Some(s.command_timeout));
            let client = redis::Client::open(info)?;
            Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            )
        }
        RedisTarget::Cluster(nodes) => {
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.iter().cloned())
                .connection_timeout(s.connect_timeout)
                .response_timeout(s.command_timeout)
                // A failed decision is answered by `on_store_error` at once, not retried.
                .retries(0);
            if let Some(password) = &s.password {
                builder = builder.password(password);
            }
            Conn::Cluster(builder.build()?.get_async_connection().await?)
        }
    };
    // Loaded now so the first decision is one round trip; NOSCRIPT later reloads it.
    let load = shared.script.prepare_invoke();
    match &mut conn {
        Conn::Single(c) => load.load_async(c).await?,
        Conn::Cluster(c) => load.load_async(c).await?,
    };
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_integer_from_the_script_is_the_whole_decision() {
        // 10 per minute: one request every 6 s, a full bucket holds 10.
        let (interval, tolerance) = (6_000_000, 60_000_000);
        let first = decision_of(6_000_000, interval, tolerance, 10);
        assert!(first.allowed);
        assert_eq!(first.remaining, 9);
        assert_eq!(first.reset_after, Duration::from_secs(6));
        assert_eq!(first.retry_after, Duration::ZERO);
        let tenth = decision_of(60_000_000, interval, tolerance, 10);
        assert!(tenth.allowed);
        assert_eq!(tenth.remaining, 0);
        // The eleventh at once: the bucket is full in 60 s, one more request fits in 6 s.
        let eleventh = decision_of(-60_000_000, interval, tolerance, 10);
        assert!(!eleventh.allowed);
        assert_eq!(eleventh.remaining, 0);
        assert_eq!(eleventh.reset_after, Duration::from_secs(60));
        assert_eq!(eleventh.retry_after, Duration::from_secs(6));
        assert!(!decision_of(0, interval, tolerance, 10).allowed);
    }
    use crate::ratelimit::KeyKind;

    #[test]
    fn keys_are_namespaced_hash_tagged_and_bounded() {
        let limit =
            RateLimit::new("orders", KeyKind::Ip, 10, Duration::from_secs(60), 2).expect("valid");
        assert_eq!(
            bucket_key(&limit, b"10.0.0.1"),
            "gatehouse:rl:{orders:ip:10/60000ms/2:10.0.0.1}"
        );
        let user =
            RateLimit::new("orders", KeyKind::User, 10, Duration::from_secs(60), 0).expect("valid");
        let long = vec![b'a'; 65];
        let key = bucket_key(&user, &long);
        assert!(
            key.starts_with("gatehouse:rl:{orders:user:10/60000ms/0:#"),
            "{key}"
        );
        assert_eq!(
            key.len(),
            "gatehouse:rl:{orders:user:10/60000ms/0:#}".len() + 32
        );
        // Braces could move the hash tag; they are digested away.
        assert!(bucket_key(&user, b"a}b").ends_with('}'));
        assert!(!bucket_key(&user, b"a}b").contains("a}b"));
        let raw = bucket_key(&user, &long[..64]);
        assert!(raw.ends_with(&format!(":{}}}", "a".repeat(64))), "{raw}");
    }
}
