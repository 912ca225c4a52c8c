//! Entries in Redis, shared by every gatehouse instance that uses it.
//!
//! A value is an entry's encoding ([`super::entry`]) or a directory's ([`super::directory`]),
//! written with `SET key value PX ttl` so Redis drops it when it is of no more use, read with
//! `GET` and removed with `DEL`: one round trip each, through the worker's Redis connection
//! that every Redis store of a `redis:` setting shares ([`crate::redis::RedisClients`]). Each
//! command takes at most `redis.command_timeout`; while Redis fails, lookups answer at once as
//! store errors (the request goes upstream, `X-Cache: BYPASS`), and the outage is logged once
//! when it starts and once when it ends.
//!
//! A value that does not decode (another format, another version, damaged) is a miss: the
//! cache never serves what it cannot read exactly.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::directory::Directory;
use super::entry::Entry;
use super::store::{CacheStoreError, Stored};
use crate::observability::metrics::StoreMetrics;
use crate::redis::{RedisClients, StoreError};

/// The health of the Redis cache as its last command found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisCacheState {
    /// Nothing asked of it yet.
    Unknown = 0,
    /// The last command was answered.
    Up = 1,
    /// The last command failed: lookups go upstream.
    Down = 2,
}

/// The Redis cache store of one `redis:` setting.
#[derive(Debug)]
pub struct RedisCache {
    clients: Arc<RedisClients>,
    max_entry_size: usize,
    state: AtomicU8,
    /// The Redis command latency histogram (shared with the rate limiter's commands).
    metrics: StoreMetrics,
}

impl RedisCache {
    /// A store over `clients`, reading bodies of at most `max_entry_size`.
    pub fn new(clients: Arc<RedisClients>, max_entry_size: usize, metrics: StoreMetrics) -> Self {
        RedisCache {
            clients,
            max_entry_size,
            state: AtomicU8::new(RedisCacheState::Unknown as u8),
            metrics,
        }
    }

    /// Health as the last command found it.
    pub fn state(&self) -> RedisCacheState {
        match self.state.load(Ordering::Relaxed) {
            1 => RedisCacheState::Up,
            2 => RedisCacheState::Down,
            _ => RedisCacheState::Unknown,
        }
    }

    /// What `key` holds, if anything this gateway can read.
    pub async fn get(&self, key: &str) -> Result<Option<Stored>, CacheStoreError> {
        let conn = self.clients.connected().await;
        let started = Instant::now();
        let value = conn.query(redis::cmd("GET").arg(key)).await;
        let value: Option<Vec<u8>> = self.noted(value, started)?;
        let Some(value) = value else {
            return Ok(None);
        };
        let value = Bytes::from(value);
        let stored = if Directory::is_directory(&value) {
            Directory::decode(&value)
                .ok()
                .map(|d| Stored::Directory(Arc::new(d)))
        } else {
            Entry::decode(&value, self.max_entry_size)
                .ok()
                .map(|e| Stored::Response(Arc::new(e)))
        };
        Ok(stored)
    }

    /// Keeps `value` under `key` until it is of no more use.
    pub async fn put(&self, key: &str, value: &Stored) -> Result<(), CacheStoreError> {
        let encoded = match value {
            Stored::Response(entry) => match entry.encode() {
                Ok(encoded) => encoded,
                // Headers past the decoder's caps: not kept, not a failure of the store.
                Err(_) => return Ok(()),
            },
            Stored::Directory(directory) => directory.encode(),
        };
        let ttl = value
            .useless_after()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if ttl.is_zero() {
            return Ok(());
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let conn = self.clients.connected().await;
        let mut set = redis::cmd("SET");
        set.arg(key).arg(&encoded[..]).arg("PX").arg(ttl_ms);
        let started = Instant::now();
        let done: Result<(), StoreError> = conn.query(&set).await;
        self.noted(done, started)
    }

    /// Drops `key`.
    pub async fn remove(&self, key: &str) -> Result<(), CacheStoreError> {
        let conn = self.clients.connected().await;
        let started = Instant::now();
        let done: Result<(), StoreError> = conn.query(redis::cmd("DEL").arg(key)).await;
        self.noted(done, started)
    }

    /// Notes how a command sent at `started` went (its latency; a change of state, logged
    /// once) and maps its error.
    fn noted<T>(
        &self,
        result: Result<T, StoreError>,
        started: Instant,
    ) -> Result<T, CacheStoreError> {
        if !matches!(result, Err(StoreError::Disconnected)) {
            self.metrics.command(started.elapsed());
        }
        let now = if result.is_ok() {
            RedisCacheState::Up
        } else {
            RedisCacheState::Down
        };
        let before = self.state.swap(now as u8, Ordering::Relaxed);
        if before != now as u8 {
            match (&result, before) {
                (Err(error), _) => {
                    tracing::warn!(target: "gatehouse::cache", %error, "redis cache unavailable; requests go upstream uncached")
                }
                (Ok(_), b) if b == RedisCacheState::Down as u8 => {
                    tracing::info!(target: "gatehouse::cache", "redis cache recovered")
                }
                _ => {}
            }
        }
        result.map_err(|e| CacheStoreError::Unavailable(e.to_string()))
    }
}
