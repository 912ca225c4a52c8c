//! Hot reload: rebuild the whole config off the request path and swap it in atomically.
//!
//! Triggers are file events under the config folder and `routes_dir` (debounced), SIGHUP, and
//! `GatewayHandle::reload`. Every trigger runs the same `reload`, one at a time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::state::GatewayState;
use crate::config::{self, ConfigError, ConfigErrors, Snapshot};
use crate::observability::metrics::ReloadResult;
use crate::registry::LiveNames;

/// Quiet time after the last file event before reloading: editors and `kubectl` write several
/// files (or the same one several times) per save.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A burst that never goes quiet still reloads this often.
const DEBOUNCE_MAX: Duration = Duration::from_millis(600);

/// The trigger name of reloads started by the file watcher.
const FILE_CHANGE: &str = "file change";

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// A new snapshot is live.
    Applied {
        /// Its version.
        version: u64,
    },
    /// The files are byte-for-byte what is already running.
    Unchanged,
    /// The files are back to the running config after a rejected reload: a recovery, so it is
    /// logged and counted as a successful reload though nothing is swapped.
    Restored {
        /// The running version, kept.
        version: u64,
    },
    /// The files are invalid; the running config was kept.
    Rejected(ConfigErrors),
}

/// What the previous reload left behind; kept under the lock that serialises reloads.
#[derive(Debug, Default)]
pub struct ReloadHistory {
    /// The last attempt was rejected: the operator was told the files are broken, so files that
    /// match the running config again must be reported as fixed, not silently skipped.
    last_rejected: bool,
}

/// Loads the config again and, when it is valid and different, makes it live.
///
/// Every outcome is logged at info or above, except unchanged files seen by the file watcher
/// (editors touch files without changing them; that is debug noise).
pub async fn reload(state: &Arc<GatewayState>, trigger: &'static str) -> ReloadOutcome {
    let mut history = state.reload_lock.lock().await;
    let loader = Arc::clone(state);
    let loaded = tokio::task::spawn_blocking(move || {
        config::load(&loader.config_path, &*loader.env, &loader.registries)
    })
    .await;
    let new = match loaded {
        Ok(Ok(snapshot)) => snapshot,
        Ok(Err(errors)) => {
            history.last_rejected = true;
            state.metrics.config_reloaded(ReloadResult::Failure);
            tracing::error!(
                trigger,
                errors = errors.0.len(),
                detail = %errors,
                "config reload rejected; the running config is unchanged"
            );
            return ReloadOutcome::Rejected(errors);
        }
        Err(join) => {
            history.last_rejected = true;
            state.metrics.config_reloaded(ReloadResult::Failure);
            tracing::error!(trigger, error = %join, "config reload failed");
            return ReloadOutcome::Rejected(ConfigErrors(Vec::new()));
        }
    };
    let old = state.snapshot.load_full();
    let recovered = std::mem::take(&mut history.last_rejected);
    if new.content_hash == old.content_hash {
        if recovered {
            state.metrics.config_reloaded(ReloadResult::Success);
            tracing::info!(
                trigger,
                version = old.version,
                hash = %old.content_hash,
                "config reloaded: the files are valid again and match the running config"
            );
            return ReloadOutcome::Restored {
                version: old.version,
            };
        }
        state.metrics.config_reloaded(ReloadResult::Unchanged);
        if trigger == FILE_CHANGE {
            tracing::debug!(trigger, "config files unchanged; nothing to reload");
        } else {
            tracing::info!(trigger, "config files unchanged; nothing to reload");
        }
        return ReloadOutcome::Unchanged;
    }
    let new = keep_restart_only_settings(&old, new);
    // The new HTTPS port is bound before anything changes, so a port in use rejects the reload
    // with the running config (and listener) untouched.
    let https = match https_change(&old, &new).await {
        Ok(change) => change,
        Err(error) => {
            history.last_rejected = true;
            state.metrics.config_reloaded(ReloadResult::Failure);
            let errors = ConfigErrors(vec![ConfigError::file(&state.config_path, error)]);
            tracing::error!(
                trigger,
                errors = 1,
                detail = %errors,
                "config reload rejected; the running config is unchanged"
            );
            return ReloadOutcome::Rejected(errors);
        }
    };
    // New or changed jwks_url providers fetch before they go live; unchanged ones kept their
    // keys and their running refresher through the registry.
    config::identity::start_jwks_refresh(&new.providers).await;
    // New or changed health checks start probing; kept ones are running with their state.
    crate::upstream::health::start_all(&new.upstreams);
    let version = new.version;
    let new = Arc::new(new);
    state.snapshot.store(Arc::clone(&new));
    match https {
        HttpsChange::Keep => {}
        HttpsChange::Start(listener) => {
            state.https.start(listener, state);
            let listen = state.https.local_addr();
            tracing::info!(trigger, listen = ?listen, "HTTPS listener started or moved");
        }
        HttpsChange::Stop => {
            state.https.stop();
            tracing::info!(trigger, "HTTPS listener stopped: server.tls was removed");
        }
    }
    let live = LiveNames::of(&new);
    state.registries.retain_for(&live);
    state.forget_removed(&old, &live);
    state.metrics.config_reloaded(ReloadResult::Success);
    state.metrics.set_config_version(version);
    state
        .metrics
        .set_tls_certificates(new.server.tls.iter().flat_map(|tls| tls.expiries()));
    tracing::info!(
        trigger,
        version,
        hash = %new.content_hash,
        routes = new.router.routes().len(),
        upstreams = new.upstreams.len(),
        "config reloaded"
    );
    new.log_warnings();
    ReloadOutcome::Applied { version }
}

