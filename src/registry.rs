//! State that outlives a config snapshot: connection pools, circuit breakers, fetched JWKS,
//! rate-limit buckets, and later health. A reload asks the registry for each object by name and settings; an
//! unchanged object gets its existing state back, a changed or new one starts fresh, and state
//! for names no longer configured is dropped once the new snapshot is live.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::config::Snapshot;

/// Long-lived values keyed by name, each remembered with the settings it was made from.
#[derive(Debug)]
pub struct Registry<S, V> {
    entries: Mutex<HashMap<String, (S, V)>>,
}

impl<S, V> Default for Registry<S, V> {
    fn default() -> Self {
        Registry {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: PartialEq + Clone, V: Clone> Registry<S, V> {
    /// The value for `name` if it was made from equal `settings`, else a new one from `make`.
    ///
    /// Only config loading calls this, never the request path, so a mutex is fine.
    pub fn get_or_make(&self, name: &str, settings: &S, make: impl FnOnce() -> V) -> V {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((existing, value)) = entries.get(name) {
            if existing == settings {
                return value.clone();
            }
        }
        let value = make();
        entries.insert(name.to_string(), (settings.clone(), value.clone()));
        value
    }

    /// Forgets every name not in `live`, after a snapshot using only those went live.
    pub fn retain<'a>(&self, live: impl IntoIterator<Item = &'a str>) {
        self.retain_in(&live.into_iter().collect());
    }

    /// Forgets every name not in `live`.
    fn retain_in(&self, live: &HashSet<&str>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|name, _| live.contains(name.as_str()));
    }

    /// How many names are held.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no names are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every registry the gateway keeps across reloads.
#[derive(Debug)]
pub struct Registries {
    /// Upstream connection pools by upstream name.
    pub pools:
        Registry<crate::upstream::pool::PoolSettings, std::sync::Arc<crate::upstream::pool::Pool>>,
    /// HTTP/2 upstream clients (`protocol: h2`/`h2c`) by upstream name.
    pub h2_clients:
        Registry<crate::upstream::h2::H2Settings, std::sync::Arc<crate::upstream::h2::H2Client>>,
    /// Circuit breakers by upstream name.
    pub breakers: Registry<
        crate::upstream::breaker::BreakerSettings,
        std::sync::Arc<crate::upstream::breaker::Breaker>,
    >,
    /// Active health checkers (their targets' state and probing task) by upstream name, made
    /// from the targets' URLs and the `health_check` settings.
    pub health: Registry<HealthKey, std::sync::Arc<crate::upstream::health::HealthChecker>>,
    /// Requests in flight per upstream name (`circuit_breaker.max_requests`): requests admitted
    /// before a reload still count after it.
    pub in_flight: Registry<(), std::sync::Arc<std::sync::atomic::AtomicUsize>>,
    /// Outlier detection state per upstream name, while its targets and settings stay the same.
    pub outliers: Registry<
        (
            Vec<std::sync::Arc<str>>,
            crate::upstream::outlier::OutlierSettings,
        ),
        std::sync::Arc<crate::upstream::outlier::Outliers>,
    >,
    /// Retry budgets by upstream name: a reload that keeps an upstream's budget settings keeps
    /// what it has spent, so reloading cannot reset a budget that an outage used up.
    pub retry_budgets: Registry<
        crate::upstream::retry::BudgetSettings,
        std::sync::Arc<crate::upstream::retry::RetryBudget>,
    >,
    /// Fetched `jwks_url` key sets and their refreshers, by provider name.
    pub jwks: Registry<
        crate::auth::jwks::RemoteJwksSettings,
        std::sync::Arc<crate::auth::jwks::RemoteJwks>,
    >,
    /// Metric families; routes and upstreams take their handles from here when built.
    pub metrics: std::sync::Arc<crate::observability::metrics::Metrics>,
    /// The process's in-memory rate-limit buckets. One store for every snapshot: a limit's
    /// buckets are named by its route and settings, so an unchanged limit keeps its spent
    /// budget over a reload and a changed one starts fresh.
    pub rate_limits: std::sync::Arc<crate::ratelimit::MemoryStore>,
    /// The Redis connections (one per worker), by `redis:` settings: every Redis store of a
    /// snapshot takes them from here, so a worker has one connection whichever stores use it.
    pub redis_clients:
        Registry<crate::redis::RedisSettings, std::sync::Arc<crate::redis::RedisClients>>,
    /// The Redis rate-limit store (its per-worker batching and health), by `redis:` settings.
    pub redis: Registry<crate::redis::RedisSettings, std::sync::Arc<crate::ratelimit::SharedStore>>,
    /// The response cache's store and coalescer, by the settings that shape the store.
    pub cache: Registry<
        CacheStoreSettings,
        (
            crate::cache::store::CacheStore,
            std::sync::Arc<crate::cache::coalesce::Coalescer>,
        ),
    >,
}

/// What a health checker is made from: the targets it probes, in order, and its settings.
pub type HealthKey = (
    Vec<std::sync::Arc<str>>,
    crate::upstream::health::HealthSettings,
);

/// What a cache store is made from: a change makes a new, empty one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStoreSettings {
    /// Where entries are kept.
    pub store: crate::cache::settings::CacheStoreKind,
    /// `cache.memory_capacity`.
    pub memory_capacity: u64,
    /// `cache.max_entry_size`.
    pub max_entry_size: u64,
    /// `redis:`, for a Redis store.
    pub redis: Option<crate::redis::RedisSettings>,
}

impl Default for Registries {
    fn default() -> Self {
        Registries {
            pools: Registry::default(),
            h2_clients: Registry::default(),
            breakers: Registry::default(),
            health: Registry::default(),
            in_flight: Registry::default(),
            outliers: Registry::default(),
            retry_budgets: Registry::default(),
            jwks: Registry::default(),
            metrics: crate::observability::metrics::Metrics::new(),
            rate_limits: Default::default(),
            redis_clients: Registry::default(),
            redis: Registry::default(),
            cache: Registry::default(),
        }
    }
}

impl Registries {
    /// Drops state for objects the live snapshot no longer has.
    pub fn retain_for(&self, live: &LiveNames<'_>) {
        self.pools.retain_in(&live.upstreams);
        self.h2_clients.retain_in(&live.upstreams);
        self.breakers.retain_in(&live.breakers);
        self.health.retain_in(&live.checked_upstreams);
        self.in_flight.retain_in(&live.upstreams);
        self.outliers.retain_in(&live.upstreams);
        self.retry_budgets.retain_in(&live.retrying_upstreams);
        self.jwks.retain_in(&live.fetching_providers);
        if !live.redis {
            self.redis.retain_in(&HashSet::new());
            self.redis_clients.retain_in(&HashSet::new());
        }
        if !live.cache {
            self.cache.retain_in(&HashSet::new());
        }
    }

