use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, StatusCode};

use super::*;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// An entry received at t(0), fresh for 10 s, usable stale for 5 s more; its body names `tag`.
fn entry(tag: &str, body_len: usize) -> Arc<Entry> {
    let mut headers = HeaderMap::new();
    headers.insert("x-tag", HeaderValue::from_str(tag).unwrap());
    let mut body = tag.as_bytes().to_vec();
    body.resize(body_len.max(tag.len()), b'.');
    Arc::new(Entry {
        status: StatusCode::OK,
        headers,
        body: body.into(),
        freshness: crate::cache::policy::freshness::Freshness {
            request_time: t(0),
            response_time: t(0),
            date_value: t(0),
            age_value: Duration::ZERO,
            lifetime: Duration::from_secs(10),
            stale_while_revalidate: Duration::from_secs(2),
            stale_if_error: Duration::from_secs(5),
            must_revalidate: false,
            no_cache: false,
            immutable: false,
        },
    })
}

/// A capacity whose shard (one, for small figures) holds `bytes` once the part kept for the
/// workers' copies is set aside.
fn holding(bytes: usize) -> usize {
    bytes + bytes / 15 + 1
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("gwcache:/items/{i}"))
}

/// Entries and bytes found by looking every key up, to check the store's own counters.
fn audit(cache: &MemoryCache, keys: impl Iterator<Item = Bytes>) -> (usize, usize) {
    let mut found = (0, 0);
    for k in keys {
        if let Some(e) = cache.get_at(&k, t(1)).and_then(Stored::into_entry) {
            assert!(e.body.starts_with(e.headers["x-tag"].as_bytes()));
            found.0 += 1;
            found.1 += weight(&k, &e);
        }
    }
    found
}

#[test]
fn shard_count_leaves_room_for_four_of_the_largest_entries() {
    assert_eq!(MemoryCache::new(256 << 20, 1 << 20).shards.len(), 32);
    assert_eq!(MemoryCache::new(4 << 30, 1 << 20).shards.len(), MAX_SHARDS);
    assert_eq!(MemoryCache::new(2 << 20, 1 << 20).shards.len(), 1);
    assert_eq!(MemoryCache::new(0, 1 << 20).shards.len(), 1);
    let c = MemoryCache::new(1000, 10);
    assert_eq!(c.capacity(), 1000);
}

#[test]
fn capacity_in_bytes_holds_after_inserting_far_more_than_it() {
    let capacity = 4 << 20;
    let cache = MemoryCache::new(capacity, 16 << 10);
    assert_eq!(cache.shards.len(), 4);
    let mut rng = fastrand::Rng::with_seed(3);
    let n = 20_000;
    let mut inserted = 0usize;
    for i in 0..n {
        let e = entry(&i.to_string(), rng.usize(0..16 << 10));
        inserted += weight(&key(i), &e);
        cache.insert(key(i), e).unwrap();
        assert!(cache.bytes() <= capacity, "after {i}: {}", cache.bytes());
    }
    assert!(inserted > 20 * capacity, "inserted only {inserted}");
    let (entries, bytes) = audit(&cache, (0..n).map(key));
    assert_eq!(entries, cache.entries());
    assert_eq!(bytes, cache.bytes());
    // Eviction frees only what room needs: the store stays mostly full.
    assert!(cache.bytes() > capacity / 2, "{}", cache.bytes());
    assert!(entries > 10);
}

#[test]
fn eviction_takes_the_least_recently_used_first() {
    let one = weight(&key(0), &entry("0", 100));
    let cache = MemoryCache::new(holding(3 * one), 100);
    assert_eq!(cache.shards.len(), 1);
    assert_eq!(cache.shard_capacity / one, 3);
    for i in 0..3 {
        cache.insert(key(i), entry(&i.to_string(), 100)).unwrap();
    }
    assert!(cache.get_at(&key(0), t(1)).is_some());
    cache.insert(key(3), entry("3", 100)).unwrap();
    assert!(cache.get_at(&key(1), t(1)).is_none(), "1 was least recent");
    for i in [0, 2, 3] {
        assert!(
            cache
                .get_at(&key(i), t(1))
                .and_then(Stored::into_entry)
                .is_some(),
            "{i}"
        );
    }
    assert_eq!(cache.entries(), 3);
    assert_eq!(cache.bytes(), 3 * one);
}

#[test]
fn bodies_over_max_entry_size_are_refused() {
    let max = 1000;
    let cache = MemoryCache::new(1 << 20, max);
    for (len, ok) in [(max - 1, true), (max, true), (max + 1, false)] {
        let got = cache.insert(key(len), entry("x", len));
        assert_eq!(got.is_ok(), ok, "{len}");
        if !ok {
            assert_eq!(got, Err(Refused::BodyTooLarge { size: len, max }));
        }
    }
    assert_eq!(cache.entries(), 2);
    // A refused newer response takes the outdated entry out.
    cache.insert(key(max), entry("y", max + 1)).unwrap_err();
    assert!(cache.get_at(&key(max), t(1)).is_none());
    assert_eq!(cache.entries(), 1);
}

