//! The HTTPS listener follows reloads: adding `server.tls` starts it, changing `tls.listen`
//! moves it (connections on the old port carry on), removing `tls` stops it, and a port that
//! cannot be bound rejects the reload with the running listener untouched.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::{self_signed_until, within, EchoUpstream};
use gatehouse::server::reload::ReloadOutcome;
use gatehouse::tls::client;
use gatehouse::GatewayHandle;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A gateway whose gateway.yaml the test rewrites and reloads by hand (no watcher, so every
/// reload is the test's own).
struct Reloadable {
    handle: GatewayHandle,
    dir: tempfile::TempDir,
    up: EchoUpstream,
}

impl Reloadable {
    async fn start(tls_listen: Option<&str>) -> Reloadable {
        let up = EchoUpstream::start("up").await;
        let dir = tempfile::tempdir().unwrap();
        let server = self_signed_until(&["a.test"], (2035, 1, 1));
        std::fs::write(dir.path().join("a.crt"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("a.key"), &server.key_pem).unwrap();
        Reloadable {
            handle: Self::boot(&dir, &up, tls_listen).await,
            dir,
            up,
        }
    }

    async fn boot(
        dir: &tempfile::TempDir,
        up: &EchoUpstream,
        tls_listen: Option<&str>,
    ) -> GatewayHandle {
        common::start_in(dir.path(), &yaml(up, tls_listen), &[], false).await
    }

    /// Rewrites gateway.yaml with `tls_listen` (no `tls` for `None`) and reloads.
    async fn reload_with(&self, tls_listen: Option<&str>) -> ReloadOutcome {
        std::fs::write(
            self.dir.path().join("gateway.yaml"),
            yaml(&self.up, tls_listen),
        )
        .unwrap();
        self.handle.reload().await
    }
}

fn yaml(up: &EchoUpstream, tls_listen: Option<&str>) -> String {
    let tls = tls_listen.map_or(String::new(), |listen| {
        format!(
            "  tls:\n    listen: {listen}\n    certificates:\n      - cert: a.crt\n        key: a.key\n"
        )
    });
    format!(
        "server:\n  listen: 127.0.0.1:0\n{tls}upstreams:\n  up:\n    targets: [{}]\n\
         routes:\n  - name: r\n    match: {{path: /}}\n    upstream: up\n",
        up.url()
    )
}

/// An HTTP/1.1 connection over TLS to `addr`.
async fn open(addr: SocketAddr) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let config = client::client_config(client::Trust::Anything, None, &[b"http/1.1"]).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("a.test").unwrap();
    let stream = within(TlsConnector::from(Arc::new(config)).connect(name, tcp)).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

/// GET `path` on `sender`; the status.
async fn get_on(sender: &mut SendRequest<Full<Bytes>>, path: &str) -> u16 {
    within(sender.ready()).await.unwrap();
    let request = Request::get(path)
        .header("host", "a.test")
        .body(Full::default())
        .unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    let status = response.status().as_u16();
    let _ = within(response.into_body().collect()).await;
    status
}

/// GET `path` over a new TLS connection to `addr`.
async fn get(addr: SocketAddr, path: &str) -> u16 {
    get_on(&mut open(addr).await.expect("connects"), path).await
}

/// Whether something accepts TCP connections on `addr`.
async fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_ok()
}

#[tokio::test]
async fn adding_tls_by_reload_starts_the_https_listener_and_removing_it_stops_it() {
    let gw = Reloadable::start(None).await;
    assert_eq!(gw.handle.tls_addr(), None);
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let outcome = gw.reload_with(Some(&listen)).await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let addr = gw.handle.tls_addr().expect("an HTTPS listener now");
    assert_eq!(addr.port(), port);
    assert_eq!(get(addr, "/added").await, 200);
    let mut kept = open(addr).await.unwrap();

    let outcome = gw.reload_with(None).await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    assert_eq!(gw.handle.tls_addr(), None);
    assert!(!listening(addr).await, "the port is closed");
    // A connection accepted before keeps being served.
    assert_eq!(get_on(&mut kept, "/kept").await, 200);
}

#[tokio::test]
async fn changing_tls_listen_moves_the_listener_and_keeps_open_connections() {
    let first = common::free_port();
    let gw = Reloadable::start(Some(&format!("127.0.0.1:{first}"))).await;
    let old = gw.handle.tls_addr().unwrap();
    assert_eq!(old.port(), first);
    let mut kept = open(old).await.unwrap();
    assert_eq!(get_on(&mut kept, "/before").await, 200);

    let second = common::free_port();
    let outcome = gw.reload_with(Some(&format!("127.0.0.1:{second}"))).await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let new = gw.handle.tls_addr().unwrap();
    assert_eq!(new.port(), second);
    assert_eq!(get(new, "/moved").await, 200);
    assert!(!listening(old).await, "the old port is closed");
    assert_eq!(get_on(&mut kept, "/after").await, 200);
    // Reloading the same address again leaves the listener as it is.
    let outcome = gw.reload_with(Some(&format!("127.0.0.1:{second}"))).await;
    assert!(matches!(outcome, ReloadOutcome::Unchanged), "{outcome:?}");
    assert_eq!(gw.handle.tls_addr(), Some(new));
}

#[tokio::test]
async fn a_port_in_use_rejects_the_reload_and_the_running_listener_stays() {
    let first = common::free_port();
    let gw = Reloadable::start(Some(&format!("127.0.0.1:{first}"))).await;
    let running = gw.handle.tls_addr().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let version = gw.handle.snapshot().version;

    match gw.reload_with(Some(&taken_addr.to_string())).await {
        ReloadOutcome::Rejected(errors) => {
            let text = errors.to_string();
            assert!(
                text.contains("gateway.yaml")
                    && text.contains("server.tls.listen")
                    && text.contains(&taken_addr.to_string()),
                "{text}"
            );
        }
        other => panic!("reload with a taken port: {other:?}"),
    }
    assert_eq!(gw.handle.snapshot().version, version);
    let metrics = common::get(&format!("http://{}/metrics", gw.handle.local_addr()))
        .await
        .text();
    assert!(
        metrics.contains("gatehouse_config_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
    assert_eq!(gw.handle.tls_addr(), Some(running));
    assert_eq!(get(running, "/still").await, 200);
    assert_eq!(
        gw.handle.snapshot().server.tls.as_ref().unwrap().listen,
        running
    );
    // Adding tls on a taken port is refused the same way.
    let plain = Reloadable::start(None).await;
    let outcome = plain.reload_with(Some(&taken_addr.to_string())).await;
    assert!(matches!(outcome, ReloadOutcome::Rejected(_)), "{outcome:?}");
    assert_eq!(plain.handle.tls_addr(), None);
    assert!(plain.handle.snapshot().server.tls.is_none());
    drop(taken);
}