    /// What the request path needs of the cache under `settings`: the store made before when
    /// the settings that shape it did not change (so a reload keeps its entries).
    pub fn cache_runtime(
        &self,
        settings: &crate::cache::settings::CacheSettings,
        redis: Option<&crate::redis::RedisSettings>,
    ) -> crate::cache::store::CacheRuntime {
        use crate::cache::settings::CacheStoreKind;
        use crate::cache::store::{CacheRuntime, CacheStore};
        let redis = redis.filter(|_| settings.store == CacheStoreKind::Redis);
        let shape = CacheStoreSettings {
            store: settings.store,
            memory_capacity: settings.memory_capacity,
            max_entry_size: settings.max_entry_size,
            redis: redis.cloned(),
        };
        let max_entry_size = usize::try_from(settings.max_entry_size).unwrap_or(usize::MAX);
        let (store, coalescer) = self.cache.get_or_make(CACHE, &shape, || {
            let store = match redis {
                Some(redis) => {
                    CacheStore::Redis(std::sync::Arc::new(crate::cache::redis::RedisCache::new(
                        self.redis_clients(redis),
                        max_entry_size,
                        self.metrics.redis_store(),
                    )))
                }
                None => {
                    CacheStore::Memory(std::sync::Arc::new(crate::cache::memory::MemoryCache::new(
                        usize::try_from(settings.memory_capacity).unwrap_or(usize::MAX),
                        max_entry_size,
                    )))
                }
            };
            (
                store,
                std::sync::Arc::new(crate::cache::coalesce::Coalescer::new()),
            )
        });
        CacheRuntime {
            settings: std::sync::Arc::new(settings.clone()),
            metrics: self.metrics.cache_store(store.label()),
            store,
            coalescer,
        }
    }

    /// The circuit breaker of upstream `name`: the one made before, with its state, when its
    /// settings did not change.
    pub fn breaker(
        &self,
        name: &str,
        settings: crate::upstream::breaker::BreakerSettings,
    ) -> std::sync::Arc<crate::upstream::breaker::Breaker> {
        self.breakers.get_or_make(name, &settings, || {
            std::sync::Arc::new(crate::upstream::breaker::Breaker::new(
                settings.clone(),
                name.into(),
                self.metrics.circuit(name),
            ))
        })
    }

    /// The health checker of upstream `name` over `targets`: the one made before (with its
    /// state and running task) when neither the targets nor the settings changed.
    pub fn health_checker(
        &self,
        name: &str,
        targets: &[crate::upstream::Target],
        settings: crate::upstream::health::HealthSettings,
    ) -> std::sync::Arc<crate::upstream::health::HealthChecker> {
        let key: HealthKey = (targets.iter().map(|t| t.url.clone()).collect(), settings);
        self.health.get_or_make(name, &key, || {
            crate::upstream::health::HealthChecker::new(name, targets, key.1.clone(), &self.metrics)
        })
    }

    /// The Redis connections for `settings`: the ones made before when they did not change.
    pub fn redis_clients(
        &self,
        settings: &crate::redis::RedisSettings,
    ) -> std::sync::Arc<crate::redis::RedisClients> {
        self.redis_clients.get_or_make(REDIS, settings, || {
            std::sync::Arc::new(crate::redis::RedisClients::new(settings.clone()))
        })
    }

