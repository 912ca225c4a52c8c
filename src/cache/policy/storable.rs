//! Whether a request may be answered from the cache, and whether a response may be stored
//! (RFC 9111 3, narrowed by the gateway's own rules: never `Set-Cookie`, `GET` only).

use http::header::{AUTHORIZATION, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};

use super::cache_control::{RequestCacheControl, ResponseCacheControl};
use super::freshness::has_explicit_freshness;
use super::vary::{parse_vary, Vary};

/// The parts of a request the caching rules read.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request header fields, as the client sent them.
    pub headers: &'a HeaderMap,
    /// Its `Cache-Control`, parsed once by the caller.
    pub cache_control: &'a RequestCacheControl,
}

/// The parts of a response the caching rules read.
#[derive(Debug, Clone, Copy)]
pub struct ResponseView<'a> {
    /// The response status.
    pub status: StatusCode,
    /// The response header fields, as the origin sent them.
    pub headers: &'a HeaderMap,
    /// Its `Cache-Control`, parsed once by the caller.
    pub cache_control: &'a ResponseCacheControl,
}

/// Why a request skips the cache lookup or a response is not stored (a metrics/log label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotStored {
    /// Not GET (or HEAD, for the lookup): other methods are never answered from or stored.
    Method,
    /// The request said `no-store` (RFC 9111 5.2.1.5).
    RequestNoStore,
    /// The request's `Cache-Control` did not parse.
    RequestMalformed,
    /// A 1xx interim response (RFC 9111 3: only final responses).
    Informational,
    /// The response's `Cache-Control` did not parse: it may have said `no-store`.
    ResponseMalformed,
    /// The response said `no-store` (RFC 9111 5.2.2.5).
    NoStore,
    /// The response said `private` (RFC 9111 5.2.2.7): a shared cache never stores it.
    Private,
    /// The response sets a cookie, which must never reach another user.
    SetCookie,
    /// `Vary: *` or a `Vary` that does not parse: no request could be matched to it (4.1).
    VaryAny,
    /// The request carried `Authorization` and neither the route (`per_user`) nor the
    /// response (`public`, `s-maxage`, `must-revalidate`) allows sharing it (RFC 9111 3.5).
    Authorization,
    /// 206: range responses are not supported.
    PartialContent,
    /// 304: it updates a stored response (4.3.4) but is never stored by itself.
    NotModified,
    /// No explicit freshness and a status that is not heuristically cacheable (RFC 9110 15.1).
    NotCacheableStatus,
}

impl NotStored {
    /// A stable snake_case label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::RequestNoStore => "request_no_store",
            NotStored::RequestMalformed => "request_malformed",
            NotStored::Informational => "informational",
            NotStored::ResponseMalformed => "response_malformed",
            NotStored::NoStore => "no_store",
            NotStored::Private => "private",
            NotStored::SetCookie => "set_cookie",
            NotStored::VaryAny => "vary_any",
            NotStored::Authorization => "authorization",
            NotStored::PartialContent => "partial_content",
            NotStored::NotModified => "not_modified",
            NotStored::NotCacheableStatus => "status",
        }
    }
}

/// Whether the cache may be consulted for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Look the request up (and honour its directives through [`super::Freshness::usable`]).
    Consult,
    /// Go upstream without looking, and do not store the answer.
    Bypass(NotStored),
}

/// Whether a request may be answered from the cache: GET and HEAD (HEAD is served from a stored
/// GET), without `no-store` and with a readable `Cache-Control`.
pub fn lookup(request: &RequestView<'_>) -> Lookup {
    if request.method != Method::GET && request.method != Method::HEAD {
        return Lookup::Bypass(NotStored::Method);
    }
    if request.cache_control.malformed {
        return Lookup::Bypass(NotStored::RequestMalformed);
    }
    if request.cache_control.no_store {
        return Lookup::Bypass(NotStored::RequestNoStore);
    }
    Lookup::Consult
}

/// Whether a response may be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storable {
    /// Store it. `heuristic`: it has no explicit freshness, so the route `ttl` is its lifetime.
    Yes {
        /// The freshness lifetime comes from the route `ttl` (RFC 9111 4.2.2).
        heuristic: bool,
    },
    /// Do not store it.
    No(NotStored),
}

