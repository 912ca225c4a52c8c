use std::future::poll_fn;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const LIMIT: usize = 64 << 10;

/// A server-side `Inbound` and the client end of the same connection.
async fn connection() -> (Arc<Inbound>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (Inbound::new(server), client)
}

/// A connection on which the client has sent `bytes`.
async fn sent(bytes: &[u8]) -> (Arc<Inbound>, TcpStream) {
    let (inbound, mut client) = connection().await;
    client.write_all(bytes).await.unwrap();
    (inbound, client)
}

async fn head(inbound: &Inbound) -> RequestHead {
    let head = poll_fn(|cx| inbound.poll_head(cx, LIMIT));
    tokio::time::timeout(Duration::from_secs(10), head)
        .await
        .expect("a head in time")
        .expect("a valid head")
        .expect("not closed")
}

async fn body_of(inbound: &Arc<Inbound>, head: &RequestHead) -> Result<Vec<u8>, BoxError> {
    let body = inbound.start_body(head.framing, head.expect_continue);
    let collected = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the body in time")?;
    Ok(collected.to_bytes().to_vec())
}

#[tokio::test]
async fn pipelined_requests_with_bodies_are_read_one_after_the_other() {
    let (inbound, _client) = sent(b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
              POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
              GET /3 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let first = head(&inbound).await;
    assert_eq!(first.parts.uri, "/1");
    assert_eq!(body_of(&inbound, &first).await.unwrap(), b"hello");
    assert_eq!(inbound.finish_body(), BodyLeft::Nothing);
    let second = head(&inbound).await;
    assert_eq!(second.parts.uri, "/2");
    assert_eq!(body_of(&inbound, &second).await.unwrap(), b"abc");
    assert_eq!(inbound.finish_body(), BodyLeft::Nothing);
    let third = head(&inbound).await;
    assert_eq!(third.parts.uri, "/3");
    assert_eq!(body_of(&inbound, &third).await.unwrap(), b"");
}

#[tokio::test]
async fn a_body_arriving_in_pieces_streams_as_it_comes() {
    let (inbound, mut client) =
        sent(b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab").await;
    let head = head(&inbound).await;
    let mut body = inbound.start_body(head.framing, false);
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"ab");
    client.write_all(b"cd\r\n0\r\n\r\n").await.unwrap();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&second[..], b"cd");
    assert!(body.frame().await.is_none());
    assert!(body.is_end_stream());
}

#[tokio::test]
async fn continue_is_sent_only_when_the_body_is_wanted() {
    let (inbound, mut client) =
        sent(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            .await;
    let head = head(&inbound).await;
    assert!(head.expect_continue);
    let body = inbound.start_body(head.framing, head.expect_continue);
    assert!(inbound.awaits_continue());
    let reading = tokio::spawn(async move { body.collect().await.map(|b| b.to_bytes()) });
    let mut interim = [0u8; CONTINUE.len()];
    client.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim[..], CONTINUE);
    client.write_all(b"abc").await.unwrap();
    assert_eq!(&reading.await.unwrap().unwrap()[..], b"abc");
    assert!(!inbound.awaits_continue());
}

