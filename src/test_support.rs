//! Helpers shared by unit tests.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A waker that counts how often it was woken (`.0`).
#[derive(Default)]
pub struct CountingWaker(pub AtomicUsize);

impl CountingWaker {
    /// A new counter and the waker that counts into it.
    pub fn pair() -> (Arc<Self>, std::task::Waker) {
        let counter = Arc::new(CountingWaker::default());
        let waker = std::task::Waker::from(Arc::clone(&counter));
        (counter, waker)
    }
}

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs the `openssl` command in `dir` and returns its stdout; panics with its stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Unpadded base64url, as JWS and JWK use.
pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A local port that refuses connections while this value lives: bound but never listening, so
/// no other test can take it meanwhile (a port bound and released can be taken by a parallel test).
pub struct RefusingPort {
    _socket: tokio::net::TcpSocket,
    /// The port on 127.0.0.1.
    pub port: u16,
}

impl RefusingPort {
    /// Binds a fresh port on 127.0.0.1 without listening on it.
    pub fn new() -> RefusingPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let port = socket.local_addr().expect("addr").port();
        RefusingPort {
            _socket: socket,
            port,
        }
    }
}