#[test]
fn entries_heavier_than_a_shard_are_refused() {
    let cache = MemoryCache::new(2000, 4000);
    let got = cache.insert(key(1), entry("x", 3000));
    // The shard holds what the workers' copies leave of the capacity.
    assert!(matches!(got, Err(Refused::OverCapacity { max: 1875, .. })));
    assert_eq!((cache.entries(), cache.bytes()), (0, 0));
}

#[test]
fn replacing_a_key_counts_it_once() {
    let cache = MemoryCache::new(1 << 20, 1 << 10);
    cache.insert(key(1), entry("a", 10)).unwrap();
    cache.insert(key(1), entry("b", 500)).unwrap();
    assert_eq!(cache.entries(), 1);
    assert_eq!(cache.bytes(), weight(&key(1), &entry("b", 500)));
    assert_eq!(
        &cache
            .get_at(&key(1), t(1))
            .and_then(Stored::into_entry)
            .unwrap()
            .headers["x-tag"],
        "b"
    );
    cache.remove(&key(1));
    cache.remove(&key(2));
    assert_eq!((cache.entries(), cache.bytes()), (0, 0));
    assert!(cache.get_at(&key(1), t(1)).is_none());
}

#[test]
fn entries_expire_after_lifetime_plus_the_longer_stale_window() {
    let cache = MemoryCache::new(1 << 20, 1 << 10);
    cache.insert(key(1), entry("a", 10)).unwrap();
    // Fresh for 10 s, stale-if-error 5 s: of use until t(15).
    assert!(cache.get_at(&key(1), t(11)).is_some(), "stale but usable");
    assert!(cache
        .get_at(&key(1), t(15) - Duration::from_nanos(1))
        .is_some());
    assert!(cache.get_at(&key(1), t(15)).is_none());
    assert_eq!(
        (cache.entries(), cache.bytes()),
        (0, 0),
        "removed on expiry"
    );
}

#[test]
fn real_clock_lookups_expire_old_entries() {
    let cache = MemoryCache::new(1 << 20, 1 << 10);
    // Received at t(0) in 2023: long useless by the real clock.
    cache.insert(key(1), entry("old", 1)).unwrap();
    assert!(cache.get(&key(1)).is_none());
    let mut now = (*entry("new", 1)).clone();
    now.freshness.response_time = SystemTime::now();
    cache.insert(key(2), Arc::new(now)).unwrap();
    assert!(cache.get(&key(2)).is_some());
}

#[test]
fn concurrent_readers_and_writers_keep_the_accounting() {
    let capacity = 8 << 20;
    let cache = Arc::new(MemoryCache::new(capacity, 4 << 10));
    assert_eq!(cache.shards.len(), 8);
    // About twice what fits, so writers evict while readers read.
    let keys = 6000;
    let threads: Vec<_> = (0..8u64)
        .map(|seed| {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || {
                // Half of them as workers, which answer hot entries from copies.
                if seed % 2 == 0 {
                    crate::per_worker::enter_worker(seed as usize / 2);
                }
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut hits = 0;
                for _ in 0..20_000 {
                    // Half the operations on a few hot keys, which the workers copy.
                    let i = if rng.bool() {
                        rng.usize(..16)
                    } else {
                        rng.usize(..keys)
                    };
                    match rng.u8(..10) {
                        0..=5 => {
                            if let Some(e) =
                                cache.get_at(&key(i), t(1)).and_then(Stored::into_entry)
                            {
                                assert_eq!(e.headers["x-tag"], i.to_string().as_str());
                                hits += 1;
                            }
                        }
                        6..=8 => cache
                            .insert(key(i), entry(&i.to_string(), rng.usize(..4 << 10)))
                            .unwrap(),
                        _ => cache.remove(&key(i)),
                    }
                    assert!(cache.bytes() + cache.copied_bytes() <= capacity);
                }
                hits
            })
        })
        .collect();
    let hits: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(hits > 0);
    let (entries, bytes) = audit(&cache, (0..keys).map(key));
    assert_eq!(entries, cache.entries());
    assert_eq!(bytes, cache.bytes());
    assert!(bytes <= capacity);
}

/// Runs `body` on a thread that counts as worker `index`.
fn as_worker<R: Send>(index: usize, body: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::per_worker::enter_worker(index);
            body()
        })
        .join()
        .unwrap()
    })
}

fn hit(cache: &MemoryCache, i: usize) -> Option<Arc<Entry>> {
    cache.get_at(&key(i), t(1)).and_then(Stored::into_entry)
}

