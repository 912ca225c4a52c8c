//! Entries in this process: one store shared by every worker, bounded in bytes.
//!
//! The store is split into shards by a keyed hash of the key, each a least-recently-used list
//! behind its own short lock, so workers rarely meet and no lookup waits on a lock that covers
//! the whole store. Each shard holds at most its share of `memory_capacity`, counted in the
//! weight of an entry ([`weight`]: its encoded size, which covers status, headers and body, plus
//! the key and a fixed estimate of the bookkeeping), so the store never holds more than the
//! configured bytes however many entries arrive: inserting past a shard's share evicts its
//! least recently used entries first.
//!
//! An entry expires when it is of no more use ([`Entry::useless_after`]): a lookup past that
//! removes it and misses. Entries nobody asks for again leave by eviction.
//!
//! Shards get at least four of the largest entries each (so one large entry never takes a whole
//! shard) and there are at most [`MAX_SHARDS`] of them.
//!
//! Workers answer the entries they hit most from copies of their own ([`near`]), kept within a
//! part of the capacity reserved for them, so a hot entry does not make every worker write the
//! same cache lines on every hit.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use hashbrown::HashTable;

use super::entry::{Entry, MAX_HEADER_BYTES};
use super::store::Stored;
use crate::per_worker::{self, PerWorker};

mod near;

/// Shards at most; a power of two well above any worker count.
pub const MAX_SHARDS: usize = 64;
/// Bytes of bookkeeping counted for every entry besides its encoding and key: the entry and its
/// list node, the table slot and the header map's index.
pub const ENTRY_OVERHEAD: usize = 256;
/// Bytes of the header map counted for every header field besides its name and value.
pub const HEADER_OVERHEAD: usize = 48;

/// The bytes an entry stored under `key` is counted as.
pub fn weight(key: &[u8], entry: &Entry) -> usize {
    key.len() + entry.encoded_len() + ENTRY_OVERHEAD + HEADER_OVERHEAD * entry.headers.len()
}

/// The bytes a value stored under `key` is counted as (a directory: its encoding and the same
/// bookkeeping as an entry).
fn weight_of(key: &[u8], value: &Stored) -> usize {
    match value {
        Stored::Response(entry) => weight(key, entry),
        Stored::Directory(directory) => key.len() + directory.encode().len() + ENTRY_OVERHEAD,
    }
}

/// An entry the store refuses to hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A body over `max_entry_size`.
    #[error("body of {size} bytes is over max_entry_size ({max})")]
    BodyTooLarge {
        /// The body's bytes.
        size: usize,
        /// The configured `max_entry_size`.
        max: usize,
    },
    /// An entry weighing more than one shard of the store holds.
    #[error("entry of {weight} bytes is over the {max} bytes one shard of the cache holds")]
    OverCapacity {
        /// The entry's [`weight`].
        weight: usize,
        /// A shard's share of `memory_capacity`.
        max: usize,
    },
}

const NIL: u32 = u32::MAX;

struct Node {
    hash: u64,
    key: Bytes,
    value: Stored,
    expires: SystemTime,
    weight: usize,
    prev: u32,
    next: u32,
}

/// One shard: a hash table of slot indices and a doubly linked recency list through the slots
/// (head is the most recently used).
struct Lru {
    table: HashTable<u32>,
    slots: Vec<Option<Node>>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    bytes: usize,
    cap: usize,
}

// Own cache lines per shard, so two workers on neighbouring shards do not contend; the version
// on a line of its own, so checking it does not wait for the line the lock writes.
#[repr(C, align(64))]
struct Shard {
    lru: Mutex<Lru>,
    version: Version,
}

/// Counts the changes to a shard; written under the shard's lock, read without it by workers
/// checking their copies.
#[repr(align(64))]
struct Version(AtomicU64);

impl Version {
    fn bump(&self) {
        // Under the shard's lock: no other writer.
        let next = self.0.load(Ordering::Relaxed).wrapping_add(1);
        self.0.store(next, Ordering::Release);
    }
}

/// The in-process entry store.
pub struct MemoryCache {
    shards: Box<[Shard]>,
    /// Seeded per process (foldhash): keys come from clients, so their hashes must not be
    /// predictable; SipHash cost more per lookup for no gain in that.
    hasher: hashbrown::DefaultHashBuilder,
    max_entry_size: usize,
    shard_capacity: usize,
    /// Each worker's copies of its hot entries.
    near: PerWorker<Mutex<near::Near>>,
    /// Bytes of all workers' copies now.
    near_bytes: AtomicUsize,
    /// Bytes the copies may take together: the part of the capacity the shards leave them.
    near_capacity: usize,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("shards", &self.shards.len())
            .field("shard_capacity", &self.shard_capacity)
            .field("max_entry_size", &self.max_entry_size)
            .finish()
    }
}

