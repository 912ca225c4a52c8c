//! Buckets in this process: shared by every worker (one budget per key), sharded so workers
//! rarely meet on a lock, and bounded so that any number of distinct clients cannot grow it past
//! [`MAX_BYTES`].
//!
//! A bucket is 24 bytes: a 128-bit keyed hash of its namespace and client key (so a 64 KiB
//! header value costs no more than an address, and clients cannot aim collisions at a
//! bucket without the per-process hash keys) and its TAT. A shard holds at most
//! [`MAX_KEYS_PER_SHARD`]; when a new bucket would pass that, the shard is rebuilt without its
//! idle buckets (a TAT in the past is a full bucket, which carries no state), and if the live
//! ones still fill more than 7/8 of it, those closest to full (the oldest TAT) are forgotten,
//! which at worst hands those clients a fresh allowance early. Rebuilding into a table sized
//! for the cap means the table never grows past it.

use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::Instant;

use hashbrown::HashTable;

use super::gcra::Decision;
use super::RateLimit;

/// Shards; a power of two well above any worker count.
pub const SHARDS: usize = 128;
/// Buckets one shard holds at most.
pub const MAX_KEYS_PER_SHARD: usize = 8192;
/// Buckets the store holds at most: 1,048,576.
pub const MAX_KEYS: usize = SHARDS * MAX_KEYS_PER_SHARD;
/// The most the tables take: each shard's table is at most the one hashbrown sizes for
/// [`MAX_KEYS_PER_SHARD`] (16,384 slots of a 24-byte bucket and a control byte), so about
/// 50 MiB in all.
pub const MAX_BYTES: usize = 64 << 20;

#[derive(Clone, Copy)]
struct Entry {
    key: [u64; 2],
    tat: u64,
}

// Own cache line per shard, so two workers on neighbouring shards do not contend.
#[repr(align(64))]
struct Shard(Mutex<HashTable<Entry>>);

/// The in-process bucket store.
pub struct MemoryStore {
    shards: Box<[Shard]>,
    hashers: [std::hash::RandomState; 2],
    epoch: Instant,
    cap: usize,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("buckets", &self.len())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store holding at most [`MAX_KEYS`] buckets.
    pub fn new() -> Self {
        Self::with_layout(SHARDS, MAX_KEYS_PER_SHARD)
    }

    fn with_layout(shards: usize, cap: usize) -> Self {
        MemoryStore {
            shards: (0..shards)
                .map(|_| Shard(Mutex::new(HashTable::new())))
                .collect(),
            hashers: [Default::default(), Default::default()],
            epoch: Instant::now(),
            cap,
        }
    }

    /// Decides one request by `limit` for the client `key` now.
    pub fn check<K: Hash + ?Sized>(&self, limit: &RateLimit, key: &K) -> Decision {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX / 2);
        self.check_at(limit, key, now)
    }

    /// [`check`](Self::check) at `now` nanoseconds after the store was made.
    pub fn check_at<K: Hash + ?Sized>(&self, limit: &RateLimit, key: &K, now: u64) -> Decision {
        let id = [
            self.hashers[0].hash_one((&*limit.namespace, key)),
            self.hashers[1].hash_one((&*limit.namespace, key)),
        ];
        // The table probes with id[0]; the shard comes from the other, independent hash.
        let shard = &self.shards[id[1] as usize % self.shards.len()];
        let mut table = shard.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = table.find_mut(id[0], |e| e.key == id) {
            let (decision, tat) = limit.gcra.decide(Some(entry.tat), now);
            if let Some(tat) = tat {
                entry.tat = tat;
            }
            return decision;
        }
        let (decision, tat) = limit.gcra.decide(None, now);
        if let Some(tat) = tat {
            if table.len() >= self.cap {
                *table = sweep(std::mem::take(&mut *table), now, self.cap);
            }
            table.insert_unique(id[0], Entry { key: id, tat }, |e| e.key[0]);
        }
        decision
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the tables have allocated.
    pub fn allocated_bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).allocation_size()).sum()
    }
}

fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, HashTable<Entry>> {
    shard.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// A table holding the live buckets of `old`, at most 7/8 of `cap` of them, sized for `cap`.
fn sweep(mut old: HashTable<Entry>, now: u64, cap: usize) -> HashTable<Entry> {
    let mut live: Vec<Entry> = old.drain().filter(|e| e.tat > now).collect();
    // Room for at least cap/8 new buckets before the next sweep keeps its cost amortised.
    let keep = cap - cap / 8;
    if live.len() > keep {
        let forget = live.len() - keep;
        live.select_nth_unstable_by_key(forget, |e| e.tat);
        live.drain(..forget);
    }
    let mut table = HashTable::with_capacity(cap);
    for entry in live {
        table.insert_unique(entry.key[0], entry, |e| e.key[0]);
    }
    table
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::ratelimit::KeyKind;

    const SEC: u64 = 1_000_000_000;

    fn limit(route: &str, limit: u32, per_secs: u64, burst: u32) -> RateLimit {
        RateLimit::new(
            route,
            KeyKind::Ip,
            limit,
            Duration::from_secs(per_secs),
            burst,
        )
        .expect("valid limit")
    }

    #[test]
    fn counts_exactly_per_key_and_per_limit() {
        let store = MemoryStore::new();
        let ten = limit("r", 10, 60, 0);
        let now = 5 * SEC;
        for i in 0..10 {
            assert!(
                store.check_at(&ten, b"10.0.0.1", now).allowed,
                "request {i}"
            );
        }
        let d = store.check_at(&ten, b"10.0.0.1", now);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_secs(6));
        // Another client, and the same client under another route's limit, have their own.
        assert!(store.check_at(&ten, b"10.0.0.2", now).allowed);
        assert!(
            store
                .check_at(&limit("s", 10, 60, 0), b"10.0.0.1", now)
                .allowed
        );
        // A changed limit on the same route starts fresh.
        assert!(
            store
                .check_at(&limit("r", 11, 60, 0), b"10.0.0.1", now)
                .allowed
        );
        assert_eq!(store.len(), 4);
        // Six seconds later one more fits.
        assert!(store.check_at(&ten, b"10.0.0.1", now + 6 * SEC).allowed);
        assert!(!store.check_at(&ten, b"10.0.0.1", now + 6 * SEC).allowed);
    }

    #[test]
    fn every_thread_spends_one_budget() {
        let store = Arc::new(MemoryStore::new());
        let ten = Arc::new(limit("r", 10, 3_600, 5));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (store, ten) = (Arc::clone(&store), Arc::clone(&ten));
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| store.check(&ten, b"one client").allowed)
                        .count()
                })
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(allowed, 15);
    }

    #[test]
    fn idle_buckets_are_evicted_when_a_shard_fills() {
        let store = MemoryStore::with_layout(1, 64);
        let one = limit("r", 1, 1, 0);
        for i in 0..64u64 {
            assert!(store.check_at(&one, &i.to_le_bytes(), SEC).allowed);
        }
        assert_eq!(store.len(), 64);
        // Two seconds later every bucket is full again: the next new key clears them all.
        assert!(store.check_at(&one, b"new", 3 * SEC).allowed);
        assert_eq!(store.len(), 1);
        assert!(
            !store.check_at(&one, b"new", 3 * SEC).allowed,
            "the new key is kept"
        );
    }

    #[test]
    fn a_full_shard_of_live_buckets_forgets_the_oldest() {
        let store = MemoryStore::with_layout(1, 16);
        // 1 per 100,000 s: no bucket refills during the test.
        let one = limit("r", 1, 100_000, 0);
        for i in 0..16u64 {
            assert!(store.check_at(&one, &i.to_le_bytes(), i * SEC).allowed);
        }
        assert!(store.check_at(&one, &16u64.to_le_bytes(), 16 * SEC).allowed);
        // 14 (7/8 of 16) kept, keys 0 and 1, spent first, forgotten; then key 16 added.
        assert_eq!(store.len(), 15);
        for i in 2..=16u64 {
            let d = store.check_at(&one, &i.to_le_bytes(), 17 * SEC);
            assert!(!d.allowed, "key {i} is still spent");
        }
        // A forgotten key gets a fresh allowance early: the cost of the bound.
        assert!(store.check_at(&one, &0u64.to_le_bytes(), 17 * SEC).allowed);
    }

    /// The documented bound: a million distinct clients (and twice that) fit in 64 MiB.
    #[test]
    fn a_million_distinct_keys_stay_within_the_memory_bound() {
        let store = MemoryStore::new();
        let per_hour = limit("r", 100, 3_600, 0);
        let now = SEC;
        for i in 0..1_000_000u64 {
            store.check_at(&per_hour, &i.to_le_bytes(), now);
        }
        let (len, bytes) = (store.len(), store.allocated_bytes());
        assert!(len <= MAX_KEYS, "{len} buckets");
        assert!(bytes <= MAX_BYTES, "{bytes} bytes for {len} buckets");
        eprintln!("1M keys: {len} buckets in {bytes} bytes");
        // All still live (none refilled), so past the cap the oldest give way and the bound holds.
        for i in 1_000_000..2_000_000u64 {
            store.check_at(&per_hour, &i.to_le_bytes(), now + i);
        }
        let (len, bytes) = (store.len(), store.allocated_bytes());
        assert!(len <= MAX_KEYS, "{len} buckets");
        assert!(bytes <= MAX_BYTES, "{bytes} bytes for {len} buckets");
        eprintln!("2M keys: {len} buckets in {bytes} bytes");
    }
}
