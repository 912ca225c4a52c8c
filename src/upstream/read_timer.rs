//! The read timeout of an upstream response body: the longest the upstream may stay silent
//! between two reads, whatever protocol carries the body.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

/// A body's read timeout. Armed the first time a read has to wait, so bodies that arrive whole
/// cost no timer; pushed back at the next wait after bytes arrived.
pub(super) struct ReadTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Bytes arrived since the timer was last set.
    progressed: bool,
}

impl ReadTimer {
    /// A timer of `timeout`, not armed.
    pub(super) fn new(timeout: Duration) -> Self {
        ReadTimer {
            timeout,
            sleep: None,
            progressed: false,
        }
    }

    /// The `read_timeout` it enforces.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Bytes arrived: the next wait counts from then.
    pub(super) fn progressed(&mut self) {
        self.progressed = true;
    }

    /// The body is done: no timer is kept for it.
    pub(super) fn stop(&mut self) {
        self.sleep = None;
    }

    /// A read has to wait: `Ready` once the upstream has been silent for the timeout, counted
    /// from the first wait after the last bytes arrived.
    pub(super) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        match &mut self.sleep {
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            Some(sleep) if self.progressed => sleep.as_mut().reset(deadline),
            Some(_) => {}
        }
        self.progressed = false;
        self.sleep.as_mut().expect("set above").as_mut().poll(cx)
    }
}
