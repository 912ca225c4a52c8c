//! The cache store a snapshot uses, and what it holds: stored responses and URL directories.
//!
//! The store is held in the registries (a reload with the same store settings keeps its
//! entries), with the process's request coalescer and the store's metrics; together they are
//! the [`CacheRuntime`] the request path uses.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::coalesce::{Coalescer, LeaderGuard};
use super::directory::Directory;
use super::entry::Entry;
use super::memory::MemoryCache;
use super::redis::RedisCache;
use super::settings::CacheSettings;
use crate::observability::metrics::CacheStoreMetrics;

/// What a key holds.
#[derive(Debug, Clone)]
pub enum Stored {
    /// A stored response.
    Response(Arc<Entry>),
    /// The variants of a URL.
    Directory(Arc<Directory>),
}

impl From<Arc<Entry>> for Stored {
    fn from(entry: Arc<Entry>) -> Self {
        Stored::Response(entry)
    }
}

impl Stored {
    /// The stored response, when it is one.
    pub fn into_entry(self) -> Option<Arc<Entry>> {
        match self {
            Stored::Response(entry) => Some(entry),
            Stored::Directory(_) => None,
        }
    }

    /// When it is of no more use and may be dropped.
    pub fn useless_after(&self) -> SystemTime {
        match self {
            Stored::Response(entry) => entry.useless_after(),
            // A directory lives as long as the variant last stored with it; written again with
            // each variant, it is refreshed by every store.
            Stored::Directory(_) => SystemTime::now() + DIRECTORY_TTL,
        }
    }
}

/// How long a directory is kept after its last variant was stored.
pub const DIRECTORY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheStoreError {
    /// The store failed or did not answer in time.
    #[error("cache store unavailable: {0}")]
    Unavailable(String),
}

/// Where entries are kept.
#[derive(Debug, Clone)]
pub enum CacheStore {
    /// In this process, shared by its workers.
    Memory(Arc<MemoryCache>),
    /// In Redis, shared by every instance.
    Redis(Arc<RedisCache>),
}

impl CacheStore {
    /// What `key` holds, if anything usable.
    pub async fn get(&self, key: &str) -> Result<Option<Stored>, CacheStoreError> {
        match self {
            CacheStore::Memory(memory) => Ok(memory.get(key.as_bytes())),
            CacheStore::Redis(redis) => redis.get(key).await,
        }
    }

    /// Keeps `value` under `key` until it is of no more use.
    pub async fn put(&self, key: String, value: Stored) -> Result<(), CacheStoreError> {
        match self {
            CacheStore::Memory(memory) => {
                // A refusal (too large for the store) only means it is not kept.
                let _ = memory.insert(key.into_bytes().into(), value);
                Ok(())
            }
            CacheStore::Redis(redis) => redis.put(&key, &value).await,
        }
    }

    /// Drops what `key` holds.
    pub async fn remove(&self, key: &str) -> Result<(), CacheStoreError> {
        match self {
            CacheStore::Memory(memory) => {
                memory.remove(key.as_bytes());
                Ok(())
            }
            CacheStore::Redis(redis) => redis.remove(key).await,
        }
    }

    /// The label of this store in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CacheStore::Memory(_) => "memory",
            CacheStore::Redis(_) => "redis",
        }
    }
}

/// Everything the request path needs of the cache: settings, store, coalescer, metrics.
#[derive(Debug, Clone)]
pub struct CacheRuntime {
    /// `cache:` with defaults applied.
    pub settings: Arc<CacheSettings>,
    /// Where entries are kept.
    pub store: CacheStore,
    /// Concurrent misses of one key wait for one upstream request.
    pub coalescer: Arc<Coalescer>,
    /// The store's gauges and the coalescing counter.
    pub metrics: CacheStoreMetrics,
}

impl CacheRuntime {
    /// Stores `value` under `key`; a failure is logged, not returned: the answer was served.
    pub async fn put(&self, key: String, value: Stored) {
        if let Err(error) = self.store.put(key, value).await {
            tracing::debug!(target: "gatehouse::cache", %error, "cache store write failed");
        }
        self.publish_size();
    }

    /// Drops `key`; a failure is logged.
    pub async fn remove(&self, key: &str) {
        if let Err(error) = self.store.remove(key).await {
            tracing::debug!(target: "gatehouse::cache", %error, "cache store delete failed");
        }
        self.publish_size();
    }

    /// Stores `writes` in order, then ends `flight` so its waiters look again. Returns at once:
    /// a memory store is written here, another store by a task of its own.
    pub fn put_all(&self, writes: Vec<(String, Stored)>, flight: Option<LeaderGuard>) {
        match &self.store {
            CacheStore::Memory(memory) => {
                for (key, value) in writes {
                    let _ = memory.insert(key.into_bytes().into(), value);
                }
                self.publish_size();
                if let Some(flight) = flight {
                    flight.finish();
                }
            }
            CacheStore::Redis(redis) => {
                let redis = Arc::clone(redis);
                tokio::spawn(async move {
                    for (key, value) in writes {
                        if redis.put(&key, &value).await.is_err() {
                            break;
                        }
                    }
                    // Stored or not, the waiters look again (and go upstream on a miss).
                    if let Some(flight) = flight {
                        flight.finish();
                    }
                });
            }
        }
    }

    fn publish_size(&self) {
        match &self.store {
            CacheStore::Memory(memory) => self
                .metrics
                .set_size(memory.entries() as u64, memory.bytes() as u64),
            // Redis counts its own keys (`INFO keyspace`); the gateway does not scan them.
            CacheStore::Redis(_) => {}
        }
    }
}