impl MemoryCache {
    /// An empty store of at most `capacity` bytes holding bodies of at most `max_entry_size`.
    pub fn new(capacity: usize, max_entry_size: usize) -> MemoryCache {
        let largest = max_entry_size
            .saturating_add(MAX_HEADER_BYTES)
            .saturating_add(ENTRY_OVERHEAD);
        let fit = capacity / largest.saturating_mul(4).max(1);
        let shards = if fit >= MAX_SHARDS {
            MAX_SHARDS
        } else if fit == 0 {
            1
        } else {
            // The largest power of two not above `fit`.
            1 << fit.ilog2()
        };
        let near_capacity = near::reserve(capacity);
        let shard_capacity = (capacity - near_capacity) / shards;
        MemoryCache {
            shards: (0..shards)
                .map(|_| Shard {
                    lru: Mutex::new(Lru {
                        table: HashTable::new(),
                        slots: Vec::new(),
                        free: Vec::new(),
                        head: NIL,
                        tail: NIL,
                        bytes: 0,
                        cap: shard_capacity,
                    }),
                    version: Version(AtomicU64::new(0)),
                })
                .collect(),
            hasher: Default::default(),
            max_entry_size,
            shard_capacity,
            near: PerWorker::new(),
            near_bytes: AtomicUsize::new(0),
            near_capacity,
        }
    }

    /// What is stored under `key`, if anything still of use now.
    pub fn get(&self, key: &[u8]) -> Option<Stored> {
        self.get_at(key, SystemTime::now())
    }

    /// [`get`](Self::get) as if the time were `now`.
    pub fn get_at(&self, key: &[u8], now: SystemTime) -> Option<Stored> {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[shard_index(hash, self.shards.len())];
        if per_worker::current().is_none() {
            // Threads outside the workers share one slot: no copies for them.
            return self
                .shared_get(shard, hash, key, now)
                .map(|found| found.value);
        }
        let mut near = lock_near(self.near.get_or_init(Default::default));
        let version = shard.version.0.load(Ordering::Acquire);
        match near.find(hash, key, version, now) {
            near::Found::Copy(copy) => Some(Stored::Response(copy)),
            near::Found::Check => {
                let found = self.shared_get(shard, hash, key, now);
                let shared = match &found {
                    Some(SharedHit {
                        value: Stored::Response(entry),
                        ..
                    }) => Some(entry),
                    _ => None,
                };
                let version = found.as_ref().map_or(0, |f| f.version);
                if let Some(copy) = near.confirm(hash, key, shared, version, &self.near_bytes) {
                    return Some(Stored::Response(copy));
                }
                found.map(|found| found.value)
            }
            near::Found::None => {
                let found = self.shared_get(shard, hash, key, now)?;
                if let Stored::Response(entry) = &found.value {
                    near.admit(
                        hash,
                        key,
                        entry,
                        found.weight,
                        found.version,
                        found.expires,
                        &self.near_bytes,
                        self.near_capacity,
                    );
                }
                Some(found.value)
            }
        }
    }

    /// The shared store's value under `key`, moved to the front of its shard's recency list.
    fn shared_get(
        &self,
        shard: &Shard,
        hash: u64,
        key: &[u8],
        now: SystemTime,
    ) -> Option<SharedHit> {
        let mut lru = lock(shard);
        let index = lru.find(hash, key)?;
        let node = lru.slots[index as usize].as_ref().expect("indexed slot");
        if node.expires <= now {
            lru.remove_slot(index);
            shard.version.bump();
            return None;
        }
        let found = SharedHit {
            value: node.value.clone(),
            weight: node.weight,
            expires: node.expires,
            version: shard.version.0.load(Ordering::Relaxed),
        };
        if lru.head != index {
            lru.unlink(index);
            lru.push_front(index);
        }
        Some(found)
    }

