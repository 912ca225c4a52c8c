//! The cache phases of a route with `cache`: the lookup after the request filter (so a cached
//! answer never skips auth, authorize or a rate limit), and after the upstream the fill, the
//! revalidation, stale-if-error and the invalidation by unsafe methods.
//!
//! What a stored response is, whether one may be stored and for how long, and how conditional
//! requests are answered are the rules of [`crate::cache::policy`]; keys are
//! [`crate::cache::key`]'s; this module only applies them to one request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use super::body::ResponseBody;
use super::ctx::RequestCtx;
use crate::cache::coalesce::Role;
use crate::cache::directory::Directory;
use crate::cache::entry::Entry;
use crate::cache::fill::Filling;
use crate::cache::key::{url_key, Variant};
use crate::cache::policy::cache_control::{RequestCacheControl, ResponseCacheControl};
use crate::cache::policy::conditional::{
    evaluate_conditional, not_modified_headers, ClientConditional,
};
use crate::cache::policy::freshness::{age_header, Freshness, RouteDefaults, Usable};
use crate::cache::policy::invalidate::{invalidation_targets, RequestTarget};
use crate::cache::policy::revalidate::{add_validators, merge_not_modified, NotModifiedMatch};
use crate::cache::policy::storable::{
    lookup as may_look_up, storable, Lookup, RequestView, ResponseView, Storable,
};
use crate::cache::policy::vary::{parse_vary, Vary};
use crate::cache::settings::RouteCache;
use crate::cache::store::{CacheRuntime, Stored};
use crate::error::GatewayError;
use crate::observability::metrics::CacheResult;
use crate::routing::normalize::normalize_path;

/// `X-Cache`: what the cache made of a request on a cache-enabled route.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The conditional fields a client may send that the cache answers itself; they are kept
/// from a revalidation sent on the cache's behalf.
const CLIENT_VALIDATORS: [HeaderName; 2] = [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE];

/// What the lookup made of a request.
pub enum Looked {
    /// Answered from the cache (or refused: `only-if-cached` with nothing usable).
    Answered(Box<Result<Response<ResponseBody>, GatewayError>>),
    /// Goes upstream; what the fill needs afterwards.
    Upstream(Box<Pending>),
    /// Answered with a stale entry (`stale-while-revalidate`); the revalidation, with its
    /// request's headers, is for the caller to run in the background.
    Refresh(Box<Response<ResponseBody>>, Box<Pending>),
}

/// A request on its way upstream, and what the cache will do with the answer.
pub struct Pending {
    /// Counted and sent as `X-Cache` when the upstream answers.
    result: CacheResult,
    /// The URL key, when the request may fill the cache or invalidates it.
    url_key: Option<String>,
    /// The client's headers as received (the upstream phase takes the request's own), for
    /// `Vary` and the client's conditionals.
    request_headers: HeaderMap,
    /// The request's `Cache-Control`, as the lookup read it.
    request_cc: RequestCacheControl,
    /// The caller's `sub`, on a route that keys by user.
    user: Option<String>,
    /// The stored response being revalidated, for a 304 or for stale-if-error.
    stale: Option<Arc<Entry>>,
    /// The URL's directory, when one was found.
    directory: Option<Arc<Directory>>,
    /// Leads the upstream request of a key others wait on.
    flight: Option<crate::cache::coalesce::LeaderGuard>,
    /// When the request left for the upstream.
    request_time: SystemTime,
    /// Whether the answer may be stored.
    may_store: bool,
    /// A refresh the gateway runs by itself: its outcome is not a client's answer and is not
    /// counted.
    background: bool,
    /// An unsafe method: a success invalidates the URL; with the scheme and authority the
    /// request came with, to tell which `Location` is on the same origin.
    invalidates: Option<(&'static str, String)>,
}

/// What the lookup read of a request that the handling of its answer needs again.
struct Asked {
    /// The client's headers as received (for a refresh, with the cache's validators).
    headers: HeaderMap,
    /// Its `Cache-Control`.
    cache_control: RequestCacheControl,
    /// The caller's `sub`, on a route that keys by user.
    user: Option<String>,
}

impl Pending {
    /// A miss or a revalidation of `key`, whose answer may fill the cache.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        key: String,
        asked: Asked,
        stale: Option<Arc<Entry>>,
        directory: Option<Arc<Directory>>,
        flight: Option<crate::cache::coalesce::LeaderGuard>,
        request_time: SystemTime,
        may_store: bool,
    ) -> Box<Pending> {
        Box::new(Pending {
            result: CacheResult::Miss,
            url_key: Some(key),
            request_headers: asked.headers,
            request_cc: asked.cache_control,
            user: asked.user,
            stale,
            directory,
            flight,
            request_time,
            may_store,
            background: false,
            invalidates: None,
        })
    }

