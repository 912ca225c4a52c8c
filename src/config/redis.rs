//! `redis:`, checked and built into the [`RedisSettings`] every Redis store connects with.

use std::path::Path;
use std::time::Duration;

use super::build::{positive, Errors};
use super::file::{Mark, RedisSection, Spanned};
use crate::redis::{CaFile, RedisSettings, RedisTarget};

/// Time to connect to Redis when `redis.connect_timeout` is not set.
pub const DEFAULT_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for one Redis command when `redis.command_timeout` is not set.
pub const DEFAULT_REDIS_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest pause between reconnects when `redis.reconnect_max_backoff` is not set.
pub const DEFAULT_REDIS_RECONNECT_MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Builds `redis:`; `base` is the folder a relative `ca_file` starts from.
pub(super) fn build_redis(
    s: &RedisSection,
    at: Mark,
    base: &Path,
    e: &mut Errors,
) -> Option<RedisSettings> {
    let before = e.list.len();
    let password = s
        .password
        .as_ref()
        .filter(|p| !p.value.is_empty())
        .map(|p| p.value.clone());
    let target = match (&s.url, &s.cluster) {
        (Some(_), Some(cluster)) => {
            e.at(
                cluster.mark,
                "use either `url` (one server) or `cluster` (Redis Cluster nodes), not both",
            );
            None
        }
        (None, None) if s.damaged.has("url") || s.damaged.has("cluster") => None,
        (None, None) => {
            e.at(
                at,
                "`redis` needs `url` (e.g. redis://127.0.0.1:6379/0) or `cluster` (a list of node URLs)",
            );
            None
        }
        (Some(url), None) => {
            check_redis_url(url, password.is_some(), e).then(|| RedisTarget::Url(url.value.clone()))
        }
        (None, Some(nodes)) if nodes.value.is_empty() => {
            e.at(nodes.mark, "`cluster` is empty; list at least one node URL");
            None
        }
        (None, Some(nodes)) => {
            let mut ok = true;
            for node in &nodes.value {
                ok &= check_redis_url(node, password.is_some(), e);
            }
            ok.then(|| RedisTarget::Cluster(nodes.value.iter().map(|n| n.value.clone()).collect()))
        }
    };
    let ca_file = s
        .ca_file
        .as_ref()
        .and_then(|ca| build_ca_file(ca, target.as_ref(), base, e));
    let connect_timeout =
        positive(&s.connect_timeout, "connect_timeout", e).unwrap_or(DEFAULT_REDIS_CONNECT_TIMEOUT);
    let command_timeout =
        positive(&s.command_timeout, "command_timeout", e).unwrap_or(DEFAULT_REDIS_COMMAND_TIMEOUT);
    let reconnect_max_backoff = positive(&s.reconnect_max_backoff, "reconnect_max_backoff", e)
        .unwrap_or(DEFAULT_REDIS_RECONNECT_MAX_BACKOFF);
    if e.list.len() != before {
        return None;
    }
    Some(RedisSettings {
        target: target?,
        password,
        connect_timeout,
        command_timeout,
        reconnect_max_backoff,
        ca_file,
    })
}

/// Reads and checks `ca_file`, which only `rediss://` targets can use: with a plain `redis://`
/// URL (or node) it would change nothing, so it is refused.
fn build_ca_file(
    ca: &Spanned<String>,
    target: Option<&RedisTarget>,
    base: &Path,
    e: &mut Errors,
) -> Option<CaFile> {
    let plain = match target {
        Some(RedisTarget::Url(url)) => !url.starts_with("rediss://"),
        Some(RedisTarget::Cluster(nodes)) => nodes.iter().any(|n| !n.starts_with("rediss://")),
        // The target's own error is reported.
        None => false,
    };
    if plain {
        e.at(
            ca.mark,
            "`ca_file` needs TLS: use rediss:// for `url` (or every `cluster` node), or remove `ca_file`",
        );
        return None;
    }
    match CaFile::read(base.join(&ca.value)) {
        Ok(file) => Some(file),
        Err(err) => {
            e.at(ca.mark, err.to_string());
            None
        }
    }
}

/// A `redis://` or `rediss://` URL the client can use; whether it is one.
fn check_redis_url(url: &Spanned<String>, password_key: bool, e: &mut Errors) -> bool {
    use redis::IntoConnectionInfo;
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        e.at(
            url.mark,
            format!(
                "invalid Redis URL `{}`: expected redis://host:port/db, or rediss:// for TLS",
                without_credentials(&url.value)
            ),
        );
        return false;
    }
    // The client reads `#insecure` as "skip certificate checks"; nothing after `#` may change
    // how it connects unseen.
    if url.contains('#') {
        e.at(
            url.mark,
            "a Redis URL takes no `#` fragment: certificate checks cannot be turned off",
        );
        return false;
    }
    match url.as_str().into_connection_info() {
        Ok(info) if password_key && info.redis_settings().password().is_some() => {
            e.at(
                url.mark,
                "the URL holds a password and so does `password`: give it once",
            );
            false
        }
        Ok(_) => true,
        Err(err) => {
            // Never echo the URL: it may hold a password.
            e.at(url.mark, format!("invalid Redis URL: {err}"));
            false
        }
    }
}

/// `url` with any user and password replaced by `***`, for error messages.
fn without_credentials(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}
