//! A provider's cache of tokens it has verified, so a client that reuses its token pays for the
//! signature check (27 µs for RS256) and the JSON parsing once rather than on every request.
//!
//! What is kept is what a fresh verification would conclude *regardless of the time*: the token
//! verified with a key of the current key set and its claims passed every time-independent
//! check. The claims and their parsed `exp`/`nbf`/`iat` are stored, never a verdict, so the
//! caller judges the times again on every request.
//!
//! Correctness rests on three rules:
//!
//! - Entries are found by comparing the whole token, never only its hash.
//! - Every shard remembers the key-set generation its entries were verified under. A lookup
//!   under another generation (the JWKS was replaced) empties the shard and misses; an insert
//!   from a verification that used another generation than the shard's is dropped.
//! - Only successful verifications are inserted, so garbage tokens cannot evict anything.
//!
//! Bounds: at most [`MAX_ENTRIES`] entries and about [`MAX_BYTES`] bytes per provider, split
//! evenly over [`SHARDS`] shards; a full shard evicts by CLOCK (second chance): an entry hit
//! since the hand last passed survives one more sweep.

use std::hash::BuildHasher;
use std::mem::size_of;
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::{DefaultHashBuilder, HashTable};
use serde_json::{Map, Value};

use super::{Claims, Times};

/// Entries per provider: ten thousand callers reusing their tokens at once is a busy API; past
/// that the least recently hit ones are verified again, which costs CPU, not correctness.
pub(super) const MAX_ENTRIES: usize = 10_000;
/// Estimated bytes per provider (see [`entry_bytes`]): a typical 1 KiB token comes to about
/// 2.6 KiB with its parsed claims, so [`MAX_ENTRIES`] of them fit; larger tokens hit this cap
/// first, so however big an issuer makes its tokens the cache stays under it.
pub(super) const MAX_BYTES: usize = 32 * 1024 * 1024;
/// Independent locks per provider, so worker threads verifying different tokens rarely wait on
/// each other; the critical section is a table probe and an `Arc` clone.
pub(super) const SHARDS: usize = 16;

/// Fixed cost charged per entry on top of the token and claims: the slot, its index entry, the
/// `Arc` and map headers and allocator rounding.
const ENTRY_OVERHEAD: usize = 256;

/// Bounds of a [`TokenCache`]; each shard gets an equal share of both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// Most entries in all, across shards.
    pub entries: usize,
    /// Most estimated bytes in all, across shards. An entry larger than one shard's share is
    /// never cached.
    pub bytes: usize,
    /// Number of shards (at least 1, at most `entries`).
    pub shards: usize,
}

/// The bounds a provider's cache has outside tests.
pub(super) const LIMITS: Limits = Limits {
    entries: MAX_ENTRIES,
    bytes: MAX_BYTES,
    shards: SHARDS,
};

/// Verified tokens of one provider; `Sync`, one lock per shard, allocation-free on a hit.
/// `S` is only ever changed by tests, to force hash collisions.
pub(super) struct TokenCache<S = DefaultHashBuilder> {
    shards: Box<[Mutex<Shard>]>,
    hasher: S,
    shard_entries: usize,
    shard_bytes: usize,
}

struct Slot {
    token: Box<str>,
    hash: u64,
    claims: Arc<Claims>,
    times: Times,
    /// Estimated size, as counted in [`Shard::bytes`].
    bytes: usize,
    /// Hit since the clock hand last passed.
    referenced: bool,
}

struct Shard {
    /// The key set every entry here was verified with.
    generation: u64,
    /// Positions in `slots`, found by the token's hash and compared by the whole token.
    index: HashTable<usize>,
    slots: Vec<Slot>,
    /// The clock hand: the next slot eviction looks at.
    hand: usize,
    bytes: usize,
}

impl Shard {
    fn new(generation: u64) -> Shard {
        Shard {
            generation,
            index: HashTable::new(),
            slots: Vec::new(),
            hand: 0,
            bytes: 0,
        }
    }

