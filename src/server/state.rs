//! State shared by every listener and connection of one gateway process.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Env, Snapshot};
use crate::observability::metrics::{Metrics, RouteMetrics};
use crate::registry::Registries;

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
}

impl GatewayState {
    /// Drops metric series of routes, upstreams and `jwks_url` providers that `new` no longer
    /// has.
    pub fn forget_removed(&self, old: &Snapshot, new: &Snapshot) {
        let live: HashSet<&str> = new.router.routes().iter().map(|r| &*r.name).collect();
        for route in old.router.routes() {
            if !live.contains(&*route.name) {
                self.metrics.forget_route(&route.name);
            }
        }
        let live: HashSet<&str> = new.upstreams.iter().map(|u| &*u.name).collect();
        for upstream in &old.upstreams {
            if !live.contains(&*upstream.name) {
                self.metrics.forget_upstream(&upstream.name);
            }
        }
        let fetching = |s: &Snapshot| -> HashSet<String> {
            s.providers
                .iter()
                .filter(|(_, p)| p.remote.is_some())
                .map(|(name, _)| name.clone())
                .collect()
        };
        let live = fetching(new);
        for name in fetching(old) {
            if !live.contains(&name) {
                self.metrics.forget_jwks(&name);
            }
        }
        let live: HashSet<&str> = new.providers.iter().map(|(name, _)| &**name).collect();
        for (name, _) in &old.providers {
            if !live.contains(&**name) {
                self.metrics.forget_jwt_cache(name);
            }
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