/// Statuses a cache may give a heuristic lifetime (RFC 9110 15.1), minus 206 (no ranges).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether `response`, the answer to `request`, may be stored (RFC 9111 3). `per_user`: the
/// route keys entries by user, so a response to an authenticated request is never shared.
pub fn storable(
    request: &RequestView<'_>,
    response: &ResponseView<'_>,
    per_user: bool,
) -> Storable {
    use NotStored::*;
    // HEAD is answered from a stored GET; a HEAD response has no body to store.
    if request.method != http::Method::GET {
        return Storable::No(Method);
    }
    if response.status.is_informational() {
        return Storable::No(Informational);
    }
    if request.cache_control.malformed {
        return Storable::No(RequestMalformed);
    }
    if request.cache_control.no_store {
        return Storable::No(RequestNoStore);
    }
    let cc = response.cache_control;
    if cc.malformed {
        return Storable::No(ResponseMalformed);
    }
    if cc.no_store {
        return Storable::No(NoStore);
    }
    if cc.private {
        return Storable::No(Private);
    }
    if response.headers.contains_key(SET_COOKIE) {
        return Storable::No(SetCookie);
    }
    if parse_vary(response.headers) == Vary::Any {
        return Storable::No(VaryAny);
    }
    // RFC 9111 3.5: a shared cache stores a response to an authenticated request only when the
    // response explicitly allows it; a per-user route keys by user, so nothing is shared.
    if request.headers.contains_key(AUTHORIZATION)
        && !per_user
        && !(cc.public || cc.s_maxage.is_present() || cc.must_revalidate)
    {
        return Storable::No(Authorization);
    }
    match response.status {
        StatusCode::PARTIAL_CONTENT => return Storable::No(PartialContent),
        StatusCode::NOT_MODIFIED => return Storable::No(NotModified),
        _ => {}
    }
    if has_explicit_freshness(response.headers, cc) {
        return Storable::Yes { heuristic: false };
    }
    if heuristically_cacheable(response.status) {
        return Storable::Yes { heuristic: true };
    }
    Storable::No(NotCacheableStatus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CACHE_CONTROL;

    struct Case {
        method: Method,
        request: HeaderMap,
        status: u16,
        response: HeaderMap,
        per_user: bool,
    }

    fn case(status: u16, response: &[(&str, &str)]) -> Case {
        let mut h = HeaderMap::new();
        for (n, v) in response {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Case {
            method: Method::GET,
            request: HeaderMap::new(),
            status,
            response: h,
            per_user: false,
        }
    }

    impl Case {
        fn request_header(mut self, n: http::HeaderName, v: &str) -> Self {
            self.request.append(n, v.parse().unwrap());
            self
        }

        fn run(&self) -> Storable {
            let rcc = RequestCacheControl::parse(&self.request);
            let scc = ResponseCacheControl::parse(&self.response);
            storable(
                &RequestView {
                    method: &self.method,
                    headers: &self.request,
                    cache_control: &rcc,
                },
                &ResponseView {
                    status: StatusCode::from_u16(self.status).unwrap(),
                    headers: &self.response,
                    cache_control: &scc,
                },
                self.per_user,
            )
        }
    }

    const HEURISTIC: Storable = Storable::Yes { heuristic: true };
    const EXPLICIT: Storable = Storable::Yes { heuristic: false };

    #[test]
    fn rfc9111_3_only_get_is_stored_and_only_get_and_head_look_up() {
        for m in [
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            let mut c = case(200, &[("cache-control", "max-age=60")]);
            c.method = m;
            assert_eq!(c.run(), Storable::No(NotStored::Method));
        }
        let cc = RequestCacheControl::default();
        let h = HeaderMap::new();
        let view = |method| RequestView {
            method,
            headers: &h,
            cache_control: &cc,
        };
        assert_eq!(lookup(&view(&Method::GET)), Lookup::Consult);
        assert_eq!(lookup(&view(&Method::HEAD)), Lookup::Consult);
        assert_eq!(
            lookup(&view(&Method::POST)),
            Lookup::Bypass(NotStored::Method)
        );
    }

    #[test]
    fn rfc9111_5_2_1_5_request_no_store_bypasses_and_is_not_stored() {
        let c = case(200, &[]).request_header(CACHE_CONTROL, "no-store");
        assert_eq!(c.run(), Storable::No(NotStored::RequestNoStore));
        let cc = RequestCacheControl::parse(&c.request);
        let view = RequestView {
            method: &Method::GET,
            headers: &c.request,
            cache_control: &cc,
        };
        assert_eq!(lookup(&view), Lookup::Bypass(NotStored::RequestNoStore));
    }

    #[test]
    fn rfc9111_3_final_responses_only() {
        assert_eq!(
            case(103, &[("cache-control", "max-age=60")]).run(),
            Storable::No(NotStored::Informational)
        );
    }

    #[test]
    fn rfc9111_5_2_2_5_and_5_2_2_7_no_store_and_private_are_never_stored() {
        assert_eq!(
            case(200, &[("cache-control", "max-age=60, no-store")]).run(),
            Storable::No(NotStored::NoStore)
        );
        assert_eq!(
            case(200, &[("cache-control", "private, max-age=60")]).run(),
            Storable::No(NotStored::Private)
        );
        assert_eq!(
            case(200, &[("cache-control", r#"private="x-user""#)]).run(),
            Storable::No(NotStored::Private)
        );
        assert_eq!(
            case(200, &[("cache-control", "max-age=60, no store")]).run(),
            Storable::No(NotStored::ResponseMalformed)
        );
    }

    #[test]
    fn set_cookie_is_never_stored() {
        assert_eq!(
            case(
                200,
                &[
                    ("cache-control", "public, max-age=60"),
                    ("set-cookie", "a=b")
                ]
            )
            .run(),
            Storable::No(NotStored::SetCookie)
        );
    }

    #[test]
    fn rfc9111_4_1_vary_star_is_never_stored() {
        assert_eq!(
            case(200, &[("vary", "accept, *")]).run(),
            Storable::No(NotStored::VaryAny)
        );
        assert_eq!(case(200, &[("vary", "accept")]).run(), HEURISTIC);
    }

    #[test]
    fn rfc9111_3_5_authorization_needs_per_user_or_public_s_maxage_must_revalidate() {
        let auth =
            |resp: &[(&str, &str)]| case(200, resp).request_header(AUTHORIZATION, "Bearer x");
        assert_eq!(
            auth(&[("cache-control", "max-age=60")]).run(),
            Storable::No(NotStored::Authorization)
        );
        assert_eq!(auth(&[("cache-control", "public")]).run(), HEURISTIC);
        assert_eq!(auth(&[("cache-control", "s-maxage=5")]).run(), EXPLICIT);
        assert_eq!(
            auth(&[("cache-control", "must-revalidate, max-age=5")]).run(),
            EXPLICIT
        );
        let mut per_user = auth(&[("cache-control", "max-age=60")]);
        per_user.per_user = true;
        assert_eq!(per_user.run(), EXPLICIT);
    }

    #[test]
    fn rfc9111_3_explicit_freshness_allows_any_final_status_but_206_and_304() {
        for status in [200, 302, 307, 400, 403, 500, 503] {
            assert_eq!(
                case(status, &[("cache-control", "max-age=60")]).run(),
                EXPLICIT,
                "{status}"
            );
            assert_eq!(
                case(status, &[("expires", "Sun, 06 Nov 1994 08:49:37 GMT")]).run(),
                EXPLICIT
            );
            assert_eq!(
                case(status, &[("cache-control", "s-maxage=60")]).run(),
                EXPLICIT
            );
        }
        // RFC 9111 5.3: an invalid Expires is an explicit time in the past, still explicit.
        assert_eq!(case(500, &[("expires", "0")]).run(), EXPLICIT);
        assert_eq!(
            case(206, &[("cache-control", "max-age=60")]).run(),
            Storable::No(NotStored::PartialContent)
        );
        assert_eq!(
            case(304, &[("cache-control", "max-age=60")]).run(),
            Storable::No(NotStored::NotModified)
        );
    }

    #[test]
    fn rfc9110_15_1_heuristic_statuses_only_without_explicit_freshness() {
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert_eq!(case(status, &[]).run(), HEURISTIC, "{status}");
        }
        for status in [201, 202, 302, 303, 307, 400, 401, 403, 500, 502, 503, 504] {
            assert_eq!(
                case(status, &[]).run(),
                Storable::No(NotStored::NotCacheableStatus),
                "{status}"
            );
        }
        // `public` does not widen the heuristic statuses.
        assert_eq!(
            case(500, &[("cache-control", "public")]).run(),
            Storable::No(NotStored::NotCacheableStatus)
        );
        assert_eq!(
            case(206, &[]).run(),
            Storable::No(NotStored::PartialContent)
        );
    }

    #[test]
    fn rfc9111_5_2_2_4_no_cache_responses_are_stored_to_be_revalidated() {
        assert_eq!(case(200, &[("cache-control", "no-cache")]).run(), HEURISTIC);
    }

    #[test]
    fn reasons_have_distinct_labels() {
        use NotStored::*;
        let all = [
            Method,
            RequestNoStore,
            RequestMalformed,
            Informational,
            ResponseMalformed,
            NoStore,
            Private,
            SetCookie,
            VaryAny,
            Authorization,
            PartialContent,
            NotModified,
            NotCacheableStatus,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), all.len());
    }
}
