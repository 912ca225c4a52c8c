//! The Redis bucket store against a real `redis-server` that each test starts on a free port
//! (no persistence) and kills at the end: exact counts, one budget across two connections (as
//! two gateway instances have), prompt errors while Redis is down or stalled, recovery after a
//! restart on the same port without a new store, NOSCRIPT after SCRIPT FLUSH, a real 3-node
//! Redis Cluster made with `redis-cli --cluster create`, a password (as a setting and in the
//! URL; wrong or missing fails promptly), `rediss://` refusing an untrusted certificate and
//! trusting the CA of `ca_file`, and one connection per worker shared by the stores of a setting.

mod common;

use std::time::{Duration, Instant};

use common::eventually;
use common::redis::{RedisCluster, RedisOptions, RedisServer, TlsFiles};
use gatehouse::ratelimit::{
    KeyKind, RateLimit, RedisSettings, RedisStore, RedisTarget, StoreError,
};

fn per_minute(route: &str, limit: u32, burst: u32) -> RateLimit {
    RateLimit::new(route, KeyKind::Ip, limit, Duration::from_secs(60), burst).expect("valid")
}

async fn connected(redis: &RedisServer) -> RedisStore {
    let store = RedisStore::start(redis.settings());
    eventually("the store connects", || async { store.is_connected() }).await;
    store
}

#[tokio::test]
async fn ten_per_minute_refuses_the_eleventh_with_exact_headers() {
    let redis = RedisServer::start();
    let store = connected(&redis).await;
    let ten = per_minute("orders", 10, 0);
    for i in 1..=10u64 {
        let d = store.check(&ten, b"10.0.0.1").await.expect("decision");
        assert!(d.allowed, "request {i}");
        assert_eq!((d.limit, d.remaining), (10, 10 - i), "request {i}");
        assert_eq!(d.retry_after, Duration::ZERO);
        // Redis' clock moves a little between calls: reset is i intervals minus that.
        let full = Duration::from_secs(6 * i);
        assert!(d.reset_after <= full && d.reset_after > full - Duration::from_secs(1));
    }
    let d = store.check(&ten, b"10.0.0.1").await.expect("decision");
    assert!(!d.allowed, "request 11 is refused");
    assert_eq!(d.remaining, 0);
    assert!(d.retry_after <= Duration::from_secs(6) && d.retry_after > Duration::from_secs(5));
    assert_eq!(d.retry_after_secs(), 6);
    assert_eq!(d.reset_secs(), 60);
    // Another client has its own bucket.
    assert!(
        store
            .check(&ten, b"10.0.0.2")
            .await
            .expect("decision")
            .allowed
    );

    // Burst: 5 per minute plus 3 at once.
    let burst = per_minute("orders", 5, 3);
    let mut allowed = 0;
    for _ in 0..20 {
        allowed += u32::from(
            store
                .check(&burst, b"10.0.0.1")
                .await
                .expect("decision")
                .allowed,
        );
    }
    assert_eq!(allowed, 8);

    // The bucket expires once full again: its TTL is the time to refill, at most a minute.
    let key = gatehouse::ratelimit::redis::bucket_key(&ten, b"10.0.0.1");
    let ttl = redis.command(&format!("PTTL {key}")).expect("PTTL");
    let ttl: i64 = ttl
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("integer reply");
    assert!((59_000..=60_000).contains(&ttl), "PTTL {ttl}");
}

/// Two instances of the gateway, each with its own connection, spend one budget: the check and
/// the spend are one atomic script, so neither can read a count the other is about to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_sharing_one_redis_admit_exactly_limit_plus_burst() {
    let redis = RedisServer::start();
    let (a, b) = (connected(&redis).await, connected(&redis).await);
    let limit = std::sync::Arc::new(
        RateLimit::new("shared", KeyKind::Route, 20, Duration::from_secs(3_600), 5).expect("valid"),
    );
    let mut tasks = Vec::new();
    for store in [a, b] {
        for _ in 0..4 {
            let (store, limit) = (store.clone(), std::sync::Arc::clone(&limit));
            tasks.push(tokio::spawn(async move {
                let mut allowed = 0u32;
                for _ in 0..25 {
                    allowed += u32::from(store.check(&limit, b"").await.expect("decision").allowed);
                }
                allowed
            }));
        }
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("task");
    }
    // 200 requests over 8 concurrent callers on 2 connections: exactly 20 + 5 admitted.
    assert_eq!(total, 25);
}

