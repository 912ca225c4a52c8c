//! Turns parsed files into a `Snapshot`: resolves names across files, applies defaults, and
//! checks every rule, collecting all errors with their positions rather than stopping at one.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use super::errors::ConfigError;
use super::file::{
    self, did_you_mean, Balance, HeaderRulesSection, Mark, OrderedMap, ParsedFile, Protocol,
    RespondSection, RouteSection, Spanned, Unsupported, UpstreamSection,
};
use super::identity;
use super::shadow;
use super::snapshot::{LogFormat, LoggingSettings, ServerSettings, Snapshot};
use super::upstream_tls;
use crate::cache::settings::CacheSettings;
use crate::header_rules::{refused_in_rules, HeaderRules, RuleTarget};
use crate::observability::metrics::Metrics;
use crate::registry::Registries;
use crate::routing::matchers::{
    prefix_matches, HeaderCondition, HostMatcher, MethodSet, PathMatcher,
};
use crate::routing::normalize::normalize_path;
use crate::routing::route::{PathRewrite, ProxyAction, Route, RouteAction, StaticResponse};
use crate::routing::router::Router;
use crate::trusted_proxies::TrustedProxies;
use crate::upstream::balance::{
    Balancer, LeastRequests, Rendezvous, SmoothWeighted, WeightedRandom,
};
use crate::upstream::h2::{H2Client, H2Settings};
use crate::upstream::health::HealthSettings;
use crate::upstream::outlier::{OutlierSettings, Outliers};
use crate::upstream::pool::{Pool, PoolSettings};
use crate::upstream::retry::RetryBudget;
use crate::upstream::stream::{ConnectTarget, UpstreamTls};
use crate::upstream::{connect_address, parse_target, Target, Upstream};
use crate::upstream::{Bulkhead, HashOn};

const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const DEFAULT_MAX_REQUEST_BODY: u64 = 10 << 20;
const DEFAULT_MAX_HEADER_BYTES: u64 = 64 << 10;
const DEFAULT_REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_WEIGHT: u32 = 10_000;

/// One parsed file and where it came from.
pub struct SourceFile {
    /// Path as shown in errors.
    pub path: PathBuf,
    /// Its content.
    pub parsed: ParsedFile,
}

/// Collects errors for one file at a time.
pub(super) struct Errors<'a> {
    pub(super) list: &'a mut Vec<ConfigError>,
    pub(super) file: &'a Path,
}

impl Errors<'_> {
    pub(super) fn at(&mut self, mark: Mark, message: impl Into<String>) {
        self.list.push(ConfigError::at(self.file, mark, message));
    }

    pub(super) fn unsupported(&mut self, fields: &[(&str, &Unsupported)]) {
        for (name, value) in fields {
            if let Some(v) = value {
                self.at(v.mark, not_supported(name));
            }
        }
    }
}

fn not_supported(what: &str) -> String {
    format!(
        "`{what}` is not supported yet; remove it (gatehouse refuses settings it would not enforce)"
    )
}

fn location(file: &Path, mark: Mark) -> String {
    format!("{}:{}", file.display(), mark.line)
}

