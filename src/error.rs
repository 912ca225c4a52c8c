//! Errors the gateway answers with itself, and the one place their HTTP status is chosen.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::proxy::body::ResponseBody;
use crate::routing::normalize::PathError;

/// Why the gateway answered a request itself instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request path cannot be normalised safely.
    #[error("invalid request path: {0}")]
    InvalidPath(#[from] PathError),
    /// The request is malformed (its head, its target, or its body's framing).
    #[error("{0}")]
    BadRequest(&'static str),
    /// The request line names an HTTP version other than 1.0 and 1.1.
    #[error("only HTTP/1.0, HTTP/1.1 and HTTP/2 are supported")]
    VersionNotSupported,
    /// No route matches.
    #[error("no route matches this request")]
    NoRoute,
    /// A route matches the path but not the method.
    #[error("method not allowed on this route")]
    MethodNotAllowed {
        /// The methods that would be allowed.
        allow: Vec<Method>,
    },
    /// The request body is over the limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The request head is over the limit.
    #[error("request headers are larger than the limit of {limit} bytes")]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A header field name is over the limit.
    #[error("a header field name is longer than the limit of {limit} bytes")]
    HeaderNameTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// No connection to any target of the upstream could be made.
    #[error("could not connect to upstream {upstream}")]
    UpstreamConnect {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
    },
    /// The upstream failed mid-exchange (reset, invalid response).
    #[error("upstream {upstream} failed to answer")]
    UpstreamFailed {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
    },
    /// The upstream did not send response headers in time.
    #[error("upstream {upstream} did not answer in time")]
    UpstreamTimeout {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
    },
    /// `circuit_breaker.max_requests` requests are already in flight to the upstream (503).
    #[error("upstream {upstream} has too many requests in flight")]
    UpstreamOverloaded {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
    },
    /// The upstream's circuit breaker is open: the call was refused without being made (503).
    #[error("upstream {upstream} is failing; its circuit breaker is open")]
    CircuitOpen {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
        /// Until the breaker lets a trial call through.
        retry_after: std::time::Duration,
    },
    /// `Cache-Control: only-if-cached` and nothing stored could answer (504, RFC 9111 5.2.1.7).
    #[error("only-if-cached: no stored response can answer this request")]
    NotCached,
    /// No valid bearer token (401).
    #[error("{}", unauthenticated_message(*.0))]
    Unauthenticated(crate::auth::jwt::AuthFailure),
    /// The caller lacks what the route's `authorize` rules require (403; 401 when the rule
    /// needs a token or client certificate the request did not bring).
    #[error("{}", .0.message())]
    Forbidden(crate::auth::rbac::Denial),
    /// A rate limit of the route refused the request (429).
    #[error("too many requests; retry after {retry_after} s")]
    RateLimited {
        /// Whole seconds until a request would be allowed.
        retry_after: u64,
    },
    /// The rate-limit store cannot decide and `on_store_error: deny` refuses (503).
    #[error("the rate-limit store is unavailable")]
    RateLimitStoreUnavailable,
    /// The upstream has no target to send to.
    #[error("upstream {upstream} has no target available")]
    NoTarget {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
    },
    /// Every target of the upstream failed its active health checks (503).
    #[error("no target of upstream {upstream} passes its health checks")]
    NoHealthyUpstream {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
    },
    /// A gRPC call on a route whose upstream speaks HTTP/1.1, which cannot carry gRPC's
    /// trailers (501): the upstream needs `protocol: h2` or `h2c`.
    #[error("upstream {upstream} is HTTP/1.1 and cannot carry gRPC; it needs protocol h2 or h2c")]
    GrpcNeedsHttp2 {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
    },
    /// An upgrade (WebSocket) to an upstream that speaks HTTP/2, which has no Upgrade (501).
    #[error("upstream {upstream} is HTTP/2 and cannot carry an upgrade; it needs protocol http1")]
    UpgradeNeedsHttp1 {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
    },
}

/// What a 401 says, by reason class; never anything from the token itself.
fn unauthenticated_message(failure: crate::auth::jwt::AuthFailure) -> &'static str {
    use crate::auth::jwt::AuthFailure::*;
    match failure {
        Missing => "a bearer token is required",
        Malformed => "the bearer token is malformed",
        Expired => "the token has expired",
        NotYetValid => "the token is not valid yet",
        BadSignature => "the token signature is invalid",
        BadIssuer => "the token issuer is not accepted",
        BadAudience => "the token audience is not accepted",
        UnknownKid => "the token names an unknown key",
        AlgNotAllowed => "the token algorithm is not allowed",
    }
}

