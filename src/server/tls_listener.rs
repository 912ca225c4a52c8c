//! The HTTPS listener as reloads see it: started, moved or stopped when `server.tls` is added,
//! its `listen` changed, or removed, while the connections it already accepted go on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::listener::{accept_loop, OpenConnections, Phase, Placement, Role, Transport};
use super::state::GatewayState;
use super::workers::Workers;

/// The HTTPS accept loop of a gateway, if it has one.
#[derive(Default)]
pub struct HttpsListener {
    parts: OnceLock<Parts>,
    running: Mutex<Option<Running>>,
}

/// What an accept loop needs besides the listener, known once the workers run.
struct Parts {
    phase: watch::Receiver<Phase>,
    open: Arc<OpenConnections>,
    /// Weak: the workers end once every acceptor has dropped them, and this must not count.
    workers: Weak<Workers>,
}

struct Running {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpsListener {
    /// Called once, when the workers have started.
    pub(super) fn set_parts(
        &self,
        phase: watch::Receiver<Phase>,
        open: Arc<OpenConnections>,
        workers: &Arc<Workers>,
    ) {
        let _ = self.parts.set(Parts {
            phase,
            open,
            workers: Arc::downgrade(workers),
        });
    }

    /// The address the HTTPS listener is bound to now.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.lock().as_ref().map(|r| r.local)
    }

    /// Serves `listener` from now on, in place of the one running, if any (whose connections
    /// carry on). Must run on the control runtime.
    pub(super) fn start(&self, listener: TcpListener, state: &Arc<GatewayState>) {
        let Some(parts) = self.parts.get() else {
            return;
        };
        let Some(workers) = parts.workers.upgrade() else {
            return; // shutting down: the other acceptors are gone
        };
        let Ok(local) = listener.local_addr() else {
            return;
        };
        let task = tokio::spawn(accept_loop(
            listener,
            Role::Main,
            Transport::Tls,
            Arc::clone(state),
            parts.phase.clone(),
            Arc::clone(&parts.open),
            Placement::Workers(workers),
        ));
        if let Some(old) = self.lock().replace(Running { local, task }) {
            old.task.abort();
        }
    }

    /// Stops accepting and frees the port; accepted connections are served to their end.
    pub(super) fn stop(&self) {
        if let Some(old) = self.lock().take() {
            old.task.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        // The guarded value is replaced whole, so a panic elsewhere cannot leave it half-made.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for HttpsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsListener")
            .field("local_addr", &self.local_addr())
            .finish()
    }
}
