//! Response compression for `compress: true` routes: which responses, which coding, and the
//! streaming encoder.
//!
//! [`apply`] is the one entry point, the last step before a response goes to the client: the
//! proxy calls it on a route's upstream answers, and a cache serving stored identity bodies can
//! call it the same way. It knows nothing of the proxy's types; its body type only has to wrap
//! a [`Compressing`] of itself.

mod encoder;
pub mod negotiate;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Body;

pub use encoder::{Compressing, BROTLI_QUALITY, BROTLI_WINDOW, GZIP_LEVEL};
pub use negotiate::negotiate;

use crate::body::BoxError;
use crate::observability::metrics::CompressionMetrics;

/// Bodies whose `Content-Length` is below this are sent as they are: the coding's framing and
/// the CPU cost outweigh the bytes saved. Bodies of unknown length are compressed.
pub const MIN_LENGTH: u64 = 1024;

/// A content coding the gateway produces. The value indexes
/// [`crate::observability::metrics::ENCODINGS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// Brotli (RFC 7932).
    Br = 0,
    /// gzip (RFC 1952).
    Gzip = 1,
}

impl Coding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// A `compress: true` route's setting: where its compressions are counted.
#[derive(Debug, Clone, Default)]
pub struct CompressPolicy {
    /// The route's compression counters.
    pub metrics: CompressionMetrics,
}

/// Media types compressed besides `text/*`, `application/*+json` and `application/*+xml`:
/// text formats whose names do not say so, and uncompressed image and font formats. Already
/// compressed formats (images, video, archives, woff2) only cost CPU.
const COMPRESSIBLE: &[&str] = &[
    "application/json",
    "application/javascript",
    "application/ecmascript",
    "application/x-javascript",
    "application/xml",
    "application/x-ndjson",
    "application/graphql",
    "application/x-www-form-urlencoded",
    "application/wasm",
    "application/vnd.ms-fontobject",
    "image/svg+xml",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "image/bmp",
    "font/ttf",
    "font/otf",
];

/// Whether a body of this `Content-Type` is worth compressing (see [`COMPRESSIBLE`]).
pub fn compressible_type(content_type: &[u8]) -> bool {
    let end = content_type
        .iter()
        .position(|&b| b == b';')
        .unwrap_or(content_type.len());
    let Ok(essence) = std::str::from_utf8(&content_type[..end]) else {
        return false;
    };
    let essence = essence.trim_matches([' ', '\t']);
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    if kind.eq_ignore_ascii_case("text") {
        return !subtype.is_empty();
    }
    let suffixed = |suffix: &str| {
        subtype.len() > suffix.len()
            && subtype
                .get(subtype.len() - suffix.len()..)
                .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
    };
    if kind.eq_ignore_ascii_case("application") && (suffixed("+json") || suffixed("+xml")) {
        return true;
    }
    COMPRESSIBLE.iter().any(|t| t.eq_ignore_ascii_case(essence))
}

/// Whether this response, as its upstream sent it, would be compressed for a client that
/// accepts a coding: a coding is what varies it by `Accept-Encoding`.
///
/// Not: statuses without content (1xx, 204, 304), partial content (206 or any `Content-Range`:
/// the ranges count bytes of the identity body), responses the upstream already encoded,
/// `Cache-Control: no-transform` (RFC 9111 5.2.2.6), bodies of other media types, and bodies
/// whose `Content-Length` is below [`MIN_LENGTH`].
pub fn eligible(status: StatusCode, headers: &HeaderMap) -> bool {
    if status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT
        )
        || headers.contains_key(header::CONTENT_ENCODING)
        || headers.contains_key(header::CONTENT_RANGE)
        || has_directive(headers, header::CACHE_CONTROL, "no-transform")
    {
        return false;
    }
    if !headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| compressible_type(t.as_bytes()))
    {
        return false;
    }
    match headers.get(header::CONTENT_LENGTH) {
        None => true,
        Some(value) => std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|len| len >= MIN_LENGTH),
    }
}