/// Listeners and the logger are set up once; a changed value is reported and the running one
/// kept, so the snapshot always describes what the process actually does.
fn keep_restart_only_settings(old: &Snapshot, mut new: Snapshot) -> Snapshot {
    new.version = old.version + 1;
    let mut needs_restart = Vec::new();
    if new.server.listen != old.server.listen {
        needs_restart.push("server.listen");
        new.server.listen = old.server.listen;
    }
    if new.server.workers != old.server.workers {
        needs_restart.push("server.workers");
        new.server.workers = old.server.workers;
    }
    if new.admin_listen != old.admin_listen {
        needs_restart.push("admin.listen");
        new.admin_listen = old.admin_listen;
    }
    if new.logging.format != old.logging.format {
        needs_restart.push("logging.format");
        new.logging.format = old.logging.format;
    }
    if new.logging.level != old.logging.level {
        needs_restart.push("logging.level");
        new.logging.level = old.logging.level.clone();
    }
    if !needs_restart.is_empty() {
        tracing::warn!(
            settings = ?needs_restart,
            "config changed settings that need a restart; they keep their running values until then"
        );
    }
    new
}

/// What a reload does to the HTTPS listener.
enum HttpsChange {
    /// Same address (or none before and after): new certificates apply to the next handshakes.
    Keep,
    /// Serve this newly bound listener instead of the running one, if any.
    Start(tokio::net::TcpListener),
    /// `server.tls` is gone.
    Stop,
}

/// Binds the new HTTPS address when `server.tls` is added or its `listen` changes; a bind
/// error is the reason the reload is rejected.
async fn https_change(old: &Snapshot, new: &Snapshot) -> Result<HttpsChange, String> {
    let before = old.server.tls.as_ref().map(|tls| tls.listen);
    match new.server.tls.as_ref().map(|tls| tls.listen) {
        after if after == before => Ok(HttpsChange::Keep),
        None => Ok(HttpsChange::Stop),
        Some(addr) => super::lifecycle::bind(addr)
            .await
            .map(HttpsChange::Start)
            .map_err(|e| format!("server.tls.listen: {e}")),
    }
}

/// Watches the config files and reloads on change until the returned guard is dropped.
pub fn watch(state: Arc<GatewayState>) -> notify::Result<WatchGuard> {
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let filter = EventFilter::new(&state.config_path, Arc::clone(&state));
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) if filter.is_relevant(&event) => {
                let _ = events_tx.send(());
            }
            Ok(_) => {}
            // Overflowed kernel queues and the like: reload to be safe.
            Err(_) => {
                let _ = events_tx.send(());
            }
        }
    })?;
    let mut watched = HashSet::new();
    watch_dirs(&mut watcher, &mut watched, &state.snapshot.load());
    let task = tokio::spawn(reload_on_events(state, events_rx, watcher, watched));
    Ok(WatchGuard(task))
}

