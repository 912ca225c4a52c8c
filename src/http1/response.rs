//! Response heads to clients: status line, fields, the framing the gateway chose, and Date.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};
use http::StatusCode;

use super::{fields_size, write_content_length, write_fields};

/// How a response body is delimited, decided by the server from the request and the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// `Content-Length: n`, then exactly n bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No framing field; the body ends when the connection closes (HTTP/1.0 clients).
    UntilClose,
    /// No body is sent (HEAD, 1xx, 204, 304); the length field, when given, describes the
    /// body a GET would have had.
    Bodiless(Option<u64>),
}

/// What the connection will do after this response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Stays open; nothing to say (HTTP/1.1).
    KeepAlive,
    /// Stays open, said out loud (an HTTP/1.0 client that asked for keep-alive).
    KeepAliveAnnounced,
    /// Closes after this response.
    Close,
}

/// Writes the status line, the response's fields less those that describe the connection or
/// the framing, then the gateway's own framing, `Connection` and (when missing) `Date` fields.
pub fn encode_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    framing: ResponseFraming,
    persistence: Persistence,
    out: &mut Vec<u8>,
) {
    out.reserve(fields_size(headers) + 128);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    write_fields(headers, &[header::CONNECTION], out);
    match framing {
        ResponseFraming::Length(n) | ResponseFraming::Bodiless(Some(n)) => {
            write_content_length(n, out)
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ResponseFraming::UntilClose | ResponseFraming::Bodiless(None) => {}
    }
    match persistence {
        Persistence::KeepAlive => {}
        Persistence::KeepAliveAnnounced => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Persistence::Close => out.extend_from_slice(b"connection: close\r\n"),
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        with_date(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The length of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
const DATE_LEN: usize = 29;

thread_local! {
    /// The current second's Date value, formatted once per second per thread.
    static DATE: RefCell<(u64, [u8; DATE_LEN])> = const { RefCell::new((u64::MAX, [0; DATE_LEN])) };
}

/// Calls `f` with the current time as an IMF-fixdate.
fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == DATE_LEN {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = second;
            }
        }
        f(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn head(
        status: u16,
        headers: &[(&str, &str)],
        framing: ResponseFraming,
        persistence: Persistence,
    ) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let mut out = Vec::new();
        let status = StatusCode::from_u16(status).unwrap();
        encode_response_head(status, &map, framing, persistence, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn framing_and_connection_fields_are_the_gateways() {
        let text = head(
            200,
            &[
                ("content-length", "999"),
                ("transfer-encoding", "gzip"),
                ("connection", "x-private"),
                ("x-a", "1"),
                ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ],
            ResponseFraming::Length(5),
            Persistence::Close,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             content-length: 5\r\nconnection: close\r\n\r\n"
        );
        let text = head(
            299,
            &[],
            ResponseFraming::Chunked,
            Persistence::KeepAliveAnnounced,
        );
        assert!(text.starts_with(
            "HTTP/1.1 299 \r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\ndate: "
        ));
        assert!(text.ends_with(" GMT\r\n\r\n"));
        assert_eq!(text.len(), "HTTP/1.1 299 \r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\ndate: \r\n\r\n".len() + DATE_LEN);
        let text = head(
            304,
            &[],
            ResponseFraming::Bodiless(None),
            Persistence::KeepAlive,
        );
        assert!(!text.contains("content-length") && !text.contains("connection"));
        let text = head(
            200,
            &[],
            ResponseFraming::Bodiless(Some(42)),
            Persistence::KeepAlive,
        );
        assert!(text.contains("content-length: 42\r\n"));
    }

    #[test]
    fn date_is_an_imf_fixdate_of_now() {
        let mut date = Vec::new();
        with_date(|d| date.extend_from_slice(d));
        let parsed = httpdate::parse_http_date(std::str::from_utf8(&date).unwrap()).unwrap();
        let age = SystemTime::now().duration_since(parsed).unwrap();
        assert!(age.as_secs() < 5, "{age:?}");
    }
}