/// Builds a snapshot from gateway.yaml (first) and the routes files, or every error found.
pub fn build(
    files: &[SourceFile],
    routes_dir: PathBuf,
    registries: &Registries,
    mut content_hash: super::ContentHash,
) -> Result<Snapshot, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let gateway = &files[0];
    let mut e = Errors {
        list: &mut errors,
        file: &gateway.path,
    };
    let mut server = build_server(&gateway.parsed, &mut e);
    let admin_listen = gateway.parsed.admin.as_ref().and_then(|admin| {
        let addr = parse_listen(&admin.listen, &mut e)?;
        // Port 0 asks for any free port, so two of them never clash.
        if addr.port() != 0 && server.as_ref().is_some_and(|s| s.listen == addr) {
            e.at(
                admin.listen.mark,
                "admin.listen must differ from server.listen",
            );
        }
        Some(addr)
    });
    let logging = build_logging(&gateway.parsed, &mut e);
    let base = gateway.path.parent().unwrap_or(Path::new("."));
    let providers = identity::build_providers(&gateway.parsed, base, registries, &mut e);
    if let Some(tls) = gateway.parsed.server.as_ref().and_then(|s| s.tls.as_ref()) {
        let others = [
            server.as_ref().map(|s| ("server.listen", s.listen)),
            admin_listen.map(|a| ("admin.listen", a)),
        ];
        let built = super::tls::build_tls(tls, base, &others, &mut content_hash, &mut e);
        if let Some(server) = server.as_mut() {
            server.tls = built;
        }
    }
    for (section, mark) in &gateway.parsed.unsupported {
        e.at(*mark, not_supported(section));
    }
    let stores = super::ratelimit::build_store_settings(&gateway.parsed, base, &mut e);
    if let Some(ca) = stores.redis.as_ref().and_then(|r| r.ca_file.as_ref()) {
        content_hash.add_bytes(&ca.path, &ca.pem);
    }
    let cache = super::cache::build_cache_settings(&gateway.parsed, &mut e);
    let mut warnings = Vec::new();
    let redis_unused =
        stores.redis_unused && cache.store != crate::cache::settings::CacheStoreKind::Redis;
    if let (true, Some(redis)) = (redis_unused, &gateway.parsed.redis) {
        warnings.push(ConfigError::at(
            &gateway.path,
            redis.mark,
            "`redis` is not used: no store is set to redis",
        ));
    }

    let redis_store = match (&stores.redis, stores.rate_limit.store) {
        (Some(settings), crate::ratelimit::StoreKind::Redis) => {
            Some(registries.redis_store(settings))
        }
        _ => None,
    };
    let limiter = crate::ratelimit::Limiter::new(
        stores.rate_limit,
        Arc::clone(&registries.rate_limits),
        redis_store,
    );

    let upstreams = build_upstreams(
        files,
        registries,
        &mut errors,
        &mut upstream_tls::Side {
            warnings: &mut warnings,
            content_hash: &mut content_hash,
        },
    );
    let by_name: HashMap<&str, &Arc<Upstream>> = upstreams.iter().map(|u| (&*u.name, u)).collect();
    let invalid_upstreams: HashSet<&str> = files
        .iter()
        .flat_map(|f| {
            let parsed = f.parsed.upstreams.iter().map(|(name, _)| name.as_str());
            parsed.chain(f.parsed.invalid_upstreams.iter().map(String::as_str))
        })
        .filter(|name| !by_name.contains_key(name))
        .collect();
    let (routes, places) = build_routes(
        files,
        Upstreams {
            by_name: &by_name,
            invalid: &invalid_upstreams,
        },
        server.as_ref(),
        &registries.metrics,
        &providers,
        &cache,
        &mut errors,
    );

    match (server, logging) {
        (Some(server), Some(logging)) if errors.is_empty() => Ok(Snapshot {
            version: 0,
            content_hash: content_hash.finish(),
            loaded_at: SystemTime::now(),
            files: files.iter().map(|f| f.path.clone()).collect(),
            routes_dir,
            server,
            admin_listen,
            logging,
            warnings: {
                warnings.extend(shadow::shadowed_routes(&routes, &places));
                warnings
            },
            rate_limit: stores.rate_limit,
            cache_runtime: routes
                .iter()
                .any(|r| r.cache.is_some())
                .then(|| registries.cache_runtime(&cache, stores.redis.as_ref())),
            cache,
            redis: stores.redis,
            limiter,
            router: Router::new(routes),
            upstreams,
            identity_headers: identity::identity_headers(&providers),
            providers,
        }),
        _ => Err(errors),
    }
}

pub(super) fn parse_listen(value: &Spanned<String>, e: &mut Errors) -> Option<SocketAddr> {
    match value.trim().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            e.at(
                value.mark,
                format!(
                    "invalid listen address `{}`: expected IP:port such as 0.0.0.0:8080 or [::]:8080",
                    value.value
                ),
            );
            None
        }
    }
}

fn build_server(file: &ParsedFile, e: &mut Errors) -> Option<ServerSettings> {
    let default = Default::default();
    let s = file.server.as_ref().unwrap_or(&default);
    // Every setting is checked even when one fails, so one run reports every mistake.
    let listen = match &s.listen {
        Some(listen) => parse_listen(listen, e),
        None => Some(DEFAULT_LISTEN.parse().expect("valid default")),
    };
    let mut trusted = Vec::new();
    for entry in s.trusted_proxies.iter().flatten() {
        match TrustedProxies::parse_entry(entry) {
            Ok(net) => trusted.push(net),
            Err(message) => e.at(entry.mark, message),
        }
    }
    let max_header_bytes = match &s.max_header_bytes {
        Some(v) if v.value.0 < 1024 => {
            e.at(v.mark, "max_header_bytes must be at least 1KiB");
            DEFAULT_MAX_HEADER_BYTES
        }
        Some(v) => v.value.0,
        None => DEFAULT_MAX_HEADER_BYTES,
    };
    let max_concurrent_streams = match &s.max_concurrent_streams {
        Some(v) if v.value == 0 => {
            e.at(v.mark, "max_concurrent_streams must be at least 1");
            1
        }
        Some(v) => v.value,
        None => DEFAULT_MAX_CONCURRENT_STREAMS,
    };
    let workers = match &s.workers {
        Some(v) if v.value == 0 || v.value > 1024 => {
            e.at(v.mark, "workers must be between 1 and 1024");
            None
        }
        Some(v) => Some(v.value as usize),
        None => None,
    };
    Some(ServerSettings {
        listen: listen?,
        workers,
        max_request_body: s.max_request_body.map_or(DEFAULT_MAX_REQUEST_BODY, |v| v.0),
        max_header_bytes,
        request_header_timeout: s
            .request_header_timeout
            .map_or(DEFAULT_REQUEST_HEADER_TIMEOUT, |v| v.0),
        idle_timeout: s.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |v| v.0),
        shutdown_grace: s.shutdown_grace.map_or(DEFAULT_SHUTDOWN_GRACE, |v| v.0),
        trusted_proxies: TrustedProxies(trusted),
        max_concurrent_streams,
        security_headers: s.security_headers.unwrap_or(false),
        // Set by `build`, which knows the config's folder and hashes the files.
        tls: None,
    })
}

