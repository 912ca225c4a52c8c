//! Hot reload: file edits, renames, Kubernetes-style symlink swaps and invalid edits, checked
//! through real requests while the gateway serves.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};

fn respond_route(name: &str, path: &str, body: &str) -> String {
    format!(
        "routes:\n  - name: {name}\n    match: {{path_exact: {path}}}\n    respond: {{body: \"{body}\"}}\n"
    )
}

/// Writes `content` to `path` the way editors save: a temp file renamed over the target.
fn save_by_rename(path: &Path, content: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, content).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over");
}

async fn readyz(gw: &TestGateway) -> serde_json::Value {
    get(&gw.url("/readyz")).await.json()
}

async fn config_version(gw: &TestGateway) -> u64 {
    readyz(gw).await["config"]["version"]
        .as_u64()
        .expect("readyz has config.version")
}

const RELOAD_FAILURES: &str = r#"gatehouse_config_reloads_total{result="failure"}"#;

/// Misspells a key in routes/a.yaml and waits until the reload it triggers is rejected.
async fn break_route_file(gw: &TestGateway) {
    std::fs::write(
        gw.path("routes/a.yaml"),
        "routes:\n  - name: a\n    match: {path_exact: /a}\n    respnd: {body: bad}\n",
    )
    .unwrap();
    eventually("reload failure counted", || async {
        metric(gw, RELOAD_FAILURES).await >= 1.0
    })
    .await;
}

async fn body_of(gw: &TestGateway, path: &str) -> Option<String> {
    let got = get(&gw.url(path)).await;
    got.status.is_success().then(|| got.text())
}

#[tokio::test]
async fn edits_new_files_and_removed_files_are_picked_up() {
    let gw = TestGateway::start_with(
        &server_yaml(""),
        &[("a.yaml", &respond_route("a", "/a", "one"))],
        &[],
    )
    .await;
    assert_eq!(body_of(&gw, "/a").await.as_deref(), Some("one"));
    assert_eq!(config_version(&gw).await, 1);

    std::fs::write(gw.path("routes/a.yaml"), respond_route("a", "/a", "two")).unwrap();
    eventually("edit served", || async {
        body_of(&gw, "/a").await.as_deref() == Some("two")
    })
    .await;

    std::fs::write(gw.path("routes/b.yaml"), respond_route("b", "/b", "bee")).unwrap();
    let written = Instant::now();
    eventually("new file served", || async {
        body_of(&gw, "/b").await.as_deref() == Some("bee")
    })
    .await;
    eprintln!("new route served {:?} after the write", written.elapsed());

    std::fs::remove_file(gw.path("routes/b.yaml")).unwrap();
    eventually("removed file's route gone", || async {
        get(&gw.url("/b")).await.status == 404
    })
    .await;

    save_by_rename(
        &gw.path("routes/a.yaml"),
        &respond_route("a", "/a", "three"),
    );
    eventually("rename-over save served", || async {
        body_of(&gw, "/a").await.as_deref() == Some("three")
    })
    .await;
    assert!(config_version(&gw).await >= 5, "{}", readyz(&gw).await);
}

#[tokio::test]
async fn an_invalid_edit_is_rejected_and_the_old_config_keeps_serving() {
    let gw = TestGateway::start_with(
        &server_yaml(""),
        &[("a.yaml", &respond_route("a", "/a", "good"))],
        &[],
    )
    .await;
    let version = config_version(&gw).await;
    assert_eq!(metric(&gw, RELOAD_FAILURES).await, 0.0);

    break_route_file(&gw).await;
    assert_eq!(body_of(&gw, "/a").await.as_deref(), Some("good"));
    assert_eq!(config_version(&gw).await, version, "version unchanged");

    std::fs::write(gw.path("routes/a.yaml"), respond_route("a", "/a", "fixed")).unwrap();
    eventually("fixed file served", || async {
        body_of(&gw, "/a").await.as_deref() == Some("fixed")
    })
    .await;
    assert_eq!(config_version(&gw).await, version + 1);
    assert!(
        metric(
            &gw,
            "gatehouse_config_last_reload_success_timestamp_seconds"
        )
        .await
            > 0.0,
        "last success time set"
    );
}