/// Compresses `response` when the route, the request and the response allow it; returns the
/// coding used, or `None` when the body goes as it is.
///
/// `accepted` is what [`negotiate`] made of the request's `Accept-Encoding` (read before the
/// request's headers went upstream). Every [`eligible`] response gets `Vary: Accept-Encoding`,
/// also when this client gets identity, so shared caches keep the variants apart. A compressed
/// one loses `Content-Length` (its length is known only at the end), `Accept-Ranges` (ranges
/// of a later request are answered by the upstream from the identity body, so they would not
/// fit these bytes) and the digests of the identity bytes; its `ETag` becomes weak (RFC 9110
/// 8.8.3: the bytes differ from the upstream's representation, but it means the same), so
/// conditional requests, which compare weakly, still match.
pub fn apply<B>(
    policy: &CompressPolicy,
    method: &Method,
    accepted: Option<Coding>,
    response: &mut Response<B>,
) -> Option<Coding>
where
    B: Body<Data = Bytes, Error = BoxError> + Default + From<Compressing<B>>,
{
    if !eligible(response.status(), response.headers()) {
        return None;
    }
    let headers = response.headers_mut();
    vary_on_accept_encoding(headers);
    // HEAD is answered as the upstream answered it: its Content-Length is the identity body's.
    let coding = accepted.filter(|_| method != Method::HEAD)?;
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    headers.remove(CONTENT_DIGEST);
    headers.remove(REPR_DIGEST);
    headers.remove(CONTENT_MD5);
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    weaken_etag(headers);
    policy.metrics.response(coding as usize);
    let body = std::mem::take(response.body_mut());
    *response.body_mut() = B::from(Compressing::new(body, coding, policy.metrics.clone()));
    Some(coding)
}

const CONTENT_DIGEST: HeaderName = HeaderName::from_static("content-digest");
const REPR_DIGEST: HeaderName = HeaderName::from_static("repr-digest");
const CONTENT_MD5: HeaderName = HeaderName::from_static("content-md5");

/// Adds `Accept-Encoding` to `Vary` unless it is there already (or `*` covers it); existing
/// fields are merged into one.
pub fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let mut merged: Vec<u8> = Vec::new();
    for value in headers.get_all(header::VARY) {
        let bytes = value.as_bytes();
        let listed = bytes.split(|&b| b == b',').any(|name| {
            let name = name.trim_ascii();
            name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding")
        });
        if listed {
            return;
        }
        let bytes = bytes.trim_ascii();
        if !bytes.is_empty() {
            if !merged.is_empty() {
                merged.extend_from_slice(b", ");
            }
            merged.extend_from_slice(bytes);
        }
    }
    if merged.is_empty() {
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        return;
    }
    merged.extend_from_slice(b", Accept-Encoding");
    // Made of valid field values joined by ", ": valid too.
    if let Ok(value) = HeaderValue::from_bytes(&merged) {
        headers.insert(header::VARY, value);
    }
}

/// `"x"` becomes `W/"x"`; weak and malformed tags stay as they are.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    if etag.as_bytes().first() != Some(&b'"') {
        return;
    }
    let mut weak = Vec::with_capacity(etag.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(etag.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&weak) {
        headers.insert(header::ETAG, value);
    }
}