    /// Counts `result` for the route, unless this is a background refresh.
    fn count(&self, ctx: &RequestCtx<'_>, result: CacheResult) {
        if !self.background {
            ctx.route.cache_results.record(result);
        }
    }

    /// The client's headers as received (with the cache's validators, for a refresh).
    pub fn request_headers(&self) -> &HeaderMap {
        &self.request_headers
    }

    fn bypass(result: CacheResult) -> Box<Pending> {
        Box::new(Pending {
            result,
            url_key: None,
            request_headers: HeaderMap::new(),
            request_cc: RequestCacheControl::default(),
            user: None,
            stale: None,
            directory: None,
            flight: None,
            request_time: SystemTime::now(),
            may_store: false,
            background: false,
            invalidates: None,
        })
    }
}

/// The lookup phase: answers from the cache when it can.
pub async fn lookup(
    ctx: &mut RequestCtx<'_>,
    policy: &RouteCache,
    runtime: &CacheRuntime,
    scheme: &'static str,
) -> Looked {
    let method = &ctx.head.method;
    if !(method == Method::GET || method == Method::HEAD) {
        let mut pending = Pending::bypass(CacheResult::Bypass);
        if is_unsafe(method) {
            let authority = match ctx.head.uri.authority() {
                Some(authority) => authority.as_str().to_string(),
                None => ctx
                    .head
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
            };
            pending.invalidates = Some((scheme, authority));
            pending.url_key = Some(url_key_of(ctx, runtime));
        }
        return Looked::Upstream(pending);
    }
    let asks = asks_the_cache(&ctx.head.headers);
    let request_cc = if asks {
        RequestCacheControl::parse(&ctx.head.headers)
    } else {
        RequestCacheControl::default()
    };
    let view = RequestView {
        method,
        headers: &ctx.head.headers,
        cache_control: &request_cc,
    };
    if let Lookup::Bypass(_) = may_look_up(&view) {
        return Looked::Upstream(Pending::bypass(CacheResult::Bypass));
    }
    let preconditions = [
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
    ];
    if asks
        && preconditions
            .iter()
            .any(|h| ctx.head.headers.contains_key(h))
    {
        // Preconditions on state and ranges are the origin's to judge.
        return Looked::Upstream(Pending::bypass(CacheResult::Bypass));
    }
    let key = url_key_of(ctx, runtime);
    let user = user_of(ctx, policy);
    let only_if_cached = request_cc.only_if_cached;
    // The request's own headers: a hit copies none of them.
    let variant = Variant {
        route_vary: &policy.vary,
        user: user.as_deref(),
        headers: &ctx.head.headers,
    };
    let mut flight = None;
    let mut waited = false;
    let (entry, directory, usable, now, age) = loop {
        let (entry, directory) = match find(runtime, &key, &variant).await {
            Ok(found) => found,
            Err(()) => {
                // The store failed: the request goes upstream as if there were no cache.
                let mut pending = Pending::bypass(CacheResult::StoreError);
                pending.request_headers = ctx.head.headers.clone();
                return Looked::Upstream(pending);
            }
        };
        let now = SystemTime::now();
        let age = entry
            .as_ref()
            .map_or(Duration::ZERO, |e| e.freshness.age(now));
        let usable = entry
            .as_ref()
            .map(|e| e.freshness.usable_at(age, now, &request_cc));
        let upstream_next = matches!(usable, None | Some(Usable::Revalidate));
        if !upstream_next || only_if_cached || waited {
            break (entry, directory, usable, now, age);
        }
        // A miss, or an entry that must be revalidated first: one request per key goes
        // upstream, the others wait for its answer to be stored and look again.
        match runtime.coalescer.join(&variant.flight_key(&key).into()) {
            Role::Leader(guard) => {
                flight = Some(guard);
                break (entry, directory, usable, now, age);
            }
            Role::Waiter(waiter) => {
                runtime.metrics.coalesced_wait();
                let deadline = tokio::time::Instant::now() + coalesce_bound(ctx);
                // Whatever woke it (the leader stored or gave up, or the bound passed), the
                // store is asked once more; then the request goes upstream without waiting.
                let _ = waiter.wait_until(deadline).await;
                waited = true;
            }
        }
    };
    let Some(entry) = entry else {
        if only_if_cached {
            return not_cached(ctx);
        }
        let asked = Asked {
            headers: ctx.head.headers.clone(),
            cache_control: request_cc,
            user,
        };
        let may_store = method == Method::GET;
        return Looked::Upstream(Pending::fill(
            key, asked, None, directory, flight, now, may_store,
        ));
    };
    // The entry answers: counted under `result`.
    let reply = |result: CacheResult| {
        ctx.route.cache_results.record(result);
        answer(
            &entry,
            asks.then_some(&ctx.head.headers),
            method,
            age,
            result,
        )
    };
    match usable {
        Some(Usable::Fresh) | Some(Usable::StaleAccepted) => {
            let result = if usable == Some(Usable::Fresh) {
                CacheResult::Hit
            } else {
                CacheResult::Stale
            };
            Looked::Answered(Box::new(Ok(reply(result))))
        }
        Some(Usable::StaleWhileRevalidate) if !only_if_cached => {
            let response = reply(CacheResult::Stale);
            // One refresh per key at a time: a request that finds one running leaves it be.
            let refresh = match runtime.coalescer.join(&variant.flight_key(&key).into()) {
                Role::Leader(guard) => guard,
                Role::Waiter(_) => return Looked::Answered(Box::new(Ok(response))),
            };
            // A refresh may have stored a newer answer (and ended its flight) between the
            // lookup and the join: then there is nothing left to refresh.
            if let Ok((Some(current), _)) = find(runtime, &key, &variant).await {
                if current.freshness.response_time != entry.freshness.response_time {
                    return Looked::Answered(Box::new(Ok(response)));
                }
            }
            let mut headers = ctx.head.headers.clone();
            for name in &CLIENT_VALIDATORS {
                headers.remove(name);
            }
            add_validators(&entry.headers, &mut headers);
            let asked = Asked {
                headers,
                cache_control: request_cc,
                user: user.clone(),
            };
            let mut pending =
                Pending::fill(key, asked, Some(entry), directory, Some(refresh), now, true);
            pending.background = true;
            Looked::Refresh(Box::new(response), pending)
        }
        _ if only_if_cached => not_cached(ctx),
        _ => {
            // Revalidated on the way: the cache's validators replace the client's, which are
            // answered from what comes back.
            let asked = Asked {
                headers: ctx.head.headers.clone(),
                cache_control: request_cc,
                user: user.clone(),
            };
            for name in &CLIENT_VALIDATORS {
                ctx.head.headers.remove(name);
            }
            add_validators(&entry.headers, &mut ctx.head.headers);
            let may_store = ctx.head.method == Method::GET;
            Looked::Upstream(Pending::fill(
                key,
                asked,
                Some(entry),
                directory,
                flight,
                now,
                may_store,
            ))
        }
    }
}