fn build_logging(file: &ParsedFile, e: &mut Errors) -> Option<LoggingSettings> {
    let logging = file.logging.as_ref();
    let level = match logging.and_then(|l| l.level.as_ref()) {
        Some(level) => {
            if let Err(problem) = check_log_filter(&level.value) {
                e.at(
                    level.mark,
                    format!(
                        "invalid log level `{}`: {problem} (write a level: {}; or a filter such \
                         as info,gatehouse=debug)",
                        level.value,
                        LOG_LEVELS.join(", ")
                    ),
                );
                return None;
            }
            level.value.clone()
        }
        None => "info".to_string(),
    };
    Some(LoggingSettings {
        format: logging
            .and_then(|l| l.format)
            .map_or(LogFormat::Json, LogFormat::from),
        level,
        access_log: logging.and_then(|l| l.access_log).unwrap_or(true),
    })
}

impl From<file::LogFormat> for LogFormat {
    fn from(format: file::LogFormat) -> Self {
        match format {
            file::LogFormat::Json => LogFormat::Json,
            file::LogFormat::Text => LogFormat::Text,
        }
    }
}

const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Accepts `level` and `target=level` directives separated by commas. The log filter itself
/// takes any word as a target name, so `verbose` would silence every line instead of failing.
fn check_log_filter(filter: &str) -> Result<(), String> {
    let is_level = |word: &str| LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word));
    let is_target = |word: &str| {
        !word.is_empty()
            && word.split("::").all(|part| {
                part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
    };
    for directive in filter.split(',') {
        let directive = directive.trim();
        match directive.split_once('=') {
            None if is_level(directive) => {}
            None if directive.is_empty() => return Err("an empty directive".into()),
            None => return Err(format!("`{directive}` is not a level")),
            Some((target, level)) => {
                let (target, level) = (target.trim(), level.trim());
                if !is_target(target) {
                    return Err(format!("`{target}` is not a module path"));
                }
                if !is_level(level) {
                    return Err(format!("`{level}` is not a level"));
                }
            }
        }
    }
    Ok(())
}

/// Names label metrics and logs, so they are kept to a safe alphabet.
fn check_name(kind: &str, name: &Spanned<String>, e: &mut Errors) {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        e.at(
            name.mark,
            format!(
                "invalid {kind} name `{}`: use letters, digits, `-`, `_` and `.`",
                name.value
            ),
        );
    }
}

fn build_upstreams(
    files: &[SourceFile],
    registries: &Registries,
    errors: &mut Vec<ConfigError>,
    side: &mut upstream_tls::Side,
) -> Vec<Arc<Upstream>> {
    let base = files
        .first()
        .and_then(|f| f.path.parent())
        .unwrap_or(Path::new("."));
    let mut seen: HashMap<String, (PathBuf, Mark)> = HashMap::new();
    let mut upstreams = Vec::new();
    for file in files {
        let mut e = Errors {
            list: errors,
            file: &file.path,
        };
        for (name, section) in &file.parsed.upstreams {
            check_name("upstream", name, &mut e);
            if let Some((first_file, first)) = seen.get(&name.value) {
                e.at(
                    name.mark,
                    format!(
                        "duplicate upstream `{}` (first defined at {}:{}:{})",
                        name.value,
                        first_file.display(),
                        first.line,
                        first.column
                    ),
                );
                continue;
            }
            seen.insert(name.value.clone(), (file.path.clone(), name.mark));
            if let Some(upstream) = build_upstream(name, section, registries, base, &mut e, side) {
                upstreams.push(Arc::new(upstream));
            }
        }
    }
    upstreams
}

