//! A real `redis-server` for tests, on a free port, killed when dropped.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse::ratelimit::{RedisSettings, RedisTarget};

use super::{free_port, DEADLINE};

/// A `redis-server` child on a fixed port, killed when dropped.
pub struct RedisServer {
    /// Where it listens.
    pub port: u16,
    /// The process while it runs.
    pub child: Option<Child>,
    /// Extra arguments (cluster mode), and the folder they write to.
    pub args: Vec<String>,
}

impl RedisServer {
    /// A running `redis-server` on a free port, without persistence.
    pub fn start() -> RedisServer {
        // The port is released before redis binds it; on a lost race, try another.
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                child: None,
                args: Vec::new(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start");
    }

    /// Starts redis on `self.port`; whether it answers PING within the deadline.
    pub fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if self.command("PING").is_some_and(|r| r.starts_with("+PONG")) {
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

    /// Sends one inline command; the first reply line.
    pub fn command(&self, command: &str) -> Option<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
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

    /// Store settings that reach it, with short timeouts for tests.
    pub fn settings(&self) -> RedisSettings {
        RedisSettings {
            target: RedisTarget::Url(format!("redis://127.0.0.1:{}/0", self.port)),
            password: None,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_millis(250),
            reconnect_max_backoff: Duration::from_millis(200),
        }
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

impl RedisServer {
    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}