/// `only-if-cached` with nothing stored that can answer: 504, counted as a miss.
fn not_cached(ctx: &mut RequestCtx<'_>) -> Looked {
    ctx.route.cache_results.record(CacheResult::Miss);
    ctx.cache_result = Some(CacheResult::Miss);
    Looked::Answered(Box::new(Err(GatewayError::NotCached)))
}

/// The caller's `sub`, on a route that keys by user.
fn user_of(ctx: &RequestCtx<'_>, policy: &RouteCache) -> Option<String> {
    if !policy.per_user {
        return None;
    }
    let claims = ctx.identity.as_ref()?.claims.as_ref()?;
    claims.sub().map(str::to_string)
}

/// How long a request waits for another's upstream answer to its key: the route's upstream
/// timeout, after which it goes upstream itself.
fn coalesce_bound(ctx: &RequestCtx<'_>) -> std::time::Duration {
    match &ctx.route.action {
        crate::routing::route::RouteAction::Proxy(action) => action.timeout,
        crate::routing::route::RouteAction::Respond(_) => std::time::Duration::ZERO,
    }
}

fn is_unsafe(method: &Method) -> bool {
    !(method.is_safe() || method == Method::OPTIONS)
}

fn url_key_of(ctx: &RequestCtx<'_>, runtime: &CacheRuntime) -> String {
    url_key(
        &runtime.settings.key_prefix,
        ctx.host().unwrap_or(""),
        ctx.path(),
        ctx.head.uri.query(),
    )
}