    /// Stores `entry` under `key`, replacing what was there and evicting the least recently
    /// used entries of its shard while the shard is over its share of the capacity. A refused
    /// entry still removes the one it would have replaced: that one is known to be outdated.
    pub fn insert(&self, key: Bytes, value: impl Into<Stored>) -> Result<(), Refused> {
        let value = value.into();
        let body = match &value {
            Stored::Response(entry) => entry.body.len(),
            Stored::Directory(_) => 0,
        };
        let refused = if body > self.max_entry_size {
            Some(Refused::BodyTooLarge {
                size: body,
                max: self.max_entry_size,
            })
        } else {
            None
        };
        let weight = weight_of(&key, &value);
        let refused = refused.or(if weight > self.shard_capacity {
            Some(Refused::OverCapacity {
                weight,
                max: self.shard_capacity,
            })
        } else {
            None
        });
        if let Some(refused) = refused {
            self.remove(&key);
            return Err(refused);
        }
        let hash = self.hasher.hash_one(&key[..]);
        let expires = value.useless_after();
        let shard = &self.shards[shard_index(hash, self.shards.len())];
        let mut lru = lock(shard);
        shard.version.bump();
        if let Some(old) = lru.find(hash, &key) {
            lru.remove_slot(old);
        }
        // Fits: weight <= cap, and the loop stops at latest when the shard is empty.
        while lru.bytes + weight > lru.cap {
            let tail = lru.tail;
            lru.remove_slot(tail);
        }
        let node = Node {
            hash,
            key,
            value,
            expires,
            weight,
            prev: NIL,
            next: NIL,
        };
        let index = match lru.free.pop() {
            Some(i) => {
                lru.slots[i as usize] = Some(node);
                i
            }
            None => {
                // A shard holds fewer entries than its bytes, far below u32::MAX.
                let i = u32::try_from(lru.slots.len()).expect("slot index fits u32");
                lru.slots.push(Some(node));
                i
            }
        };
        let Lru { table, slots, .. } = &mut *lru;
        table.insert_unique(hash, index, |&i| {
            slots[i as usize].as_ref().expect("indexed slot").hash
        });
        lru.bytes += weight;
        lru.push_front(index);
        Ok(())
    }

    /// Removes the entry under `key`, if any.
    pub fn remove(&self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[shard_index(hash, self.shards.len())];
        let mut lru = lock(shard);
        if let Some(index) = lru.find(hash, key) {
            lru.remove_slot(index);
            shard.version.bump();
        }
    }

    /// Entries held now (a gauge).
    pub fn entries(&self) -> usize {
        self.shards.iter().map(|s| lock(s).table.len()).sum()
    }

    /// Bytes held now, by [`weight`] (a gauge); never above the capacity.
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).bytes).sum()
    }

    /// The most bytes the store holds, the workers' copies included: the capacity rounded down
    /// to a multiple of its shards.
    pub fn capacity(&self) -> usize {
        self.shard_capacity * self.shards.len() + self.near_capacity
    }

    /// Bytes of the workers' copies of hot entries now (within the part of the capacity the
    /// shards leave them).
    pub fn copied_bytes(&self) -> usize {
        self.near_bytes.load(Ordering::Relaxed)
    }

    /// The largest body the store takes (`max_entry_size`).
    pub fn max_entry_size(&self) -> usize {
        self.max_entry_size
    }
}

/// What a hit on the shared store found, with what a worker's copy of it needs.
struct SharedHit {
    value: Stored,
    weight: usize,
    expires: SystemTime,
    /// The shard's version at the hit.
    version: u64,
}

fn shard_index(hash: u64, shards: usize) -> usize {
    // The table probes with the low bits; the shard comes from the high ones.
    (hash >> 58) as usize % shards
}

fn lock(shard: &Shard) -> MutexGuard<'_, Lru> {
    // A panic while holding the lock leaves the list consistent between operations that
    // do not allocate; the shard stays usable.
    shard.lru.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock_near(near: &Mutex<near::Near>) -> MutexGuard<'_, near::Near> {
    // Only its worker takes it; a panic in between leaves a set of whole records.
    near.lock().unwrap_or_else(|p| p.into_inner())
}

impl Lru {
    fn node(&mut self, index: u32) -> &mut Node {
        self.slots[index as usize].as_mut().expect("linked slot")
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.table
            .find(hash, |&i| {
                let node = self.slots[i as usize].as_ref().expect("indexed slot");
                node.hash == hash && node.key[..] == *key
            })
            .copied()
    }

    fn unlink(&mut self, index: u32) {
        let (prev, next) = {
            let node = self.node(index);
            (node.prev, node.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.node(prev).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.node(next).prev = prev;
        }
    }

    fn push_front(&mut self, index: u32) {
        let head = self.head;
        {
            let node = self.node(index);
            node.prev = NIL;
            node.next = head;
        }
        if head == NIL {
            self.tail = index;
        } else {
            self.node(head).prev = index;
        }
        self.head = index;
    }

    fn remove_slot(&mut self, index: u32) {
        self.unlink(index);
        let node = self.slots[index as usize].take().expect("linked slot");
        self.table
            .find_entry(node.hash, |&i| i == index)
            .expect("slot in table")
            .remove();
        self.bytes -= node.weight;
        self.free.push(index);
    }
}

#[cfg(test)]
mod tests;
