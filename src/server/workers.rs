//! Connection workers: `server.workers` threads, each running its own single-threaded runtime
//! that serves the connections handed to it from start to finish.
//!
//! With one multi-threaded runtime for everything, a request's wake-ups could land on either
//! thread and idle threads were woken to steal work, which cost CPU on every request. Like
//! nginx's worker processes, a connection here stays on one thread, together with the upstream
//! connections it uses (the pool keeps one idle list per worker, see
//! [`PerWorker`](crate::per_worker::PerWorker)). Control work
//! (accepting, reloads, signals, the admin listener, JWKS refreshes) stays on the runtime that
//! started the gateway.
//!
//! The acceptor hands each new connection to the worker with the fewest open connections.
//! Letting every worker accept from the socket itself was measured first: whichever worker woke
//! first took most of a burst of new connections (one run split 64 connections about 1:4), and
//! the overloaded worker's queueing showed in the tail latency. The hand-off costs one channel
//! send per connection, not per request.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::listener::{serve_counted, ConnectionGuard, OpenConnections, Phase, Role, Transport};
use super::state::GatewayState;
use crate::per_worker;

/// How long a stopping worker waits for its blocking tasks (name lookups) before leaving them.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// The number of workers when `server.workers` is not set: one per CPU the process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The acceptor's end: one queue per worker and each worker's open-connection count.
pub struct Workers {
    queues: Vec<mpsc::UnboundedSender<Assigned>>,
    load: Arc<[AtomicUsize]>,
    /// Where the search for the least busy worker starts, so ties rotate.
    next: AtomicUsize,
}

/// A connection on its way to a worker.
struct Assigned {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    transport: Transport,
    guard: ConnectionGuard,
    load: LoadGuard,
}

/// Holds one count of a worker's load while its connection is open.
struct LoadGuard {
    load: Arc<[AtomicUsize]>,
    worker: usize,
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.load[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count` worker threads. Each serves what it is handed; once the acceptor is gone
    /// (the `Workers` dropped) it serves its open connections until they are all closed or the
    /// phase is `Terminate`, and ends.
    pub fn spawn(
        count: usize,
        state: &Arc<GatewayState>,
        phase: &watch::Receiver<Phase>,
        open: &Arc<OpenConnections>,
    ) -> io::Result<(Workers, Vec<JoinHandle<()>>)> {
        per_worker::expect_workers(count);
        let mut queues = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let (queue, assigned) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (state, phase, open) = (Arc::clone(state), phase.clone(), Arc::clone(open));
            let thread = std::thread::Builder::new()
                .name(format!("gatehouse-worker-{index}"))
                .spawn(move || {
                    per_worker::enter_worker(index);
                    runtime.block_on(serve(assigned, state, phase, open));
                    // A name lookup still running on the blocking pool (an upstream connect)
                    // must not hold up shutdown, which joins this thread.
                    runtime.shutdown_timeout(BLOCKING_GRACE);
                })?;
            queues.push(queue);
            threads.push(thread);
        }
        let load = (0..count).map(|_| AtomicUsize::new(0)).collect();
        let workers = Workers {
            queues,
            load,
            next: AtomicUsize::new(0),
        };
        Ok((workers, threads))
    }

    /// Hands a new connection to the worker with the fewest open connections.
    pub(super) fn assign(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        transport: Transport,
        guard: ConnectionGuard,
    ) {
        let worker = least_busy(&self.load, self.next.fetch_add(1, Ordering::Relaxed));
        // The socket leaves this runtime's reactor and joins the worker's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot hand a connection to a worker");
                return;
            }
        };
        self.load[worker].fetch_add(1, Ordering::Relaxed);
        let load = LoadGuard {
            load: Arc::clone(&self.load),
            worker,
        };
        let assigned = Assigned {
            stream,
            peer,
            transport,
            guard,
            load,
        };
        if self.queues[worker].send(assigned).is_err() {
            tracing::warn!(%peer, worker, "worker is gone; connection dropped");
        }
    }
}

/// The worker with the fewest open connections; among equals, the first from `start` on.
fn least_busy(load: &[AtomicUsize], start: usize) -> usize {
    let count = load.len();
    (0..count)
        .map(|i| (start + i) % count)
        .min_by_key(|&i| load[i].load(Ordering::Relaxed))
        .unwrap_or(0)
}

/// One worker's life: serve what is handed over, then finish what is open.
async fn serve(
    mut assigned: mpsc::UnboundedReceiver<Assigned>,
    state: Arc<GatewayState>,
    mut phase: watch::Receiver<Phase>,
    open: Arc<OpenConnections>,
) {
    while let Some(Assigned {
        stream,
        peer,
        transport,
        guard,
        load,
    }) = assigned.recv().await
    {
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "worker cannot poll a connection");
                continue;
            }
        };
        let (state, phase) = (Arc::clone(&state), phase.clone());
        tokio::spawn(serve_counted(
            stream,
            peer,
            Role::Main,
            transport,
            state,
            phase,
            (guard, load),
        ));
    }
    // Connections are tasks of this runtime: it must keep running until they are done.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_the_least_busy_worker_and_ties_rotate() {
        let load: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        let mut picks = Vec::new();
        for start in 0..6 {
            let worker = least_busy(&load, start);
            load[worker].fetch_add(1, Ordering::Relaxed);
            picks.push(worker);
        }
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // Worker 1's connections close: it takes the next ones whatever the rotation says.
        load[1].store(0, Ordering::Relaxed);
        assert_eq!(least_busy(&load, 6), 1);
        assert_eq!(least_busy(&load, 8), 1);
        // Uneven load: the emptiest wins.
        load[0].store(5, Ordering::Relaxed);
        load[1].store(3, Ordering::Relaxed);
        load[2].store(4, Ordering::Relaxed);
        assert_eq!(least_busy(&load, 0), 1);
    }
}
