//! The config files as written: serde types that mirror the YAML of CONFIG.md exactly.
//!
//! Only this module knows the YAML crate. Every struct denies unknown fields, so a typo is an
//! error with a position, never a silently ignored setting. Values that need checking against
//! other parts of the config keep their position (`Spanned`) for `build` to report.

mod yaml;

use marked_yaml::types::MarkedScalarNode;
use marked_yaml::Node;
use serde::de::{self, IgnoredAny};
use serde::Deserialize;

use super::interpolate::Env;
use super::units::{ConfigDuration, ConfigSize};
pub use yaml::{did_you_mean, AtKey, Mark, Spanned};

/// A section that gatehouse reads but does not enforce yet; `build` refuses it with its position,
/// because a policy that is configured but not enforced is a security hole.
pub type Unsupported = Option<AtKey<IgnoredAny>>;

/// Fields of a section that lost all or part of their value to an error already reported;
/// checks that a field is present or non-empty skip these, so one mistake is reported once.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Damaged(Vec<String>);

impl Damaged {
    /// Whether `field` had an error in its value (or a misspelled key that meant it).
    pub fn has(&self, field: &str) -> bool {
        self.0.iter().any(|f| f == field)
    }

    /// Whether every field was read as written.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An error in one file, before the file name is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// Where in the file, when known.
    pub mark: Option<Mark>,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Which file is being read: `gateway.yaml` may hold every section, a routes file only two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// The main `gateway.yaml`.
    Gateway,
    /// A file in `routes_dir`.
    Routes,
}

/// Everything one file defines; sections that failed to parse are absent and reported.
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// `server:`
    pub server: Option<ServerSection>,
    /// `admin:`
    pub admin: Option<AdminSection>,
    /// `routes_dir:`
    pub routes_dir: Option<Spanned<String>>,
    /// `logging:`
    pub logging: Option<LoggingSection>,
    /// `jwt:`
    pub jwt: Option<JwtSection>,
    /// `redis:`, positioned at its key.
    pub redis: Option<AtKey<RedisSection>>,
    /// `rate_limit:` (the process-wide settings).
    pub rate_limit: Option<RateLimitSection>,
    /// `cache:` (the process-wide settings), positioned at its key.
    pub cache: Option<AtKey<CacheSection>>,
    /// Names under `jwt.providers` as written, valid or not.
    pub declared_providers: Vec<String>,
    /// Top-level sections that are recognised but not supported yet, with their positions.
    pub unsupported: Vec<(&'static str, Mark)>,
    /// `upstreams:` in file order.
    pub upstreams: Vec<(Spanned<String>, UpstreamSection)>,
    /// Names of upstreams that failed to parse (their errors are reported), so routes naming
    /// them are not also told the upstream is unknown.
    pub invalid_upstreams: Vec<String>,
    /// `routes:` in file order.
    pub routes: Vec<RouteSection>,
}

const GATEWAY_SECTIONS: &[&str] = &[
    "server",
    "admin",
    "routes_dir",
    "redis",
    "jwt",
    "rate_limit",
    "cache",
    "logging",
    "tracing",
    "upstreams",
    "routes",
];
const ROUTES_SECTIONS: &[&str] = &["upstreams", "routes"];