/// Decisions asked together go out together: far fewer script calls than decisions, each
/// request still decided on its own and in order (a key named many times in one call is
/// counted once per request).
#[tokio::test]
async fn concurrent_decisions_share_script_calls_and_count_exactly() {
    let redis = RedisServer::start();
    let store = connected(&redis).await;
    let limit =
        RateLimit::new("batch", KeyKind::Ip, 50, Duration::from_secs(3_600), 0).expect("valid");
    let (calls_before, gets_before, sets_before) = (
        redis.calls("evalsha"),
        redis.calls("get"),
        redis.calls("set"),
    );
    let keys: [&[u8]; 2] = [b"10.0.0.1", b"10.0.0.2"];
    let decisions =
        futures_util::future::join_all((0..400).map(|i| store.check(&limit, keys[i % 2]))).await;
    let calls = redis.calls("evalsha") - calls_before;
    for (k, key) in keys.iter().enumerate() {
        let mut remaining: Vec<u64> = decisions
            .iter()
            .skip(k)
            .step_by(2)
            .map(|d| d.as_ref().expect("decision"))
            .filter(|d| d.allowed)
            .map(|d| d.remaining)
            .collect();
        assert_eq!(remaining.len(), 50, "{}", String::from_utf8_lossy(key));
        // Each allowed request saw the bucket one request emptier than the one before.
        remaining.sort_unstable();
        assert_eq!(remaining, (0..50).collect::<Vec<u64>>());
    }
    assert!(
        (1..100).contains(&calls),
        "400 decisions took {calls} script calls"
    );
    // Inside a call each bucket is read once and written once, however often it is named.
    let gets = redis.calls("get") - gets_before;
    let sets = redis.calls("set") - sets_before;
    assert!(gets <= 2 * calls, "{gets} GETs in {calls} calls");
    assert!(sets <= 2 * calls, "{sets} SETs in {calls} calls");
}

/// At most MAX_QUEUED decisions wait; the next one is refused at once as busy, and those
/// queued are all decided.
#[tokio::test]
async fn a_full_queue_refuses_the_next_decision_at_once() {
    use gatehouse::ratelimit::redis::MAX_QUEUED;
    use std::future::Future;
    use std::task::Poll;
    let redis = RedisServer::start();
    // All of a full queue's decisions go to Redis at once, which on a loaded machine takes
    // longer than the 250 ms command timeout of the other tests; this one is about the queue's
    // bound, so its decisions may take their time.
    let store = RedisStore::start(RedisSettings {
        command_timeout: Duration::from_secs(30),
        ..redis.settings()
    });
    eventually("the store connects", || async { store.is_connected() }).await;
    let limit =
        RateLimit::new("busy", KeyKind::Ip, 10_000, Duration::from_secs(3_600), 0).expect("valid");
    let mut waiting: Vec<_> = (0..=MAX_QUEUED)
        .map(|_| Box::pin(store.check(&limit, b"c")))
        .collect();
    // Each polled once before this task yields, so the batching task takes none meanwhile.
    for (i, decision) in waiting.iter_mut().enumerate() {
        let polled = std::future::poll_fn(|cx| Poll::Ready(decision.as_mut().poll(cx))).await;
        if i < MAX_QUEUED {
            assert!(
                polled.is_pending(),
                "decision {} of {MAX_QUEUED} queues",
                i + 1
            );
        } else {
            assert_eq!(polled, Poll::Ready(Err(StoreError::Busy(MAX_QUEUED))));
        }
    }
    waiting.pop();
    let decided = futures_util::future::join_all(waiting).await;
    assert_eq!(decided.len(), MAX_QUEUED);
    assert!(decided.iter().all(|d| d.as_ref().is_ok_and(|d| d.allowed)));
    // The queue has room again.
    assert!(store.check(&limit, b"c").await.is_ok());
}

