//! Each worker's own copies of the entries it hits again and again.
//!
//! Every hit on the shared store takes its shard's lock, moves the entry to the front of the
//! recency list and clones the entry's `Arc`, body and header values: each of those writes a
//! counter or a list node that every worker hitting the same entry writes too, so with a hot
//! entry the workers pass those cache lines back and forth on every request. A worker that hits
//! an entry for the second time in a short while keeps a deep copy of it (its own allocations,
//! counted by nobody else) and answers later hits from the copy without touching the shared
//! store.
//!
//! A copy is only used while its shard's version (bumped under the shard's lock by every change
//! to the shard: insert, remove, eviction, expiry) is the one seen when the copy was checked,
//! so a replaced or removed entry is never served from a copy. After a version change the worker
//! looks at the shared store once and keeps using its copy if the entry there is still the one
//! it copied. Every [`TOUCH_EVERY`]th hit goes to the shared store as well, so an entry served
//! from copies still moves to the front of its shard's recency list and is not evicted as unused.
//!
//! Copies are counted in bytes like entries: they come out of a part of `memory_capacity` kept
//! for them ([`reserve`]), so the store and the copies together stay within the configured bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::super::entry::Entry;

/// Copies one worker keeps at most.
pub const ENTRIES: usize = 32;
/// Entries weighing more than this (see [`super::weight`]) are not copied: their transfer costs
/// far more than the shared counters, and a copy of them would take much of the reserve.
pub const MAX_WEIGHT: usize = 64 << 10;
/// One hit in this many on a copy also goes to the shared store, to keep the entry's recency.
pub const TOUCH_EVERY: u32 = 32;
/// Slots of the admission filter: a key is copied when its hash is found in its slot, that is
/// at its second hit unless another key took the slot in between.
const SEEN: usize = 64;

/// The part of a store of `capacity` bytes kept for the workers' copies.
pub fn reserve(capacity: usize) -> usize {
    capacity / 16
}

/// One worker's copies.
pub struct Near {
    records: Vec<Record>,
    seen: [u64; SEEN],
    clock: u64,
}

/// A copy of one stored entry.
struct Record {
    hash: u64,
    key: Box<[u8]>,
    /// The shard's version when the copy was last known to match the shared entry.
    version: u64,
    copy: Arc<Entry>,
    /// The shared entry it was copied from; only its address is compared (a `Weak` keeps the
    /// allocation, so the address cannot be reused by another entry).
    source: Weak<Entry>,
    expires: SystemTime,
    weight: usize,
    hits_since_touch: u32,
    last_used: u64,
}

/// What a worker's copies say about a key.
pub enum Found {
    /// A copy that may answer.
    Copy(Arc<Entry>),
    /// A copy that needs a look at the shared store first: its shard changed, it is past its
    /// time, or it is due for a touch.
    Check,
    /// No copy.
    None,
}

impl Default for Near {
    fn default() -> Self {
        Near {
            records: Vec::with_capacity(ENTRIES),
            seen: [0; SEEN],
            clock: 0,
        }
    }
}

impl Near {
    /// The copy of `key` if it may answer at `now` with the shard at `version`.
    pub fn find(&mut self, hash: u64, key: &[u8], version: u64, now: SystemTime) -> Found {
        self.clock += 1;
        let Some(record) = self
            .records
            .iter_mut()
            .find(|r| r.hash == hash && *r.key == *key)
        else {
            return Found::None;
        };
        record.last_used = self.clock;
        if record.version != version
            || record.expires <= now
            || record.hits_since_touch >= TOUCH_EVERY
        {
            return Found::Check;
        }
        record.hits_since_touch += 1;
        Found::Copy(Arc::clone(&record.copy))
    }

    /// After a look at the shared store, which found `shared` (at `version`): the copy, when it
    /// is still a copy of that entry; otherwise the copy is dropped.
    pub fn confirm(
        &mut self,
        hash: u64,
        key: &[u8],
        shared: Option<&Arc<Entry>>,
        version: u64,
        reserved: &AtomicUsize,
    ) -> Option<Arc<Entry>> {
        let index = self
            .records
            .iter()
            .position(|r| r.hash == hash && *r.key == *key)?;
        let record = &mut self.records[index];
        match shared {
            Some(entry) if std::ptr::eq(record.source.as_ptr(), Arc::as_ptr(entry)) => {
                record.version = version;
                record.hits_since_touch = 0;
                Some(Arc::clone(&record.copy))
            }
            _ => {
                self.drop_record(index, reserved);
                None
            }
        }
    }

    /// Notes a hit on the shared `entry` and copies it when this is the key's second recent
    /// hit and the copy fits within `limit` bytes of copies of all workers (`reserved` counts
    /// them).
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &mut self,
        hash: u64,
        key: &[u8],
        entry: &Arc<Entry>,
        weight: usize,
        version: u64,
        expires: SystemTime,
        reserved: &AtomicUsize,
        limit: usize,
    ) {
        let slot = (hash >> 32) as usize % SEEN;
        if self.seen[slot] != hash {
            self.seen[slot] = hash;
            return;
        }
        if weight > MAX_WEIGHT {
            return;
        }
        if self.records.len() >= ENTRIES {
            let oldest = self
                .records
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.last_used)
                .map(|(i, _)| i)
                .expect("a full set has records");
            self.drop_record(oldest, reserved);
        }
        // Counted before it is made, so the workers together never pass `limit`.
        if reserved.fetch_add(weight, Ordering::Relaxed) + weight > limit {
            reserved.fetch_sub(weight, Ordering::Relaxed);
            return;
        }
        let Some(copy) = detached_copy(entry) else {
            reserved.fetch_sub(weight, Ordering::Relaxed);
            return;
        };
        self.records.push(Record {
            hash,
            key: key.into(),
            version,
            copy: Arc::new(copy),
            source: Arc::downgrade(entry),
            expires,
            weight,
            hits_since_touch: 0,
            last_used: self.clock,
        });
    }

    fn drop_record(&mut self, index: usize, reserved: &AtomicUsize) {
        let record = self.records.swap_remove(index);
        reserved.fetch_sub(record.weight, Ordering::Relaxed);
    }
}

/// `entry` in allocations of its own: no byte buffer or counter shared with the original.
fn detached_copy(entry: &Entry) -> Option<Entry> {
    let mut headers = HeaderMap::with_capacity(entry.headers.len());
    for (name, value) in &entry.headers {
        // Standard names are constants; only other names are copied.
        let name = HeaderName::from_bytes(name.as_str().as_bytes()).ok()?;
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).ok()?;
        copy.set_sensitive(value.is_sensitive());
        headers.append(name, copy);
    }
    Some(Entry {
        status: entry.status,
        headers,
        body: bytes::Bytes::copy_from_slice(&entry.body),
        freshness: entry.freshness,
    })
}
