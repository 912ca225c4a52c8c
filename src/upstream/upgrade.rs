//! What the upstream client carries for an HTTP/1.1 `Upgrade` (WebSocket and the like): the
//! mark that a request asks to switch protocols, and the connection a `101` handed over.
//!
//! Both travel in the message's extensions, so the request path and the servers above need no
//! new types in the request or response bodies.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::stream::UpstreamStream;

/// In a request's extensions: the request asks the upstream to switch protocols, so a `101`
/// answer is expected (instead of refused) and the connection is never pooled afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeRequested;

/// An upstream connection whose answer was `101 Switching Protocols`: from here on it carries
/// the new protocol's bytes, starting with those already read past the `101` head.
pub struct Upgraded {
    /// The connection.
    pub stream: UpstreamStream,
    /// Bytes the upstream sent right after its `101` head, read with it.
    pub read: Bytes,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded")
            .field("read", &self.read.len())
            .finish_non_exhaustive()
    }
}

/// In a `101` response's extensions: the upgraded connection, taken once by whoever tunnels it
/// (extensions must be `Clone`, the connection cannot be, so it sits behind a shared slot).
#[derive(Debug, Clone)]
pub struct UpgradeSlot(Arc<Mutex<Option<Upgraded>>>);

impl UpgradeSlot {
    /// A slot holding `upgraded`.
    pub fn new(upgraded: Upgraded) -> Self {
        UpgradeSlot(Arc::new(Mutex::new(Some(upgraded))))
    }

    /// The connection, the first time only.
    pub fn take(&self) -> Option<Upgraded> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}
