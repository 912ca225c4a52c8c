//! Configured header rules (`request_headers`, `response_headers`, `respond.headers`): the
//! prebuilt edits a route makes, and which header names a rule may touch at all. Config loading
//! checks and builds them; the request path applies them.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `request_headers:` / `response_headers:` of a route, prebuilt.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    /// Headers removed first.
    pub remove: Vec<HeaderName>,
    /// Headers then set, replacing any value.
    pub set: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderRules {
    /// Applies the rules: removals, then sets.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Which message a configured header rule edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleTarget {
    /// `request_headers`: the request sent upstream.
    Request,
    /// `response_headers` and `respond.headers`: the response sent to the client.
    Response,
}

/// Why a header rule may not set or remove `name`, or `None` when it may. The gateway frames
/// every message itself and manages each connection on its own hop: a configured
/// `Content-Length` would not match the body (HTTP/1.1 clients hang, HTTP/2 streams are reset),
/// and connection headers configured on one hop would be stripped or would lie about it.
pub fn refused_in_rules(name: &HeaderName, target: RuleTarget) -> Option<&'static str> {
    if *name == header::CONTENT_LENGTH || *name == header::TRANSFER_ENCODING {
        return Some(
            "the gateway frames every message itself; a configured value would not match the \
             body (HTTP/1.1 clients would hang, HTTP/2 streams would be reset)",
        );
    }
    let connection = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::UPGRADE,
        header::TE,
        header::TRAILER,
    ];
    if connection.contains(name) {
        return Some(
            "it describes one connection, not the message; the gateway manages it on each \
             hop and never forwards it",
        );
    }
    if *name == header::HOST {
        return match target {
            RuleTarget::Response => {
                Some("`Host` is a request header; it means nothing in a response")
            }
            // Setting it is allowed (it overrides `preserve_host`); removing it is not.
            RuleTarget::Request => None,
        };
    }
    None
}
