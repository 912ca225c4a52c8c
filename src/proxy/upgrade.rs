//! HTTP/1.1 `Upgrade` (RFC 9110 §7.8) on the request path: which requests ask to switch
//! protocols, and what a `101` answer brings back for the server to tunnel.
//!
//! A request upgrades when its `Connection` field has the `upgrade` option and it carries an
//! `Upgrade` field; either alone is a hop-by-hop field like any other and is dropped (RFC 9110
//! §7.8: a server ignores an `Upgrade` not named in `Connection`). An upgrading request must be
//! an HTTP/1.1 `GET` without a body, whose `Upgrade` is a list of `protocol-name["/"version]`
//! tokens; anything else is a 400. An offer of `h2c` is ignored (served as a plain request):
//! after that switch every later request on the connection would reach the upstream without
//! passing the gateway's checks.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, Version};

use super::body::ResponseBody;
use crate::error::GatewayError;
use crate::observability::metrics::TunnelMetrics;
use crate::upstream::upgrade::{UpgradeSlot, Upgraded};

/// A request's valid upgrade offer.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// The protocols offered, as one list, forwarded as the upstream's `Upgrade`.
    pub protocols: HeaderValue,
    /// The `protocol` label of `gatehouse_upgrades_total`.
    pub label: &'static str,
}

/// The request's upgrade offer: `None` when it makes none, an error when it makes one that
/// cannot be honoured.
pub fn requested(parts: &Parts) -> Result<Option<UpgradeRequest>, GatewayError> {
    let headers = &parts.headers;
    if !headers.contains_key(header::UPGRADE) || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Ok(None);
    }
    let mut protocols: Vec<&str> = Vec::new();
    for value in headers.get_all(header::UPGRADE) {
        let value = value
            .to_str()
            .map_err(|_| GatewayError::BadRequest("invalid Upgrade field"))?;
        for element in value.split(',').map(|e| e.trim_matches([' ', '\t'])) {
            // Empty list elements are allowed and mean nothing (RFC 9110 §5.6.1).
            if element.is_empty() {
                continue;
            }
            if !is_protocol(element) {
                return Err(GatewayError::BadRequest("invalid Upgrade field"));
            }
            protocols.push(element);
        }
    }
    if protocols.is_empty() {
        return Err(GatewayError::BadRequest("invalid Upgrade field"));
    }
    if protocols.iter().any(|p| p.eq_ignore_ascii_case("h2c")) {
        return Ok(None);
    }
    if parts.version != Version::HTTP_11 {
        return Err(GatewayError::BadRequest("Upgrade needs HTTP/1.1"));
    }
    if parts.method != Method::GET {
        return Err(GatewayError::BadRequest("Upgrade is accepted on GET only"));
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(GatewayError::BadRequest(
            "an Upgrade request cannot have a body",
        ));
    }
    let websocket = protocols.iter().any(|p| {
        let name = p.split('/').next().unwrap_or(p);
        name.eq_ignore_ascii_case("websocket")
    });
    let protocols = HeaderValue::from_str(&protocols.join(", "))
        .map_err(|_| GatewayError::BadRequest("invalid Upgrade field"))?;
    Ok(Some(UpgradeRequest {
        protocols,
        label: if websocket { "websocket" } else { "other" },
    }))
}

/// Whether a comma-separated field `name` has the option `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token))
}

/// `protocol-name ["/" protocol-version]`, both tokens (RFC 9110 §7.8).
fn is_protocol(element: &str) -> bool {
    let mut parts = element.splitn(2, '/');
    let name = parts.next().unwrap_or("");
    is_token(name) && parts.next().is_none_or(is_token)
}

/// A `token` (RFC 9110 §5.6.2): one or more tchars.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Marks a `101` answer as an upgrade: `Connection: upgrade` and the upstream's `Upgrade`
/// (both were dropped as hop-by-hop with the rest), and the tunnel's metrics beside the
/// upstream connection in its extensions.
pub fn switched(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// The upstream connection a `101` answer handed over, with the metrics of its tunnel; `None`
/// for any other answer (or when it was taken already).
pub fn take_tunnel(response: &mut Response<ResponseBody>) -> Option<(Upgraded, TunnelMetrics)> {
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return None;
    }
    let extensions = response.extensions_mut();
    let upgraded = extensions.remove::<UpgradeSlot>()?.take()?;
    let metrics = extensions.remove::<TunnelMetrics>()?;
    Some((upgraded, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, method: Method, fields: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder()
            .method(method)
            .uri("/ws")
            .version(version);
        for (name, value) in fields {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn ws(fields: &[(&str, &str)]) -> Result<Option<UpgradeRequest>, GatewayError> {
        requested(&parts(Version::HTTP_11, Method::GET, fields))
    }

    #[test]
    fn an_upgrade_needs_both_fields() {
        assert!(ws(&[("upgrade", "websocket")]).unwrap().is_none());
        assert!(ws(&[("connection", "upgrade")]).unwrap().is_none());
        let offer = ws(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(offer.protocols, "WebSocket");
        assert_eq!(offer.label, "websocket");
    }

    #[test]
    fn protocol_lists_are_checked_and_joined() {
        let offer = ws(&[
            ("connection", "upgrade"),
            ("upgrade", "foo/2, , websocket"),
            ("upgrade", "bar"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(offer.protocols, "foo/2, websocket, bar");
        let other = ws(&[("connection", "upgrade"), ("upgrade", "foo/2")])
            .unwrap()
            .unwrap();
        assert_eq!(other.label, "other");
        for bad in ["", " , ", "foo/", "/2", "a b", "foo/2/3", "web(socket)"] {
            assert!(
                ws(&[("connection", "upgrade"), ("upgrade", bad)]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn h2c_is_ignored() {
        assert!(ws(&[("connection", "upgrade"), ("upgrade", "h2c")])
            .unwrap()
            .is_none());
    }

    #[test]
    fn http10_other_methods_and_bodies_are_refused() {
        let fields = [("connection", "upgrade"), ("upgrade", "websocket")];
        assert!(requested(&parts(Version::HTTP_10, Method::GET, &fields)).is_err());
        assert!(requested(&parts(Version::HTTP_11, Method::POST, &fields)).is_err());
        let with = |extra: (&'static str, &'static str)| {
            let mut all = fields.to_vec();
            all.push(extra);
            ws(&all)
        };
        assert!(with(("content-length", "1")).is_err());
        assert!(with(("transfer-encoding", "chunked")).is_err());
        assert!(with(("content-length", "0")).unwrap().is_some());
    }
}
