//! The store the pipeline holds: one type over every backend, so the cache phases do not
//! depend on which one a configuration chose. Every operation returns a `Result`, so that a
//! store failing is told apart from a miss (a failure is served from upstream and counted).

use std::sync::Arc;

use bytes::Bytes;

use super::entry::Entry;
use super::memory::{MemoryCache, Refused};

/// A response store, cheap to clone; held in the `Registry` so a reload keeps its entries.
#[derive(Debug, Clone)]
pub enum CacheStore {
    /// Entries in this process, shared by all workers.
    Memory(Arc<MemoryCache>),
}

/// Why a store operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheStoreError {
    /// The store does not take this entry (too large); not a failure of the store.
    #[error("entry not stored: {0}")]
    Refused(#[from] Refused),
}

impl CacheStore {
    /// The entry under `key`: `Ok(None)` is a miss, `Err` a store that could not answer.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Arc<Entry>>, CacheStoreError> {
        match self {
            CacheStore::Memory(m) => Ok(m.get(key)),
        }
    }

    /// Stores `entry` under `key`, replacing any entry there.
    pub async fn put(&self, key: Bytes, entry: Arc<Entry>) -> Result<(), CacheStoreError> {
        match self {
            CacheStore::Memory(m) => Ok(m.insert(key, entry)?),
        }
    }

    /// Removes the entry under `key`, if any (invalidation after an unsafe method).
    pub async fn remove(&self, key: &[u8]) -> Result<(), CacheStoreError> {
        match self {
            CacheStore::Memory(m) => {
                m.remove(key);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::{HeaderMap, StatusCode};

    use super::*;

    fn entry(body: &'static [u8]) -> Arc<Entry> {
        Arc::new(Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body),
            request_time: SystemTime::now(),
            response_time: SystemTime::now(),
            freshness_lifetime: Duration::from_secs(60),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            must_revalidate: false,
        })
    }

    #[tokio::test]
    async fn memory_store_tells_a_miss_from_a_refusal() {
        let store = CacheStore::Memory(Arc::new(MemoryCache::new(1 << 20, 4)));
        let key = Bytes::from_static(b"gwcache:/a");
        assert_eq!(store.get(&key).await, Ok(None));
        store.put(key.clone(), entry(b"body")).await.unwrap();
        let got = store.get(&key).await.unwrap().unwrap();
        assert_eq!(got.body, "body");
        let refused = store.put(key.clone(), entry(b"large")).await;
        assert_eq!(
            refused,
            Err(CacheStoreError::Refused(Refused::BodyTooLarge {
                size: 5,
                max: 4
            }))
        );
        // A newer response replaces the stored one even when it cannot be stored itself.
        assert_eq!(store.get(&key).await, Ok(None));
        store.put(key.clone(), entry(b"body")).await.unwrap();
        store.remove(&key).await.unwrap();
        assert_eq!(store.get(&key).await, Ok(None));
        let clone = store.clone();
        clone.put(key.clone(), entry(b"x")).await.unwrap();
        assert!(
            store.get(&key).await.unwrap().is_some(),
            "clones share entries"
        );
    }
}