impl GatewayError {
    /// HTTP status and the stable machine-readable `error` code for the JSON body.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            GatewayError::InvalidPath(_) => (StatusCode::BAD_REQUEST, "invalid_path"),
            GatewayError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            GatewayError::VersionNotSupported => (
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "http_version_not_supported",
            ),
            GatewayError::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            GatewayError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            GatewayError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            GatewayError::HeadersTooLarge { .. } | GatewayError::HeaderNameTooLong { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            GatewayError::UpstreamConnect { .. } => {
                (StatusCode::BAD_GATEWAY, "upstream_unreachable")
            }
            GatewayError::UpstreamFailed { .. } => (StatusCode::BAD_GATEWAY, "upstream_failed"),
            GatewayError::UpstreamTimeout { .. } => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
            }
            GatewayError::NoTarget { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_target"),
            GatewayError::NoHealthyUpstream { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_healthy_upstream")
            }
            GatewayError::NotCached => (StatusCode::GATEWAY_TIMEOUT, "not_cached"),
            GatewayError::GrpcNeedsHttp2 { .. } => {
                (StatusCode::NOT_IMPLEMENTED, "grpc_needs_http2")
            }
            GatewayError::UpgradeNeedsHttp1 { .. } => {
                (StatusCode::NOT_IMPLEMENTED, "upgrade_needs_http1")
            }
            GatewayError::UpstreamOverloaded { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "upstream_overloaded")
            }
            GatewayError::CircuitOpen { .. } => (StatusCode::SERVICE_UNAVAILABLE, "circuit_open"),
            GatewayError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            GatewayError::RateLimitStoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "rate_limit_store_unavailable",
            ),
            GatewayError::Unauthenticated(failure) => (StatusCode::UNAUTHORIZED, failure.code()),
            GatewayError::Forbidden(denial) => (denial.status(), denial.code()),
        }
    }

    /// The JSON response: `{"error", "message", "request_id"}` plus the headers the status needs.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<ResponseBody> {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({
            "error": code,
            "message": self.to_string(),
            "request_id": request_id.to_str().unwrap_or(""),
        });
        let mut response = Response::new(ResponseBody::Full(Some(Bytes::from(
            body.to_string() + "\n",
        ))));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            GatewayError::MethodNotAllowed { allow } => {
                let list = allow
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                if let Ok(value) = HeaderValue::try_from(list) {
                    headers.insert(header::ALLOW, value);
                }
            }
            GatewayError::NoTarget { .. }
            | GatewayError::NoHealthyUpstream { .. }
            | GatewayError::RateLimitStoreUnavailable
            | GatewayError::UpstreamOverloaded { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            GatewayError::RateLimited { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            GatewayError::CircuitOpen { retry_after, .. } => {
                // Whole seconds, rounded up so a client retrying on time finds a trial slot;
                // at least 1, since 0 would invite an immediate retry storm.
                let seconds = u64::try_from(retry_after.as_nanos().div_ceil(1_000_000_000))
                    .unwrap_or(u64::MAX)
                    .max(1);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            // RFC 6750: no error code when the request carried no token at all. A missing
            // client certificate gets no challenge: no HTTP scheme asks for one.
            GatewayError::Unauthenticated(crate::auth::jwt::AuthFailure::Missing)
            | GatewayError::Forbidden(crate::auth::rbac::Denial::Unauthenticated) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            GatewayError::Unauthenticated(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            _ => {}
        }
        response
    }

    /// The gRPC status code for this error (the gRPC spec's mapping of HTTP statuses, made
    /// more exact where the gateway knows why: a deadline, a size limit, a rate limit).
    pub fn grpc_status(&self) -> u8 {
        use GatewayError::*;
        const DEADLINE_EXCEEDED: u8 = 4;
        const PERMISSION_DENIED: u8 = 7;
        const RESOURCE_EXHAUSTED: u8 = 8;
        const UNIMPLEMENTED: u8 = 12;
        const INTERNAL: u8 = 13;
        const UNAVAILABLE: u8 = 14;
        const UNAUTHENTICATED: u8 = 16;
        match self {
            InvalidPath(_) | BadRequest(_) => INTERNAL,
            VersionNotSupported
            | NoRoute
            | MethodNotAllowed { .. }
            | GrpcNeedsHttp2 { .. }
            | UpgradeNeedsHttp1 { .. } => UNIMPLEMENTED,
            BodyTooLarge { .. } | HeadersTooLarge { .. } | HeaderNameTooLong { .. } => {
                RESOURCE_EXHAUSTED
            }
            RateLimited { .. } => RESOURCE_EXHAUSTED,
            UpstreamTimeout { .. } => DEADLINE_EXCEEDED,
            UpstreamConnect { .. }
            | UpstreamFailed { .. }
            | UpstreamOverloaded { .. }
            | CircuitOpen { .. }
            | NotCached
            | RateLimitStoreUnavailable
            | NoTarget { .. }
            | NoHealthyUpstream { .. } => UNAVAILABLE,
            Unauthenticated(_) => UNAUTHENTICATED,
            Forbidden(denial) if denial.status() == StatusCode::UNAUTHORIZED => UNAUTHENTICATED,
            Forbidden(_) => PERMISSION_DENIED,
        }
    }

    /// The answer to a gRPC request: a trailers-only response (HTTP 200, no body, `grpc-status`
    /// and `grpc-message` in the headers) that gRPC clients read as the call's status, with the
    /// headers the JSON form would carry (Retry-After, WWW-Authenticate, ...).
    pub fn to_grpc_response(&self, request_id: &HeaderValue) -> Response<ResponseBody> {
        let mut response = self.to_response(request_id);
        *response.body_mut() = ResponseBody::Empty;
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            GRPC_STATUS,
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        if let Ok(message) = HeaderValue::try_from(grpc_percent_encode(&self.to_string())) {
            headers.insert(GRPC_MESSAGE, message);
        }
        response
    }
}

/// `grpc-status`: the status of a gRPC call.
pub const GRPC_STATUS: header::HeaderName = header::HeaderName::from_static("grpc-status");
/// `grpc-message`: the status message of a gRPC call, percent-encoded.
pub const GRPC_MESSAGE: header::HeaderName = header::HeaderName::from_static("grpc-message");

/// Whether a request is a gRPC call (`content-type: application/grpc` or `application/grpc+…`;
/// gRPC-Web is another protocol and is answered in JSON).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .is_some_and(|ct| {
            // Compared in place: this runs for every request that has a content type.
            const GRPC: &[u8] = b"application/grpc";
            ct.len() >= GRPC.len()
                && ct[..GRPC.len()].eq_ignore_ascii_case(GRPC)
                && matches!(ct.get(GRPC.len()), None | Some(b'+' | b';'))
        })
}

