//! What a panic does: contained to its connection while serving, fail-stop everywhere else.
//!
//! Release builds unwind (see Cargo.toml). A panic inside a connection's task (the HTTP/1.1
//! loop, an HTTP/2 connection, a tunnel) is caught by the runtime at the task boundary: that
//! connection closes, every other one carries on, and the panic is logged and counted. An
//! HTTP/2 stream runs inside its connection's task and catches its own panics
//! (`server::h2_streams`): only that stream is reset. A panic anywhere else (the acceptor, a
//! worker's own loop, reloads, key refreshes) would leave a gateway that looks alive but no
//! longer accepts or reloads, so it aborts the process and lets the supervisor restart it, as
//! `panic = "abort"` did for every panic before.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::observability::metrics::Metrics;

thread_local! {
    /// Set while this thread polls a connection's task.
    static SERVING: Cell<bool> = const { Cell::new(false) };
}

/// Installs the process's panic hook; call once, after logging is set up.
pub fn install(metrics: Arc<Metrics>) {
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("(unnamed)");
        if SERVING.get() {
            metrics.panicked();
            tracing::error!(
                panic = message,
                location,
                thread,
                "bug: panic while serving a connection; that connection was closed, the others carry on"
            );
        } else {
            tracing::error!(
                panic = message,
                location,
                thread,
                "bug: panic outside connection serving; aborting so a supervisor restarts the gateway"
            );
            // The log writer is a background thread: the line above would be lost without this.
            eprintln!("gatehouse: panic at {location} on thread {thread}: {message}; aborting");
            std::process::abort();
        }
    }));
}

/// Runs `poll` marked as connection serving, so a panic inside it is contained.
pub fn serving<T>(poll: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            SERVING.set(self.0);
        }
    }
    let _reset = Reset(SERVING.replace(true));
    poll()
}

/// An executor for tasks a connection spawns (an HTTP/2 stream's tunnel): a panic in one is
/// contained to it like a panic in the connection itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContainedExecutor;

impl<F> hyper::rt::Executor<F> for ContainedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        // A spawned future may be large (kilobytes). tokio moves a task's future into its
        // cell and writes its stage back over it when done, each a copy of that size; boxed,
        // those copies are of a pointer.
        tokio::spawn(Contained {
            future: Box::pin(future),
        });
    }
}

pin_project_lite::pin_project! {
    /// A future polled inside [`serving`].
    struct Contained<F> {
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Contained<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let future = self.project().future;
        serving(|| future.poll(cx))
    }
}

/// Test hook, compiled into debug builds only: a request for the path in
/// `GATEHOUSE_DEBUG_PANIC_PATH` panics, so tests can check that a panic is contained.
#[cfg(debug_assertions)]
pub fn debug_failpoint(path: &str) {
    static PANIC_PATH: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let wanted = PANIC_PATH.get_or_init(|| std::env::var("GATEHOUSE_DEBUG_PANIC_PATH").ok());
    if wanted.as_deref() == Some(path) {
        panic!("debug failpoint reached for {path}");
    }
}

/// Release builds carry no test hook.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn debug_failpoint(_path: &str) {}