#[tokio::test]
async fn no_continue_once_the_response_has_started() {
    let (inbound, _client) =
        sent(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            .await;
    let head = head(&inbound).await;
    let _body = inbound.start_body(head.framing, head.expect_continue);
    inbound.response_started();
    assert!(!inbound.awaits_continue());
    assert_eq!(inbound.finish_body(), BodyLeft::Unread(Some(3)));
}

#[tokio::test]
async fn an_old_body_reads_nothing_once_the_connection_moved_on() {
    let (inbound, _client) = sent(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let head = head(&inbound).await;
    let body = inbound.start_body(head.framing, false);
    assert_eq!(inbound.finish_body(), BodyLeft::Unread(Some(3)));
    let error = body.collect().await.unwrap_err();
    assert!(
        error.to_string().contains("after its request ended"),
        "{error}"
    );
}

#[tokio::test]
async fn unread_bodies_are_discarded_within_a_budget() {
    let (inbound, _client) = sent(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789GET /next HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let first = head(&inbound).await;
    let _ = inbound.start_body(first.framing, false);
    assert_eq!(inbound.finish_body(), BodyLeft::Unread(Some(10)));
    let mut budget = 10;
    assert!(poll_fn(|cx| inbound.poll_discard_body(cx, &mut budget))
        .await
        .unwrap());
    assert_eq!(head(&inbound).await.parts.uri, "/next");

    let (inbound, _client) =
        sent(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789").await;
    let first = head(&inbound).await;
    let _ = inbound.start_body(first.framing, false);
    inbound.finish_body();
    let mut budget = 9;
    assert!(!poll_fn(|cx| inbound.poll_discard_body(cx, &mut budget))
        .await
        .unwrap());
}

#[tokio::test]
async fn broken_or_cut_short_bodies_fail_and_break_the_connection() {
    let (inbound, _client) =
        sent(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").await;
    let head_ = head(&inbound).await;
    let error = body_of(&inbound, &head_).await.unwrap_err();
    assert!(
        crate::body::caused_by::<ClientBodyError>(&*error),
        "{error}"
    );
    assert_eq!(inbound.finish_body(), BodyLeft::Broken);

    let (inbound, mut client) =
        sent(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc").await;
    client.shutdown().await.unwrap();
    let head_ = head(&inbound).await;
    let error = body_of(&inbound, &head_).await.unwrap_err();
    assert!(error.to_string().contains("before the end"), "{error}");
    assert_eq!(inbound.finish_body(), BodyLeft::Broken);
}

#[tokio::test]
async fn a_waiting_connection_holds_no_buffer() {
    let (inbound, mut client) = connection().await;
    assert_eq!(
        inbound.lock().buf.capacity(),
        0,
        "none before the first byte"
    );
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let first = head(&inbound).await;
    drop(first);
    inbound.finish_body();
    inbound.release_buffer();
    assert_eq!(
        inbound.lock().buf.capacity(),
        0,
        "given back after the request"
    );
    // Waiting for the next head takes none either.
    let waiting = poll_fn(|cx| Poll::Ready(inbound.poll_head(cx, LIMIT).is_pending())).await;
    assert!(waiting);
    assert_eq!(inbound.lock().buf.capacity(), 0, "none while waiting");
}

#[tokio::test]
async fn a_clean_close_between_requests_is_not_an_error() {
    let (inbound, client) = connection().await;
    drop(client);
    let result = poll_fn(|cx| inbound.poll_head(cx, LIMIT)).await;
    assert!(matches!(result, Ok(None)), "{result:?}");

    let (inbound, mut client) = connection().await;
    client.write_all(b"GET / HT").await.unwrap();
    drop(client);
    let result = poll_fn(|cx| inbound.poll_head(cx, LIMIT)).await;
    assert!(
        matches!(result, Err(HeadReadError::Closed(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn oversized_heads_are_refused_without_reading_on() {
    let (inbound, mut client) = connection().await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "x".repeat(2000)
    );
    client.write_all(big.as_bytes()).await.unwrap();
    let result = poll_fn(|cx| inbound.poll_head(cx, 1024)).await;
    assert!(
        matches!(result, Err(HeadReadError::Head(HeadError::TooLarge))),
        "{result:?}"
    );
    assert!(inbound.buffered() <= 1024 + HEAD_READ);
}

#[tokio::test]
async fn heads_larger_than_the_first_read_are_read_whole() {
    let fields: String = (0..60)
        .map(|i| format!("X-Field-{i}: {}\r\n", "v".repeat(150)))
        .collect();
    let wire = format!("GET /big HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
    assert!(wire.len() > 8 * HEAD_READ);
    let (inbound, _client) = sent(wire.as_bytes()).await;
    let head = head(&inbound).await;
    assert_eq!(head.parts.uri, "/big");
    assert_eq!(head.parts.headers.len(), 61);
}

/// A server-side `Inbound` over TLS (handshake done) and the client end.
async fn tls_connection() -> (Arc<Inbound>, tokio_rustls::client::TlsStream<TcpStream>) {
    use crate::http1::transport::TlsTransport;
    use crate::tls::client::{client_config, provider, Trust};
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["a.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    let client = client_config(Trust::Anything, None, &[]).unwrap();
    let (tcp, client_tcp) = {
        let (inbound, client) = connection().await;
        (inbound.into_parts().unwrap().0, client)
    };
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let (server, client) = tokio::join!(
        tokio_rustls::TlsAcceptor::from(Arc::new(server)).accept(tcp),
        tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, client_tcp),
    );
    let (tcp, session) = server.unwrap().into_inner();
    let transport = Transport::Tls(Box::new(TlsTransport::new(tcp, session)));
    (Inbound::over(transport), client.unwrap())
}

#[tokio::test]
async fn over_tls_heads_and_bodies_read_across_records_and_a_waiting_connection_holds_no_buffer() {
    let (inbound, mut client) = tls_connection().await;
    assert_eq!(inbound.lock().buf.capacity(), 0, "none after the handshake");
    // Each write is a record of its own: the head and the body arrive in pieces.
    for piece in [
        &b"POST /1 HTTP/1.1\r\nHo"[..],
        b"st: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
        b"c\r\n0\r\n\r\n",
    ] {
        client.write_all(piece).await.unwrap();
        client.flush().await.unwrap();
    }
    let first = head(&inbound).await;
    assert_eq!(first.parts.uri, "/1");
    assert_eq!(body_of(&inbound, &first).await.unwrap(), b"abc");
    assert_eq!(inbound.finish_body(), BodyLeft::Nothing);
    inbound.release_buffer();
    assert_eq!(inbound.lock().buf.capacity(), 0, "given back");
    let waiting = poll_fn(|cx| Poll::Ready(inbound.poll_head(cx, LIMIT).is_pending())).await;
    assert!(waiting);
    assert_eq!(inbound.lock().buf.capacity(), 0, "none while waiting");
    // close_notify between requests is a clean close.
    client.shutdown().await.unwrap();
    let result = poll_fn(|cx| inbound.poll_head(cx, LIMIT)).await;
    assert!(matches!(result, Ok(None)), "{result:?}");
}

#[tokio::test]
async fn over_tls_a_body_cut_by_close_notify_is_cut_short_and_continue_is_flushed() {
    let (inbound, mut client) = tls_connection().await;
    client
        .write_all(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let head_ = head(&inbound).await;
    let body = inbound.start_body(head_.framing, head_.expect_continue);
    let collect = tokio::spawn(body.collect());
    // The interim answer reaches the client although nothing else is written after it.
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut interim))
        .await
        .expect("100 Continue in time")
        .unwrap();
    assert_eq!(&interim, CONTINUE);
    client.write_all(b"hello").await.unwrap();
    client.shutdown().await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(error.to_string().contains("before the end"), "{error}");
    assert_eq!(inbound.finish_body(), BodyLeft::Broken);
}
