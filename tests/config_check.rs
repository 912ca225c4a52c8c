//! `gatehouse check` and `explain` on configs whose mistakes used to pass unnoticed.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use common::{gatehouse_bin, DEADLINE};

/// A config dir holding `files` (paths relative to it).
fn config_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write config file");
    }
    dir
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(gatehouse_bin());
    // `-c` falls back to this variable; the caller's environment must not pick the config.
    command
        .args(args)
        .env_remove("GATEHOUSE_CONFIG")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command
}

/// Runs `gatehouse args...` to completion, killing it if it outlives [`DEADLINE`].
fn gatehouse(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = command(args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gatehouse");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(output) => output.expect("wait for gatehouse"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("gatehouse {args:?} did not finish within {DEADLINE:?}");
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

const GATEWAY: &str = "server:\n  listen: 127.0.0.1:0\nlogging:\n  format: text\n";

#[test]
fn explain_does_not_claim_a_strip_that_does_not_happen() {
    let routes = "\
upstreams:
  app:
    targets: [http://127.0.0.1:1]
routes:
  - name: app
    match: {path: /app}
    upstream: app
    strip_prefix: /app/v1
";
    let dir = config_dir(&[("gateway.yaml", GATEWAY), ("routes/app.yaml", routes)]);
    let config = dir.path().join("gateway.yaml");
    let explain = |url: &str| {
        let out = gatehouse(&["explain", "-c", path_str(&config), "GET", url], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let other = explain("/app/other");
    assert!(
        other.contains("rewrite:    none (the path does not start with /app/v1)\n"),
        "{other}"
    );
    assert!(
        other.contains("would call: GET http://127.0.0.1:1/app/other\n"),
        "{other}"
    );
    let stripped = explain("/app/v1/x");
    assert!(
        stripped.contains("rewrite:    prefix /app/v1 -> (stripped)\n"),
        "{stripped}"
    );
    assert!(
        stripped.contains("would call: GET http://127.0.0.1:1/x\n"),
        "{stripped}"
    );
}

#[test]
fn check_reports_every_mistake_of_a_block() {
    let server = "server:\n  listen: localhost:80\n  idle_timout: 5s\n  max_request_body: 10XB\n  workers: 0\n";
    let dir = config_dir(&[("gateway.yaml", server)]);
    let config = dir.path().join("gateway.yaml");
    let out = gatehouse(&["check", "-c", path_str(&config)], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 5, "{stderr}");
    for (line, place) in lines
        .iter()
        .zip([":2:11: ", ":3:3: ", ":4:21: ", ":5:12: "])
    {
        assert!(line.contains(place), "{line} should be at {place}");
    }
    assert_eq!(lines[4], "4 error(s) in the config; nothing was started");
}