/// Parses one file's text, collecting every error it can find rather than stopping at the first.
pub fn parse_file(text: &str, kind: FileKind, env: &dyn Env) -> (ParsedFile, Vec<FileError>) {
    let mut parsed = ParsedFile::default();
    let mut errors = Vec::new();
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            errors.push(file_error(e));
            return (parsed, errors);
        }
    };
    let Some(sections) = root.as_mapping() else {
        errors.push(FileError {
            mark: Mark::of(&root),
            message: "the file must be a mapping of sections".into(),
        });
        return (parsed, errors);
    };
    let allowed = match kind {
        FileKind::Gateway => GATEWAY_SECTIONS,
        FileKind::Routes => ROUTES_SECTIONS,
    };
    for (key, node) in sections.iter() {
        let name = key.as_str();
        let key_mark = Mark::of(&Node::Scalar(key.clone()));
        if !allowed.contains(&name) {
            let message = if kind == FileKind::Routes && GATEWAY_SECTIONS.contains(&name) {
                format!("`{name}` belongs in gateway.yaml; a routes file holds only `upstreams` and `routes`")
            } else {
                let hint = did_you_mean(name, allowed)
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                let list = allowed.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>();
                format!(
                    "unknown section `{name}`{hint} (expected one of {})",
                    list.join(", ")
                )
            };
            errors.push(FileError {
                mark: key_mark,
                message,
            });
            continue;
        }
        match name {
            "server" => parsed.server = section(key, node, env, &mut errors),
            "admin" => parsed.admin = section(key, node, env, &mut errors),
            "routes_dir" => parsed.routes_dir = section(key, node, env, &mut errors),
            "logging" => parsed.logging = section(key, node, env, &mut errors),
            "jwt" => {
                parsed.declared_providers = provider_names(node);
                parsed.jwt = section(key, node, env, &mut errors);
            }
            "redis" => parsed.redis = section(key, node, env, &mut errors),
            "rate_limit" => parsed.rate_limit = section(key, node, env, &mut errors),
            "cache" => parsed.cache = section(key, node, env, &mut errors),
            "upstreams" => parse_upstreams(node, env, &mut parsed, &mut errors),
            "routes" => parse_routes(node, env, &mut parsed.routes, &mut errors),
            other => {
                let section = allowed
                    .iter()
                    .find(|s| **s == other)
                    .copied()
                    .unwrap_or("section");
                if let Some(mark) = key_mark {
                    parsed.unsupported.push((section, mark));
                }
            }
        }
    }
    (parsed, errors)
}

/// Reads one section, recording its errors instead of giving up on the file.
fn section<T: de::DeserializeOwned>(
    key: &MarkedScalarNode,
    node: &Node,
    env: &dyn Env,
    errors: &mut Vec<FileError>,
) -> Option<T> {
    let (value, found) = yaml::from_node::<T>(node, Some(key), env);
    errors.extend(found.into_iter().map(file_error));
    value
}

/// The names under `jwt.providers` as written, whether or not they are valid, so a route
/// naming an invalid provider is not also told that it does not exist.
fn provider_names(jwt: &Node) -> Vec<String> {
    jwt.as_mapping()
        .and_then(|m| m.get_mapping("providers"))
        .map(|providers| {
            providers
                .iter()
                .map(|(name, _)| name.as_str().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn file_error(e: yaml::DeError) -> FileError {
    FileError {
        mark: e.mark,
        message: e.message,
    }
}

/// Each upstream is read on its own so one bad upstream does not hide errors in the others.
fn parse_upstreams(node: &Node, env: &dyn Env, out: &mut ParsedFile, errors: &mut Vec<FileError>) {
    let Some(map) = node.as_mapping() else {
        if !is_empty(node) {
            errors.push(FileError {
                mark: Mark::of(node),
                message: "`upstreams` must be a mapping of upstream names to settings".into(),
            });
        }
        return;
    };
    for (key, value) in map.iter() {
        let name = Spanned {
            value: key.as_str().to_string(),
            mark: Mark::of(&Node::Scalar(key.clone())).unwrap_or_default(),
        };
        let (section, found) = yaml::from_node::<UpstreamSection>(value, Some(key), env);
        errors.extend(found.into_iter().map(file_error));
        match section {
            Some(section) => out.upstreams.push((name, section)),
            None => out.invalid_upstreams.push(name.value),
        }
    }
}

/// Each route is read on its own so one bad route does not hide errors in the others.
fn parse_routes(
    node: &Node,
    env: &dyn Env,
    out: &mut Vec<RouteSection>,
    errors: &mut Vec<FileError>,
) {
    let Some(seq) = node.as_sequence() else {
        if !is_empty(node) {
            errors.push(FileError {
                mark: Mark::of(node),
                message: "`routes` must be a list of routes (each item starts with `- name:`)"
                    .into(),
            });
        }
        return;
    };
    for item in seq.iter() {
        let (route, found) = yaml::from_node::<RouteSection>(item, None, env);
        errors.extend(found.into_iter().map(file_error));
        out.extend(route);
    }
}

fn is_empty(node: &Node) -> bool {
    node.as_scalar()
        .is_some_and(|s| s.may_coerce() && matches!(s.as_str(), "" | "~" | "null"))
}

/// `server:` — the main listener and limits for every request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// `host:port` to accept HTTP/1.1 and h2c on.
    pub listen: Option<Spanned<String>>,
    /// The HTTPS listener.
    pub tls: Option<AtKey<TlsSection>>,
    /// Larger request bodies get 413.
    pub max_request_body: Option<ConfigSize>,
    /// Larger request heads get 431.
    pub max_header_bytes: Option<Spanned<ConfigSize>>,
    /// Time a client has to send a complete request head.
    pub request_header_timeout: Option<ConfigDuration>,
    /// Idle keep-alive connections are closed after this.
    pub idle_timeout: Option<ConfigDuration>,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace: Option<ConfigDuration>,
    /// Peers whose `X-Forwarded-*` headers are believed (CIDRs or addresses).
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: Option<Spanned<u32>>,
    /// Adds nosniff, frame-options and referrer-policy headers.
    pub security_headers: Option<bool>,
    /// Threads serving requests; default: one per CPU core.
    pub workers: Option<Spanned<u32>>,
}

/// `server.tls:` — the HTTPS listener and its certificates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// `host:port` to accept TLS on.
    pub listen: Option<Spanned<String>>,
    /// Certificate and key pairs, chosen by SNI; the first is the default.
    pub certificates: Option<Spanned<Vec<CertificateSection>>>,
    /// PEM file of the CAs whose client certificates are accepted (mTLS).
    pub client_ca: Option<Spanned<String>>,
    /// Whether clients must present a certificate: `optional` or `required`.
    pub client_auth: Option<Spanned<ClientAuthChoice>>,
    #[serde(default, rename = "$damaged")]
    /// Fields that had an error.
    pub damaged: Damaged,
}

/// `server.tls.client_auth` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthChoice {
    /// Clients without a certificate are served; a bad certificate fails the handshake.
    Optional,
    /// Every client presents a certificate the CA issued.
    Required,
}

/// One `server.tls.certificates` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSection {
    /// PEM certificate chain, leaf first.
    pub cert: Spanned<String>,
    /// PEM private key.
    pub key: Spanned<String>,
}

