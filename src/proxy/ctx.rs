//! What the request path knows about one request, carried through every phase.

use std::borrow::Cow;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::request::Parts;

use super::pipeline::Routed;
use crate::auth::Identity;
use crate::observability::access_log::RequestRecord;
use crate::routing::route::Route;

/// One routed request on its way through the phases; each phase reads it and adds what it
/// learned.
#[derive(Debug)]
pub struct RequestCtx<'s> {
    /// The route that serves it.
    pub route: &'s Arc<Route>,
    /// Method, URI and headers as the client sent them, lent by the server for the request's
    /// time. The upstream phase takes the headers (they go upstream without a copy); the rest
    /// stays.
    pub head: &'s mut Parts,
    /// Who is calling, once the request filter checked the route's policy.
    pub identity: Option<Identity>,
    /// The request id sent upstream and back to the client.
    pub request_id: HeaderValue,
    /// Where it came from (after `trusted_proxies`); only worked out when the access log wants it.
    pub client_ip: Option<IpAddr>,
    /// When things happened.
    pub timings: Timings,
    /// What CORS makes of the request.
    pub cors: CorsFacts,
    /// The deciding rate-limit decision, for the RateLimit headers; `None` on routes without
    /// limits (or when no store could decide).
    pub rate_limit: Option<crate::ratelimit::Decision>,
    /// Whether the request gets an access-log line.
    pub access_log: bool,
    /// On a `compress` route, the coding the client accepts (read from `Accept-Encoding`
    /// before the headers go upstream); `None`: identity.
    pub accepts: Option<crate::compress::Coding>,
    /// On a `cache` route, what the cache made of the request when it answered with an error
    /// of the gateway's (the response filter sends it as `X-Cache`).
    pub cache_result: Option<crate::observability::metrics::CacheResult>,
    /// What the log line says beyond the facts above, filled in as the phases learn it.
    pub record: RequestRecord,
    /// The request's valid offer to switch protocols (`Connection: upgrade` + `Upgrade`).
    pub upgrade: Option<super::upgrade::UpgradeRequest>,
    path: Text,
    host: Option<Text>,
    /// The Host field, kept for `host` once the headers went upstream; only when the host came
    /// from it.
    host_field: Option<HeaderValue>,
}

/// When a request's steps happened.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// When its head had been read.
    pub received: Instant,
    /// Time from sending upstream to the upstream's response head.
    pub upstream: Option<Duration>,
}

/// What CORS makes of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsFacts {
    /// The route has no CORS policy.
    #[default]
    Off,
    /// A preflight, answered by the gateway with the policy's headers.
    Preflight,
    /// A request on a CORS route: every answer gets the policy's headers for this `Origin`.
    Actual {
        /// The request's `Origin`, when it sent one.
        origin: Option<HeaderValue>,
    },
}

/// The facts a request brings before any phase ran.
#[derive(Debug)]
pub struct Arrival {
    /// The request id.
    pub request_id: HeaderValue,
    /// Where it came from, when the access log wants it.
    pub client_ip: Option<IpAddr>,
    /// When its head had been read.
    pub received: Instant,
    /// Whether the request gets an access-log line.
    pub access_log: bool,
}

/// Where routing found a request's path and host in its head, held without borrowing it.
///
/// The path and host routing read are pieces of the head's own bytes (or copies, when
/// normalising changed them). They are kept as where they sit in those bytes, so the context
/// can hold the head mutably and its headers go on to the upstream without copying either.
#[derive(Debug)]
pub struct Located<'s> {
    route: &'s Arc<Route>,
    path: Text,
    host: Option<Text>,
    host_field: Option<HeaderValue>,
}

impl<'s> Located<'s> {
    /// Where `routed`, read from `head`, sits in it.
    pub fn new(routed: Routed<'s, '_>, head: &Parts) -> Self {
        let path = Text::within(routed.path, head.uri.path());
        let (host, host_field) = match (routed.host, head.uri.authority()) {
            (None, _) => (None, None),
            (Some(host), Some(authority)) => (Some(Text::within(host, authority.as_str())), None),
            (Some(host), None) => {
                let field = head.headers.get(header::HOST);
                let source = field.and_then(|f| f.to_str().ok()).unwrap_or("");
                (Some(Text::within(host, source)), field.cloned())
            }
        };
        Located {
            route: routed.route,
            path,
            host,
            host_field,
        }
    }
}