#[tokio::test]
async fn a_kubernetes_configmap_symlink_swap_reloads() {
    // A ConfigMap volume: gateway.yaml -> ..data/gateway.yaml, ..data -> ..<timestamp>/.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write_version = |name: &str, body: &str| {
        let v = root.join(name);
        std::fs::create_dir(&v).unwrap();
        let config = format!("{}{}", server_yaml(""), respond_route("a", "/a", body));
        std::fs::write(v.join("gateway.yaml"), config).unwrap();
    };
    write_version("..2026_01", "first");
    std::os::unix::fs::symlink("..2026_01", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/gateway.yaml", root.join("gateway.yaml")).unwrap();

    let options = gatehouse::server::StartOptions {
        config_path: root.join("gateway.yaml"),
        env: Arc::new(gatehouse::config::MapEnv(Default::default())),
        watch: true,
    };
    let handle = gatehouse::server::Gateway::start(options).await.unwrap();
    let url = format!("http://{}/a", handle.local_addr());
    assert_eq!(get(&url).await.text(), "first");

    // What the kubelet does: new folder, new symlink, rename it over ..data.
    write_version("..2026_02", "second");
    std::os::unix::fs::symlink("..2026_02", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_01")).unwrap();
    eventually("swapped config served", || async {
        get(&url).await.text() == "second"
    })
    .await;
}

#[tokio::test]
async fn reload_keeps_restart_only_settings_and_pools() {
    let upstream = EchoUpstream::start("u").await;
    let routes = format!(
        "upstreams:\n  u:\n    targets: [{}]\nroutes:\n  - name: p\n    match: {{path: /p}}\n    upstream: u\n",
        upstream.url()
    );
    let gw = TestGateway::start_with(&server_yaml(""), &[("p.yaml", &routes)], &[]).await;
    let client = client();
    for _ in 0..3 {
        let got = send(
            &client,
            Request::get(gw.url("/p")).body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(got.status, 200);
    }
    let pool_before = Arc::clone(&gw.handle.snapshot().upstreams[0].pool);

    // A new listen address needs a restart: the reload applies the rest and keeps serving here.
    std::fs::write(
        gw.path("gateway.yaml"),
        "server:\n  listen: 127.0.0.1:1\n  max_request_body: 1KiB\n",
    )
    .unwrap();
    eventually("reload applied", || async {
        gw.handle.snapshot().server.max_request_body == 1024
    })
    .await;
    let snapshot = gw.handle.snapshot();
    assert_eq!(
        snapshot.server.listen.port(),
        0,
        "listen kept its running value"
    );
    assert!(
        Arc::ptr_eq(&pool_before, &snapshot.upstreams[0].pool),
        "an unchanged upstream keeps its connection pool"
    );
    let got = send(
        &client,
        Request::get(gw.url("/p")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
}

/// A reload drops the pools and metric series of the routes and upstreams it removed, and
/// keeps those of the ones still configured.
#[tokio::test]
async fn a_reload_forgets_removed_routes_and_upstreams_and_keeps_the_rest() {
    let (kept, gone) = (
        EchoUpstream::start("kept").await,
        EchoUpstream::start("gone").await,
    );
    let config = |upstreams: &[(&str, &EchoUpstream)]| {
        let mut text = "upstreams:\n".to_string();
        for (name, upstream) in upstreams {
            text += &format!("  {name}:\n    targets: [{}]\n", upstream.url());
        }
        text += "routes:\n";
        for (name, _) in upstreams {
            text +=
                &format!("  - name: {name}\n    match: {{path: /{name}}}\n    upstream: {name}\n");
        }
        text
    };
    let both = config(&[("kept", &kept), ("gone", &gone)]);
    let gw = TestGateway::start_with(&server_yaml(""), &[("p.yaml", &both)], &[]).await;
    for path in ["/kept", "/gone"] {
        assert_eq!(get(&gw.url(path)).await.status, 200, "{path}");
    }
    let metrics = get(&gw.url("/metrics")).await.text();
    assert!(metrics.contains(r#"route="gone""#), "{metrics}");
    assert!(metrics.contains(r#"upstream="gone""#), "{metrics}");
    let state = Arc::clone(gw.handle.state());
    assert_eq!(state.registries.pools.len(), 2);

    std::fs::write(gw.path("routes/p.yaml"), config(&[("kept", &kept)])).unwrap();
    eventually("the removed route's state forgotten", || async {
        let metrics = get(&gw.url("/metrics")).await.text();
        !metrics.contains(r#"route="gone""#)
            && !metrics.contains(r#"upstream="gone""#)
            && state.registries.pools.len() == 1
    })
    .await;
    assert_eq!(get(&gw.url("/gone")).await.status, 404);
    let metrics = get(&gw.url("/metrics")).await.text();
    assert!(metrics.contains(r#"route="kept""#), "{metrics}");
    assert!(metrics.contains(r#"upstream="kept""#), "{metrics}");
}

/// 100 reloads while clients loop: route edits, a route file added and removed, and every
/// tenth edit invalid. No client request may fail or be reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_under_load_drop_nothing() {
    let upstream = EchoUpstream::start("u").await;
    let stable = format!(
        "upstreams:\n  u:\n    targets: [{}]\nroutes:\n  - name: stable\n    match: {{path: /stable}}\n    upstream: u\n",
        upstream.url()
    );
    let gw = TestGateway::start_with(
        &server_yaml(""),
        &[
            ("stable.yaml", &stable),
            ("edited.yaml", &respond_route("edited", "/edited", "v0")),
        ],
        &[],
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for worker in 0..4 {
        let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
        let base = gw.url("");
        clients.push(tokio::spawn(async move {
            let client = common::client();
            let mut failures = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // Proxied requests with bodies and gateway-answered ones, alternating.
                let (path, body) = if n.is_multiple_of(2) {
                    ("/stable/x", Bytes::from(vec![b'x'; 2048]))
                } else {
                    ("/edited", Bytes::new())
                };
                let request = Request::post(format!("{base}{path}"))
                    .body(Full::new(body))
                    .unwrap();
                match tokio::time::timeout(DEADLINE, client.request(request)).await {
                    Ok(Ok(response)) => {
                        let status = response.status();
                        match response.into_body().collect().await {
                            Ok(_) if status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => failures.push(format!("worker {worker}: {path} -> {status}")),
                            Err(e) => failures.push(format!("worker {worker}: {path} body: {e}")),
                        }
                    }
                    Ok(Err(e)) => failures.push(format!("worker {worker}: {path}: {e:?}")),
                    Err(_) => failures.push(format!("worker {worker}: {path}: timed out")),
                }
            }
            failures
        }));
    }

    let mut expected_version = config_version(&gw).await;
    let mut expected_failures = 0.0;
    let mut broken = false;
    for i in 1..=100u32 {
        if i % 10 == 0 {
            broken = true;
            std::fs::write(
                gw.path("routes/edited.yaml"),
                "routes:\n  - name: edited\n    match: {path_exact: /edited}\n    respond: {body: [unclosed\n",
            )
            .unwrap();
            expected_failures += 1.0;
            eventually("invalid edit rejected", || async {
                metric(&gw, RELOAD_FAILURES).await >= expected_failures
            })
            .await;
            continue;
        }
        match i % 3 {
            // The edit after an invalid one repairs it; anything else would be rejected too.
            _ if broken => {
                broken = false;
                save_by_rename(
                    &gw.path("routes/edited.yaml"),
                    &respond_route("edited", "/edited", &format!("v{i}")),
                )
            }
            0 => std::fs::write(
                gw.path("routes/extra.yaml"),
                respond_route("extra", "/extra", &format!("e{i}")),
            )
            .unwrap(),
            1 if gw.path("routes/extra.yaml").exists() => {
                std::fs::remove_file(gw.path("routes/extra.yaml")).unwrap()
            }
            _ => save_by_rename(
                &gw.path("routes/edited.yaml"),
                &respond_route("edited", "/edited", &format!("v{i}")),
            ),
        }
        expected_version += 1;
        eventually("reload applied", || async {
            config_version(&gw).await >= expected_version
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(within(client).await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed requests:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let served = ok.load(Ordering::Relaxed);
    assert!(served > 100, "clients kept running ({served} requests)");
    assert_eq!(config_version(&gw).await, expected_version);
    assert!(expected_version >= 91, "90 valid reloads applied");
}

#[tokio::test]
async fn restoring_the_running_config_after_a_rejected_edit_counts_as_a_reload() {
    let good = respond_route("a", "/a", "good");
    let gw = TestGateway::start_with(&server_yaml(""), &[("a.yaml", &good)], &[]).await;
    let version = config_version(&gw).await;
    let successes = r#"gatehouse_config_reloads_total{result="success"}"#;

    break_route_file(&gw).await;
    assert_eq!(metric(&gw, successes).await, 0.0);

    // Byte for byte what is running: nothing to swap, but the operator who saw the rejection
    // must see that the files are good again.
    std::fs::write(gw.path("routes/a.yaml"), &good).unwrap();
    eventually("the recovery counted as a successful reload", || async {
        metric(&gw, successes).await >= 1.0
    })
    .await;
    assert_eq!(config_version(&gw).await, version, "nothing was swapped");
    assert_eq!(body_of(&gw, "/a").await.as_deref(), Some("good"));

    // Once recovered, the same files again are just unchanged.
    assert!(matches!(
        gw.handle.reload().await,
        gatehouse::server::reload::ReloadOutcome::Unchanged
    ));
    assert_eq!(metric(&gw, successes).await, 1.0);
}