/// `admin:` — a separate listener for the built-in endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// `host:port` for /health, /readyz, /metrics.
    pub listen: Spanned<String>,
}

/// `logging:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    /// `json` or `text`.
    pub format: Option<LogFormat>,
    /// A level (`info`) or a filter (`info,gatehouse=debug`).
    pub level: Option<Spanned<String>>,
    /// One line per request.
    pub access_log: Option<bool>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// One entry of `upstreams:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// Where requests go.
    #[serde(default)]
    pub targets: Vec<Spanned<TargetSpec>>,
    /// How a target is chosen.
    pub balance: Option<Spanned<Balance>>,
    /// How gatehouse talks to the targets.
    pub protocol: Option<Spanned<Protocol>>,
    /// Time allowed to open a connection to a target (the TLS handshake included).
    pub connect_timeout: Option<Spanned<ConfigDuration>>,
    /// Time allowed until response headers arrive.
    pub timeout: Option<Spanned<ConfigDuration>>,
    /// Time allowed between two reads of the response body.
    pub read_timeout: Option<Spanned<ConfigDuration>>,
    /// Not supported yet.
    pub discovery: Unsupported,
    /// The TLS client for `https://` targets.
    pub tls: Option<AtKey<UpstreamTlsSection>>,
    /// With `balance: hash`: `header:NAME`, `ip` or `cookie:NAME`.
    pub hash_on: Option<Spanned<String>>,
    /// Active health checks of the targets.
    pub health_check: Option<AtKey<HealthCheckSection>>,
    /// Limits on calls to this upstream.
    pub circuit_breaker: Option<AtKey<CircuitBreakerSection>>,
    /// Passive ejection of failing targets.
    pub outlier_detection: Option<AtKey<OutlierSection>>,
    /// Trying failed attempts again, on other targets.
    pub retry: Option<AtKey<RetrySection>>,
    #[serde(default, rename = "$damaged")]
    /// Fields that had an error.
    pub damaged: Damaged,
}

/// Upstream `tls:`: how `https://` targets are verified, and the client certificate.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSection {
    /// PEM roots to trust instead of the built-in Mozilla roots.
    pub ca_file: Option<Spanned<String>>,
    /// SNI and verification name instead of each target's host.
    pub server_name: Option<Spanned<String>>,
    /// Accept any server certificate (logged as a warning at every load).
    pub insecure_skip_verify: Option<Spanned<bool>>,
    /// PEM client certificate chain, for upstreams that require mTLS.
    pub cert_file: Option<Spanned<String>>,
    /// PEM key of `cert_file`.
    pub key_file: Option<Spanned<String>>,
}

