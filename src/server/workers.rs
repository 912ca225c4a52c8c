//! Connection workers: `server.workers` threads, each running its own single-threaded runtime
//! that accepts from the main listener and serves those connections start to finish.
//!
//! One multi-threaded runtime for everything cost about a fifth more CPU per proxied request on
//! this project's benchmark than one thread alone: every wake-up may hop to another thread, and
//! idle workers are woken to steal. Like nginx's worker processes, a connection here stays on the
//! thread that accepted it, together with the upstream connections it uses (the pool keeps one
//! idle list per worker, see [`current`]). Control work (reloads, signals, the admin listener,
//! JWKS refreshes) stays on the runtime that started the gateway.
//!
//! Every worker polls a clone of the same listening socket: whichever is free first accepts, so
//! a busy worker takes fewer new connections without any hand-off between threads.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::listener::{accept_loop, OpenConnections, Phase, Role};
use super::state::GatewayState;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The most workers any gateway in this process started; sizes per-worker state such as the
/// upstream pools' idle lists.
static MOST_WORKERS: AtomicUsize = AtomicUsize::new(1);

/// Index of the worker thread running this code, or `None` off worker threads (control tasks,
/// tests driving a gateway from their own runtime).
pub fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// How many per-worker slots shared state should keep: the most workers started so far.
pub fn slots() -> usize {
    MOST_WORKERS.load(Ordering::Relaxed)
}

/// The number of workers when `server.workers` is not set: one per CPU the process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Starts `count` workers accepting from `listener` until the phase leaves `Running`; each then
/// serves its open connections until all are closed or the phase is `Terminate`, and ends.
pub fn spawn(
    count: usize,
    listener: std::net::TcpListener,
    state: &Arc<GatewayState>,
    phase: &watch::Receiver<Phase>,
    open: &Arc<OpenConnections>,
) -> io::Result<Vec<JoinHandle<()>>> {
    MOST_WORKERS.fetch_max(count, Ordering::Relaxed);
    let mut threads = Vec::with_capacity(count);
    for index in 0..count {
        let listener = listener.try_clone()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (state, phase, open) = (Arc::clone(state), phase.clone(), Arc::clone(open));
        let thread = std::thread::Builder::new()
            .name(format!("gatehouse-worker-{index}"))
            .spawn(move || {
                WORKER.with(|w| w.set(Some(index)));
                runtime.block_on(serve(listener, state, phase, open));
            })?;
        threads.push(thread);
    }
    Ok(threads)
}

/// One worker's life: accept, then finish what is open.
async fn serve(
    listener: std::net::TcpListener,
    state: Arc<GatewayState>,
    phase: watch::Receiver<Phase>,
    open: Arc<OpenConnections>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "worker cannot poll the listening socket");
            return;
        }
    };
    accept_loop(
        listener,
        Role::Main,
        state,
        phase.clone(),
        Arc::clone(&open),
    )
    .await;
    // Connections are tasks of this runtime: it must keep running until they are done.
    let mut phase = phase;
    tokio::select! {
        _ = open.all_closed() => {}
        _ = terminated(&mut phase) => {}
    }
}

/// Resolves once the phase is `Terminate` or the gateway is gone.
async fn terminated(phase: &mut watch::Receiver<Phase>) {
    while *phase.borrow_and_update() != Phase::Terminate {
        if phase.changed().await.is_err() {
            return;
        }
    }
}