/// The stored response for this request's variant, and the URL's directory; `Err` when the
/// store failed.
async fn find(
    runtime: &CacheRuntime,
    key: &str,
    variant: &Variant<'_>,
) -> Result<(Option<Arc<Entry>>, Option<Arc<Directory>>), ()> {
    match runtime.store.get(key).await {
        Err(_) => Err(()),
        Ok(None) => Ok((None, None)),
        // A response stored whole under its URL answers only a route that keys by URL alone
        // (the route's `vary` or `per_user` may have changed since).
        Ok(Some(Stored::Response(entry))) => Ok((Some(entry).filter(|_| !variant.varies()), None)),
        Ok(Some(Stored::Directory(directory))) => {
            let variant_key = variant.key(key, directory.generation, &directory.vary);
            match runtime.store.get(&variant_key).await {
                Err(_) => Err(()),
                Ok(Some(Stored::Response(entry))) => Ok((Some(entry), Some(directory))),
                Ok(_) => Ok((None, Some(directory))),
            }
        }
    }
}

/// Whether a request carries a field the cache reads besides its URL: `Cache-Control`, a
/// conditional or `Range`. Most carry none, and one pass over their few fields costs less than
/// looking each of those names up.
fn asks_the_cache(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        name == header::CACHE_CONTROL
            || name == header::IF_NONE_MATCH
            || name == header::IF_MODIFIED_SINCE
            || name == header::IF_MATCH
            || name == header::IF_UNMODIFIED_SINCE
            || name == header::IF_RANGE
            || name == header::RANGE
    })
}

/// The answer a stored response gives: the stored head with `Age` and `X-Cache`, the body
/// (none for HEAD), or a 304 when the client's `conditionals` (the request's headers, when it
/// has any) match.
fn answer(
    entry: &Entry,
    conditionals: Option<&HeaderMap>,
    method: &Method,
    age: Duration,
    result: CacheResult,
) -> Response<ResponseBody> {
    let conditional = conditionals.map(|request| {
        evaluate_conditional(
            method,
            request,
            entry.status,
            &entry.headers,
            entry.freshness.response_time,
        )
    });
    let mut response = if conditional == Some(ClientConditional::NotModified) {
        let mut response = Response::new(ResponseBody::Empty);
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        not_modified_headers(&entry.headers, response.headers_mut());
        response
    } else {
        let body = if method == Method::HEAD {
            ResponseBody::Empty
        } else {
            ResponseBody::Full(Some(entry.body.clone()))
        };
        let mut response = Response::new(body);
        *response.status_mut() = entry.status;
        *response.headers_mut() = crate::proxy::headers::answer_headers(&entry.headers);
        if method == Method::HEAD {
            // The length the GET's body has, as a HEAD answer says.
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
        }
        response
    };
    response.headers_mut().insert(header::AGE, age_header(age));
    set_x_cache(response.headers_mut(), result);
    response
}

