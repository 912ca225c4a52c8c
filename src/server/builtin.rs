//! Built-in endpoints, answered by the gateway and never routed upstream.

use std::sync::atomic::Ordering;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use super::state::GatewayState;
use crate::proxy::body::ResponseBody;

/// Paths the gateway answers itself.
pub const PATHS: [&str; 3] = ["/health", "/readyz", "/metrics"];

/// Answers a built-in endpoint, or `None` when `path` is not one.
pub fn serve(state: &GatewayState, method: &Method, path: &str) -> Option<Response<ResponseBody>> {
    if !PATHS.contains(&path) {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method_not_allowed","message":"use GET"}"#.to_string(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(response);
    }
    Some(match path {
        "/health" => json(StatusCode::OK, r#"{"status":"ok"}"#.to_string()),
        "/readyz" => readyz(state),
        _ => metrics(state),
    })
}

/// 200 with what is loaded while serving; 503 once draining so load balancers move traffic
/// away before connections close. (The gateway listens only after its first config loads, so
/// there is no "not loaded yet" state to report.)
fn readyz(state: &GatewayState) -> Response<ResponseBody> {
    let snapshot = state.snapshot.load();
    let draining = state.draining.load(Ordering::SeqCst);
    let upstreams: serde_json::Map<String, serde_json::Value> = snapshot
        .upstreams
        .iter()
        .map(|u| {
            let targets: Vec<&str> = u.targets.iter().map(|t| &*t.url).collect();
            let mut status = serde_json::json!({
                "targets": targets,
                // Without health checks targets are assumed up; the pool shows which ones the
                // gateway currently holds connections to.
                "health": if u.health.is_some() { "checked" } else { "unchecked" },
                "idle_connections": u.pool.idle_count(),
            });
            if u.health.is_some() {
                let unhealthy: Vec<&str> = (0..u.targets.len())
                    .filter(|&i| !u.is_healthy(i))
                    .map(|i| &*u.targets[i].url)
                    .collect();
                status["unhealthy"] = serde_json::json!(unhealthy);
            }
            if let Some(breaker) = &u.breaker {
                status["circuit"] = serde_json::json!(breaker.state().as_str());
            }
            if let Some(outliers) = &u.outliers {
                let ejected: Vec<&str> = (0..u.targets.len())
                    .filter(|&i| !outliers.is_in(i))
                    .map(|i| &*u.targets[i].url)
                    .collect();
                status["ejected"] = serde_json::json!(ejected);
            }
            (u.name.to_string(), status)
        })
        .collect();
    let (rate_limit, store_down_denies) = rate_limit_state(&snapshot.limiter);
    let body = serde_json::json!({
        "status": if draining { "draining" } else if store_down_denies { "rate_limit_store_down" } else { "ready" },
        "config": {
            "version": snapshot.version,
            "hash": snapshot.content_hash,
            "loaded_at": humantime::format_rfc3339_millis(snapshot.loaded_at).to_string(),
            "routes": snapshot.router.routes().len(),
        },
        "upstreams": upstreams,
        "rate_limit": rate_limit,
        "cache": cache_state(snapshot.cache_runtime.as_ref()),
    });
    let status = if draining || store_down_denies {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, body.to_string())
}

/// The rate-limit store and its state as the last decision found it, and whether that makes
/// the instance unready: only when Redis is down and `on_store_error: deny` refuses every limited
/// request, since `local` and `allow` still serve (degraded, but serving).
fn rate_limit_state(limiter: &crate::ratelimit::Limiter) -> (serde_json::Value, bool) {
    use crate::ratelimit::{OnStoreError, StoreState};
    let Some(redis) = limiter.redis() else {
        return (serde_json::json!({"store": "memory", "state": "up"}), false);
    };
    let state = redis.state();
    let on_store_error = match limiter.on_store_error() {
        OnStoreError::Local => "local",
        OnStoreError::Allow => "allow",
        OnStoreError::Deny => "deny",
    };
    let label = match state {
        StoreState::Unknown => "unknown",
        StoreState::Up => "up",
        StoreState::Down => "down",
    };
    let value = serde_json::json!({
        "store": "redis",
        "state": label,
        "degraded": state == StoreState::Down,
        "on_store_error": on_store_error,
    });
    let unready = state == StoreState::Down && limiter.on_store_error() == OnStoreError::Deny;
    (value, unready)
}

/// The cache store and its state: a Redis cache that fails degrades the instance (requests go
/// upstream uncached) but never makes it unready.
fn cache_state(runtime: Option<&crate::cache::store::CacheRuntime>) -> serde_json::Value {
    use crate::cache::redis::RedisCacheState;
    use crate::cache::store::CacheStore;
    match runtime.map(|r| &r.store) {
        None => serde_json::Value::Null,
        Some(CacheStore::Memory(_)) => serde_json::json!({"store": "memory", "state": "up"}),
        Some(CacheStore::Redis(redis)) => {
            let state = redis.state();
            serde_json::json!({
                "store": "redis",
                "state": match state {
                    RedisCacheState::Unknown => "unknown",
                    RedisCacheState::Up => "up",
                    RedisCacheState::Down => "down",
                },
                "degraded": state == RedisCacheState::Down,
            })
        }
    }
}

fn metrics(state: &GatewayState) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(state.metrics.encode()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::observability::metrics::CONTENT_TYPE),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json(status: StatusCode, mut body: String) -> Response<ResponseBody> {
    body.push('\n');
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