impl<'s> RequestCtx<'s> {
    /// The context of a request routing `located` in `head`.
    pub fn new(head: &'s mut Parts, located: Located<'s>, arrival: Arrival) -> Self {
        RequestCtx {
            route: located.route,
            head,
            identity: None,
            request_id: arrival.request_id,
            client_ip: arrival.client_ip,
            timings: Timings {
                received: arrival.received,
                upstream: None,
            },
            cors: CorsFacts::Off,
            rate_limit: None,
            access_log: arrival.access_log,
            accepts: None,
            cache_result: None,
            record: RequestRecord::default(),
            upgrade: None,
            path: located.path,
            host: located.host,
            host_field: located.host_field,
        }
    }

    /// The normalised request path, without query.
    pub fn path(&self) -> &str {
        self.path.read(self.head.uri.path())
    }

    /// The request host, lower-cased without port.
    pub fn host(&self) -> Option<&str> {
        let source = match (self.head.uri.authority(), &self.host_field) {
            (Some(authority), _) => authority.as_str(),
            (None, Some(field)) => field.to_str().unwrap_or(""),
            (None, None) => "",
        };
        self.host.as_ref().map(|host| host.read(source))
    }

    /// Writes the access-log record, completed with the context's facts, into `record`.
    pub fn into_record(self, record: &mut RequestRecord) {
        *record = self.record;
        if self.access_log {
            record.path = Some(self.path.read(self.head.uri.path()).into());
        }
        record.route = Some(Arc::clone(self.route));
        record.request_id = Some(self.request_id);
        record.client_ip = self.client_ip;
        record.upstream_duration = self.timings.upstream;
    }
}

/// Text read from a request: a range of the source it was read from, or a copy when reading
/// changed it.
#[derive(Debug, PartialEq, Eq)]
enum Text {
    Within(Range<usize>),
    Owned(String),
}

impl Text {
    /// `text` as a range of `source` when it is a piece of it, else as a copy.
    fn within(text: Cow<'_, str>, source: &str) -> Self {
        let piece = match text {
            Cow::Owned(text) => return Text::Owned(text),
            Cow::Borrowed(piece) => piece,
        };
        let start = (piece.as_ptr() as usize).wrapping_sub(source.as_ptr() as usize);
        match start.checked_add(piece.len()) {
            Some(end) if end <= source.len() => Text::Within(start..end),
            _ => Text::Owned(piece.to_owned()),
        }
    }

