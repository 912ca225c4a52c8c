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
//!
//! Over HTTP/2 the same offer is an extended CONNECT (RFC 8441): `CONNECT` with a `:protocol`
//! pseudo-header and no body. It is served as the HTTP/1.1 `GET` with `Upgrade: <protocol>` it
//! stands for (routing, checks and the upstream see a `GET`); for `websocket` the gateway makes
//! the `Sec-WebSocket-Key` an HTTP/1.1 upstream needs and checks the `Sec-WebSocket-Accept` it
//! answers, and the upstream's `101` reaches the client as the `200` that opens the stream.

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, Version};

use super::body::ResponseBody;
use super::headers::list_elements;
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
    /// An HTTP/2 extended CONNECT: the switch is answered `200`, without `Connection` fields.
    pub over_h2: bool,
    /// The `Sec-WebSocket-Key` the gateway sent for an HTTP/2 WebSocket, whose accept value the
    /// upstream's `101` must carry.
    pub key: Option<HeaderValue>,
}

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// The label of a protocol `name` (`websocket`, `other`).
fn label_of(name: &str) -> &'static str {
    if name.eq_ignore_ascii_case("websocket") {
        "websocket"
    } else {
        "other"
    }
}

/// An HTTP/2 extended CONNECT's offer; the request becomes the `GET` it stands for.
fn extended_connect(
    parts: &mut Parts,
    protocol: &str,
) -> Result<Option<UpgradeRequest>, GatewayError> {
    if !is_token(protocol) || protocol.eq_ignore_ascii_case("h2c") {
        return Err(GatewayError::BadRequest("invalid :protocol"));
    }
    parts.method = Method::GET;
    parts.headers.remove(SEC_WEBSOCKET_KEY);
    let label = label_of(protocol);
    let key = (label == "websocket").then(new_key);
    Ok(Some(UpgradeRequest {
        protocols: HeaderValue::from_str(protocol)
            .map_err(|_| GatewayError::BadRequest("invalid :protocol"))?,
        label,
        over_h2: true,
        key,
    }))
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1).
fn new_key() -> HeaderValue {
    let mut nonce = [0u8; 16];
    // The system's generator does not fail on the platforms the gateway runs on; a key from a
    // weaker source would still only be a nonce.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).is_err() {
        nonce = fastrand::u128(..).to_le_bytes();
    }
    let text = base64::engine::general_purpose::STANDARD.encode(nonce);
    HeaderValue::from_str(&text).expect("base64 is a valid header value")
}

/// The `Sec-WebSocket-Accept` that answers `key` (RFC 6455 §4.2.2).
fn accept_for(key: &HeaderValue) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut context = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(key.as_bytes());
    context.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(context.finish())
}

/// The request's upgrade offer: `None` when it makes none, an error when it makes one that
/// cannot be honoured. An HTTP/2 extended CONNECT becomes a `GET` here.
pub fn requested(parts: &mut Parts) -> Result<Option<UpgradeRequest>, GatewayError> {
    if parts.version == Version::HTTP_2 && parts.method == Method::CONNECT {
        if let Some(protocol) = parts.extensions.get::<hyper::ext::Protocol>() {
            let protocol = protocol.as_str().to_owned();
            return extended_connect(parts, &protocol);
        }
    }
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
    let websocket = protocols
        .iter()
        .any(|p| label_of(p.split('/').next().unwrap_or(p)) == "websocket");
    let protocols = HeaderValue::from_str(&protocols.join(", "))
        .map_err(|_| GatewayError::BadRequest("invalid Upgrade field"))?;
    Ok(Some(UpgradeRequest {
        protocols,
        label: if websocket { "websocket" } else { "other" },
        over_h2: false,
        key: None,
    }))
}

/// Whether a comma-separated field `name` has the option `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    list_elements(headers, name).any(|t| t.eq_ignore_ascii_case(token))
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

