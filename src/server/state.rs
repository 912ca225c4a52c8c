//! State shared by every listener and connection of one gateway process.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Env, Snapshot};
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
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}