/// Upstream `circuit_breaker:`: the concurrency limit, and the breaker, which is on when any
/// key besides `max_requests` is written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerSection {
    /// Requests in flight to the upstream at most; more get 503 at once.
    pub max_requests: Option<Spanned<u32>>,
    /// Open when this share of the calls in `window` failed (default 0.5)...
    pub failure_ratio: Option<Spanned<f64>>,
    /// ...and at least this many were made (default 20).
    pub min_requests: Option<Spanned<u32>>,
    /// Or open after this many failures in a row (default 5).
    pub consecutive_failures: Option<Spanned<u32>>,
    /// How far back the ratio looks (default 10s).
    pub window: Option<Spanned<ConfigDuration>>,
    /// How long the breaker stays open before trial calls (default 30s).
    pub open_for: Option<Spanned<ConfigDuration>>,
    /// Trial calls while half-open (default 3).
    pub half_open_requests: Option<Spanned<u32>>,
    /// Statuses that count as failures (default [502, 503, 504]).
    pub failure_statuses: Option<Spanned<Vec<Spanned<u16>>>>,
    #[serde(default, rename = "$damaged")]
    /// Fields that had an error.
    pub damaged: Damaged,
}

/// Upstream `health_check:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    /// Request target of probes (default /health).
    pub path: Option<Spanned<String>>,
    /// Time between probe rounds (default 5s).
    pub interval: Option<Spanned<ConfigDuration>>,
    /// Time allowed for one probe, at most `interval` (default 1s).
    pub timeout: Option<Spanned<ConfigDuration>>,
    /// Successes in a row that bring a target back (default 2).
    pub healthy_threshold: Option<Spanned<u32>>,
    /// Failures in a row that take a target out (default 3).
    pub unhealthy_threshold: Option<Spanned<u32>>,
}

/// Upstream `outlier_detection:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierSection {
    /// Failures in a row that eject a target (default 5).
    pub consecutive_failures: Option<Spanned<u32>>,
    /// How long a first ejection lasts (default 30s).
    pub ejection_time: Option<Spanned<ConfigDuration>>,
    /// The largest share of targets out at once, in percent (default 50).
    pub max_ejected_percent: Option<Spanned<u32>>,
}

/// Upstream `retry:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Extra tries after the first (default 2).
    pub attempts: Option<Spanned<u32>>,
    /// The wait before the first retry, doubled for each after (default 25ms).
    pub backoff: Option<Spanned<ConfigDuration>>,
    /// The longest wait (default 250ms).
    pub max_backoff: Option<Spanned<ConfigDuration>>,
    /// Outcomes retried: `connect_error`, `timeout`, status codes.
    pub on: Option<AtKey<Vec<Spanned<String>>>>,
    /// Methods retried (default the idempotent ones).
    pub methods: Option<AtKey<Vec<Spanned<String>>>>,
    /// How many retries the upstream may take (on by default).
    pub budget: Option<AtKey<RetryBudgetSection>>,
}

/// Upstream `retry.budget:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetSection {
    /// Retries as a share of requests, in percent (default 20).
    pub percent: Option<Spanned<u32>>,
    /// Retries allowed however few requests there were (default 3).
    pub min_retries: Option<Spanned<u32>>,
    /// How far back requests and retries are counted (default 10s).
    pub window: Option<Spanned<ConfigDuration>>,
}

/// A target: a plain URL, or a URL with a weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// `http://host:port`.
    pub url: String,
    /// Share of requests relative to the other targets.
    pub weight: Option<u32>,
}

impl<'de> Deserialize<'de> for TargetSpec {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Weighted {
            url: String,
            weight: Option<u32>,
        }
        struct TargetVisitor;
        impl<'de> de::Visitor<'de> for TargetVisitor {
            type Value = TargetSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a URL such as http://127.0.0.1:4003, or {url, weight}")
            }
            fn visit_str<E: de::Error>(self, url: &str) -> Result<TargetSpec, E> {
                Ok(TargetSpec {
                    url: url.to_string(),
                    weight: None,
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<TargetSpec, A::Error> {
                let w = Weighted::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TargetSpec {
                    url: w.url,
                    weight: w.weight,
                })
            }
        }
        deserializer.deserialize_any(TargetVisitor)
    }
}