fn build_upstream(
    name: &Spanned<String>,
    s: &UpstreamSection,
    registries: &Registries,
    base: &Path,
    e: &mut Errors,
    side: &mut upstream_tls::Side,
) -> Option<Upstream> {
    e.unsupported(&[("discovery", &s.discovery)]);
    let health = s
        .health_check
        .as_ref()
        .and_then(|h| super::health::build_health_check(h, e));
    let retry = s
        .retry
        .as_ref()
        .and_then(|r| super::retry::build_retry(r, e));
    let circuit = s
        .circuit_breaker
        .as_ref()
        .map(|cb| super::breaker::build_circuit_breaker(&cb.value, e))
        .unwrap_or_default();
    let outliers = s.outlier_detection.as_ref().and_then(|o| {
        let o = &o.value;
        let before = e.list.len();
        let consecutive_failures = match &o.consecutive_failures {
            Some(n) if n.value == 0 => {
                e.at(n.mark, "`consecutive_failures` must be at least 1");
                0
            }
            Some(n) => n.value,
            None => 5,
        };
        let ejection_time =
            positive(&o.ejection_time, "ejection_time", e).unwrap_or(Duration::from_secs(30));
        let max_ejected_percent = match &o.max_ejected_percent {
            Some(p) if p.value == 0 || p.value > 100 => {
                e.at(p.mark, "`max_ejected_percent` must be 1 to 100");
                0
            }
            Some(p) => u8::try_from(p.value).unwrap_or(100),
            None => 50,
        };
        (e.list.len() == before).then_some(OutlierSettings {
            consecutive_failures,
            ejection_time,
            max_ejected_percent,
        })
    });
    let hashing = s.balance.as_ref().is_some_and(|b| b.value == Balance::Hash);
    let hash_on = match (&s.hash_on, hashing) {
        (Some(on), false) => {
            e.at(on.mark, "`hash_on` applies with `balance: hash` only");
            None
        }
        (None, true) => {
            if let Some(balance) = &s.balance {
                e.at(
                    balance.mark,
                    "`balance: hash` needs `hash_on` (header:NAME, ip or cookie:NAME)",
                );
            }
            None
        }
        (None, false) => None,
        (Some(on), true) => parse_hash_on(&on.value).map_err(|m| e.at(on.mark, m)).ok(),
    };
    let protocol = s.protocol.as_ref().map_or(Protocol::Http1, |p| p.value);
    if s.targets.is_empty() {
        if s.damaged.has("targets") {
            // Its value was refused, and that error says so.
            return None;
        }
        e.at(
            name.mark,
            format!(
                "upstream `{}` has no targets; add at least one under `targets:`",
                name.value
            ),
        );
        return None;
    }
    let mut targets = Vec::new();
    for target in &s.targets {
        let weight = target.value.weight.unwrap_or(1);
        if weight == 0 || weight > MAX_WEIGHT {
            e.at(
                target.mark,
                format!("weight must be between 1 and {MAX_WEIGHT}"),
            );
            continue;
        }
        match parse_target(&target.value.url) {
            Ok((scheme, _)) if !protocol_fits(protocol, &scheme) => {
                e.at(target.mark, protocol_mismatch(protocol, &target.value.url));
            }
            Ok((scheme, authority)) => targets.push(Target {
                url: target.value.url.as_str().into(),
                host_header: http::HeaderValue::from_str(authority.as_str())
                    .expect("an authority is a valid header value"),
                scheme,
                authority,
                weight,
            }),
            Err(message) => e.at(target.mark, message),
        }
    }
    let connect_timeout =
        positive(&s.connect_timeout, "connect_timeout", e).unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let timeout = positive(&s.timeout, "timeout", e).unwrap_or(DEFAULT_UPSTREAM_TIMEOUT);
    let read_timeout = positive(&s.read_timeout, "read_timeout", e).unwrap_or(DEFAULT_READ_TIMEOUT);
    if targets.len() != s.targets.len() {
        return None;
    }
    let https = targets.iter().any(|t| t.scheme == http::uri::Scheme::HTTPS);
    let tls = upstream_tls::build_upstream_tls(&name.value, s.tls.as_ref(), https, base, e, side);
    if https && tls.is_none() {
        return None;
    }
    let mut connect_targets = Vec::with_capacity(targets.len());
    for (target, spec) in targets.iter().zip(&s.targets) {
        let tls_name = match (&tls, target.scheme == http::uri::Scheme::HTTPS) {
            (Some(tls), true) => match tls.server_name_for(target.authority.host()) {
                Ok(name) => Some(name),
                Err(message) => {
                    e.at(spec.mark, message);
                    return None;
                }
            },
            _ => None,
        };
        connect_targets.push(ConnectTarget {
            address: connect_address(&target.scheme, &target.authority),
            tls_name,
        });
    }
    let health = health.map(|settings| HealthSettings {
        tls: tls.clone(),
        ..settings
    });
    let h2 = match protocol {
        Protocol::Http1 => None,
        Protocol::H2 | Protocol::H2c => {
            let tls = match tls.as_deref().map(UpstreamTls::for_h2).transpose() {
                Ok(tls) => tls.map(Arc::new),
                Err(message) => {
                    e.at(name.mark, message);
                    return None;
                }
            };
            let settings = H2Settings {
                connect_timeout,
                targets: connect_targets.clone(),
                tls,
            };
            Some(
                registries
                    .h2_clients
                    .get_or_make(&name.value, &settings, || H2Client::new(settings.clone())),
            )
        }
    };
    let pool = PoolSettings {
        connect_timeout,
        targets: connect_targets,
        tls,
    };
    let pool = registries
        .pools
        .get_or_make(&name.value, &pool, || Pool::new(pool.clone()));
    let health = health.map(|settings| registries.health_checker(&name.value, &targets, settings));
    // Kept over reloads while its settings stay, so a reload does not hand out a fresh budget.
    let retry_budget = retry.as_ref().map(|policy| {
        registries
            .retry_budgets
            .get_or_make(&name.value, &policy.budget, || {
                Arc::new(RetryBudget::new(policy.budget))
            })
    });
    Some(Upstream {
        name: name.value.as_str().into(),
        retry,
        retry_budget,
        bulkhead: circuit.max_requests.map(|max| {
            Bulkhead::new(
                max,
                registries
                    .in_flight
                    .get_or_make(&name.value, &(), Default::default),
            )
        }),
        breaker: circuit
            .breaker
            .map(|settings| registries.breaker(&name.value, settings)),
        hash_on,
        outliers: outliers.map(|settings| {
            let urls: Vec<Arc<str>> = targets.iter().map(|t| Arc::clone(&t.url)).collect();
            registries
                .outliers
                .get_or_make(&name.value, &(urls, settings), || {
                    Arc::new(Outliers::new(settings, targets.len()))
                })
        }),
        health,
        balancer: {
            let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
            match s.balance.as_ref().map(|b| b.value) {
                Some(Balance::LeastRequests) => {
                    Balancer::LeastRequests(LeastRequests::new(weights))
                }
                Some(Balance::Random) => Balancer::Random(WeightedRandom::new(weights)),
                Some(Balance::Hash) => Balancer::Hash(Rendezvous::new(
                    targets.iter().map(|t| t.url.as_bytes().into()).collect(),
                    weights,
                )),
                _ => Balancer::RoundRobin(SmoothWeighted::new(weights)),
            }
        },
        targets,
        timeout,
        read_timeout,
        connect_timeout,
        pool,
        h2,
        metrics: registries.metrics.upstream(&name.value),
    })
}