/// The fields that ask an HTTP/1.1 upstream to switch: `Connection: upgrade` and `Upgrade`
/// (both were dropped as hop-by-hop with the rest), and the `Sec-WebSocket-Key` the gateway
/// made for an HTTP/2 WebSocket.
pub fn ask_upstream(headers: &mut HeaderMap, upgrade: &UpgradeRequest) {
    switched(headers, upgrade.protocols.clone());
    if let Some(key) = &upgrade.key {
        headers.insert(SEC_WEBSOCKET_KEY, key.clone());
    }
}

/// Marks a `101` answer as an upgrade: `Connection: upgrade` and the upstream's `Upgrade`.
pub fn switched(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// An upstream's `101` to an HTTP/2 WebSocket whose `Sec-WebSocket-Accept` does not answer the
/// key the gateway sent: it is not a WebSocket server, or not one that read this request.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the upstream's Sec-WebSocket-Accept does not answer the key sent")]
pub struct WrongAccept;

/// The answer an upgraded request's client gets for the upstream's `101` (its fields less the
/// hop-by-hop ones, `Upgrade` given as `protocol`): the `101` itself over HTTP/1.1; over HTTP/2
/// the `200` that opens the stream, once the upstream's `Sec-WebSocket-Accept` matched the key
/// (`Err`: it did not).
pub fn answer_switch(
    upgrade: &UpgradeRequest,
    status: &mut http::StatusCode,
    headers: &mut HeaderMap,
    protocol: HeaderValue,
) -> Result<(), WrongAccept> {
    if !upgrade.over_h2 {
        switched(headers, protocol);
        return Ok(());
    }
    if let Some(key) = &upgrade.key {
        let accepted = headers.remove(SEC_WEBSOCKET_ACCEPT);
        if accepted.is_none_or(|a| a.as_bytes() != accept_for(key).as_bytes()) {
            return Err(WrongAccept);
        }
    }
    *status = http::StatusCode::OK;
    Ok(())
}

/// The upstream connection a `101` answer handed over, with the metrics of its tunnel; `None`
/// for any other answer (or when it was taken already).
pub fn take_tunnel(response: &mut Response<ResponseBody>) -> Option<(Upgraded, TunnelMetrics)> {
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
        requested(&mut parts(Version::HTTP_11, Method::GET, fields))
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
        assert!(requested(&mut parts(Version::HTTP_10, Method::GET, &fields)).is_err());
        assert!(requested(&mut parts(Version::HTTP_11, Method::POST, &fields)).is_err());
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

#[cfg(test)]
mod h2_tests {
    use super::*;

    #[test]
    fn the_accept_value_is_rfc_6455s() {
        // RFC 6455 §1.3's example.
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept_for(&key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(new_key().len(), 24);
        assert_ne!(new_key(), new_key());
    }

    #[test]
    fn an_extended_connect_becomes_a_get_with_a_key() {
        let mut parts = http::Request::builder()
            .method(Method::CONNECT)
            .uri("https://a.test/chat")
            .version(Version::HTTP_2)
            .header("sec-websocket-key", "from-the-client")
            .extension(hyper::ext::Protocol::from_static("websocket"))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let offer = requested(&mut parts).unwrap().unwrap();
        assert_eq!(parts.method, Method::GET);
        assert!(offer.over_h2);
        assert_eq!(offer.protocols, "websocket");
        let key = offer.key.clone().unwrap();
        assert!(parts.headers.get("sec-websocket-key").is_none());

        let mut status = http::StatusCode::SWITCHING_PROTOCOLS;
        let mut headers = HeaderMap::new();
        let accept = HeaderValue::from_str(&accept_for(&key)).unwrap();
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
        let protocol = HeaderValue::from_static("websocket");
        assert!(answer_switch(&offer, &mut status, &mut headers, protocol.clone()).is_ok());
        assert_eq!(status, http::StatusCode::OK);
        assert!(headers.is_empty(), "{headers:?}");

        let mut wrong = HeaderMap::new();
        wrong.insert(SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("nope"));
        assert!(answer_switch(&offer, &mut status, &mut wrong, protocol).is_err());
    }
}
