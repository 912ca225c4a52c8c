//! A response body on its way to the client that is also kept, whole, for the store.
//!
//! The client gets every frame as it comes; a copy of the data is kept up to
//! `max_entry_size`. When the body ends in full the entry is stored (and the URL's directory
//! with it, when the response has variants), then the requests waiting on this key are woken.
//! A body that grows past the bound, breaks, or is dropped before its end (the client went
//! away) is not stored, and the waiters are woken at once to go upstream themselves.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::coalesce::LeaderGuard;
use super::directory::Directory;
use super::entry::Entry;
use super::policy::freshness::Freshness;
use super::store::{CacheRuntime, Stored};

/// What is stored once the body is complete.
struct Job {
    runtime: CacheRuntime,
    entry_key: String,
    directory: Option<(String, Arc<Directory>)>,
    status: StatusCode,
    headers: HeaderMap,
    freshness: Freshness,
    flight: Option<LeaderGuard>,
}

/// A body relayed to the client and kept for the cache.
pub struct Filling<B> {
    inner: B,
    kept: BytesMut,
    limit: u64,
    job: Option<Box<Job>>,
}

impl<B> std::fmt::Debug for Filling<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filling")
            .field("kept", &self.kept.len())
            .field("storing", &self.job.is_some())
            .finish()
    }
}

impl<B: Body<Data = Bytes>> Filling<B> {
    /// Relays `inner` and stores it under `entry_key` (with `directory` under its URL key)
    /// when it ends in full within the store's `max_entry_size`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inner: B,
        runtime: CacheRuntime,
        entry_key: String,
        directory: Option<(String, Arc<Directory>)>,
        status: StatusCode,
        headers: HeaderMap,
        freshness: Freshness,
        flight: Option<LeaderGuard>,
    ) -> Self {
        let limit = runtime.settings.max_entry_size;
        // The declared length when there is one (already checked against the limit).
        let expected = inner.size_hint().exact().unwrap_or(0).min(limit);
        Filling {
            inner,
            kept: BytesMut::with_capacity(usize::try_from(expected).unwrap_or(0)),
            limit,
            job: Some(Box::new(Job {
                runtime,
                entry_key,
                directory,
                status,
                headers,
                freshness,
                flight,
            })),
        }
    }
}

impl<B> Filling<B> {
    /// The body ended in full: stores what was kept.
    fn complete(&mut self) {
        if let Some(job) = self.job.take() {
            let body = std::mem::take(&mut self.kept).freeze();
            job.store(body);
        }
    }
}

impl<B> Body for Filling<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(_)) = (frame.data_ref(), &this.job) {
                    let total = (this.kept.len() as u64).checked_add(data.len() as u64);
                    if total.is_some_and(|t| t <= this.limit) {
                        this.kept.extend_from_slice(data);
                    } else {
                        // Too large to keep: the waiters go upstream themselves now.
                        this.job = None;
                        this.kept = BytesMut::new();
                    }
                }
                // A body that knows it is done is not polled again for its end.
                if this.inner.is_end_stream() {
                    this.complete();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.job = None;
            }
            Poll::Ready(None) => this.complete(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Job {
    fn store(self: Box<Self>, body: Bytes) {
        let Job {
            runtime,
            entry_key,
            directory,
            status,
            headers,
            freshness,
            flight,
        } = *self;
        let entry = Arc::new(Entry {
            status,
            headers,
            body,
            freshness,
        });
        let mut writes = Vec::with_capacity(2);
        if let Some((url_key, directory)) = directory {
            writes.push((url_key, Stored::Directory(directory)));
        }
        writes.push((entry_key, Stored::Response(entry)));
        runtime.put_all(writes, flight);
    }
}