/// Whether a target's scheme is the one its upstream's `protocol` runs over: `h2` is HTTP/2
/// over TLS, `h2c` cleartext HTTP/2; HTTP/1.1 runs over either.
fn protocol_fits(protocol: Protocol, scheme: &http::uri::Scheme) -> bool {
    match protocol {
        Protocol::Http1 => true,
        Protocol::H2 => *scheme == http::uri::Scheme::HTTPS,
        Protocol::H2c => *scheme == http::uri::Scheme::HTTP,
    }
}

/// The error for a target whose scheme does not fit the upstream's `protocol`.
fn protocol_mismatch(protocol: Protocol, url: &str) -> String {
    match protocol {
        Protocol::H2c => format!(
            "`protocol: h2c` is cleartext HTTP/2 with prior knowledge: target `{url}` must be \
             http:// (use `protocol: h2` for HTTP/2 over TLS)"
        ),
        _ => format!(
            "`protocol: h2` is HTTP/2 over TLS: target `{url}` must be https:// \
             (use `protocol: h2c` for cleartext HTTP/2)"
        ),
    }
}

/// A configured duration that must not be zero; `None` when absent (or zero, reported).
pub(super) fn positive(
    value: &Option<Spanned<super::units::ConfigDuration>>,
    what: &str,
    e: &mut Errors,
) -> Option<Duration> {
    let v = value.as_ref()?;
    if v.value.0.is_zero() {
        e.at(v.mark, format!("`{what}` must be greater than zero"));
        return None;
    }
    Some(v.value.0)
}

/// `hash_on`: `header:NAME`, `ip` or `cookie:NAME`.
fn parse_hash_on(text: &str) -> Result<HashOn, String> {
    let bad = || format!("invalid `hash_on` `{text}`: expected header:NAME, ip or cookie:NAME");
    if text == "ip" {
        return Ok(HashOn::Ip);
    }
    if let Some(name) = text.strip_prefix("header:") {
        return http::HeaderName::from_bytes(name.as_bytes())
            .map(HashOn::Header)
            .map_err(|_| bad());
    }
    if let Some(name) = text.strip_prefix("cookie:") {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        return if token {
            Ok(HashOn::Cookie(name.into()))
        } else {
            Err(bad())
        };
    }
    Err(bad())
}

/// The upstreams routes may name: those built, and those written but invalid (already
/// reported, so a route naming one is not told it does not exist).
struct Upstreams<'a> {
    by_name: &'a HashMap<&'a str, &'a Arc<Upstream>>,
    invalid: &'a HashSet<&'a str>,
}

fn build_routes(
    files: &[SourceFile],
    upstreams: Upstreams<'_>,
    server: Option<&ServerSettings>,
    metrics: &Metrics,
    providers: &identity::Providers,
    cache: &CacheSettings,
    errors: &mut Vec<ConfigError>,
) -> (Vec<Arc<Route>>, Vec<shadow::Place>) {
    let mut seen: HashMap<String, (PathBuf, Mark)> = HashMap::new();
    let mut routes = Vec::new();
    let mut places = Vec::new();
    let Upstreams {
        by_name: upstreams,
        invalid: invalid_upstreams,
    } = upstreams;
    let upstream_names: Vec<&str> = upstreams.keys().copied().collect();
    let client_ca = files[0]
        .parsed
        .server
        .as_ref()
        .and_then(|s| s.tls.as_ref())
        .is_some_and(|tls| tls.value.client_ca.is_some() || tls.value.damaged.has("client_ca"));
    for file in files {
        let mut e = Errors {
            list: errors,
            file: &file.path,
        };
        for section in &file.parsed.routes {
            let name = &section.name;
            check_name("route", name, &mut e);
            if let Some((first_file, first)) = seen.get(&name.value) {
                e.at(
                    name.mark,
                    format!(
                        "duplicate route `{}` (first defined at {}:{}:{})",
                        name.value,
                        first_file.display(),
                        first.line,
                        first.column
                    ),
                );
                continue;
            }
            seen.insert(name.value.clone(), (file.path.clone(), name.mark));
            let ctx = RouteContext {
                upstreams,
                invalid_upstreams,
                upstream_names: &upstream_names,
                server,
                file: &file.path,
                metrics,
                providers,
                declared_providers: &files[0].parsed.declared_providers,
                cache,
                client_ca,
            };
            if let Some(route) = build_route(section, &ctx, &mut e) {
                routes.push(Arc::new(route));
                places.push((file.path.clone(), name.mark));
            }
        }
    }
    (routes, places)
}