fn x_cache(result: CacheResult) -> HeaderValue {
    HeaderValue::from_static(match result {
        CacheResult::Hit => "HIT",
        CacheResult::Miss => "MISS",
        CacheResult::Stale => "STALE",
        CacheResult::Bypass | CacheResult::StoreError => "BYPASS",
    })
}

/// After the upstream: stores, revalidates, serves stale on error, invalidates; returns what
/// the client gets, with `X-Cache`.
pub async fn after_upstream(
    ctx: &mut RequestCtx<'_>,
    policy: &RouteCache,
    runtime: &CacheRuntime,
    pending: Box<Pending>,
    answered: Result<Response<ResponseBody>, GatewayError>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let mut pending = *pending;
    let now = SystemTime::now();
    let failed = match &answered {
        Err(_) => true,
        Ok(response) => response.status().is_server_error(),
    };
    if failed {
        if let Some(stale) = pending
            .stale
            .take()
            .filter(|s| s.freshness.can_serve_stale_on_error(now))
        {
            if let Ok(response) = answered {
                // Its body is not wanted; dropping it closes that upstream connection.
                drop(response);
            }
            let result = CacheResult::Stale;
            pending.count(ctx, result);
            return Ok(answer(
                &stale,
                Some(&pending.request_headers),
                &ctx.head.method,
                stale.freshness.age(now),
                result,
            ));
        }
    }
    let response = match answered {
        Ok(response) => response,
        Err(error) => {
            pending.count(ctx, pending.result);
            ctx.cache_result = Some(pending.result);
            return Err(error);
        }
    };
    if let Some((scheme, authority)) = &pending.invalidates {
        invalidate(ctx, runtime, scheme, authority, &response).await;
        return Ok(tagged(ctx, &pending, response));
    }
    let Some(key) = pending.url_key.take().filter(|_| pending.may_store) else {
        return Ok(tagged(ctx, &pending, response));
    };
    if response.status() == StatusCode::NOT_MODIFIED {
        if let Some(stale) = pending.stale.take() {
            return Ok(refreshed(ctx, policy, runtime, &pending, key, &stale, response, now).await);
        }
    }
    let request_view = RequestView {
        method: &ctx.head.method,
        headers: &pending.request_headers,
        cache_control: &pending.request_cc,
    };
    let response_cc = ResponseCacheControl::parse(response.headers());
    let response_view = ResponseView {
        status: response.status(),
        headers: response.headers(),
        cache_control: &response_cc,
    };
    if !matches!(
        storable(&request_view, &response_view, policy.per_user),
        Storable::Yes { .. }
    ) {
        return Ok(tagged(ctx, &pending, response));
    }
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > runtime.settings.max_entry_size) {
        return Ok(tagged(ctx, &pending, response));
    }
    let freshness = Freshness::new(
        pending.request_time,
        now,
        &response_view,
        RouteDefaults {
            ttl: policy.ttl,
            stale_if_error: policy.stale_if_error,
        },
    );
    let response_vary = match parse_vary(response.headers()) {
        Vary::Any => return Ok(tagged(ctx, &pending, response)),
        Vary::Fields(names) => names,
    };
    let variant = Variant {
        route_vary: &policy.vary,
        user: pending.user.as_deref(),
        headers: &pending.request_headers,
    };
    // Where it goes: under the URL when nothing varies, else under its variant of the URL's
    // directory (the one found, when it names the same fields, or a new one).
    let placement = if response_vary.is_empty() && !variant.varies() {
        Some((key.clone(), None))
    } else {
        let found = match pending.directory.take() {
            Some(d) => Some(d),
            // Another instance may have made the URL's directory since the lookup: its
            // generation is reused, so the two do not hide each other's variants.
            None => match runtime.store.get(&key).await {
                Ok(Some(Stored::Directory(d))) => Some(d),
                _ => None,
            },
        };
        let directory = match found {
            Some(d) if *d.vary == response_vary[..] => Some(d),
            _ => Directory::new(&response_vary).map(Arc::new),
        };
        directory.map(|d| {
            let variant_key = variant.key(&key, d.generation, &d.vary);
            (variant_key, Some((key.clone(), d)))
        })
    };
    let Some((entry_key, directory)) = placement else {
        return Ok(tagged(ctx, &pending, response));
    };
    let (parts, body) = response.into_parts();
    let filling = Filling::new(
        body,
        runtime.clone(),
        entry_key,
        directory,
        parts.status,
        parts.headers.clone(),
        freshness,
        pending.flight.take(),
    );
    let response = Response::from_parts(parts, ResponseBody::Filling(Box::new(filling)));
    Ok(tagged(ctx, &pending, response))
}