    /// The text, given the same source it was read from.
    fn read<'a>(&'a self, source: &'a str) -> &'a str {
        match self {
            Text::Within(range) => source.get(range.clone()).unwrap_or(""),
            Text::Owned(text) => text,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::{MapEnv, Snapshot};
    use crate::proxy::pipeline::route_request;
    use crate::registry::Registries;

    fn snapshot() -> Snapshot {
        snapshot_of("routes:\n  - name: api\n    match: {path: /api}\n    respond: {body: hi}\n")
    }

    /// The config `yaml` (after `server:`) gives.
    pub(in crate::proxy) fn snapshot_of(yaml: &str) -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!("server: {{listen: 127.0.0.1:0}}\n{yaml}");
        std::fs::write(dir.path().join("gateway.yaml"), yaml).unwrap();
        let env = MapEnv(Default::default());
        crate::config::load(
            &dir.path().join("gateway.yaml"),
            &env,
            &Registries::default(),
        )
        .unwrap()
    }

    /// The context of a request, made as the pipeline makes it; the headers are then taken, as
    /// the upstream phase takes them.
    pub(in crate::proxy) fn ctx_after_upstream<'s>(
        snapshot: &'s Snapshot,
        head: &'s mut Parts,
        access_log: bool,
    ) -> RequestCtx<'s> {
        let routed = route_request(snapshot, head).expect("routed");
        let located = Located::new(routed, head);
        let arrival = Arrival {
            request_id: HeaderValue::from_static("abc"),
            client_ip: None,
            received: Instant::now(),
            access_log,
        };
        let ctx = RequestCtx::new(head, located, arrival);
        drop(std::mem::take(&mut ctx.head.headers));
        ctx
    }

    /// The head of a GET of `uri`, with `host` as its Host field.
    pub(in crate::proxy) fn get(uri: &str, host: Option<&str>) -> Parts {
        let mut request = http::Request::get(uri);
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn path_and_host_outlive_the_headers_going_upstream() {
        let snapshot = snapshot();
        for (uri, host, want_path, want_host) in [
            (
                "/api/items?x=1",
                Some("api.example.com:8080"),
                "/api/items",
                Some("api.example.com"),
            ),
            (
                "/api//items/./x",
                Some("API.Example.com."),
                "/api/items/x",
                Some("api.example.com"),
            ),
            ("/api/%7Eme", Some("[::1]:80"), "/api/~me", Some("[::1]")),
            (
                "http://Api.example.com:81/api",
                None,
                "/api",
                Some("api.example.com"),
            ),
            (
                "http://api.example.com/api",
                Some("other.example"),
                "/api",
                Some("api.example.com"),
            ),
            ("/api", None, "/api", None),
        ] {
            let mut head = get(uri, host);
            let ctx = ctx_after_upstream(&snapshot, &mut head, false);
            assert_eq!(
                (ctx.path(), ctx.host()),
                (want_path, want_host),
                "{uri} {host:?}"
            );
        }
    }

    #[test]
    fn a_normal_path_and_host_are_not_copied() {
        let snapshot = snapshot();
        let mut head = get("/api/x", Some("h.example:1"));
        let ctx = ctx_after_upstream(&snapshot, &mut head, false);
        assert_eq!(ctx.path, Text::Within(0..6));
        assert_eq!(ctx.host, Some(Text::Within(0..9)));
        let mut head = get("http://h.example/api", None);
        let ctx = ctx_after_upstream(&snapshot, &mut head, false);
        assert_eq!(ctx.host, Some(Text::Within(0..9)));
        // What normalising changed is a copy.
        let mut head = get("/api//x", Some("H.example"));
        let ctx = ctx_after_upstream(&snapshot, &mut head, false);
        assert_eq!(ctx.path, Text::Owned("/api/x".into()));
        assert_eq!(ctx.host, Some(Text::Owned("h.example".into())));
    }

    #[test]
    fn a_piece_of_other_text_is_copied() {
        let source = String::from("/api/x");
        let other = String::from("/api/x");
        assert_eq!(
            Text::within(Cow::Borrowed(&source[4..]), &source),
            Text::Within(4..6)
        );
        assert_eq!(
            Text::within(Cow::Borrowed(&other[4..]), &source),
            Text::Owned("/x".into())
        );
    }

    #[test]
    fn the_record_carries_the_path_only_when_the_access_log_is_on() {
        let snapshot = snapshot();
        let mut head = get("/api/x?q", None);
        let mut ctx = ctx_after_upstream(&snapshot, &mut head, true);
        ctx.timings.upstream = Some(Duration::from_millis(3));
        let mut record = RequestRecord::default();
        ctx.into_record(&mut record);
        assert_eq!(record.path.as_deref(), Some("/api/x"));
        assert_eq!(record.route.as_ref().map(|r| &*r.name), Some("api"));
        assert_eq!(record.request_id, Some(HeaderValue::from_static("abc")));
        assert_eq!(record.upstream_duration, Some(Duration::from_millis(3)));
        let mut head = get("/api/x", None);
        let mut record = RequestRecord::default();
        ctx_after_upstream(&snapshot, &mut head, false).into_record(&mut record);
        assert_eq!(record.path, None);
        assert!(record.route.is_some());
    }
}