struct RouteContext<'a> {
    upstreams: &'a HashMap<&'a str, &'a Arc<Upstream>>,
    invalid_upstreams: &'a HashSet<&'a str>,
    upstream_names: &'a [&'a str],
    server: Option<&'a ServerSettings>,
    file: &'a Path,
    metrics: &'a Metrics,
    providers: &'a identity::Providers,
    declared_providers: &'a [String],
    cache: &'a CacheSettings,
    /// Whether gateway.yaml sets `server.tls.client_ca`.
    client_ca: bool,
}

fn build_route(s: &RouteSection, ctx: &RouteContext, e: &mut Errors) -> Option<Route> {
    let before = e.list.len();
    let policy =
        identity::build_route_policy(s, ctx.providers, ctx.declared_providers, ctx.client_ca, e);
    let cache = s.cache.as_ref().and_then(|section| {
        let facts = super::cache::RouteFacts {
            responds: s.respond.is_some(),
            has_auth: s.auth.is_some(),
            methods: s.matches.value.methods.as_deref(),
            methods_mark: s.matches.mark,
        };
        super::cache::build_route_cache(&section.value, section.mark, &facts, ctx.cache, e)
    });
    let m = &s.matches.value;
    let host = match &m.host {
        Some(h) => HostMatcher::parse(h).unwrap_or_else(|message| {
            e.at(h.mark, message);
            HostMatcher::Any
        }),
        None => HostMatcher::Any,
    };
    let path = build_path_matcher(s, e);
    let methods = m.methods.as_ref().and_then(|methods| {
        if methods.is_empty() {
            e.at(
                s.matches.mark,
                "`methods` is empty; remove it to allow every method",
            );
            return None;
        }
        let mut ok = true;
        for method in methods {
            if let Err(message) = MethodSet::parse([method.as_str()]) {
                e.at(method.mark, message);
                ok = false;
            }
        }
        ok.then(|| MethodSet::parse(methods.iter().map(|m| m.as_str())).ok())
            .flatten()
    });
    let headers = m
        .headers
        .as_ref()
        .map(|map| header_pairs(map, e))
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| HeaderCondition { name, value })
        .collect();

    let action = build_action(s, ctx, path.as_ref(), e);
    let request_headers = build_rules(
        s.request_headers.as_ref(),
        "request_headers",
        RuleTarget::Request,
        e,
    );
    let response_headers = build_rules(
        s.response_headers.as_ref(),
        "response_headers",
        RuleTarget::Response,
        e,
    );
    let rate_limits = super::ratelimit::build_route_limits(s, e);
    let server = ctx.server?;
    if e.list.len() != before {
        return None;
    }
    Some(Route {
        name: s.name.value.as_str().into(),
        defined_at: location(ctx.file, s.name.mark),
        host,
        path: path?,
        methods,
        headers,
        action: action?,
        request_headers,
        response_headers,
        max_request_body: s.max_request_body.map_or(server.max_request_body, |v| v.0),
        security_headers: s.security_headers.unwrap_or(server.security_headers),
        metrics: ctx.metrics.route(&s.name.value),
        policy,
        rate_limit_decisions: if rate_limits.is_empty() {
            Default::default()
        } else {
            ctx.metrics.rate_limit_decisions(&s.name.value)
        },
        rate_limits,
        cache_results: if cache.is_some() {
            ctx.metrics.cache_results(&s.name.value)
        } else {
            Default::default()
        },
        cache: cache.map(Arc::new),
        compress: s.compress.as_ref().is_some_and(|c| c.value).then(|| {
            crate::compress::CompressPolicy {
                metrics: ctx.metrics.compression(&s.name.value),
            }
        }),
    })
}

