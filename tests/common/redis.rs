//! A real `redis-server` for tests, on a free port, killed when dropped: plain, with a
//! password (`--requirepass`), TLS only (`--tls-port`, with a CA and certificate made by
//! openssl), or three of them made into a Redis Cluster.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse::ratelimit::{RedisSettings, RedisTarget};

use super::{eventually, free_port, openssl, DEADLINE};

/// PEM files for a TLS `redis-server`: a test CA and a server certificate it signed.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate (trusted by nobody but the test).
    pub ca: PathBuf,
    /// The server certificate, for IP 127.0.0.1.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Makes a P-256 CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
    pub fn generate(dir: &Path) -> TlsFiles {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut ca = vec!["req", "-x509", "-nodes", "-days", "1"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=gatehouse test CA",
        ]);
        openssl(dir, &ca);
        let mut csr = vec!["req", "-new", "-nodes"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(dir, &csr);
        // The name matches, so only the issuer can make a client refuse it.
        std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
        );
        TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        }
    }
}

/// How a test `redis-server` is started beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `--requirepass`: clients must AUTH with it.
    pub password: Option<String>,
    /// TLS only: `--tls-port` on the port and `--port 0`, without client certificates.
    pub tls: Option<TlsFiles>,
    /// Any other arguments (cluster mode), with the folder they write to.
    pub args: Vec<String>,
}

/// A `redis-server` child on a fixed port, killed when dropped.
pub struct RedisServer {
    /// Where it listens.
    pub port: u16,
    /// The process while it runs.
    pub child: Option<Child>,
    /// How it is started (again, on a restart).
    pub options: RedisOptions,
}

impl RedisServer {
    /// A running `redis-server` on a free port, without persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(RedisOptions::default())
    }

    /// A running `redis-server` on a free port, without persistence, started with `options`.
    pub fn start_with(options: RedisOptions) -> RedisServer {
        RedisServer::start_on(free_port, options)
    }

    fn start_on(port: fn() -> u16, options: RedisOptions) -> RedisServer {
        // The port is released before redis binds it; on a lost race, try another.
        for _ in 0..5 {
            let mut server = RedisServer {
                port: port(),
                child: None,
                options: options.clone(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start");
    }

    /// Starts redis on `self.port`; whether it answers PING within the deadline.
    pub fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.options.tls {
            None => command.args(["--port", &port]),
            Some(tls) => command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca),
        };
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .args(&self.options.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                eprintln!("redis-server exited: {status}");
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Whether it answers PING (over TLS with `redis-cli`, trusting the test CA).
    fn ping(&self) -> bool {
        let Some(tls) = &self.options.tls else {
            return self.command("PING").is_some_and(|r| r.starts_with("+PONG"));
        };
        let mut cli = Command::new("redis-cli");
        cli.args(["--tls", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("--cacert")
            .arg(&tls.ca);
        if let Some(password) = &self.options.password {
            cli.args(["--no-auth-warning", "-a", password]);
        }
        cli.arg("PING")
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| out.stdout.starts_with(b"PONG"))
    }

    /// Sends one inline command (after AUTH when it has a password); the first reply line.
    /// Plain TCP only: `None` for a TLS server.
    pub fn command(&self, command: &str) -> Option<String> {
        if self.options.tls.is_some() {
            return None;
        }
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut buf = [0u8; 512];
        if let Some(password) = &self.options.password {
            stream
                .write_all(format!("AUTH {password}\r\n").as_bytes())
                .ok()?;
            let n = stream.read(&mut buf).ok()?;
            if !buf[..n].starts_with(b"+OK") {
                return None;
            }
        }
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let n = stream.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The calls Redis counted of `command` (`INFO commandstats`), 0 if none yet. Plain TCP
    /// without a password only.
    pub fn calls(&self, command: &str) -> u64 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        stream.write_all(b"INFO commandstats\r\n").expect("write");
        // A bulk reply: `$LEN\r\n`, LEN bytes, `\r\n`.
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        let text = loop {
            let n = stream.read(&mut buf).expect("read");
            assert!(n > 0, "redis closed before answering INFO");
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply).into_owned();
            if let Some((head, body)) = text.split_once("\r\n") {
                let len: usize = head.trim_start_matches('$').parse().expect("bulk length");
                if body.len() >= len + 2 {
                    break body[..len].to_string();
                }
            }
        };
        let prefix = format!("cmdstat_{}:calls=", command.to_ascii_lowercase());
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map_or(0, |rest| {
                rest.split(',').next().unwrap_or("").parse().expect("calls")
            })
    }

    /// The integer an inline command answers (`:N`).
    pub fn integer(&self, command: &str) -> i64 {
        let reply = self.command(command).expect(command);
        reply
            .trim()
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{command}: not an integer reply: {reply:?}"))
    }

    /// Stops it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends it a signal (`-STOP`, `-CONT`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Store settings that reach it (with its password), with short timeouts for tests.
    pub fn settings(&self) -> RedisSettings {
        RedisSettings {
            target: RedisTarget::Url(self.url()),
            password: self.options.password.clone(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_millis(250),
            reconnect_max_backoff: Duration::from_millis(200),
            ca_file: None,
        }
    }

    /// `redis://127.0.0.1:PORT/0`, or `rediss://` for a TLS server; never with the password.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped redis ignores SIGKILL only until continued; continue it to be sure.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A real 3-node Redis Cluster (no replicas) made with `redis-cli --cluster create`.
pub struct RedisCluster {
    /// The nodes, each owning a third of the hash slots.
    pub nodes: Vec<RedisServer>,
    // Dropped after the nodes that write to it.
    _dir: tempfile::TempDir,
}

/// A port whose cluster bus port (port + 10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes, assigns the slots and waits for `cluster_state:ok`.
    pub async fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|i| {
                let args = [
                    "--cluster-enabled".to_string(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    dir.path()
                        .join(format!("nodes-{i}.conf"))
                        .display()
                        .to_string(),
                    "--dir".into(),
                    dir.path().display().to_string(),
                ];
                let options = RedisOptions {
                    args: args.into(),
                    ..RedisOptions::default()
                };
                RedisServer::start_on(cluster_port, options)
            })
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli (redis-tools) must be installed");
        assert!(created.success(), "cluster create");
        eventually("the cluster is up", || async {
            nodes.iter().all(|n| {
                n.command("CLUSTER INFO")
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            })
        })
        .await;
        RedisCluster { nodes, _dir: dir }
    }

    /// The seed URLs of every node: `redis://127.0.0.1:PORT`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Store settings for the cluster, with short timeouts for tests.
    pub fn settings(&self) -> RedisSettings {
        RedisSettings {
            target: RedisTarget::Cluster(self.urls()),
            ..self.nodes[0].settings()
        }
    }

    /// How many keys each node holds.
    pub fn keys_per_node(&self) -> Vec<i64> {
        self.nodes.iter().map(|n| n.integer("DBSIZE")).collect()
    }
}
