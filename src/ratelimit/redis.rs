//! Buckets in Redis, shared by every gatehouse instance that uses it.
//!
//! One decision is one round trip: a Lua script (run with EVALSHA; loaded when the connection
//! is made and again whenever Redis answers NOSCRIPT, after a restart or SCRIPT FLUSH) reads
//! the bucket, decides and writes it atomically, so two instances can never both spend the
//! last request. The time comes from Redis (`TIME` inside the script), so instances whose
//! clocks disagree still agree on every bucket. A bucket's key expires when the bucket is full
//! again, so Redis never fills with dead buckets.
//!
//! A store decides over one [`RedisConn`] (one per worker, whose runtime drives it, shared with
//! the worker's other Redis stores), kept up by a background task that reconnects with
//! exponential backoff. A decision never waits for that: without a connection it fails at
//! once, and with one it fails after `command_timeout` at most.
//!
//! Decisions are batched: while [`MAX_BATCHES_IN_FLIGHT`] script calls are out, the decisions
//! asked meanwhile queue and then go together, as one script call over all their keys (in a
//! Cluster, one call per key, all sent at once). A lone decision goes out at once; under load
//! one call decides many requests, which costs Redis and the client far less than a call each.
//! Each request still gets its own decision, taken in order inside one atomic script run.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::gcra::Decision;
use super::{RateLimit, StoreError};
use crate::redis::{Connection, Preload, RedisConn};

pub use crate::redis::{RedisSettings, RedisTarget, INITIAL_BACKOFF};

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

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A Redis bucket store over one connection. Clones share the connection and the queue.
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConn,
    /// Decisions for the batching task.
    queue: mpsc::Sender<Pending>,
    /// The batching task, which ends with the last clone.
    _batching: Arc<AbortOnDrop>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.conn.settings().target)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// The script every connection a Redis store decides on loads when it is made.
pub fn script() -> redis::Script {
    redis::Script::new(SCRIPT)
}

impl RedisStore {
    /// A store over a connection of its own: starts connecting in the background and returns
    /// at once; decisions fail with [`StoreError::Disconnected`] until the connection is up.
    /// Must be called on the tokio runtime that will use the store: its connection is driven
    /// there.
    pub fn start(settings: RedisSettings) -> RedisStore {
        let preload = Preload::default();
        preload.add(&script());
        RedisStore::on(RedisConn::start(settings, preload))
    }

    /// A store deciding over `conn`, which other stores may use too. Must be called on the
    /// runtime that drives `conn`.
    pub fn on(conn: RedisConn) -> RedisStore {
        let (queue, queued) = mpsc::channel(MAX_QUEUED);
        let batching = tokio::spawn(batch(conn.clone(), script(), queued));
        RedisStore {
            conn,
            queue,
            _batching: Arc::new(AbortOnDrop(batching)),
        }
    }

    /// Whether a connection is up (as far as the last command could tell).
    pub fn is_connected(&self) -> bool {
        self.conn.is_connected()
    }

    /// Why the last attempt to connect failed, while no connection is up.
    pub fn last_error(&self) -> Option<String> {
        self.conn.last_error()
    }

    /// Waits up to `within` for a connection; whether one is up.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        self.conn.wait_connected(within).await
    }

    /// Decides one request by `limit` for the client `key`: one round trip, shared with the
    /// decisions asked while it waits for its turn, all within `command_timeout`.
    pub async fn check(&self, limit: &RateLimit, key: &[u8]) -> Result<Decision, StoreError> {
        if !self.is_connected() {
            return Err(StoreError::Disconnected);
        }
        let timeout = self.conn.settings().command_timeout;
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
        if self.queue.try_send(pending).is_err() {
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

/// Takes the queued decisions and sends them as script calls, at most
/// [`MAX_BATCHES_IN_FLIGHT`] at a time, so what queues meanwhile goes out together.
async fn batch(conn: RedisConn, script: redis::Script, mut queued: mpsc::Receiver<Pending>) {
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
                    in_flight.push(decide_batch(&conn, &script, batch));
                }
            }
        }
    }
}

/// Decides `batch` in one script call (in a Cluster, one per distinct key, sent together) and
/// answers each decision.
async fn decide_batch(conn: &RedisConn, script: &redis::Script, mut batch: Vec<Pending>) {
    let current = match conn.current() {
        Ok(current) => current,
        Err(error) => {
            for pending in batch {
                let _ = pending.answer.send(Err(error.clone()));
            }
            return;
        }
    };
    if !current.is_cluster() {
        return call(&current, script, batch).await;
    }
    // A script's keys must share a slot. A stable sort keeps each key's decisions in the order
    // they were asked.
    batch.sort_by(|a, b| a.key.cmp(&b.key));
    let mut calls = Vec::new();
    while !batch.is_empty() {
        let same = batch.iter().take_while(|p| p.key == batch[0].key).count();
        let rest = batch.split_off(same);
        calls.push(call(&current, script, batch));
        batch = rest;
    }
    futures_util::future::join_all(calls).await;
}

/// One script call over `batch`'s keys on `conn`, its results (or its error) sent to each.
async fn call(conn: &Connection, script: &redis::Script, batch: Vec<Pending>) {
    let mut invocation = script.prepare_invoke();
    for pending in &batch {
        invocation
            .key(pending.key.as_str())
            .arg(pending.interval)
            .arg(pending.tolerance);
    }
    let result = match conn.invoke::<Vec<i64>>(&invocation).await {
        Ok(replies) if replies.len() == batch.len() => Ok(replies),
        Ok(replies) => Err(StoreError::Failed(format!(
            "the script answered {} decisions for {}",
            replies.len(),
            batch.len()
        ))),
        Err(error) => Err(error),
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
