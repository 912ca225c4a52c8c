//! `gatehouse check`, `explain` and `run` on configs whose mistakes used to pass unnoticed, and
//! every YAML example in README.md, checked as a reader would check it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    config_dir, gatehouse, gatehouse_with_env, path_str, rsa_key_pair, stderr, stdout, Running,
    DEADLINE,
};

const GATEWAY: &str = "server:\n  listen: 127.0.0.1:0\nlogging:\n  format: text\n";

/// Upstream `app` and, on line 5, route `app` for /app; each test adds lines to the route or
/// routes after it.
const APP_ROUTE: &str = "\
upstreams:
  app:
    targets: [http://127.0.0.1:1]
routes:
  - name: app
    match: {path: /app}
    upstream: app
";

/// [`APP_ROUTE`] and, on line 8, a route for the same path that can never be chosen.
fn shadowed() -> String {
    format!("{APP_ROUTE}  - name: app-again\n    match: {{path: /app}}\n    upstream: app\n")
}

#[test]
fn check_warns_about_a_route_that_can_never_be_chosen_and_still_passes() {
    let dir = config_dir(&[("gateway.yaml", GATEWAY), ("routes/app.yaml", &shadowed())]);
    let config = dir.path().join("gateway.yaml");
    let out = gatehouse(&["check", "-c", path_str(&config)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let routes = dir.path().join("routes/app.yaml");
    assert_eq!(
        stderr(&out),
        format!(
            "{0}:8:11: warning: route `app-again` can never be chosen: route `app` ({0}:5:11) \
             has the same host and path, accepts every method and header it does, and is tried \
             first\n",
            routes.display()
        )
    );
    assert!(stdout(&out).contains(": ok"), "{}", stdout(&out));
}

#[test]
fn run_logs_the_warning_when_it_loads() {
    let dir = config_dir(&[("gateway.yaml", GATEWAY), ("routes/app.yaml", &shadowed())]);
    let running = Running::spawn(&dir.path().join("gateway.yaml"), &[], &[]);
    let deadline = Instant::now() + DEADLINE;
    let logged = loop {
        let logged = running.stdout();
        if logged.contains("gatehouse listening") || Instant::now() >= deadline {
            break logged;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let line = logged
        .lines()
        .find(|l| l.contains("config warning"))
        .unwrap_or_else(|| panic!("no warning logged:\n{logged}{}", running.stderr()));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("route `app-again` can never be chosen: route `app`"),
        "{line}"
    );
}

#[test]
fn explain_does_not_claim_a_strip_that_does_not_happen() {
    let routes = format!("{APP_ROUTE}    strip_prefix: /app/v1\n");
    let dir = config_dir(&[("gateway.yaml", GATEWAY), ("routes/app.yaml", &routes)]);
    let config = dir.path().join("gateway.yaml");
    let explain = |url: &str| {
        let out = gatehouse(&["explain", "-c", path_str(&config), "GET", url]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
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
    let out = gatehouse(&["check", "-c", path_str(&config)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr(&out);
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

/// One config the README shows: its files, by the name each block gives in its first line.
#[derive(Default, Debug)]
struct Example {
    files: Vec<(String, String)>,
    /// README line of each block, for the failure message.
    lines: Vec<usize>,
}

/// Every ```yaml block of README.md must start with `# FILE`, naming the file it is. A block
/// naming `gateway.yaml` starts a new example; the blocks after it naming other files
/// (`# routes/orders.yaml`) belong to that example.
fn readme_examples() -> Vec<Example> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let mut examples: Vec<Example> = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((start, line)) = lines.next() {
        if line.trim_end() != "```yaml" {
            continue;
        }
        let mut block = String::new();
        for (_, line) in lines.by_ref() {
            if line.trim_end() == "```" {
                break;
            }
            block.push_str(line);
            block.push('\n');
        }
        let first = block.lines().next().unwrap_or_default();
        let name = first
            .strip_prefix("# ")
            .filter(|n| n.ends_with(".yaml"))
            .unwrap_or_else(|| {
                panic!(
                    "README.md:{}: a yaml block must start with `# FILE.yaml`, naming the file it is",
                    start + 1
                )
            })
            .to_string();
        if name == "gateway.yaml" {
            examples.push(Example::default());
        }
        let example = examples.last_mut().unwrap_or_else(|| {
            panic!(
                "README.md:{}: `{name}` comes before any gateway.yaml block",
                start + 1
            )
        });
        example.files.push((name, block));
        example.lines.push(start + 1);
    }
    examples
}

/// What a reader is told to provide: `JWT_SECRET` (an HS secret, at least 32 bytes), the
/// key file each `public_key_file` names, each `server.tls` certificate and its key, and the
/// `client_ca` file.
fn provide_what_the_example_needs(dir: &Path, example: &Example) {
    for (_, text) in &example.files {
        let value = |line: &str, key: &str| {
            let rest = line.trim().strip_prefix(key)?;
            Some(
                rest.split('#')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            )
        };
        let mut cert = None;
        for line in text.lines() {
            if let Some(file) = value(line, "- cert:") {
                cert = Some(file);
            } else if let (Some(key), Some(cert)) = (value(line, "key:"), cert.take()) {
                let made = rcgen::generate_simple_self_signed(vec!["example.test".to_string()])
                    .expect("a certificate");
                for (file, pem) in [
                    (cert, made.cert.pem()),
                    (key, made.signing_key.serialize_pem()),
                ] {
                    let path = dir.join(file);
                    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
                    std::fs::write(path, pem).expect("write");
                }
            }
        }
        for file in text.lines().filter_map(|line| value(line, "client_ca:")) {
            let made = rcgen::generate_simple_self_signed(vec!["clients.example.test".to_string()])
                .expect("a certificate");
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(path, made.cert.pem()).expect("write");
        }
        for line in text.lines() {
            let Some(file) = line.trim().strip_prefix("public_key_file:") else {
                continue;
            };
            let file = file.split('#').next().unwrap_or_default().trim();
            let path = dir.join(file);
            let folder = path.parent().expect("has a parent");
            std::fs::create_dir_all(folder).expect("mkdir");
            let name = path
                .file_name()
                .expect("a file name")
                .to_str()
                .expect("utf-8");
            rsa_key_pair(folder, "key.pem", name);
        }
    }
}

#[test]
fn every_yaml_example_in_the_readme_passes_check() {
    let examples = readme_examples();
    assert!(examples.len() >= 2, "{examples:#?}");
    let blocks: usize = examples.iter().map(|e| e.files.len()).sum();
    assert!(blocks >= 4, "{examples:#?}");
    let mut failed = Vec::new();
    for example in &examples {
        let files: Vec<(&str, &str)> = example
            .files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let dir = config_dir(&files);
        provide_what_the_example_needs(dir.path(), example);
        let config: PathBuf = dir.path().join("gateway.yaml");
        let out = gatehouse_with_env(
            &["check", "-c", path_str(&config)],
            &[("JWT_SECRET", "an-hs256-secret-of-at-least-32-bytes")],
        );
        // Passing means no errors and no warnings.
        if !out.status.success() || !out.stderr.is_empty() {
            failed.push(format!(
                "README.md blocks at lines {:?}:\n{}",
                example.lines,
                stderr(&out)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