/// `balance:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Fewest requests in flight.
    LeastRequests,
    /// Uniformly random.
    Random,
    /// Consistent hash of `hash_on`.
    Hash,
}

/// `protocol:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 over TLS.
    H2,
    /// HTTP/2 with prior knowledge, cleartext.
    H2c,
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Unique across all files.
    pub name: Spanned<String>,
    /// Conditions a request must meet.
    #[serde(rename = "match")]
    pub matches: Spanned<MatchSection>,
    /// Name of the upstream to forward to.
    pub upstream: Option<Spanned<String>>,
    /// A response the gateway gives by itself.
    pub respond: Option<Spanned<RespondSection>>,
    /// A prefix removed from the path before forwarding.
    pub strip_prefix: Option<Spanned<String>>,
    /// A prefix replaced before forwarding.
    pub rewrite: Option<Spanned<RewriteSection>>,
    /// Send the client's Host header upstream (default) rather than the target's.
    pub preserve_host: Option<Spanned<bool>>,
    /// Header edits on the way upstream.
    pub request_headers: Option<HeaderRulesSection>,
    /// Header edits on the way back.
    pub response_headers: Option<HeaderRulesSection>,
    /// Overrides the upstream's `timeout`.
    pub timeout: Option<Spanned<ConfigDuration>>,
    /// Overrides the upstream's `read_timeout`.
    pub read_timeout: Option<Spanned<ConfigDuration>>,
    /// Overrides `server.max_request_body` for this route.
    pub max_request_body: Option<ConfigSize>,
    /// Overrides `server.security_headers` for this route.
    pub security_headers: Option<bool>,
    /// Token verification for this route.
    pub auth: Option<Spanned<AuthSection>>,
    /// RBAC rules; the first whose methods match decides.
    pub authorize: Option<Spanned<Vec<AuthorizeRuleSection>>>,
    /// Request rate limits; all apply, the strictest decides.
    pub rate_limit: Option<AtKey<Vec<LimitSection>>>,
    /// Response caching for GET and HEAD.
    pub cache: Option<AtKey<RouteCacheSection>>,
    /// Cross-origin rules for browsers.
    pub cors: Option<Spanned<CorsSection>>,
    /// gzip / br for clients that accept them (upstream routes only).
    pub compress: Option<Spanned<bool>>,
    #[serde(default, rename = "$damaged")]
    /// Fields that had an error.
    pub damaged: Damaged,
}

/// `match:` — every condition given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSection {
    /// `api.example.com` or `*.example.com`.
    pub host: Option<Spanned<String>>,
    /// Prefix on segment boundaries.
    pub path: Option<Spanned<String>>,
    /// The whole path.
    pub path_exact: Option<Spanned<String>>,
    /// A regular expression over the normalised path.
    pub path_regex: Option<Spanned<String>>,
    /// Allowed methods.
    pub methods: Option<Vec<Spanned<String>>>,
    /// Headers that must be present with exactly these values.
    pub headers: Option<OrderedMap<Spanned<String>>>,
}

/// `respond:` — a fixed response.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondSection {
    /// Defaults to 200.
    pub status: Option<Spanned<u16>>,
    /// Defaults to empty.
    pub body: Option<Spanned<String>>,
    /// Response headers.
    pub headers: Option<OrderedMap<Spanned<String>>>,
}

/// `jwt:` — token issuers the routes can name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    /// Providers by name.
    pub providers: OrderedMap<ProviderSection>,
}

