mod common;
use common::*;

#[tokio::test]
async fn proxies_to_an_echo_upstream() {
    let up = EchoUpstream::start("a").await;
    let yaml = format!(
        "{}upstreams:\n  a:\n    targets: [{}]\nroutes:\n  - name: r\n    match: {{path: /api}}\n    upstream: a\n",
        server_yaml(""),
        up.url()
    );
    let gw = TestGateway::start(&yaml).await;
    let got = get(&gw.url("/api/x?y=1")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let echo = got.echo();
    assert_eq!(echo.target, "/api/x?y=1");
    assert_eq!(echo.header("via"), Some("1.1 gatehouse"));
}