fn build_path_matcher(s: &RouteSection, e: &mut Errors) -> Option<PathMatcher> {
    let m = &s.matches.value;
    let given: Vec<(&str, &Spanned<String>)> = [
        ("path", &m.path),
        ("path_exact", &m.path_exact),
        ("path_regex", &m.path_regex),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    match given.as_slice() {
        [] => Some(PathMatcher::Prefix("/".into())),
        [("path_regex", re)] => match regex::Regex::new(re) {
            Ok(compiled) => Some(PathMatcher::Regex(compiled)),
            Err(err) => {
                let reason = err.to_string();
                let reason = reason.lines().last().unwrap_or("invalid").trim();
                e.at(
                    re.mark,
                    format!("invalid path_regex `{}`: {reason}", re.value),
                );
                None
            }
        },
        [(kind, path)] => {
            if !path.starts_with('/') {
                e.at(path.mark, format!("`{kind}` must start with `/`"));
                return None;
            }
            match normalize_path(path) {
                Ok(normal) if normal == path.as_str() => {}
                Ok(normal) => {
                    e.at(
                        path.mark,
                        format!(
                            "`{kind}` `{}` is not in normal form and would never match (requests \
                             are matched after normalisation); write `{normal}`",
                            path.value
                        ),
                    );
                    return None;
                }
                Err(err) => {
                    e.at(path.mark, format!("`{kind}` `{}`: {err}", path.value));
                    return None;
                }
            }
            Some(if *kind == "path" {
                PathMatcher::Prefix(path.as_str().into())
            } else {
                PathMatcher::Exact(path.as_str().into())
            })
        }
        [_, (second, value), ..] => {
            e.at(
                value.mark,
                format!("`{second}` conflicts with another path rule: use one of path, path_exact, path_regex"),
            );
            None
        }
    }
}

fn build_action(
    s: &RouteSection,
    ctx: &RouteContext,
    path: Option<&PathMatcher>,
    e: &mut Errors,
) -> Option<RouteAction> {
    match (&s.upstream, &s.respond) {
        (Some(_), Some(respond)) => {
            e.at(
                respond.mark,
                "a route has either `upstream` or `respond`, not both",
            );
            None
        }
        (None, None) if s.damaged.has("upstream") || s.damaged.has("respond") => None,
        (None, None) => {
            e.at(
                s.name.mark,
                format!(
                    "route `{}` needs `upstream` (where to forward) or `respond` (a fixed answer)",
                    s.name.value
                ),
            );
            None
        }
        (None, Some(respond)) => {
            let proxy_only = [
                ("strip_prefix", s.strip_prefix.as_ref().map(|v| v.mark)),
                ("rewrite", s.rewrite.as_ref().map(|v| v.mark)),
                ("timeout", s.timeout.as_ref().map(|v| v.mark)),
                ("read_timeout", s.read_timeout.as_ref().map(|v| v.mark)),
                ("preserve_host", s.preserve_host.as_ref().map(|v| v.mark)),
                // A fixed body is written in the config: small, and not worth encoding per request.
                ("compress", s.compress.as_ref().map(|v| v.mark)),
            ];
            for (field, mark) in proxy_only {
                if let Some(mark) = mark {
                    e.at(
                        mark,
                        format!("`{field}` only applies to routes with `upstream`"),
                    );
                }
            }
            build_respond(&respond.value, e).map(RouteAction::Respond)
        }
        (Some(name), None) => {
            let Some(upstream) = ctx.upstreams.get(name.as_str()) else {
                if ctx.invalid_upstreams.contains(name.as_str()) {
                    // Defined but invalid: its own errors say why; "unknown" would be untrue.
                    return None;
                }
                let hint = did_you_mean(name, ctx.upstream_names)
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                e.at(
                    name.mark,
                    format!("unknown upstream `{}`{hint}", name.value),
                );
                return None;
            };
            let rewrite = build_rewrite(s, path, e);
            let timeout = positive(&s.timeout, "timeout", e).unwrap_or(upstream.timeout);
            let read_timeout =
                positive(&s.read_timeout, "read_timeout", e).unwrap_or(upstream.read_timeout);
            Some(RouteAction::Proxy(ProxyAction {
                upstream: Arc::clone(upstream),
                rewrite: rewrite?,
                preserve_host: s.preserve_host.as_ref().is_none_or(|p| p.value),
                timeout,
                read_timeout,
            }))
        }
    }
}

fn build_rewrite(
    s: &RouteSection,
    path: Option<&PathMatcher>,
    e: &mut Errors,
) -> Option<PathRewrite> {
    let check = |value: &Spanned<String>, what: &str, e: &mut Errors| -> bool {
        let ok = value.starts_with('/') && normalize_path(value).is_ok_and(|n| n == value.as_str());
        if !ok {
            e.at(
                value.mark,
                format!("`{what}` must be a normalised path starting with `/`"),
            );
            return false;
        }
        match path {
            Some(matcher) if !prefix_can_apply(value, matcher) => {
                e.at(
                    value.mark,
                    format!(
                        "`{what}` `{}` can never apply: the route matches {}, and none of \
                         those paths starts with it",
                        value.value,
                        matcher.describe()
                    ),
                );
                false
            }
            _ => true,
        }
    };
    match (&s.strip_prefix, &s.rewrite) {
        (Some(_), Some(rewrite)) => {
            e.at(
                rewrite.mark,
                "use either `strip_prefix` or `rewrite`, not both",
            );
            None
        }
        (Some(prefix), None) => check(prefix, "strip_prefix", e).then(|| PathRewrite::Prefix {
            prefix: prefix.as_str().into(),
            to: "".into(),
        }),
        (None, Some(rewrite)) => {
            let (prefix, to) = (&rewrite.value.prefix, &rewrite.value.to);
            let ok = check(prefix, "rewrite.prefix", e);
            let to_ok = to.starts_with('/') && normalize_path(to).is_ok_and(|n| n == to.as_str());
            if !to_ok {
                e.at(
                    to.mark,
                    "`rewrite.to` must be a normalised path starting with `/`",
                );
            }
            (ok && to_ok).then(|| PathRewrite::Prefix {
                prefix: prefix.as_str().into(),
                to: to.as_str().into(),
            })
        }
        (None, None) => Some(PathRewrite::Keep),
    }
}

/// Whether some path the route matches starts with `prefix` (on segment boundaries, as the
/// rewrite compares). A regex could match anything, so it is given the benefit of the doubt.
fn prefix_can_apply(prefix: &str, matcher: &PathMatcher) -> bool {
    match matcher {
        PathMatcher::Prefix(m) => prefix_matches(prefix, m) || prefix_matches(m, prefix),
        PathMatcher::Exact(m) => prefix_matches(prefix, m),
        PathMatcher::Regex(_) => true,
    }
}

fn build_respond(r: &RespondSection, e: &mut Errors) -> Option<StaticResponse> {
    let status = match &r.status {
        Some(s) => match StatusCode::from_u16(s.value) {
            Ok(code) if (200..=599).contains(&s.value) => Some(code),
            _ => {
                e.at(
                    s.mark,
                    format!("invalid status {}: expected 200 to 599", s.value),
                );
                None
            }
        },
        None => Some(StatusCode::OK),
    };
    // RFC 9110 6.4.1: these answers never carry content; a body would be cut off or would
    // corrupt the next response on the connection.
    if let (Some(code), Some(body)) = (status, &r.body) {
        if !body.is_empty() && matches!(code.as_u16(), 204 | 205 | 304) {
            e.at(
                body.mark,
                format!(
                    "a {} response has no body; remove `body` or use another status",
                    code.as_u16()
                ),
            );
        }
    }
    let mut headers = HeaderMap::new();
    for (name, value) in r
        .headers
        .as_ref()
        .map(|h| settable_pairs(h, "respond.headers", RuleTarget::Response, e))
        .unwrap_or_default()
    {
        headers.append(name, value);
    }
    let status = status?;
    let body = Bytes::from(r.body.as_ref().map(|b| b.value.clone()).unwrap_or_default());
    if !body.is_empty() && !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    Some(StaticResponse {
        status,
        headers,
        body,
    })
}

fn header_name(name: &Spanned<String>, e: &mut Errors) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            e.at(name.mark, format!("invalid header name `{}`", name.value));
            None
        }
    }
}

