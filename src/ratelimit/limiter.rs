//! The limits of one snapshot applied to one request: which store decides, and what
//! `on_store_error` does while that store cannot.
//!
//! The memory store is one per process (held in the registries, so a reload keeps its
//! buckets; a changed limit has another namespace and so fresh buckets). A Redis store decides
//! over the worker's connection of its `redis:` setting ([`RedisClients`], shared with the
//! worker's other Redis stores), made on that worker the first time it is needed, so
//! decisions pipeline on the worker's own runtime without crossing threads.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::gcra::Decision;
use super::{MemoryStore, OnStoreError, RateLimit, RateLimitSettings, RedisStore, StoreKind};
use crate::observability::metrics::StoreMetrics;
use crate::per_worker::PerWorker;
use crate::redis::RedisClients;

/// Whom one request is counted as, without copying or formatting: the address, a borrowed
/// value (JWT `sub` or a header), or the route's one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey<'a> {
    /// The client address.
    Ip(IpAddr),
    /// A JWT `sub` or a header value.
    Value(&'a [u8]),
    /// The route's one shared bucket.
    Route,
}

/// The longest key bytes held on the stack for a Redis key; longer values are digested there.
const INLINE: usize = 66;

/// A [`ClientKey`] as the bytes that name its Redis bucket: `ip-ADDR`, `v-VALUE` or `route`,
/// so a header whose value is someone's address never shares that address's bucket.
struct KeyBytes<'a> {
    inline: [u8; INLINE],
    len: usize,
    long: Option<&'a [u8]>,
}

impl<'a> KeyBytes<'a> {
    fn of(key: ClientKey<'a>) -> Self {
        use std::io::Write;
        let mut bytes = KeyBytes {
            inline: [0; INLINE],
            len: 0,
            long: None,
        };
        let mut cursor = std::io::Cursor::new(&mut bytes.inline[..]);
        let written = match key {
            ClientKey::Ip(ip) => write!(cursor, "ip-{ip}").is_ok(),
            ClientKey::Value(value) if value.len() + 2 <= INLINE => cursor
                .write_all(b"v-")
                .and_then(|()| cursor.write_all(value))
                .is_ok(),
            // Longer than any inline key, so its digest cannot name an inline key's bucket.
            ClientKey::Value(value) => {
                bytes.long = Some(value);
                false
            }
            ClientKey::Route => cursor.write_all(b"route").is_ok(),
        };
        if written {
            bytes.len = usize::try_from(cursor.position()).unwrap_or(0);
        }
        bytes
    }

    fn as_bytes(&self) -> &[u8] {
        self.long.unwrap_or(&self.inline[..self.len])
    }
}

/// What a store's failure leaves a request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A decision, from the configured store or from the local fallback.
    Decided(Decision),
    /// No decision: the store failed and `on_store_error: allow` lets the request through.
    Unlimited,
    /// No decision: the store failed and `on_store_error: deny` refuses the request.
    Unavailable,
}

/// A Redis store's health, as the last decisions found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    /// No decision was asked of it yet.
    Unknown = 0,
    /// The last decision was answered.
    Up = 1,
    /// The last decision failed; `on_store_error` answers until one succeeds.
    Down = 2,
}

/// One worker's store, over that worker's connection.
struct WorkerStore {
    store: RedisStore,
    /// Whether its last decision failed.
    down: AtomicBool,
}

/// The Redis rate-limit stores of one `redis:` setting: one per worker, each deciding over
/// that worker's connection in `clients`.
///
/// The connections are shared with the worker's other Redis stores; what stays here is what
/// the rate limiter makes of them: its batching (the script and its queue), its health as its
/// own decisions found it, its metrics and its log lines, which say what `on_store_error` does
/// while Redis fails.
pub struct SharedStore {
    clients: Arc<RedisClients>,
    stores: PerWorker<WorkerStore>,
    state: AtomicU8,
    /// Workers whose last decision failed.
    down_workers: AtomicUsize,
    metrics: StoreMetrics,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("target", &self.clients.settings().target)
            .field("state", &self.state())
            .finish()
    }
}