/// Whether a list-valued field (`Cache-Control`) holds `directive`, with or without a value.
fn has_directive(headers: &HeaderMap, name: HeaderName, directive: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').any(|item| {
            let name = item.split(|&b| b == b'=').next().unwrap_or(item);
            name.trim_ascii().eq_ignore_ascii_case(directive.as_bytes())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    /// A body type like the proxy's: plain, or compressing a plain one.
    #[derive(Debug)]
    enum TestBody {
        Plain(Full<Bytes>),
        Compressed(Box<Compressing<TestBody>>),
    }

    impl Default for TestBody {
        fn default() -> Self {
            TestBody::Plain(Full::default())
        }
    }

    impl From<Compressing<TestBody>> for TestBody {
        fn from(c: Compressing<TestBody>) -> Self {
            TestBody::Compressed(Box::new(c))
        }
    }

    impl Body for TestBody {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            match self.get_mut() {
                TestBody::Plain(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
                TestBody::Compressed(b) => std::pin::Pin::new(&mut **b).poll_frame(cx),
            }
        }
    }

    fn response(headers: &[(&str, &str)], body: &[u8]) -> Response<TestBody> {
        let mut response = Response::new(TestBody::Plain(Full::new(Bytes::copy_from_slice(body))));
        for (name, value) in headers {
            response.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        response
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[tokio::test]
    async fn compresses_and_rewrites_the_headers() {
        let body = b"{\"a\": 1}".repeat(500);
        let len = body.len().to_string();
        for coding in [Coding::Br, Coding::Gzip] {
            let mut r = response(
                &[
                    JSON,
                    ("content-length", &len),
                    ("etag", "\"v1\""),
                    ("accept-ranges", "bytes"),
                    ("vary", "Origin"),
                ],
                &body,
            );
            let policy = CompressPolicy::default();
            assert_eq!(
                apply(&policy, &Method::GET, Some(coding), &mut r),
                Some(coding)
            );
            let h = r.headers();
            assert_eq!(h[header::CONTENT_ENCODING], coding.token());
            assert_eq!(h[header::ETAG], "W/\"v1\"");
            assert_eq!(h[header::VARY], "Origin, Accept-Encoding");
            assert!(!h.contains_key(header::CONTENT_LENGTH));
            assert!(!h.contains_key(header::ACCEPT_RANGES));
            let encoded = r.into_body().collect().await.unwrap().to_bytes();
            assert!(encoded.len() < body.len() / 4);
            assert_eq!(encoder::tests::decode(coding, &encoded), body);
        }
    }

    #[test]
    fn identity_for_this_client_still_varies() {
        let policy = CompressPolicy::default();
        for (method, accepted) in [(Method::GET, None), (Method::HEAD, Some(Coding::Gzip))] {
            let mut r = response(&[JSON, ("content-length", "5000"), ("etag", "\"v1\"")], b"");
            assert_eq!(apply(&policy, &method, accepted, &mut r), None);
            let h = r.headers();
            assert_eq!(h[header::VARY], "Accept-Encoding");
            assert_eq!(h[header::CONTENT_LENGTH], "5000");
            assert_eq!(h[header::ETAG], "\"v1\"");
            assert!(!h.contains_key(header::CONTENT_ENCODING));
        }
    }

    #[test]
    fn ineligible_responses_are_left_alone() {
        let policy = CompressPolicy::default();
        let cases: &[(u16, &[(&str, &str)])] = &[
            (204, &[JSON]),
            (304, &[JSON]),
            (206, &[JSON, ("content-range", "bytes 0-9/100")]),
            (200, &[JSON, ("content-range", "bytes 0-9/100")]),
            (200, &[JSON, ("content-encoding", "gzip")]),
            (200, &[JSON, ("content-encoding", "identity")]),
            (200, &[JSON, ("cache-control", "public, No-Transform")]),
            (
                200,
                &[
                    JSON,
                    ("cache-control", "max-age=5"),
                    ("cache-control", "no-transform"),
                ],
            ),
            (200, &[("content-type", "image/png")]),
            (200, &[("content-type", "application/octet-stream")]),
            (200, &[]),
            (200, &[JSON, ("content-length", "1023")]),
            (200, &[JSON, ("content-length", "0")]),
            (200, &[JSON, ("content-length", "x")]),
        ];
        for (status, headers) in cases {
            let mut r = response(headers, b"");
            *r.status_mut() = StatusCode::from_u16(*status).unwrap();
            let before = r.headers().clone();
            assert_eq!(
                apply(&policy, &Method::GET, Some(Coding::Gzip), &mut r),
                None,
                "{status} {headers:?}"
            );
            assert_eq!(r.headers(), &before, "{status} {headers:?}");
        }
    }

    #[test]
    fn the_minimum_length_is_inclusive() {
        let at = |len: u64| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            eligible(StatusCode::OK, &h)
        };
        assert!(!at(MIN_LENGTH - 1));
        assert!(at(MIN_LENGTH));
        assert!(at(MIN_LENGTH + 1));
    }

    #[test]
    fn media_types() {
        for yes in [
            "text/html",
            "text/plain; charset=utf-8",
            "TEXT/CSS",
            "application/json;charset=utf-8",
            "application/problem+json",
            "application/atom+xml",
            "application/javascript",
            "image/svg+xml",
            " application/xml ",
        ] {
            assert!(compressible_type(yes.as_bytes()), "{yes}");
        }
        for no in [
            "image/png",
            "application/octet-stream",
            "application/zip",
            "font/woff2",
            "application/+json",
            "text/",
            "text",
            "json",
            "",
        ] {
            assert!(!compressible_type(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn vary_is_merged_once() {
        let vary = |existing: &[&str]| {
            let mut h = HeaderMap::new();
            for v in existing {
                h.append(header::VARY, HeaderValue::from_str(v).unwrap());
            }
            vary_on_accept_encoding(&mut h);
            h.get_all(header::VARY)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(vary(&[]), ["Accept-Encoding"]);
        assert_eq!(vary(&["Origin"]), ["Origin, Accept-Encoding"]);
        assert_eq!(
            vary(&["Origin", "Cookie"]),
            ["Origin, Cookie, Accept-Encoding"]
        );
        assert_eq!(
            vary(&["origin, accept-encoding"]),
            ["origin, accept-encoding"]
        );
        assert_eq!(vary(&["*"]), ["*"]);
    }
}
