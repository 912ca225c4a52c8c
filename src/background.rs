//! A background task owned by a value: started at most once, when a snapshot goes live (never
//! by `check` or `explain`), and ended when the owner is dropped.
//!
//! The registry hands the same owner to every reload whose settings are unchanged, so a reload
//! neither starts a second task nor stops the first; the task ends when the last snapshot using
//! its owner is gone.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// Resolves when the owning [`BackgroundTask`] is dropped; a task selects on it to end.
pub type StopSignal = oneshot::Receiver<()>;

/// One background task, started by the first [`BackgroundTask::start`] and told to stop when
/// this is dropped.
#[derive(Debug)]
pub struct BackgroundTask {
    /// Never sent on: dropping it wakes the task's [`StopSignal`], even while the task sleeps
    /// until something due in hours.
    _stop: oneshot::Sender<()>,
    /// The task's end of `_stop`, taken when it starts, so only the first start spawns.
    stop_signal: Mutex<Option<StopSignal>>,
}

impl Default for BackgroundTask {
    fn default() -> Self {
        let (stop, stop_signal) = oneshot::channel();
        BackgroundTask {
            _stop: stop,
            stop_signal: Mutex::new(Some(stop_signal)),
        }
    }
}

impl BackgroundTask {
    /// The first call runs `task` with the stop signal and spawns the future it returns on the
    /// current Tokio runtime; later calls do nothing.
    pub fn start<F, Fut>(&self, task: F)
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop_signal = self
            .stop_signal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(stop_signal) = stop_signal {
            tokio::spawn(task(stop_signal));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn starts_once_and_ends_when_dropped() {
        let starts = Arc::new(AtomicUsize::new(0));
        let (ended_tx, ended_rx) = oneshot::channel::<()>();
        let owner = BackgroundTask::default();
        let mut ended_tx = Some(ended_tx);
        for _ in 0..3 {
            let starts = Arc::clone(&starts);
            let ended_tx = ended_tx.take();
            owner.start(move |stop| {
                starts.fetch_add(1, Ordering::SeqCst);
                async move {
                    // Sleeps far past the test's deadline: only the stop signal can end it.
                    tokio::select! {
                        _ = stop => {}
                        _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    }
                    if let Some(tx) = ended_tx {
                        let _ = tx.send(());
                    }
                }
            });
        }
        assert_eq!(
            starts.load(Ordering::SeqCst),
            1,
            "only the first start runs"
        );
        drop(owner);
        tokio::time::timeout(Duration::from_secs(5), ended_rx)
            .await
            .expect("the task ends once its owner is dropped")
            .expect("the first start's task sent the end");
    }
}