impl SharedStore {
    /// Stores over `clients`; nothing connects until a worker first needs its connection.
    pub fn new(clients: Arc<RedisClients>, metrics: StoreMetrics) -> Self {
        clients.preload(&super::redis::script());
        SharedStore {
            clients,
            stores: PerWorker::new(),
            state: AtomicU8::new(StoreState::Unknown as u8),
            down_workers: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Health as the last decision found it.
    pub fn state(&self) -> StoreState {
        match self.state.load(Ordering::Relaxed) {
            1 => StoreState::Up,
            2 => StoreState::Down,
            _ => StoreState::Unknown,
        }
    }

    /// Records the outcome of a decision on `worker`'s connection. The store is down while
    /// any worker's connection fails, so workers reconnecting one after another make one
    /// outage: it is logged and published once when it starts and once when it ends.
    fn note(&self, worker: &WorkerStore, up: bool, on_store_error: OnStoreError) {
        self.mark(worker, up, on_store_error);
        if up && self.down_workers.load(Ordering::Relaxed) > 0 {
            self.clear_reconnected(on_store_error);
        }
    }

    /// Records `worker`'s state, and the store's when it changes.
    fn mark(&self, worker: &WorkerStore, up: bool, on_store_error: OnStoreError) {
        if worker.down.load(Ordering::Relaxed) != up {
            // No change for this worker; a first answer still tells the state.
            if up && self.state.load(Ordering::Relaxed) == StoreState::Unknown as u8 {
                self.state.store(StoreState::Up as u8, Ordering::Relaxed);
                self.metrics.set_up(true);
            }
            return;
        }
        if worker.down.swap(!up, Ordering::Relaxed) != up {
            return;
        }
        if up {
            if self.down_workers.fetch_sub(1, Ordering::Relaxed) == 1 {
                self.state.store(StoreState::Up as u8, Ordering::Relaxed);
                self.metrics.set_up(true);
                tracing::info!(target: "gatehouse::ratelimit", "redis rate-limit store recovered; shared limiting resumed");
            }
        } else if self.down_workers.fetch_add(1, Ordering::Relaxed) == 0 {
            self.state.store(StoreState::Down as u8, Ordering::Relaxed);
            self.metrics.set_up(false);
            let mode = match on_store_error {
                OnStoreError::Local => "local: limiting per instance",
                OnStoreError::Allow => "allow: requests pass unlimited",
                OnStoreError::Deny => "deny: requests get 503",
            };
            tracing::warn!(target: "gatehouse::ratelimit", on_store_error = mode, "redis rate-limit store unavailable");
        }
    }
}

impl SharedStore {
    /// Marks up the other workers whose connections came back in the background: a worker
    /// that no request reached since its last failure would otherwise keep the store down.
    fn clear_reconnected(&self, on_store_error: OnStoreError) {
        for other in self.stores.iter() {
            if other.down.load(Ordering::Relaxed) && other.store.is_connected() {
                self.mark(other, true, on_store_error);
            }
        }
    }
}

/// The stores one snapshot decides its limits in.
#[derive(Debug)]
pub struct Limiter {
    memory: Arc<MemoryStore>,
    redis: Option<Arc<SharedStore>>,
    on_store_error: OnStoreError,
}

impl Limiter {
    /// Limits kept in `memory`, or in `redis` when the settings say so.
    pub fn new(
        settings: RateLimitSettings,
        memory: Arc<MemoryStore>,
        redis: Option<Arc<SharedStore>>,
    ) -> Self {
        Limiter {
            memory,
            redis: redis.filter(|_| settings.store == StoreKind::Redis),
            on_store_error: settings.on_store_error,
        }
    }

    /// The Redis stores, when limits are kept in Redis.
    pub fn redis(&self) -> Option<&Arc<SharedStore>> {
        self.redis.as_ref()
    }

    /// What a failing store makes of requests.
    pub fn on_store_error(&self) -> OnStoreError {
        self.on_store_error
    }

    /// Decides one request by `limit` for `key`. Never waits for a reconnect: without a
    /// connection the store fails at once and `on_store_error` answers.
    pub async fn check(&self, limit: &RateLimit, key: ClientKey<'_>) -> Verdict {
        let Some(shared) = &self.redis else {
            return Verdict::Decided(self.memory.check(limit, &key));
        };
        // A worker's first connection is being made: its first requests wait for it, up to
        // `connect_timeout`, rather than all starting in fallback.
        let conn = shared.clients.connected().await;
        let worker = shared.stores.get_or_init(|| WorkerStore {
            store: RedisStore::on(conn.clone()),
            down: AtomicBool::new(false),
        });
        let store = &worker.store;
        let bytes = KeyBytes::of(key);
        let started = Instant::now();
        let error = match store.check(limit, bytes.as_bytes()).await {
            Ok(decision) => {
                shared.metrics.command(started.elapsed());
                shared.note(worker, true, self.on_store_error);
                return Verdict::Decided(decision);
            }
            Err(error) => error,
        };
        if !matches!(error, super::StoreError::Disconnected) {
            shared.metrics.command(started.elapsed());
        }
        shared.metrics.error(error.kind());
        shared.note(worker, false, self.on_store_error);
        match self.on_store_error {
            OnStoreError::Local => Verdict::Decided(self.memory.check(limit, &key)),
            OnStoreError::Allow => Verdict::Unlimited,
            OnStoreError::Deny => Verdict::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_keys_keep_addresses_and_values_apart() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(KeyBytes::of(ClientKey::Ip(ip)).as_bytes(), b"ip-10.0.0.1");
        assert_eq!(
            KeyBytes::of(ClientKey::Value(b"ip-10.0.0.1")).as_bytes(),
            b"v-ip-10.0.0.1"
        );
        assert_eq!(KeyBytes::of(ClientKey::Route).as_bytes(), b"route");
        let v6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        let text = format!("ip-{v6}");
        assert_eq!(KeyBytes::of(ClientKey::Ip(v6)).as_bytes(), text.as_bytes());
        // At the inline bound, and one past it.
        let value = vec![b'a'; INLINE - 2];
        assert_eq!(
            KeyBytes::of(ClientKey::Value(&value)).as_bytes().len(),
            INLINE
        );
        let value = vec![b'a'; INLINE - 1];
        assert_eq!(
            KeyBytes::of(ClientKey::Value(&value)).as_bytes(),
            &value[..]
        );
    }
}