/// One `jwt.providers.NAME:` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// Allowed `alg` values.
    pub algorithms: Option<Vec<Spanned<String>>>,
    /// HMAC secret (HS*).
    pub secret: Option<Spanned<String>>,
    /// PEM public key (RS*, PS*, ES*, EdDSA).
    pub public_key_file: Option<Spanned<String>>,
    /// A JWKS document on disk; keys picked by `kid`.
    pub jwks_file: Option<Spanned<String>>,
    /// A JWKS fetched over HTTP(S) and kept fresh; keys picked by `kid`.
    pub jwks_url: Option<Spanned<String>>,
    /// With `jwks_url`: a fixed refresh interval instead of the response's `max-age`.
    pub jwks_refresh: Option<Spanned<ConfigDuration>>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Accepted `aud` values, when set.
    pub audience: Option<Spanned<Vec<String>>>,
    /// Clock skew allowed on exp, nbf, iat.
    pub leeway: Option<ConfigDuration>,
    /// Dotted path of the roles claim.
    pub roles_claim: Option<String>,
    /// Claims sent upstream as headers: claim -> header name.
    pub forward_claims: Option<OrderedMap<Spanned<String>>>,
    #[serde(default, rename = "$damaged")]
    /// Fields that had an error.
    pub damaged: Damaged,
}

/// Route `auth:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Provider name.
    pub jwt: Spanned<String>,
    /// Anonymous requests allowed; a present token must still be valid.
    pub optional: Option<bool>,
    /// Whether the Authorization header goes upstream (default true).
    pub forward_token: Option<bool>,
}

/// One `authorize:` rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRuleSection {
    /// Methods the rule applies to; absent: all.
    pub methods: Option<Vec<Spanned<String>>>,
    /// Any of these roles.
    pub roles: Option<Spanned<Vec<String>>>,
    /// All of these scopes.
    pub scopes: Option<Spanned<Vec<String>>>,
    /// Claims that must have exactly these values.
    pub claims: Option<OrderedMap<Spanned<String>>>,
}

/// Route `cors:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    /// Allowed origins, exact, or `*`.
    pub origins: Vec<Spanned<String>>,
    /// Allowed methods.
    pub methods: Option<Vec<Spanned<String>>>,
    /// Allowed request headers.
    pub headers: Option<Vec<String>>,
    /// Whether cookies/Authorization may be sent.
    pub credentials: Option<bool>,
    /// How long browsers may cache a preflight answer.
    pub max_age: Option<ConfigDuration>,
}

/// `rewrite:` — replace a leading path prefix.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteSection {
    /// What the path starts with.
    pub prefix: Spanned<String>,
    /// What it becomes.
    pub to: Spanned<String>,
}

/// `request_headers:` / `response_headers:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRulesSection {
    /// Headers set, replacing any existing value.
    pub set: Option<OrderedMap<Spanned<String>>>,
    /// Headers removed.
    pub remove: Option<Vec<Spanned<String>>>,
}

/// `redis:` — the server or cluster that stores set to `redis` use.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://host:port/db` or `rediss://` for TLS.
    pub url: Option<Spanned<String>>,
    /// AUTH password; empty means none (so `${REDIS_PASSWORD:-}` can leave it unset).
    pub password: Option<Spanned<String>>,
    /// Seed nodes of a Redis Cluster, instead of `url`.
    pub cluster: Option<Spanned<Vec<Spanned<String>>>>,
    /// Time allowed to connect.
    pub connect_timeout: Option<Spanned<ConfigDuration>>,
    /// Time allowed for one command.
    pub command_timeout: Option<Spanned<ConfigDuration>>,
    /// The longest pause between reconnect attempts.
    pub reconnect_max_backoff: Option<Spanned<ConfigDuration>>,
    /// PEM file of the CA certificates `rediss://` trusts instead of the built-in roots.
    pub ca_file: Option<Spanned<String>>,
    #[serde(default, rename = "$damaged")]
    /// Fields that had an error.
    pub damaged: Damaged,
}

/// Top-level `rate_limit:` — where buckets live and what happens when that store fails.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// `memory` or `redis`.
    pub store: Option<Spanned<StoreChoice>>,
    /// `local`, `allow` or `deny`.
    pub on_store_error: Option<Spanned<OnStoreErrorChoice>>,
}

/// `rate_limit.store` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreChoice {
    /// Per instance.
    Memory,
    /// Shared through Redis.
    Redis,
}

/// `rate_limit.on_store_error` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreErrorChoice {
    /// Fall back to per-instance memory limits.
    Local,
    /// Let requests through.
    Allow,
    /// Refuse requests with 503.
    Deny,
}