    /// The Redis rate-limit store for `settings`, over [`redis_clients`](Self::redis_clients):
    /// the one made before when they did not change.
    pub fn redis_store(
        &self,
        settings: &crate::redis::RedisSettings,
    ) -> std::sync::Arc<crate::ratelimit::SharedStore> {
        let clients = self.redis_clients(settings);
        self.redis.get_or_make(REDIS, settings, || {
            let metrics = self.metrics.redis_store();
            std::sync::Arc::new(crate::ratelimit::SharedStore::new(clients, metrics))
        })
    }
}

/// The one name the Redis store is kept under: there is one `redis:` section.
const REDIS: &str = "redis";

/// The one name the cache store is kept under: there is one `cache:` section.
const CACHE: &str = "cache";

/// The names of everything one snapshot configures that state or metrics are kept for: what a
/// reload keeps, and (against the previous snapshot's) what it drops.
#[derive(Debug)]
pub struct LiveNames<'a> {
    /// Route names.
    pub routes: HashSet<&'a str>,
    /// Upstream names.
    pub upstreams: HashSet<&'a str>,
    /// The upstreams among them with a circuit breaker.
    pub breakers: HashSet<&'a str>,
    /// The upstreams among them with active health checks.
    pub checked_upstreams: HashSet<&'a str>,
    /// (upstream, target URL) of every health-checked target.
    pub checked_targets: HashSet<(&'a str, &'a str)>,
    /// The upstreams among them that retry.
    pub retrying_upstreams: HashSet<&'a str>,
    /// `jwt.providers` names.
    pub providers: HashSet<&'a str>,
    /// The providers among them that fetch their keys from a `jwks_url`.
    pub fetching_providers: HashSet<&'a str>,
    /// Whether a store is kept in Redis (today: rate limits).
    pub redis: bool,
    /// Whether a route caches responses.
    pub cache: bool,
}

impl<'a> LiveNames<'a> {
    /// The names `snapshot` configures.
    pub fn of(snapshot: &'a Snapshot) -> Self {
        let providers = &snapshot.providers;
        LiveNames {
            routes: snapshot.router.routes().iter().map(|r| &*r.name).collect(),
            upstreams: snapshot.upstreams.iter().map(|u| &*u.name).collect(),
            breakers: snapshot
                .upstreams
                .iter()
                .filter(|u| u.breaker.is_some())
                .map(|u| &*u.name)
                .collect(),
            checked_upstreams: snapshot
                .upstreams
                .iter()
                .filter(|u| u.health.is_some())
                .map(|u| &*u.name)
                .collect(),
            checked_targets: snapshot
                .upstreams
                .iter()
                .filter(|u| u.health.is_some())
                .flat_map(|u| u.targets.iter().map(|t| (&*u.name, &*t.url)))
                .collect(),
            retrying_upstreams: snapshot
                .upstreams
                .iter()
                .filter(|u| u.retry.is_some())
                .map(|u| &*u.name)
                .collect(),
            providers: providers.iter().map(|(name, _)| name.as_str()).collect(),
            fetching_providers: providers
                .iter()
                .filter(|(_, p)| p.remote.is_some())
                .map(|(name, _)| name.as_str())
                .collect(),
            redis: snapshot.limiter.redis().is_some()
                || snapshot
                    .cache_runtime
                    .as_ref()
                    .is_some_and(|c| matches!(c.store, crate::cache::store::CacheStore::Redis(_))),
            cache: snapshot.cache_runtime.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn keeps_state_for_unchanged_settings_only() {
        let registry: Registry<u32, Arc<str>> = Registry::default();
        let a = registry.get_or_make("a", &1, || "first".into());
        let again = registry.get_or_make("a", &1, || "second".into());
        assert!(Arc::ptr_eq(&a, &again));
        let changed = registry.get_or_make("a", &2, || "third".into());
        assert_eq!(&*changed, "third");
        registry.get_or_make("b", &1, || "b".into());
        registry.retain(["b"]);
        assert_eq!(registry.len(), 1);
        let fresh = registry.get_or_make("a", &2, || "fourth".into());
        assert_eq!(&*fresh, "fourth");
    }

    #[test]
    fn a_breaker_is_kept_while_its_settings_are() {
        use crate::upstream::breaker::BreakerSettings;
        let registries = Registries::default();
        let settings = BreakerSettings::default();
        let first = registries.breaker("orders", settings.clone());
        assert!(Arc::ptr_eq(
            &first,
            &registries.breaker("orders", settings.clone())
        ));
        let other = registries.breaker("billing", settings.clone());
        assert!(!Arc::ptr_eq(&first, &other));
        let changed = BreakerSettings {
            failure_ratio: 0.25,
            ..settings
        };
        assert!(!Arc::ptr_eq(&first, &registries.breaker("orders", changed)));
    }
}
