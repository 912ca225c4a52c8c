//! Balancing against real origins: weighted round robin is exact over a cycle, a slow target
//! gets less under least_requests, random follows the weights, hash keeps keys on their
//! target, and outlier detection ejects failing targets.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::origin::{Answer, Origin};
use common::{client, send, server_yaml, Got, TestGateway};
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn gateway(balance: &str, targets: &[(&Origin, u32)]) -> TestGateway {
    let list: Vec<String> = targets
        .iter()
        .map(|(o, w)| format!("{{url: {}, weight: {w}}}", o.url()))
        .collect();
    let yaml = format!(
        "{}upstreams:\n  o:\n    balance: {balance}\n    targets: [{}]\n\
         routes:\n  - name: r\n    match: {{path: /lb}}\n    upstream: o\n",
        server_yaml(""),
        list.join(", ")
    );
    TestGateway::start(&yaml).await
}

/// Three origins answering `/lb` with 200.
async fn three_origins() -> [Origin; 3] {
    let origins = [
        Origin::start().await,
        Origin::start().await,
        Origin::start().await,
    ];
    for origin in &origins {
        origin.set("/lb", Answer::ok("x", &[]));
    }
    origins
}

/// One GET of `/lb` through the gateway, on `client`'s pooled connections.
async fn get_lb(client: &HttpClient, gw: &TestGateway) -> Got {
    let request = Request::get(gw.url("/lb"))
        .body(Full::<Bytes>::default())
        .unwrap();
    send(client, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_requests_sends_less_to_a_slow_target() {
    let (slow, fast) = (Origin::start().await, Origin::start().await);
    slow.set(
        "/lb",
        Answer::ok("slow", &[]).after(Duration::from_millis(300)),
    );
    fast.set("/lb", Answer::ok("fast", &[]));
    let gw = gateway("least_requests", &[(&slow, 1), (&fast, 1)]).await;
    // 8 clients, 5 requests each, one after another.
    let gw = &gw;
    let clients = (0..8).map(|_| async move {
        let client = client();
        for _ in 0..5 {
            assert_eq!(get_lb(&client, gw).await.status, 200);
        }
    });
    futures_util::future::join_all(clients).await;
    let (to_slow, to_fast) = (slow.count("/lb"), fast.count("/lb"));
    assert_eq!(to_slow + to_fast, 40);
    // Round robin would send 20 to each; here a request goes to the slow target only when it
    // had no more in flight than the fast one.
    assert!(to_slow <= 12, "slow {to_slow}, fast {to_fast}");
}

/// The default balancer, smooth weighted round robin: every cycle of sum(weights) requests
/// gives each target exactly its weight, interleaved rather than in runs.
#[tokio::test]
async fn weighted_round_robin_is_exact_over_each_cycle() {
    let [a, b, c] = three_origins().await;
    let gw = gateway("round_robin", &[(&a, 3), (&b, 1), (&c, 2)]).await;
    let client = client();
    for cycle in 1..=5 {
        for _ in 0..6 {
            assert_eq!(get_lb(&client, &gw).await.status, 200);
        }
        let counts = [a.count("/lb"), b.count("/lb"), c.count("/lb")];
        assert_eq!(counts, [3 * cycle, cycle, 2 * cycle], "after cycle {cycle}");
    }
}

#[tokio::test]
async fn random_follows_the_weights() {
    let [a, b, c] = three_origins().await;
    let gw = gateway("random", &[(&a, 1), (&b, 1), (&c, 2)]).await;
    let client = client();
    for _ in 0..400 {
        assert_eq!(get_lb(&client, &gw).await.status, 200);
    }
    let counts = [a.count("/lb"), b.count("/lb"), c.count("/lb")];
    // Expected 100, 100, 200 (standard deviations ~9, ~9, ~10): these bands are 5 or more away.
    assert!((50..150).contains(&counts[0]), "{counts:?}");
    assert!((50..150).contains(&counts[1]), "{counts:?}");
    assert!((150..250).contains(&counts[2]), "{counts:?}");
}

/// Which origin served each of `users` (by `X-User-Id`), as the origins recorded it.
async fn served_by(gw: &TestGateway, origins: &[&Origin], users: &[String]) -> Vec<usize> {
    let client = client();
    let mut out = Vec::new();
    for user in users {
        let request = Request::get(gw.url("/lb"))
            .header("x-user-id", user.as_str())
            .body(Full::<Bytes>::default())
            .unwrap();
        assert_eq!(send(&client, request).await.status, 200);
        let by = origins
            .iter()
            .position(|o| {
                o.last("/lb").is_some_and(|s| {
                    s.headers
                        .get("x-user-id")
                        .is_some_and(|v| v == user.as_str())
                })
            })
            .expect("an origin saw the request");
        out.push(by);
    }
    out
}

#[tokio::test]
async fn hash_keeps_each_key_on_one_target_and_moves_few_when_one_goes() {
    let origins = three_origins().await;
    let all: Vec<&Origin> = origins.iter().collect();
    let yaml = |targets: &[&Origin]| {
        let list: Vec<String> = targets.iter().map(|o| o.url()).collect();
        format!(
            "{}upstreams:\n  o:\n    balance: hash\n    hash_on: header:X-User-Id\n    targets: [{}]\n\
             routes:\n  - name: r\n    match: {{path: /lb}}\n    upstream: o\n",
            server_yaml(""),
            list.join(", ")
        )
    };
    let gw = TestGateway::start(&yaml(&all)).await;
    let users: Vec<String> = (0..60).map(|u| format!("user-{u}")).collect();
    let first = served_by(&gw, &all, &users).await;
    assert_eq!(
        served_by(&gw, &all, &users).await,
        first,
        "the same key, the same target"
    );
    for t in 0..3 {
        assert!(first.contains(&t), "every target gets keys: {first:?}");
    }
    // The third target removed by a reload: only its keys move.
    std::fs::write(gw.path("gateway.yaml"), yaml(&all[..2])).unwrap();
    let _ = gw.handle.reload().await;
    let after = served_by(&gw, &all, &users).await;
    for ((user, &before), &now) in users.iter().zip(&first).zip(&after) {
        assert!(now < 2, "{user} still sent to the removed target");
        if before < 2 {
            assert_eq!(now, before, "{user} moved off a target that stayed");
        }
    }
}

/// `outlier_detection`: a target failing `consecutive_failures` times in a row leaves the
/// rotation; never more than `max_ejected_percent` of the targets are out.
#[tokio::test]
async fn a_target_failing_in_a_row_is_ejected_but_never_all() {
    let (bad, good) = (Origin::start().await, Origin::start().await);
    bad.set("/lb", Answer::status(503, "down", &[]));
    good.set("/lb", Answer::ok("up", &[]));
    let yaml = format!(
        "{}upstreams:\n  o:\n    targets: [{}, {}]\n\
         \x20   outlier_detection: {{consecutive_failures: 2, ejection_time: 60s, max_ejected_percent: 50}}\n\
         routes:\n  - name: r\n    match: {{path: /lb}}\n    upstream: o\n",
        server_yaml(""),
        bad.url(),
        good.url()
    );
    let gw = TestGateway::start(&yaml).await;
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..24 {
        statuses.push(get_lb(&client, &gw).await.status.as_u16());
    }
    // Round robin gives the failing target every other request until its second failure.
    assert_eq!(bad.count("/lb"), 2, "{statuses:?}");
    assert_eq!(good.count("/lb"), 22);
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), 2);
    let ready = common::get(&gw.url("/readyz")).await.json();
    assert_eq!(
        ready["upstreams"]["o"]["ejected"],
        serde_json::json!([bad.url()]),
        "{ready}"
    );
    let ejections = common::metric(&gw, "gatehouse_upstream_ejections_total{upstream=\"o\"}").await;
    assert_eq!(ejections, 1.0);

    // Both failing: one may be out (50% of 2), the other keeps taking requests.
    good.set("/lb", Answer::status(503, "down", &[]));
    for _ in 0..10 {
        assert_eq!(get_lb(&client, &gw).await.status, 503);
    }
    assert_eq!(good.count("/lb"), 32, "the last target in is never ejected");
}