/// Top-level `cache:` — where cached responses live and their bounds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// `memory` or `redis`.
    pub store: Option<Spanned<StoreChoice>>,
    /// Freshness for responses that state none, when the route sets no `ttl`.
    pub default_ttl: Option<Spanned<ConfigDuration>>,
    /// Larger responses stream through uncached.
    pub max_entry_size: Option<Spanned<ConfigSize>>,
    /// Bytes the memory store may hold.
    pub memory_capacity: Option<Spanned<ConfigSize>>,
    /// Starts every cache key.
    pub key_prefix: Option<Spanned<String>>,
}

/// Route `cache:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheSection {
    /// Freshness for responses that state none.
    pub ttl: Option<Spanned<ConfigDuration>>,
    /// Request headers added to the key.
    pub vary: Option<Spanned<Vec<Spanned<String>>>>,
    /// Whether the verified `sub` is part of the key.
    pub per_user: Option<Spanned<bool>>,
    /// How long a stale entry may answer while the upstream fails.
    pub stale_if_error: Option<Spanned<ConfigDuration>>,
}

/// One item of a route's `rate_limit:` list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSection {
    /// `ip`, `user`, `header:NAME` or `route`.
    pub by: Spanned<String>,
    /// Requests per `per`.
    pub limit: Spanned<u32>,
    /// The window.
    pub per: Spanned<ConfigDuration>,
    /// Extra requests allowed at once.
    pub burst: Option<Spanned<u32>>,
}

/// A YAML mapping read in file order, keys with their positions.
#[derive(Debug, Default)]
pub struct OrderedMap<V>(pub Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> de::Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::interpolate::MapEnv;

    fn parse(text: &str, kind: FileKind) -> (ParsedFile, Vec<FileError>) {
        parse_file(text, kind, &MapEnv(Default::default()))
    }

    #[test]
    fn collects_errors_from_every_route_and_upstream() {
        let text = "\
upstreams:
  a:
    targets: [http://127.0.0.1:1]
    timeout: 5x
  b:
    targets: [http://127.0.0.1:2]
routes:
  - name: one
    match: {path: /one}
    upstrem: a
  - name: two
    match: {path: /two}
    upstream: b
  - name: three
    match: {pth: /three}
";
        let (parsed, errors) = parse(text, FileKind::Routes);
        // What is left of each still reaches `build`, which knows what was lost.
        assert_eq!(parsed.upstreams.len(), 2);
        assert!(parsed.upstreams[0].1.damaged.has("timeout"));
        assert_eq!(parsed.routes.len(), 3);
        assert!(parsed.routes[0].damaged.has("upstream"));
        assert!(parsed.routes[2].damaged.has("match"));
        let lines: Vec<_> = errors.iter().map(|e| e.mark.unwrap().line).collect();
        assert_eq!(lines, vec![4, 10, 15], "{errors:?}");
        assert!(errors[1].message.contains("did you mean `upstream`"));
        assert!(errors[2].message.contains("did you mean `path`"));
    }

    #[test]
    fn sections_are_checked_per_file_kind() {
        let (_, errors) = parse("server: {listen: 127.0.0.1:1}\n", FileKind::Routes);
        assert!(errors[0].message.contains("belongs in gateway.yaml"));
        let (_, errors) = parse("sever: {}\n", FileKind::Gateway);
        assert!(
            errors[0].message.contains("did you mean `server`"),
            "{errors:?}"
        );
        let (parsed, errors) = parse("tracing:\n  otlp_endpoint: http://x\n", FileKind::Gateway);
        assert!(errors.is_empty());
        assert_eq!(
            parsed.unsupported,
            vec![("tracing", Mark { line: 1, column: 1 })]
        );
        let (parsed, errors) = parse("cache:\n  store: memory\n", FileKind::Gateway);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(parsed.cache.is_some());
        let (parsed, errors) = parse("redis:\n  url: redis://x\n", FileKind::Gateway);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(parsed.unsupported.is_empty());
        assert!(parsed.redis.is_some());
    }

    #[test]
    fn targets_plain_or_weighted() {
        let text = "upstreams:\n  a:\n    targets:\n      - http://x:1\n      - {url: http://y:2, weight: 3}\n";
        let (parsed, errors) = parse(text, FileKind::Routes);
        assert!(errors.is_empty(), "{errors:?}");
        let targets = &parsed.upstreams[0].1.targets;
        assert_eq!(targets[0].value.url, "http://x:1");
        assert_eq!(targets[1].value.weight, Some(3));
        assert_eq!(targets[1].mark.line, 5);
    }
}