    fn position(&self, hash: u64, token: &str) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| &*slots[i].token == token)
            .copied()
    }

    /// Drops every entry and starts over for key set `generation`. Allocations are kept: they
    /// are bounded by the caps anyway, and the shard will fill again.
    fn flush(&mut self, generation: u64) {
        self.generation = generation;
        self.index.clear();
        self.slots.clear();
        self.hand = 0;
        self.bytes = 0;
    }

    /// Evicts one entry, the first unreferenced one from the hand on, clearing the referenced
    /// bits it passes (so the second sweep at the latest finds one). False when empty.
    fn evict_one(&mut self) -> bool {
        while !self.slots.is_empty() {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let slot = &mut self.slots[self.hand];
            if slot.referenced {
                slot.referenced = false;
                self.hand += 1;
            } else {
                self.remove(self.hand);
                return true;
            }
        }
        false
    }

    /// Removes slot `i`, moving the last slot into its place.
    fn remove(&mut self, i: usize) {
        let Shard {
            index,
            slots,
            bytes,
            ..
        } = self;
        if let Ok(entry) = index.find_entry(slots[i].hash, |&j| j == i) {
            entry.remove();
        }
        let last = slots.len() - 1;
        if i != last {
            if let Some(j) = index.find_mut(slots[last].hash, |&j| j == last) {
                *j = i;
            }
        }
        let removed = slots.swap_remove(i);
        *bytes -= removed.bytes;
    }
}

impl TokenCache {
    /// An empty cache with `limits` (shards clamped to 1..=entries, so the entry cap holds).
    pub(super) fn new(limits: Limits) -> TokenCache {
        TokenCache::with_hasher(limits, DefaultHashBuilder::default())
    }
}

impl<S: BuildHasher> TokenCache<S> {
    fn with_hasher(limits: Limits, hasher: S) -> TokenCache<S> {
        let shards = limits.shards.clamp(1, limits.entries.max(1));
        TokenCache {
            shards: (0..shards).map(|_| Mutex::new(Shard::new(0))).collect(),
            hasher,
            shard_entries: limits.entries / shards,
            shard_bytes: limits.bytes / shards,
        }
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // Bits the table itself does not use for its bucket index (low bits) or tags (top 7),
        // so tokens of one shard still spread over its table.
        let i = (hash >> 32) as usize % self.shards.len();
        lock(&self.shards[i])
    }

    /// The claims and times of `token` if it was verified under key set `generation`.
    pub(super) fn get(&self, token: &str, generation: u64) -> Option<(Arc<Claims>, Times)> {
        let hash = self.hasher.hash_one(token);
        let mut shard = self.shard(hash);
        if shard.generation != generation {
            // The keys changed: nothing here may be trusted any more.
            shard.flush(generation);
            return None;
        }
        let i = shard.position(hash, token)?;
        let slot = &mut shard.slots[i];
        slot.referenced = true;
        Some((Arc::clone(&slot.claims), slot.times))
    }

    /// Remembers `token`, verified under key set `generation`; returns whether it was stored.
    /// Not stored: larger than a shard's byte share, verified under a key set the shard no
    /// longer holds, or already present (another thread verified it at the same time).
    pub(super) fn insert(
        &self,
        token: &str,
        generation: u64,
        claims: &Arc<Claims>,
        times: Times,
    ) -> bool {
        let bytes = entry_bytes(token, claims);
        if bytes > self.shard_bytes || self.shard_entries == 0 {
            return false;
        }
        let hash = self.hasher.hash_one(token);
        let mut shard = self.shard(hash);
        if shard.generation != generation || shard.position(hash, token).is_some() {
            return false;
        }
        while shard.slots.len() >= self.shard_entries || shard.bytes + bytes > self.shard_bytes {
            if !shard.evict_one() {
                break;
            }
        }
        let Shard {
            index,
            slots,
            bytes: total,
            ..
        } = &mut *shard;
        index.insert_unique(hash, slots.len(), |&i| slots[i].hash);
        slots.push(Slot {
            token: token.into(),
            hash,
            claims: Arc::clone(claims),
            times,
            bytes,
            referenced: false,
        });
        *total += bytes;
        true
    }

