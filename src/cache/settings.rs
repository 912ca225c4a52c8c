//! The cache's settings as config builds them: process-wide (`cache:`) and per route
//! (route `cache:`), checked and ready to use.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

/// Where cached responses are kept (`cache.store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheStoreKind {
    /// In this process, shared by its workers.
    #[default]
    Memory,
    /// In Redis, shared by every instance.
    Redis,
}

/// `cache:` with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Where entries are kept.
    pub store: CacheStoreKind,
    /// Freshness given to a storable response that states none, when its route sets no `ttl`.
    pub default_ttl: Duration,
    /// Responses with larger bodies stream through uncached.
    pub max_entry_size: u64,
    /// Bytes the memory store may hold.
    pub memory_capacity: u64,
    /// Starts every key, so tooling can find the cache's keys in a shared Redis.
    pub key_prefix: Arc<str>,
}

/// `cache.default_ttl` when not written.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// `cache.max_entry_size` when not written.
pub const DEFAULT_MAX_ENTRY_SIZE: u64 = 1 << 20;
/// `cache.memory_capacity` when not written.
pub const DEFAULT_MEMORY_CAPACITY: u64 = 256 << 20;
/// `cache.key_prefix` when not written.
pub const DEFAULT_KEY_PREFIX: &str = "gwcache:";

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            store: CacheStoreKind::Memory,
            default_ttl: DEFAULT_TTL,
            max_entry_size: DEFAULT_MAX_ENTRY_SIZE,
            memory_capacity: DEFAULT_MEMORY_CAPACITY,
            key_prefix: DEFAULT_KEY_PREFIX.into(),
        }
    }
}

/// One route's `cache:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    /// Freshness for responses that state none (route `ttl`, else `cache.default_ttl`).
    pub ttl: Duration,
    /// Request headers added to the key, lower-cased, in config order.
    pub vary: Box<[HeaderName]>,
    /// Whether the verified `sub` is part of the key.
    pub per_user: bool,
    /// How long past its freshness an entry may still answer when the upstream fails, when
    /// the response itself does not say.
    pub stale_if_error: Duration,
}
