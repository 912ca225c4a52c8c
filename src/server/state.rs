//! State shared by every listener and connection of one gateway process.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Env, Snapshot};
use crate::observability::metrics::{Metrics, RouteMetrics};
use crate::registry::{LiveNames, Registries};

/// The live config and the state that outlives it.
pub struct GatewayState {
    /// The config in force; replaced whole on reload.
    pub snapshot: ArcSwap<Snapshot>,
    /// Pools and other state kept across reloads.
    pub registries: Registries,
    /// Where the config was loaded from.
    pub config_path: PathBuf,
    /// Where `${VAR}` values come from.
    pub env: Arc<dyn Env + Send + Sync>,
    /// Set once shutdown begins.
    pub draining: AtomicBool,
    /// Process-wide metrics (the same registry the snapshot's handles were made from).
    pub metrics: Arc<Metrics>,
    /// Counts requests that no route served (404s, built-in endpoints).
    pub unrouted: RouteMetrics,
    /// Serialises reloads so two triggers never race to swap, and keeps what the last one did.
    pub reload_lock: tokio::sync::Mutex<super::reload::ReloadHistory>,
    /// The HTTPS listener, which reloads start, move and stop.
    pub https: super::tls_listener::HttpsListener,
}

impl GatewayState {
    /// Drops metric series of routes, upstreams and providers that were in `old` and are not
    /// in `live` (the names of the snapshot now in force).
    pub fn forget_removed(&self, old: &Snapshot, live: &LiveNames<'_>) {
        let old = LiveNames::of(old);
        for route in old.routes.difference(&live.routes) {
            self.metrics.forget_route(route);
        }
        for upstream in old.upstreams.difference(&live.upstreams) {
            self.metrics.forget_upstream(upstream);
        }
        for upstream in old.breakers.difference(&live.breakers) {
            self.metrics.forget_circuit(upstream);
        }
        for (upstream, target) in old.checked_targets.difference(&live.checked_targets) {
            self.metrics.forget_target_health(upstream, target);
        }
        for provider in old.fetching_providers.difference(&live.fetching_providers) {
            self.metrics.forget_jwks(provider);
        }
        for provider in old.providers.difference(&live.providers) {
            self.metrics.forget_jwt_cache(provider);
        }
    }
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}