/// A 304 to a revalidation: the stored response, its headers updated from the 304 (RFC 9111
/// 4.3.4), stored again and served.
#[allow(clippy::too_many_arguments)]
async fn refreshed(
    ctx: &mut RequestCtx<'_>,
    policy: &RouteCache,
    runtime: &CacheRuntime,
    pending: &Pending,
    url_key: String,
    stale: &Entry,
    not_modified: Response<ResponseBody>,
    now: SystemTime,
) -> Response<ResponseBody> {
    let mut headers = stale.headers.clone();
    if merge_not_modified(&mut headers, not_modified.headers()) == NotModifiedMatch::Mismatch {
        // The 304 is about another response than the one stored: the client gets it as is.
        return tagged(ctx, pending, not_modified);
    }
    let response_cc = ResponseCacheControl::parse(&headers);
    let view = ResponseView {
        status: stale.status,
        headers: &headers,
        cache_control: &response_cc,
    };
    let freshness = Freshness::new(
        pending.request_time,
        now,
        &view,
        RouteDefaults {
            ttl: policy.ttl,
            stale_if_error: policy.stale_if_error,
        },
    );
    let entry = Arc::new(Entry {
        status: stale.status,
        headers,
        body: stale.body.clone(),
        freshness,
    });
    let variant = Variant {
        route_vary: &policy.vary,
        user: pending.user.as_deref(),
        headers: &pending.request_headers,
    };
    let entry_key = match &pending.directory {
        Some(d) => variant.key(&url_key, d.generation, &d.vary),
        None => url_key,
    };
    runtime
        .put(entry_key, Stored::Response(Arc::clone(&entry)))
        .await;
    let result = CacheResult::Hit;
    pending.count(ctx, result);
    answer(
        &entry,
        Some(&pending.request_headers),
        &ctx.head.method,
        entry.freshness.age(now),
        result,
    )
}

/// Removes the URLs a successful unsafe request changed: its own, and a `Location` or
/// `Content-Location` on the same origin (RFC 9111 4.4).
async fn invalidate(
    ctx: &RequestCtx<'_>,
    runtime: &CacheRuntime,
    scheme: &str,
    authority: &str,
    response: &Response<ResponseBody>,
) {
    let query = ctx.head.uri.query();
    let own = match query {
        Some(query) => format!("{}?{query}", ctx.path()),
        None => ctx.path().to_string(),
    };
    let target = RequestTarget {
        scheme,
        authority,
        path_and_query: &own,
    };
    let host = ctx.host().unwrap_or("");
    let targets = invalidation_targets(
        &ctx.head.method,
        response.status(),
        &target,
        response.headers(),
    );
    for other in targets {
        let (path, query) = match other.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (&*other, None),
        };
        // Keys hold normalised paths; a reference that cannot be normalised names no key.
        let Ok(path) = normalize_path(path) else {
            continue;
        };
        let key = url_key(&runtime.settings.key_prefix, host, &path, query);
        runtime.remove(&key).await;
    }
}

/// `response` with `X-Cache` for `result`, counted.
fn tagged(
    ctx: &RequestCtx<'_>,
    pending: &Pending,
    mut response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    let result = pending.result;
    pending.count(ctx, result);
    set_x_cache(response.headers_mut(), result);
    response
}

/// Sets `X-Cache` for `result`: on stored and upstream answers, and on the gateway's own errors
/// after the cache phase (by the response filter).
pub fn set_x_cache(headers: &mut HeaderMap, result: CacheResult) {
    headers.insert(X_CACHE.clone(), x_cache(result));
}