fn header_pairs(
    map: &OrderedMap<Spanned<String>>,
    e: &mut Errors,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut pairs = Vec::new();
    for (name, value) in &map.0 {
        let name = header_name(name, e);
        let value = match HeaderValue::from_str(value) {
            Ok(v) => Some(v),
            Err(_) => {
                e.at(
                    value.mark,
                    "invalid header value: control characters (such as newlines) are not allowed",
                );
                None
            }
        };
        if let (Some(name), Some(value)) = (name, value) {
            pairs.push((name, value));
        }
    }
    pairs
}

fn build_rules(
    section: Option<&HeaderRulesSection>,
    key: &str,
    target: RuleTarget,
    e: &mut Errors,
) -> HeaderRules {
    let Some(section) = section else {
        return HeaderRules::default();
    };
    let mut remove = Vec::new();
    for name in section.remove.iter().flatten() {
        let Some(header) = header_name(name, e) else {
            continue;
        };
        let refused = refused_in_rules(&header, target).or_else(|| {
            (target == RuleTarget::Request && header == header::HOST).then_some(
                "the gateway always sends `Host` (HTTP/1.1 requires it); \
                 use `preserve_host: false` to send the target's instead",
            )
        });
        match refused {
            Some(reason) => refuse_header(name, &format!("{key}.remove"), reason, e),
            None => remove.push(header),
        }
    }
    let set = section
        .set
        .as_ref()
        .map(|s| settable_pairs(s, &format!("{key}.set"), target, e))
        .unwrap_or_default();
    HeaderRules { remove, set }
}

/// [`header_pairs`] that configuration may set on a message, refusing the others.
fn settable_pairs(
    map: &OrderedMap<Spanned<String>>,
    key: &str,
    target: RuleTarget,
    e: &mut Errors,
) -> Vec<(HeaderName, HeaderValue)> {
    let (allowed, refused): (Vec<_>, Vec<_>) = map.0.iter().partition(|(name, _)| {
        HeaderName::from_bytes(name.as_bytes())
            .map_or(true, |h| refused_in_rules(&h, target).is_none())
    });
    for (name, _) in refused {
        let header = HeaderName::from_bytes(name.as_bytes()).expect("checked above");
        let reason = refused_in_rules(&header, target).expect("checked above");
        refuse_header(name, key, reason, e);
    }
    header_pairs(&OrderedMap(allowed.into_iter().cloned().collect()), e)
}

fn refuse_header(name: &Spanned<String>, key: &str, reason: &str, e: &mut Errors) {
    e.at(
        name.mark,
        format!("`{}` is not allowed in `{key}`: {reason}", name.value),
    );
}
