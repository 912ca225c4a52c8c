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
    /// The caller lacks what the route's `authorize` rules require (403).
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
            GatewayError::Forbidden(denial) => (StatusCode::FORBIDDEN, denial.code()),
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
            // RFC 6750: no error code when the request carried no token at all.
            GatewayError::Unauthenticated(crate::auth::jwt::AuthFailure::Missing) => {
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
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
