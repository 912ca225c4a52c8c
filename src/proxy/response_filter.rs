//! The response filter: what the gateway adds to an answer before it goes to the client.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Response;

use super::body::ResponseBody;
use super::ctx::{CorsFacts, RequestCtx};
use super::headers::add_security_headers;
use crate::compress;
use crate::observability::request_id::X_REQUEST_ID;

/// Who made an answer; some steps touch only the route's own answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The route's action: its upstream's answer or its static response.
    Route,
    /// The gateway itself: an error, or a preflight answer.
    Gateway,
}

/// Adds the route's response headers to the answer, in order; compression goes last. `tls`:
/// the request came over TLS.
pub fn response_filter(
    ctx: &RequestCtx<'_>,
    source: Source,
    tls: bool,
    response: &mut Response<ResponseBody>,
) {
    if source == Source::Route {
        header_rules(ctx, tls, response.headers_mut());
    }
    cors(ctx, response.headers_mut());
    rate_limit(ctx, response.headers_mut());
    if let Some(result) = ctx.cache_result {
        super::cache::set_x_cache(response.headers_mut(), result);
    }
    response
        .headers_mut()
        .insert(X_REQUEST_ID, ctx.request_id.clone());
    if let (Source::Route, Some(policy)) = (source, &ctx.route.compress) {
        compress::apply(policy, &ctx.head.method, ctx.accepts, response);
    }
}

/// The route's `response_headers`, then its security headers (HSTS only over TLS).
fn header_rules(ctx: &RequestCtx<'_>, tls: bool, headers: &mut HeaderMap) {
    ctx.route.response_headers.apply(headers);
    if ctx.route.security_headers {
        add_security_headers(headers, tls);
    }
}

/// The RateLimit fields (IETF draft) of the deciding limit, on every answer of a limited
/// route, allowed or not.
fn rate_limit(ctx: &RequestCtx<'_>, headers: &mut HeaderMap) {
    let Some(decision) = &ctx.rate_limit else {
        return;
    };
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(decision.limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(decision.reset_secs()));
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The CORS headers for the request's `Origin`, on every answer but a preflight's: error
/// answers carry them too, or the browser hides a 401 from the page; and every answer varies
/// by Origin so shared caches keep origins apart.
fn cors(ctx: &RequestCtx<'_>, headers: &mut HeaderMap) {
    let CorsFacts::Actual { origin } = &ctx.cors else {
        return;
    };
    let Some(policy) = &ctx.route.policy.cors else {
        return;
    };
    let mut request_headers = HeaderMap::new();
    if let Some(origin) = origin {
        request_headers.insert(header::ORIGIN, origin.clone());
    }
    policy.apply(&request_headers, headers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ctx::tests::{ctx_after_upstream, get, snapshot_of};
    use http::header::HeaderValue;

    const ROUTES: &str = "routes:
  - name: app
    match: {path: /}
    respond: {body: hi}
    security_headers: true
    response_headers: {set: {X-Route: app}}
    cors: {origins: ['https://app.example.com']}
";

    /// The headers `source`'s answer leaves the filter with, for a request whose CORS facts are
    /// `cors`, over plain HTTP.
    fn filtered(source: Source, cors: CorsFacts) -> HeaderMap {
        filtered_over(source, cors, false)
    }

    fn filtered_over(source: Source, cors: CorsFacts, tls: bool) -> HeaderMap {
        let snapshot = snapshot_of(ROUTES);
        let mut head = get("/x", None);
        let mut ctx = ctx_after_upstream(&snapshot, &mut head, false);
        ctx.cors = cors;
        let mut response = Response::new(ResponseBody::Empty);
        response_filter(&ctx, source, tls, &mut response);
        response.into_parts().0.headers
    }

    #[test]
    fn hsts_goes_on_the_routes_own_answers_over_tls_only() {
        let own = filtered_over(Source::Route, actual(), true);
        assert_eq!(own[header::STRICT_TRANSPORT_SECURITY], "max-age=31536000");
        let plain = filtered_over(Source::Route, actual(), false);
        assert!(!plain.contains_key(header::STRICT_TRANSPORT_SECURITY));
        let gateway = filtered_over(Source::Gateway, actual(), true);
        assert!(!gateway.contains_key(header::STRICT_TRANSPORT_SECURITY));
    }

    fn actual() -> CorsFacts {
        let origin = HeaderValue::from_static("https://app.example.com");
        CorsFacts::Actual {
            origin: Some(origin),
        }
    }

    #[test]
    fn header_rules_go_on_the_routes_own_answers_only() {
        let own = filtered(Source::Route, actual());
        assert_eq!(own["x-route"], "app");
        assert_eq!(own[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let gateway = filtered(Source::Gateway, actual());
        assert!(!gateway.contains_key("x-route"));
        assert!(!gateway.contains_key(header::X_CONTENT_TYPE_OPTIONS));
    }

    #[test]
    fn cors_goes_on_every_answer_but_a_preflights() {
        for source in [Source::Route, Source::Gateway] {
            let headers = filtered(source, actual());
            let allowed = &headers[header::ACCESS_CONTROL_ALLOW_ORIGIN];
            assert_eq!(allowed, "https://app.example.com", "{source:?}");
            assert_eq!(headers[header::VARY], "Origin", "{source:?}");
        }
        let preflight = filtered(Source::Gateway, CorsFacts::Preflight);
        assert!(!preflight.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(!preflight.contains_key(header::VARY));
    }

    #[test]
    fn every_answer_gets_the_request_id() {
        for cors in [actual(), CorsFacts::Preflight, CorsFacts::Off] {
            for source in [Source::Route, Source::Gateway] {
                assert_eq!(filtered(source, cors.clone())[X_REQUEST_ID], "abc");
            }
        }
    }
}