#[tokio::test]
async fn redis_down_fails_promptly_and_a_restart_resumes_without_a_new_store() {
    let mut redis = RedisServer::start();
    let store = connected(&redis).await;
    let limit = per_minute("r", 100, 0);
    assert!(store.check(&limit, b"c").await.expect("decision").allowed);

    redis.kill();
    // The broken connection is noticed by the next command, and later ones fail at once.
    for i in 0..5 {
        let started = Instant::now();
        let error = store.check(&limit, b"c").await.expect_err("redis is down");
        // command_timeout is 250 ms; a generous bound for a loaded machine.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "attempt {i}: {error:?} after {:?}",
            started.elapsed()
        );
        if i > 0 {
            assert_eq!(error, StoreError::Disconnected, "attempt {i}");
        }
    }
    assert!(!store.is_connected());

    // Down long enough that uncapped doubling from 100 ms would next try ~2.8 s after the
    // restart; reconnect_max_backoff (200 ms) keeps every pause at most 240 ms (with jitter).
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(redis.spawn(), "redis restarts on port {}", redis.port);
    let restarted = Instant::now();
    eventually("decisions work again after the restart", || async {
        store.check(&limit, b"c").await.is_ok()
    })
    .await;
    assert!(
        restarted.elapsed() < Duration::from_millis(1_500),
        "reconnected {:?} after the restart",
        restarted.elapsed()
    );
    // A fresh Redis holds no buckets: the count starts over, and then counts on.
    let d = store.check(&limit, b"c").await.expect("decision");
    assert!(d.allowed);
    assert!(d.remaining >= 97, "remaining {}", d.remaining);
}

