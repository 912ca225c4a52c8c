//! Rate limits: the GCRA decision (`gcra`), the stores that keep buckets, one per process
//! in memory (`memory`) or shared by every instance in Redis (`redis`), and the store choice
//! and failure handling the request filter asks (`limiter`).

pub mod gcra;
pub mod limiter;
pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

/// Why a store could not decide: a Redis store's error, shared with the other Redis stores.
pub use crate::redis::StoreError;
pub use gcra::{Decision, Gcra, GcraError};
pub use limiter::{ClientKey, Limiter, SharedStore, StoreState, Verdict};
pub use memory::MemoryStore;
pub use redis::{RedisSettings, RedisStore, RedisTarget};

/// What a limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// The client address, after `trusted_proxies` handling of X-Forwarded-For.
    Ip,
    /// The verified JWT `sub`; anonymous requests fall back to the address.
    User,
    /// A request header's value; a request without it falls back to the address.
    Header(HeaderName),
    /// One bucket for the whole route.
    Route,
}

impl KeyKind {
    /// The kind as written in config (`ip`, `user`, `header:x-api-key`, `route`).
    pub fn label(&self) -> String {
        match self {
            KeyKind::Ip => "ip".into(),
            KeyKind::User => "user".into(),
            KeyKind::Header(name) => format!("header:{name}"),
            KeyKind::Route => "route".into(),
        }
    }
}

/// One configured limit of one route, with its GCRA parameters precomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// What requests are counted by.
    pub by: KeyKind,
    /// Requests allowed per `per` at the steady rate.
    pub limit: u32,
    /// The window `limit` is counted over.
    pub per: Duration,
    /// Requests allowed above `limit` at once.
    pub burst: u32,
    /// The decision's parameters.
    pub gcra: Gcra,
    /// Names this limit's buckets: route, key kind and settings, so a changed limit starts
    /// with fresh buckets and two routes never share one.
    pub namespace: Arc<str>,
}

impl RateLimit {
    /// A limit of `limit` requests per `per` with `burst` extra, for route `route`.
    pub fn new(
        route: &str,
        by: KeyKind,
        limit: u32,
        per: Duration,
        burst: u32,
    ) -> Result<Self, GcraError> {
        let gcra = Gcra::new(limit, per, burst)?;
        let namespace = format!(
            "{route}:{}:{limit}/{}ms/{burst}",
            by.label(),
            per.as_millis()
        );
        Ok(RateLimit {
            by,
            limit,
            per,
            burst,
            gcra,
            namespace: namespace.into(),
        })
    }
}

/// Where buckets are kept (`rate_limit.store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// In this process only.
    #[default]
    Memory,
    /// In Redis, shared by every instance.
    Redis,
}

/// What a Redis-backed limit does while Redis cannot answer (`rate_limit.on_store_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreError {
    /// Limit with this instance's memory store until Redis is back.
    #[default]
    Local,
    /// Let requests through unlimited.
    Allow,
    /// Refuse requests with 503.
    Deny,
}

/// `rate_limit:` with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitSettings {
    /// Where buckets are kept.
    pub store: StoreKind,
    /// Behaviour while a Redis store fails.
    pub on_store_error: OnStoreError,
}