/// Outlier state lives beside the upstream, not in one config snapshot: a reload that leaves
/// the upstream unchanged keeps its ejections; one that changes its targets starts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ejections_survive_a_reload_of_an_unchanged_upstream() {
    let (bad, good, other) = (
        Origin::start().await,
        Origin::start().await,
        Origin::start().await,
    );
    bad.set("/lb", Answer::status(503, "down", &[]));
    good.set("/lb", Answer::ok("up", &[]));
    other.set("/lb", Answer::ok("up", &[]));
    let yaml = |targets: &str, extra_route: &str| {
        format!(
            "{}upstreams:\n  o:\n    targets: [{targets}]\n\
             \x20   outlier_detection: {{consecutive_failures: 2, ejection_time: 60s, max_ejected_percent: 50}}\n\
             routes:\n  - name: r\n    match: {{path: /lb}}\n    upstream: o\n{extra_route}",
            server_yaml(""),
        )
    };
    let two = format!("{}, {}", bad.url(), good.url());
    let gw = TestGateway::start(&yaml(&two, "")).await;
    let client = client();
    let get = || get_lb(&client, &gw);
    for _ in 0..6 {
        get().await;
    }
    assert_eq!(bad.count("/lb"), 2, "ejected after its second failure");

    // Another route added: the upstream is the same, its ejection stays.
    let extra = "  - name: s\n    match: {path: /s}\n    respond: {status: 204}\n";
    std::fs::write(gw.path("gateway.yaml"), yaml(&two, extra)).unwrap();
    let _ = gw.handle.reload().await;
    common::eventually("the reload is live", || async {
        common::get(&gw.url("/s")).await.status == 204
    })
    .await;
    for _ in 0..6 {
        assert_eq!(get().await.status, 200);
    }
    assert_eq!(bad.count("/lb"), 2, "still ejected after the reload");
    let ready = common::get(&gw.url("/readyz")).await.json();
    assert_eq!(
        ready["upstreams"]["o"]["ejected"],
        serde_json::json!([bad.url()]),
        "{ready}"
    );

    // A target added: new outlier state, so the failing target is tried again.
    let three = format!("{two}, {}", other.url());
    std::fs::write(gw.path("gateway.yaml"), yaml(&three, extra)).unwrap();
    let _ = gw.handle.reload().await;
    common::eventually("the changed upstream takes requests", || async {
        get().await;
        other.count("/lb") > 0
    })
    .await;
    for _ in 0..6 {
        get().await;
    }
    assert!(
        bad.count("/lb") > 2,
        "a changed upstream starts with every target in"
    );
}