#[tokio::test]
async fn a_stalled_redis_costs_at_most_command_timeout() {
    let redis = RedisServer::start();
    let store = connected(&redis).await;
    let limit = per_minute("r", 100, 0);
    assert!(store.check(&limit, b"c").await.is_ok());
    redis.signal("-STOP");
    let started = Instant::now();
    let error = store
        .check(&limit, b"c")
        .await
        .expect_err("redis is stopped");
    let waited = started.elapsed();
    redis.signal("-CONT");
    assert_eq!(error, StoreError::Timeout(Duration::from_millis(250)));
    assert!(
        store.is_connected(),
        "a slow answer does not drop the connection"
    );
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    // Once Redis answers again so does the store, on the same connection.
    eventually("redis answers again", || async {
        store.check(&limit, b"c").await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn script_flush_is_recovered_and_the_bucket_kept() {
    let redis = RedisServer::start();
    let store = connected(&redis).await;
    let limit = per_minute("r", 10, 0);
    let first = store.check(&limit, b"c").await.expect("decision");
    assert_eq!(first.remaining, 9);
    assert_eq!(redis.command("SCRIPT FLUSH").as_deref(), Some("+OK\r\n"));
    let second = store
        .check(&limit, b"c")
        .await
        .expect("NOSCRIPT reloads the script");
    assert!(second.allowed);
    assert_eq!(second.remaining, 8, "the bucket survived the flush");
    let third = store.check(&limit, b"c").await.expect("decision");
    assert_eq!(third.remaining, 7);
}

/// A real 3-node Redis Cluster (no replicas): buckets land on different nodes by hash slot,
/// each decided by the script on the node that owns its key.
#[tokio::test]
async fn a_redis_cluster_counts_exactly_on_every_node() {
    let cluster = RedisCluster::start().await;
    let (a, b) = (
        RedisStore::start(cluster.settings()),
        RedisStore::start(cluster.settings()),
    );
    eventually("both stores connect", || async {
        a.is_connected() && b.is_connected()
    })
    .await;
    let limit = per_minute("orders", 3, 1);
    // Enough clients that their buckets land on all three nodes (each misses one with
    // probability (2/3)^40).
    for client in 0..40u32 {
        let key = format!("10.0.0.{client}");
        let mut allowed = 0;
        for i in 0..6 {
            let store = if i % 2 == 0 { &a } else { &b };
            let decision = store.check(&limit, key.as_bytes()).await;
            allowed += u32::from(decision.expect("decision").allowed);
        }
        assert_eq!(
            allowed, 4,
            "client {key}: limit 3 + burst 1 across two stores"
        );
    }
    let keys_per_node = cluster.keys_per_node();
    assert_eq!(keys_per_node.iter().sum::<i64>(), 40, "{keys_per_node:?}");

    // Asked all at once, the decisions of many keys go in one batch, split by key (a script's
    // keys must share a slot): still exactly limit + burst per client.
    let concurrent = per_minute("concurrent", 3, 1);
    let keys: Vec<String> = (0..40).map(|c| format!("10.0.1.{c}")).collect();
    let asked = keys
        .iter()
        .flat_map(|key| std::iter::repeat_n(key, 6))
        .enumerate()
        .map(|(i, key)| {
            let store = if i % 2 == 0 { &a } else { &b };
            store.check(&concurrent, key.as_bytes())
        });
    let decided = futures_util::future::join_all(asked).await;
    for (key, decisions) in keys.iter().zip(decided.chunks(6)) {
        let allowed = decisions
            .iter()
            .filter(|d| d.as_ref().expect("decision").allowed)
            .count();
        assert_eq!(allowed, 4, "client {key} asking 6 at once");
    }
    assert!(
        keys_per_node.iter().all(|&n| n > 0),
        "spread over every node: {keys_per_node:?}"
    );
}

fn with_password(password: &str) -> RedisOptions {
    RedisOptions {
        password: Some(password.into()),
        ..RedisOptions::default()
    }
}

/// `password` and a password in the URL both AUTH; the bucket counts exactly either way.
#[tokio::test]
async fn a_password_protected_redis_counts_exactly_with_password_or_url() {
    let redis = RedisServer::start_with(with_password("s3cret-pw"));
    let by_setting = connected(&redis).await;
    let by_url = RedisStore::start(RedisSettings {
        target: RedisTarget::Url(format!("redis://:s3cret-pw@127.0.0.1:{}/0", redis.port)),
        password: None,
        ..redis.settings()
    });
    eventually("the URL store connects", || async { by_url.is_connected() }).await;
    let limit = per_minute("pw", 5, 0);
    let mut allowed = 0;
    for i in 0..8 {
        let store = if i % 2 == 0 { &by_setting } else { &by_url };
        allowed += u32::from(store.check(&limit, b"c").await.expect("decision").allowed);
    }
    assert_eq!(allowed, 5, "one budget in the password-protected redis");
    assert_eq!(redis.integer("DBSIZE"), 1);
}

/// A wrong or missing password never connects: every decision fails at once (the store does
/// not wait for a connection), and keeps failing while the reconnects are refused.
#[tokio::test]
async fn a_wrong_or_missing_password_fails_every_decision_promptly() {
    let redis = RedisServer::start_with(with_password("s3cret-pw"));
    let limit = per_minute("pw", 5, 0);
    for password in [Some("wrong".to_string()), None] {
        let store = RedisStore::start(RedisSettings {
            password: password.clone(),
            ..redis.settings()
        });
        assert!(
            !store.wait_connected(Duration::from_millis(1_500)).await,
            "password {password:?} connects"
        );
        for _ in 0..3 {
            let started = Instant::now();
            let error = store.check(&limit, b"c").await.expect_err("not connected");
            assert_eq!(error, StoreError::Disconnected, "password {password:?}");
            assert!(started.elapsed() < Duration::from_millis(100));
        }
    }
    assert_eq!(redis.integer("DBSIZE"), 0, "nothing was written");
}

/// `rediss://` checks the server certificate against the built-in Mozilla roots unless
/// `ca_file` says otherwise: a certificate from a private CA is refused for its issuer (the name
/// matches), and the client's `#insecure` URL fragment cannot turn the check off.
#[tokio::test]
async fn rediss_refuses_a_certificate_from_an_untrusted_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start_with(RedisOptions {
        tls: Some(TlsFiles::generate(dir.path())),
        ..RedisOptions::default()
    });
    assert!(redis.url().starts_with("rediss://127.0.0.1:"));
    let limit = per_minute("tls", 5, 0);
    let insecure = RedisSettings {
        target: RedisTarget::Url(format!("{}#insecure", redis.url())),
        ..redis.settings()
    };
    let refusals = [
        (redis.settings(), "invalid peer certificate: UnknownIssuer"),
        (insecure, "Cannot create insecure client"),
    ];
    for (settings, why) in refusals {
        let store = RedisStore::start(settings.clone());
        assert!(
            !store.wait_connected(Duration::from_millis(1_500)).await,
            "{settings:?} connected"
        );
        let started = Instant::now();
        let error = store.check(&limit, b"c").await.expect_err("not connected");
        assert_eq!(error, StoreError::Disconnected);
        assert!(started.elapsed() < Duration::from_millis(100));
        // Refused for the certificate, not for anything else.
        common::eventually("the connect error is known", || async {
            store.last_error().is_some()
        })
        .await;
        let last = store.last_error().unwrap_or_default();
        assert!(last.contains(why), "{settings:?}: {last}");
    }
}

/// The connected clients Redis counts (`INFO clients`), this asking one included.
fn connected_clients(redis: &RedisServer) -> u64 {
    let info = redis.command("INFO clients").expect("INFO clients");
    info.lines()
        .find_map(|line| line.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in {info:?}"))
}

/// The rate limiter and another store of the same `redis:` setting (as the cache will be)
/// use one connection on a worker: the registries hand both the same per-worker clients.
#[tokio::test]
async fn the_rate_limiter_and_another_store_share_one_connection_per_worker() {
    use gatehouse::ratelimit::{ClientKey, Limiter, OnStoreError, RateLimitSettings, StoreKind};
    let redis = RedisServer::start();
    let registries = gatehouse::registry::Registries::default();
    // A command timing out on a loaded machine would replace the connection this test counts.
    let settings = RedisSettings {
        command_timeout: Duration::from_secs(30),
        ..redis.settings()
    };
    let limiter = Limiter::new(
        RateLimitSettings {
            store: StoreKind::Redis,
            on_store_error: OnStoreError::Deny,
        },
        std::sync::Arc::clone(&registries.rate_limits),
        Some(registries.redis_store(&settings)),
    );
    let limit = per_minute("shared-conn", 5, 0);
    for _ in 0..3 {
        let verdict = limiter.check(&limit, ClientKey::Route).await;
        assert!(
            matches!(verdict, gatehouse::ratelimit::Verdict::Decided(d) if d.allowed),
            "{verdict:?}"
        );
    }
    // Another store of the same setting on this thread gets the limiter's connection.
    let clients = registries.redis_clients(&settings);
    let conn = clients.connected().await;
    let keys: i64 = conn.query(&redis::cmd("DBSIZE")).await.expect("DBSIZE");
    assert_eq!(
        keys, 1,
        "the limiter's bucket, seen over the same connection"
    );
    assert_eq!(clients.iter().count(), 1, "one connection for this thread");
    // The shared connection and the one asking; a connection closed before (a reconnect)
    // may still be counted for a moment.
    eventually(
        "two clients connected: the shared one and the one asking",
        || async { connected_clients(&redis) == 2 },
    )
    .await;
    // Changed settings are another setting: new connections.
    let other = gatehouse::redis::RedisSettings {
        command_timeout: Duration::from_millis(300),
        ..settings
    };
    assert!(!std::sync::Arc::ptr_eq(
        &registries.redis_clients(&other),
        &clients
    ));
}

/// With `ca_file` naming the private CA, `rediss://` trusts it (and only it): the store
/// connects over TLS and counts exactly; another CA's file still refuses the certificate.
#[tokio::test]
async fn rediss_with_ca_file_trusts_that_ca_and_counts_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = TlsFiles::generate(dir.path());
    let redis = RedisServer::start_with(RedisOptions {
        tls: Some(tls.clone()),
        ..RedisOptions::default()
    });
    let trusting = |path: &std::path::Path| RedisSettings {
        ca_file: Some(gatehouse::redis::CaFile::read(path.to_path_buf()).expect("CA file")),
        ..redis.settings()
    };
    let store = RedisStore::start(trusting(&tls.ca));
    assert!(
        store.wait_connected(Duration::from_secs(5)).await,
        "connects trusting the test CA"
    );
    let limit = per_minute("tls", 5, 0);
    let mut allowed = 0;
    for _ in 0..8 {
        allowed += u32::from(store.check(&limit, b"c").await.expect("decision").allowed);
    }
    assert_eq!(allowed, 5, "exactly the limit, through TLS");

    let other = tempfile::tempdir().expect("temp dir");
    let other_ca = TlsFiles::generate(other.path()).ca;
    let store = RedisStore::start(trusting(&other_ca));
    assert!(
        !store.wait_connected(Duration::from_millis(1_500)).await,
        "another CA's file does not make the certificate trusted"
    );
}