#[test]
fn a_worker_answers_an_entry_it_hits_again_from_a_copy_of_its_own() {
    let cache = MemoryCache::new(1 << 20, 1 << 10);
    let stored = entry("a", 100);
    cache.insert(key(1), Arc::clone(&stored)).unwrap();
    as_worker(0, || {
        // The first two hits read the shared entry; the second makes the copy.
        for _ in 0..2 {
            assert!(Arc::ptr_eq(&hit(&cache, 1).unwrap(), &stored));
        }
        assert_eq!(cache.copied_bytes(), weight(&key(1), &stored));
        let copy = hit(&cache, 1).unwrap();
        assert!(!Arc::ptr_eq(&copy, &stored));
        assert_eq!(*copy, *stored);
        assert_ne!(copy.body.as_ptr(), stored.body.as_ptr());
        assert_ne!(
            copy.headers["x-tag"].as_bytes().as_ptr(),
            stored.headers["x-tag"].as_bytes().as_ptr()
        );
        assert!(Arc::ptr_eq(&hit(&cache, 1).unwrap(), &copy));
    });
    // Threads outside the workers read the shared entry.
    assert!(Arc::ptr_eq(&hit(&cache, 1).unwrap(), &stored));
}

#[test]
fn a_copy_is_never_served_after_its_entry_is_replaced_or_removed() {
    let cache = MemoryCache::new(1 << 20, 1 << 10);
    cache.insert(key(1), entry("old", 100)).unwrap();
    std::thread::scope(|s| {
        let (to_worker, from_main) = std::sync::mpsc::channel::<()>();
        let (to_main, from_worker) = std::sync::mpsc::channel::<()>();
        let cache = &cache;
        let worker = s.spawn(move || {
            crate::per_worker::enter_worker(0);
            for _ in 0..3 {
                assert_eq!(hit(cache, 1).unwrap().headers["x-tag"], "old");
            }
            assert!(cache.copied_bytes() > 0);
            to_main.send(()).unwrap();
            from_main.recv().unwrap();
            assert_eq!(hit(cache, 1).unwrap().headers["x-tag"], "new");
            to_main.send(()).unwrap();
            from_main.recv().unwrap();
            assert!(hit(cache, 1).is_none());
            assert_eq!(cache.copied_bytes(), 0);
        });
        from_worker.recv().unwrap();
        cache.insert(key(1), entry("new", 100)).unwrap();
        to_worker.send(()).unwrap();
        from_worker.recv().unwrap();
        cache.remove(&key(1));
        to_worker.send(()).unwrap();
        worker.join().unwrap();
    });
}

#[test]
fn a_copy_outlives_changes_to_other_keys_of_its_shard_but_not_its_entry_s_time() {
    let cache = MemoryCache::new(1 << 20, 1 << 10);
    assert_eq!(cache.shards.len(), 1);
    cache.insert(key(1), entry("a", 100)).unwrap();
    as_worker(0, || {
        for _ in 0..2 {
            hit(&cache, 1).unwrap();
        }
        let copy = hit(&cache, 1).unwrap();
        cache.insert(key(2), entry("b", 100)).unwrap();
        cache.remove(&key(2));
        assert!(Arc::ptr_eq(&hit(&cache, 1).unwrap(), &copy));
        // Fresh for 10 s and usable stale for 5 s more: of no use from t(15) on.
        assert!(cache.get_at(&key(1), t(14)).is_some());
        assert!(cache.get_at(&key(1), t(15)).is_none());
        assert_eq!(cache.entries(), 0);
        assert_eq!(cache.copied_bytes(), 0);
    });
}

#[test]
fn an_entry_answered_from_copies_keeps_its_place_in_the_recency_list() {
    let one = weight(&key(0), &entry("0", 100));
    let cache = MemoryCache::new(holding(2 * one), 100);
    assert_eq!(cache.shard_capacity / one, 2);
    as_worker(0, || {
        cache.insert(key(0), entry("0", 100)).unwrap();
        cache.insert(key(1), entry("1", 100)).unwrap();
        for i in [0, 0, 1] {
            hit(&cache, i).unwrap();
        }
        // Entry 1 is the most recent in the shard; entry 0 is hit from the worker's copy only,
        // often enough for one of those hits to reach the shard.
        for _ in 0..near::TOUCH_EVERY + 1 {
            hit(&cache, 0).unwrap();
        }
        cache.insert(key(2), entry("2", 100)).unwrap();
        assert!(hit(&cache, 0).is_some(), "0 was used last");
        assert!(hit(&cache, 1).is_none(), "1 was least recent");
    });
}

#[test]
fn copies_stay_within_the_part_of_the_capacity_kept_for_them() {
    let one = weight(&key(0), &entry("0", 100));
    // Room for two copies (the reserve is a sixteenth of the capacity).
    let cache = MemoryCache::new(32 * one + 16, 100);
    assert_eq!(cache.near_capacity / one, 2);
    as_worker(0, || {
        for i in 0..10 {
            cache.insert(key(i), entry(&i.to_string(), 100)).unwrap();
            for _ in 0..3 {
                assert_eq!(
                    hit(&cache, i).unwrap().headers["x-tag"],
                    i.to_string().as_str()
                );
            }
        }
    });
    as_worker(1, || {
        for i in 0..10 {
            for _ in 0..3 {
                hit(&cache, i).unwrap();
            }
        }
    });
    assert_eq!(cache.copied_bytes(), 2 * one);
    assert!(cache.bytes() + cache.copied_bytes() <= cache.capacity());
}
