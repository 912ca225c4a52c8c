//! Built-in endpoints, answered by the gateway and never routed upstream.

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use super::state::GatewayState;
use crate::proxy::body::ResponseBody;

/// Paths the gateway answers itself.
pub const PATHS: [&str; 1] = ["/health"];

/// Answers a built-in endpoint, or `None` when `path` is not one.
pub fn serve(_state: &GatewayState, method: &Method, path: &str) -> Option<Response<ResponseBody>> {
    if !PATHS.contains(&path) {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method_not_allowed","message":"use GET"}"#,
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(response);
    }
    Some(json(StatusCode::OK, r#"{"status":"ok"}"#))
}

fn json(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(format!("{body}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
