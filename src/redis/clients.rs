//! The connections of one `redis:` setting: one per worker, made lazily on the worker that
//! first needs it, and shared by every store on that worker (held in the registries by
//! settings, so a reload with unchanged settings keeps them).

use std::time::Instant;

use super::{Preload, RedisConn, RedisSettings};
use crate::per_worker::PerWorker;

/// One worker's connection, and when it was made.
struct WorkerConn {
    conn: RedisConn,
    made: Instant,
}

/// The Redis connections of one `redis:` setting, one per worker.
pub struct RedisClients {
    settings: RedisSettings,
    preload: Preload,
    conns: PerWorker<WorkerConn>,
}

impl std::fmt::Debug for RedisClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClients")
            .field("target", &self.settings.target)
            .field("connections", &self.conns.iter().count())
            .finish()
    }
}

impl RedisClients {
    /// Connections for `settings`; nothing connects until a worker first asks.
    pub fn new(settings: RedisSettings) -> Self {
        RedisClients {
            settings,
            preload: Preload::default(),
            conns: PerWorker::new(),
        }
    }

    /// The settings every connection is made with.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Loads `script` on every connection made from now on (see [`Preload`]).
    pub fn preload(&self, script: &redis::Script) {
        self.preload.add(script);
    }

    /// The calling worker's connection, made now (on this worker, whose runtime drives it)
    /// if this is its first use. While its first connection is being made, waits for it, up
    /// to `connect_timeout` after it was started, so a worker's first requests do not all
    /// fail; a reconnect is never waited for.
    pub async fn connected(&self) -> &RedisConn {
        let worker = self.worker();
        let connecting = self
            .settings
            .connect_timeout
            .checked_sub(worker.made.elapsed())
            .filter(|_| !worker.conn.is_connected());
        if let Some(left) = connecting {
            worker.conn.wait_connected(left).await;
        }
        &worker.conn
    }

    /// Every worker's connection made so far.
    pub fn iter(&self) -> impl Iterator<Item = &RedisConn> {
        self.conns.iter().map(|w| &w.conn)
    }

    fn worker(&self) -> &WorkerConn {
        self.conns.get_or_init(|| WorkerConn {
            conn: RedisConn::start(self.settings.clone(), self.preload.clone()),
            made: Instant::now(),
        })
    }
}