/// Percent-encodes a `grpc-message` as the gRPC spec asks: bytes outside printable ASCII, and
/// `%`, become `%XX`.
fn grpc_percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rbac::Denial;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn every_error_maps_to_its_status_and_json() {
        let up: std::sync::Arc<str> = "orders".into();
        let cases: Vec<(GatewayError, u16, &str)> = vec![
            (PathError::EncodedSlash.into(), 400, "invalid_path"),
            (GatewayError::BadRequest("x"), 400, "bad_request"),
            (
                GatewayError::VersionNotSupported,
                505,
                "http_version_not_supported",
            ),
            (GatewayError::NoRoute, 404, "no_route"),
            (
                GatewayError::MethodNotAllowed {
                    allow: vec![Method::GET, Method::HEAD],
                },
                405,
                "method_not_allowed",
            ),
            (
                GatewayError::BodyTooLarge { limit: 10 },
                413,
                "body_too_large",
            ),
            (
                GatewayError::HeadersTooLarge { limit: 10 },
                431,
                "headers_too_large",
            ),
            (
                GatewayError::HeaderNameTooLong { limit: 10 },
                431,
                "headers_too_large",
            ),
            (
                GatewayError::UpstreamConnect {
                    upstream: up.clone(),
                },
                502,
                "upstream_unreachable",
            ),
            (
                GatewayError::UpstreamFailed {
                    upstream: up.clone(),
                },
                502,
                "upstream_failed",
            ),
            (
                GatewayError::UpstreamTimeout {
                    upstream: up.clone(),
                },
                504,
                "upstream_timeout",
            ),
            (
                GatewayError::CircuitOpen {
                    upstream: up.clone(),
                    retry_after: std::time::Duration::from_secs(3),
                },
                503,
                "circuit_open",
            ),
            (
                GatewayError::NoTarget {
                    upstream: up.clone(),
                },
                503,
                "no_target",
            ),
            (
                GatewayError::NoHealthyUpstream { upstream: up },
                503,
                "no_healthy_upstream",
            ),
            (
                GatewayError::RateLimited { retry_after: 6 },
                429,
                "rate_limited",
            ),
            (
                GatewayError::RateLimitStoreUnavailable,
                503,
                "rate_limit_store_unavailable",
            ),
            (
                GatewayError::Forbidden(Denial::MissingRole),
                403,
                "missing_role",
            ),
            (
                GatewayError::Forbidden(Denial::Unauthenticated),
                401,
                "unauthenticated",
            ),
            (
                GatewayError::Forbidden(Denial::NoClientCertificate),
                401,
                "client_certificate_required",
            ),
            (
                GatewayError::GrpcNeedsHttp2 {
                    upstream: "u".into(),
                },
                501,
                "grpc_needs_http2",
            ),
            (
                GatewayError::UpgradeNeedsHttp1 {
                    upstream: "u".into(),
                },
                501,
                "upgrade_needs_http1",
            ),
        ];
        let id = HeaderValue::from_static("req-1");
        for (error, status, code) in cases {
            let response = error.to_response(&id);
            assert_eq!(response.status().as_u16(), status, "{error}");
            assert_eq!(response.headers()["content-type"], "application/json");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"], code);
            assert_eq!(json["request_id"], "req-1");
            assert!(!json["message"].as_str().unwrap().is_empty());
        }
        let response = GatewayError::MethodNotAllowed {
            allow: vec![Method::GET, Method::HEAD],
        }
        .to_response(&id);
        assert_eq!(response.headers()["allow"], "GET, HEAD");
        let response = GatewayError::RateLimited { retry_after: 6 }.to_response(&id);
        assert_eq!(response.headers()["retry-after"], "6");
        // A rule that needs a token challenges for one; no HTTP scheme asks for a certificate.
        let response = GatewayError::Forbidden(Denial::Unauthenticated).to_response(&id);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let response = GatewayError::Forbidden(Denial::NoClientCertificate).to_response(&id);
        assert!(!response.headers().contains_key("www-authenticate"));
        for (millis, header) in [
            (0, "1"),
            (1, "1"),
            (1_000, "1"),
            (1_001, "2"),
            (29_500, "30"),
        ] {
            let response = GatewayError::CircuitOpen {
                upstream: "orders".into(),
                retry_after: std::time::Duration::from_millis(millis),
            }
            .to_response(&id);
            assert_eq!(response.headers()["retry-after"], header, "{millis} ms");
        }
        let response = GatewayError::NoHealthyUpstream {
            upstream: "orders".into(),
        }
        .to_response(&id);
        assert_eq!(response.headers()["retry-after"], "1");
    }

    #[test]
    fn grpc_statuses_follow_the_grpc_mapping_and_messages_are_percent_encoded() {
        let up: std::sync::Arc<str> = "u".into();
        for (error, status) in [
            (GatewayError::NoRoute, 12),
            (
                GatewayError::GrpcNeedsHttp2 {
                    upstream: up.clone(),
                },
                12,
            ),
            (GatewayError::BadRequest("x"), 13),
            (GatewayError::BodyTooLarge { limit: 1 }, 8),
            (GatewayError::RateLimited { retry_after: 1 }, 8),
            (
                GatewayError::UpstreamTimeout {
                    upstream: up.clone(),
                },
                4,
            ),
            (
                GatewayError::UpstreamConnect {
                    upstream: up.clone(),
                },
                14,
            ),
            (GatewayError::NoHealthyUpstream { upstream: up }, 14),
            (
                GatewayError::Unauthenticated(crate::auth::jwt::AuthFailure::Missing),
                16,
            ),
        ] {
            assert_eq!(error.grpc_status(), status, "{error}");
            let response = error.to_grpc_response(&HeaderValue::from_static("id"));
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[GRPC_STATUS], status.to_string().as_str());
            assert!(matches!(response.body(), ResponseBody::Empty));
        }
        assert_eq!(grpc_percent_encode("a 100% é\n"), "a 100%25 %C3%A9%0A");
        assert_eq!(grpc_percent_encode("tab\there"), "tab%09here");
        let mut headers = http::HeaderMap::new();
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC", true),
            ("application/grpc-web", false),
            ("application/grpc-web+proto", false),
            ("application/json", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&headers), grpc, "{ct}");
        }
        assert!(!is_grpc(&http::HeaderMap::new()));
    }
}
