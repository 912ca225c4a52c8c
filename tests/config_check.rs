//! `gatehouse check`, `explain` and `run` on configs whose mistakes used to pass unnoticed, and
//! every YAML example in README.md, checked as a reader would check it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{gatehouse_bin, openssl, DEADLINE};

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

const SHADOWED: &str = "\
upstreams:
  app:
    targets: [http://127.0.0.1:1]
routes:
  - name: app
    match: {path: /app}
    upstream: app
  - name: app-again
    match: {path: /app}
    upstream: app
";

#[test]
fn check_warns_about_a_route_that_can_never_be_chosen_and_still_passes() {
    let dir = config_dir(&[("gateway.yaml", GATEWAY), ("routes/app.yaml", SHADOWED)]);
    let config = dir.path().join("gateway.yaml");
    let out = gatehouse(&["check", "-c", path_str(&config)], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let routes = dir.path().join("routes/app.yaml");
    assert_eq!(
        text(&out.stderr),
        format!(
            "{0}:8:11: warning: route `app-again` can never be chosen: route `app` ({0}:5:11) \
             has the same host and path, accepts every method and header it does, and is tried \
             first\n",
            routes.display()
        )
    );
    assert!(text(&out.stdout).contains(": ok"), "{}", text(&out.stdout));
}

/// A `gatehouse run` child, killed when the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_logs_the_warning_when_it_loads() {
    let dir = config_dir(&[("gateway.yaml", GATEWAY), ("routes/app.yaml", SHADOWED)]);
    let config = dir.path().join("gateway.yaml");
    let log = dir.path().join("gatehouse.log");
    let file = std::fs::File::create(&log).expect("log file");
    let _running = Running(
        command(&["run", "-c", path_str(&config)], &[])
            .stdout(file.try_clone().expect("clone log file"))
            .stderr(file)
            .spawn()
            .expect("spawn gatehouse run"),
    );
    let deadline = Instant::now() + DEADLINE;
    let logged = loop {
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        if logged.contains("gatehouse listening") || Instant::now() >= deadline {
            break logged;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let line = logged
        .lines()
        .find(|l| l.contains("config warning"))
        .unwrap_or_else(|| panic!("no warning logged:\n{logged}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("route `app-again` can never be chosen: route `app`"),
        "{line}"
    );
}

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

/// What a reader is told to provide: `JWT_SECRET` (an HS secret, at least 32 bytes) and the
/// key file each `public_key_file` names.
fn provide_what_the_example_needs(dir: &Path, example: &Example) {
    for (_, text) in &example.files {
        for line in text.lines() {
            let Some(file) = line.trim().strip_prefix("public_key_file:") else {
                continue;
            };
            let file = file.split('#').next().unwrap_or_default().trim();
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            openssl(
                path.parent().expect("has a parent"),
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    "key.pem",
                ],
            );
            let public = openssl(
                path.parent().expect("has a parent"),
                &["pkey", "-in", "key.pem", "-pubout"],
            );
            std::fs::write(&path, public).expect("write public key");
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
        let out = gatehouse(
            &["check", "-c", path_str(&config)],
            &[("JWT_SECRET", "an-hs256-secret-of-at-least-32-bytes")],
        );
        // Passing means no errors and no warnings.
        if !out.status.success() || !out.stderr.is_empty() {
            failed.push(format!(
                "README.md blocks at lines {:?}:\n{}",
                example.lines,
                text(&out.stderr)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