/// Stops the watcher when dropped.
#[derive(Debug)]
pub struct WatchGuard(tokio::task::JoinHandle<()>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn reload_on_events(
    state: Arc<GatewayState>,
    mut events: mpsc::UnboundedReceiver<()>,
    mut watcher: notify::RecommendedWatcher,
    mut watched: HashSet<PathBuf>,
) {
    while events.recv().await.is_some() {
        let burst_started = Instant::now();
        loop {
            let left = DEBOUNCE_MAX.saturating_sub(burst_started.elapsed());
            match tokio::time::timeout(DEBOUNCE.min(left), events.recv()).await {
                Ok(Some(())) if !left.is_zero() => continue,
                Ok(None) => return,
                _ => break,
            }
        }
        if let ReloadOutcome::Applied { .. } = reload(&state, FILE_CHANGE).await {
            // routes_dir may have moved, or been created since.
            watch_dirs(&mut watcher, &mut watched, &state.snapshot.load());
        }
    }
}

/// Watches the folder holding gateway.yaml and `routes_dir`, each non-recursively. Folders, not
/// files: a save by rename, or a Kubernetes `..data` symlink swap, replaces the file itself.
fn watch_dirs(
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut HashSet<PathBuf>,
    snapshot: &Snapshot,
) {
    let config_dir = snapshot
        .files
        .first()
        .and_then(|f| f.parent())
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    // Certificate folders too: a Kubernetes Secret's files are symlinks through `..data`, which
    // the swap replaces while the files' own names see no event.
    let tls_dirs = snapshot
        .server
        .tls
        .iter()
        .flat_map(|tls| tls.files.iter())
        .filter_map(|file| file.parent().map(Path::to_path_buf));
    for dir in [config_dir, snapshot.routes_dir.clone()]
        .into_iter()
        .chain(tls_dirs)
    {
        // Events name paths under the folder as it was watched; canonical folders make them
        // comparable with `EventFilter::config_dir`.
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        if watched.contains(&dir) {
            continue;
        }
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(dir);
            }
            // A routes_dir that does not exist yet: picked up by the next reload that sees it.
            Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "not watching"),
        }
    }
}

/// Decides which file events can change the config.
struct EventFilter {
    gateway_file: Option<std::ffi::OsString>,
    config_dir: PathBuf,
    /// For the names of the certificate files in force.
    state: Arc<GatewayState>,
}

impl EventFilter {
    fn new(config_path: &Path, state: Arc<GatewayState>) -> Self {
        EventFilter {
            gateway_file: config_path.file_name().map(|n| n.to_os_string()),
            config_dir: absolute_parent(config_path),
            state,
        }
    }

    /// Whether `name` is the name of a certificate or key file of `server.tls`.
    fn is_tls_file(&self, name: &std::ffi::OsStr) -> bool {
        let snapshot = self.state.snapshot.load();
        snapshot
            .server
            .tls
            .iter()
            .flat_map(|tls| tls.files.iter())
            .any(|file| file.file_name() == Some(name))
    }

    /// In the config folder only gateway.yaml, the certificate files and Kubernetes' `..data`
    /// entries matter (other files there may change all the time); in `routes_dir` and the
    /// certificates' folders everything does, and a reload of identical content is cheap and
    /// skipped by its hash.
    fn is_relevant(&self, event: &notify::Event) -> bool {
        if event.kind.is_access() {
            return false;
        }
        event.paths.iter().any(|path| {
            let Some(name) = path.file_name() else {
                return true;
            };
            let in_config_dir = path.parent().is_some_and(|p| p == self.config_dir);
            if !in_config_dir {
                return true;
            }
            Some(name) == self.gateway_file.as_deref()
                || name.to_string_lossy().starts_with("..")
                || name.to_string_lossy().ends_with(".yaml")
                || name.to_string_lossy().ends_with(".yml")
                || self.is_tls_file(name)
        })
    }
}

fn absolute_parent(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::canonicalize(&parent).unwrap_or(parent)
}