    /// Entries held, over all shards (entries of an old key set count until their shard is next
    /// looked at).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).slots.len()).sum()
    }

    /// Estimated bytes held, over all shards.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).bytes).sum()
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|poisoned| {
        // A panic mid-update may have left index and slots disagreeing; an empty shard is
        // always consistent.
        let mut guard = poisoned.into_inner();
        let generation = guard.generation;
        guard.flush(generation);
        shard.clear_poison();
        guard
    })
}

/// The estimated memory of an entry: the token, the claims as parsed (strings, map and array
/// cells) and a fixed overhead. An estimate, but one that grows with everything a token holds.
pub(super) fn entry_bytes(token: &str, claims: &Claims) -> usize {
    ENTRY_OVERHEAD + token.len() + object_bytes(&claims.0)
}

fn object_bytes(map: &Map<String, Value>) -> usize {
    // A B-tree cell per member (key and value inline), plus what each owns on the heap.
    map.iter()
        .map(|(key, value)| {
            size_of::<String>() + size_of::<Value>() + key.len() + value_bytes(value)
        })
        .sum()
}

/// Heap bytes owned by `value` (its inline size is counted by its container).
fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => s.len(),
        Value::Array(items) => items
            .iter()
            .map(|item| size_of::<Value>() + value_bytes(item))
            .sum(),
        Value::Object(map) => object_bytes(map),
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasherDefault, Hasher};

    use serde_json::json;

    use super::*;

    const GEN: u64 = 7;

    fn claims(sub: &str) -> Arc<Claims> {
        let Value::Object(map) = json!({"sub": sub, "roles": ["reader"], "exp": 2_000_000_000})
        else {
            unreachable!()
        };
        Arc::new(Claims(map))
    }

    fn times() -> Times {
        Times {
            exp: 2e9,
            nbf: None,
            iat: Some(1.7e9),
        }
    }

    /// Distinct token-like strings of equal length.
    fn token(i: usize) -> String {
        format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.sig-{i:08}")
    }

    fn limits(entries: usize, bytes: usize, shards: usize) -> Limits {
        Limits {
            entries,
            bytes,
            shards,
        }
    }

    fn insert(cache: &TokenCache<impl BuildHasher>, i: usize) -> bool {
        cache.insert(&token(i), GEN, &claims(&i.to_string()), times())
    }

    fn hit(cache: &TokenCache<impl BuildHasher>, i: usize) -> bool {
        match cache.get(&token(i), GEN) {
            Some((claims, _)) => {
                assert_eq!(claims.sub(), Some(i.to_string().as_str()), "token {i}");
                true
            }
            None => false,
        }
    }

    fn warm(cache: &TokenCache<impl BuildHasher>) {
        // The first lookup moves every shard to generation GEN.
        for i in 0..64 {
            assert!(cache.get(&format!("warm-{i}"), GEN).is_none());
        }
    }

    #[test]
    fn entry_cap_boundaries() {
        const CAP: usize = 8;
        for n in [CAP - 1, CAP, CAP + 1] {
            let cache = TokenCache::new(limits(CAP, usize::MAX / 2, 1));
            warm(&cache);
            for i in 0..n {
                assert!(insert(&cache, i), "n={n}: insert {i}");
            }
            assert_eq!(cache.len(), n.min(CAP), "n={n}");
            let held: Vec<usize> = (0..n).filter(|&i| hit(&cache, i)).collect();
            if n <= CAP {
                assert_eq!(held, (0..n).collect::<Vec<_>>(), "n={n}: all held");
            } else {
                assert_eq!(held.len(), CAP, "n={n}: exactly one evicted");
                assert!(held.contains(&(n - 1)), "n={n}: the newest is held");
            }
        }
    }

    #[test]
    fn eviction_spares_entries_hit_since_the_hand_passed() {
        let cache = TokenCache::new(limits(4, usize::MAX / 2, 1));
        warm(&cache);
        for i in 0..4 {
            assert!(insert(&cache, i));
        }
        assert!(hit(&cache, 0));
        assert!(insert(&cache, 4));
        assert!(hit(&cache, 0), "hit entries get a second chance");
        assert!(!hit(&cache, 1), "the first unreferenced entry goes");
        assert!((2..5).all(|i| hit(&cache, i)));
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn byte_budget_boundaries() {
        let cost = entry_bytes(&token(0), &claims("0"));
        for (budget, stored) in [(cost - 1, false), (cost, true), (cost + 1, true)] {
            let cache = TokenCache::new(limits(10, budget, 1));
            warm(&cache);
            assert_eq!(insert(&cache, 0), stored, "budget {budget}, cost {cost}");
            assert_eq!(hit(&cache, 0), stored, "budget {budget}");
            assert!(cache.bytes() <= budget);
        }
        // Two entries of that size in a budget one byte short of both: the first makes room.
        let cache = TokenCache::new(limits(10, 2 * cost - 1, 1));
        warm(&cache);
        assert!(insert(&cache, 0));
        assert!(insert(&cache, 1));
        assert_eq!((hit(&cache, 0), hit(&cache, 1)), (false, true));
        assert_eq!(cache.bytes(), cost);
    }

    #[test]
    fn bounds_hold_with_shards_under_many_inserts() {
        let cost = entry_bytes(&token(0), &claims("0"));
        for (entries, bytes) in [(100, usize::MAX / 2), (100_000, 40 * cost)] {
            let cache = TokenCache::new(limits(entries, bytes, 16));
            warm(&cache);
            for i in 0..5_000 {
                insert(&cache, i);
                assert!(cache.len() <= entries.min(5_000));
            }
            assert!(cache.len() <= entries);
            assert!(cache.bytes() <= bytes, "{} > {bytes}", cache.bytes());
            assert!(cache.len() > 0);
            assert!(hit(&cache, 4_999), "the newest entry is held");
        }
    }

    #[test]
    fn another_key_set_flushes_the_shard() {
        let cache = TokenCache::new(limits(10, usize::MAX / 2, 1));
        warm(&cache);
        assert!(insert(&cache, 0));
        assert!(hit(&cache, 0));
        assert!(cache.get(&token(0), GEN + 1).is_none(), "new keys: a miss");
        assert_eq!(cache.len(), 0, "and the shard is emptied");
        assert!(
            cache.get(&token(0), GEN).is_none(),
            "the old set is gone for good"
        );
        // A verification that began under the old set and ends now is not stored.
        assert!(cache.get(&token(1), GEN + 1).is_none());
        assert!(!cache.insert(&token(1), GEN, &claims("1"), times()));
        assert!(cache.insert(&token(1), GEN + 1, &claims("1"), times()));
        assert!(cache.get(&token(1), GEN + 1).is_some());
    }

    /// Every token hashes alike, so every lookup has to tell tokens apart by comparing them.
    #[derive(Default)]
    struct Collide;

    impl Hasher for Collide {
        fn finish(&self) -> u64 {
            42
        }
        fn write(&mut self, _: &[u8]) {}
    }

    #[test]
    fn tokens_with_the_same_hash_are_told_apart() {
        let cache = TokenCache::with_hasher(
            limits(10, usize::MAX / 2, 1),
            BuildHasherDefault::<Collide>::default(),
        );
        warm(&cache);
        assert!(insert(&cache, 0));
        assert!(!hit(&cache, 1), "same hash, another token: a miss");
        assert!(insert(&cache, 1));
        assert!(insert(&cache, 2));
        assert!(hit(&cache, 0) && hit(&cache, 1) && hit(&cache, 2));
        assert!(!hit(&cache, 3));
        // Eviction moves slots around; the index must follow.
        for i in 3..30 {
            assert!(insert(&cache, i));
            assert!(hit(&cache, i));
        }
        assert_eq!(cache.len(), 10);
        let held = (0..30).filter(|&i| hit(&cache, i)).count();
        assert_eq!(held, 10);
    }

    #[test]
    fn threads_share_one_cache() {
        fn sync<T: Send + Sync>() {}
        sync::<TokenCache>();
        let cache = TokenCache::new(limits(64, usize::MAX / 2, 4));
        warm(&cache);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let cache = &cache;
                scope.spawn(move || {
                    for i in 0..500 {
                        let n = t * 1_000 + i % 100;
                        if !hit(cache, n) {
                            insert(cache, n);
                        }
                    }
                });
            }
        });
        assert!(cache.len() <= 64);
    }
}
