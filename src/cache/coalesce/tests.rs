use std::sync::Barrier;
use std::time::Duration;

use super::*;

/// A single-threaded runtime like a worker's.
fn worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

#[test]
fn hundred_joins_across_worker_runtimes_make_one_leader() {
    let coalescer = Coalescer::new();
    let key = Bytes::from_static(b"gwcache:/hot");
    let threads = 4;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (coalescer, key, barrier) = (coalescer.clone(), key.clone(), barrier.clone());
            std::thread::spawn(move || {
                worker_runtime().block_on(async move {
                    let roles: Vec<Role> = (0..25).map(|_| coalescer.join(&key)).collect();
                    // Every join happens before the leader can finish.
                    barrier.wait();
                    let mut leaders = 0;
                    let mut waits = Vec::new();
                    for role in roles {
                        match role {
                            Role::Leader(guard) => {
                                leaders += 1;
                                guard.finish();
                            }
                            Role::Waiter(w) => waits.push(tokio::spawn(w.wait_until(far()))),
                        }
                    }
                    let mut wakes = Vec::new();
                    for w in waits {
                        wakes.push(w.await.unwrap());
                    }
                    (leaders, wakes)
                })
            })
        })
        .collect();
    let mut leaders = 0;
    let mut wakes = Vec::new();
    for h in handles {
        let (l, w) = h.join().unwrap();
        leaders += l;
        wakes.extend(w);
    }
    assert_eq!(leaders, 1);
    assert_eq!(wakes.len(), 99);
    assert!(wakes.iter().all(|w| *w == Wake::Finished), "{wakes:?}");
    assert_eq!(coalescer.in_flight(), 0);
}

#[test]
fn a_leader_that_panics_wakes_waiters_and_one_of_them_leads_next() {
    let coalescer = Coalescer::new();
    let key = Bytes::from_static(b"k");
    let Role::Leader(guard) = coalescer.join(&key) else {
        panic!("first join leads")
    };
    let waiters: Vec<Waiter> = (0..10)
        .map(|_| match coalescer.join(&key) {
            Role::Waiter(w) => w,
            Role::Leader(_) => panic!("second leader"),
        })
        .collect();
    assert_eq!(guard.waiters(), 10);
    let runtime = worker_runtime();
    let waits: Vec<_> = waiters
        .into_iter()
        .map(|w| runtime.spawn(w.wait_until(far())))
        .collect();
    // The leader's handler panics on another thread holding the guard.
    let panicked = std::thread::spawn(move || {
        let _guard = guard;
        panic!("handler failed");
    })
    .join();
    assert!(panicked.is_err());
    runtime.block_on(async {
        for w in waits {
            assert_eq!(w.await.unwrap(), Wake::Abandoned);
        }
    });
    assert_eq!(coalescer.in_flight(), 0);
    // They join again: one leads, the rest wait for it.
    let roles: Vec<Role> = (0..10).map(|_| coalescer.join(&key)).collect();
    let leaders = roles
        .iter()
        .filter(|r| matches!(r, Role::Leader(_)))
        .count();
    assert_eq!(leaders, 1);
}

#[test]
fn a_cancelled_leader_task_wakes_waiters_on_another_runtime() {
    let coalescer = Coalescer::new();
    let key = Bytes::from_static(b"k");
    let leader_rt = worker_runtime();
    let Role::Leader(guard) = coalescer.join(&key) else {
        panic!("first join leads")
    };
    let Role::Waiter(waiter) = coalescer.join(&key) else {
        panic!("second join waits")
    };
    // The leader's request is waiting on its upstream when its client goes away.
    let task = leader_rt.spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    let waiting = std::thread::spawn(move || worker_runtime().block_on(waiter.wait_until(far())));
    task.abort();
    leader_rt.block_on(async {
        assert!(task.await.unwrap_err().is_cancelled());
    });
    assert_eq!(waiting.join().unwrap(), Wake::Abandoned);
    assert_eq!(coalescer.in_flight(), 0);
}

#[test]
fn waiters_time_out_after_their_bound_and_the_flight_goes_on() {
    let coalescer = Coalescer::new();
    let key = Bytes::from_static(b"k");
    let Role::Leader(guard) = coalescer.join(&key) else {
        panic!("first join leads")
    };
    let Role::Waiter(waiter) = coalescer.join(&key) else {
        panic!("second join waits")
    };
    let bound = Duration::from_millis(50);
    let (wake, waited) = worker_runtime().block_on(async {
        let start = Instant::now();
        let wake = waiter.wait_until(start + bound).await;
        (wake, start.elapsed())
    });
    assert_eq!(wake, Wake::TimedOut);
    assert!(waited >= bound, "{waited:?}");
    assert_eq!(coalescer.in_flight(), 1, "the leader still leads");
    assert!(matches!(coalescer.join(&key), Role::Waiter(_)));
    guard.finish();
    assert_eq!(coalescer.in_flight(), 0);
}

#[test]
fn a_waiter_joining_after_the_flight_ended_leads_a_new_one() {
    let coalescer = Coalescer::new();
    let key = Bytes::from_static(b"k");
    let Role::Leader(first) = coalescer.join(&key) else {
        panic!("first join leads")
    };
    let Role::Waiter(waiter) = coalescer.join(&key) else {
        panic!("second join waits")
    };
    first.finish();
    // Finished before the waiter looked: it sees the end at once, without the deadline.
    let wake = worker_runtime().block_on(waiter.wait_until(Instant::now()));
    assert_eq!(wake, Wake::Finished);
    assert!(matches!(coalescer.join(&key), Role::Leader(_)));
}

#[test]
fn flights_leave_the_map_when_they_end() {
    let coalescer = Coalescer::new();
    let runtime = worker_runtime();
    for i in 0..1000u32 {
        let key = Bytes::from(format!("gwcache:/n/{}", i % 37));
        let Role::Leader(guard) = coalescer.join(&key) else {
            panic!("flight {i} left behind")
        };
        let Role::Waiter(waiter) = coalescer.join(&key) else {
            panic!("second join waits")
        };
        let other = Bytes::from(format!("gwcache:/other/{i}"));
        let Role::Leader(other_guard) = coalescer.join(&other) else {
            panic!("distinct keys have their own flights")
        };
        assert_eq!(coalescer.in_flight(), 2);
        match i % 3 {
            0 => guard.finish(),
            1 => drop(guard),
            _ => {
                // The waiter gives up first; the flight still ends with its leader.
                let wake = runtime.block_on(waiter.wait_until(Instant::now()));
                assert_eq!(wake, Wake::TimedOut);
                guard.finish();
                drop(other_guard);
                continue;
            }
        }
        let wake = runtime.block_on(waiter.wait_until(far()));
        assert_eq!(
            wake,
            if i % 3 == 0 {
                Wake::Finished
            } else {
                Wake::Abandoned
            }
        );
        other_guard.finish();
    }
    assert_eq!(coalescer.in_flight(), 0);
}
