//! [`JwksKeys`]: a provider's JWKS, replaced whole under live traffic, each published set
//! numbered so the provider's token cache can tell sets apart.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::Algorithm;
use tokio::sync::Notify;

use super::dedup;
use super::keys::KeySet;

/// A JWKS key set that can be replaced as a whole under live traffic, and that tells a
/// refresher when a token named a `kid` it lacks.
///
/// Shared: a provider rebuilt by a config reload can be handed the same set, so keys fetched
/// from a URL survive the reload.
pub struct JwksKeys {
    /// Deduplicated, in configured order: keys are kept only if they serve one of these.
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) set: ArcSwap<Published>,
    pub(super) unknown_kid: Notify,
}

/// A key set as published, numbered so that a token cache can tell which set its entries were
/// verified with: the number travels inside the same `Arc` as the keys, so a reader can never
/// pair one set's keys with another set's number.
pub(super) struct Published {
    /// Unique in the process ([`next_generation`]); 0 is never used, it stands for "keys that
    /// never change" (a secret or a PEM key).
    pub(super) generation: u64,
    pub(super) keys: KeySet,
}

impl Published {
    fn new(keys: KeySet) -> Published {
        Published {
            generation: next_generation(),
            keys,
        }
    }
}

/// A fresh key-set generation. Process-wide rather than per set, so no two sets ever share one
/// even if a cache were handed another provider's set.
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl fmt::Debug for JwksKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksKeys")
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

impl JwksKeys {
    /// An empty set that will keep keys usable for `algorithms`.
    pub fn empty(algorithms: &[Algorithm]) -> JwksKeys {
        JwksKeys {
            algorithms: dedup(algorithms),
            set: ArcSwap::from_pointee(Published::new(KeySet::empty())),
            unknown_kid: Notify::new(),
        }
    }

    /// Replaces the keys with those of `jwks_json`; returns how many are usable and, for
    /// logging, why each other key was skipped. On any error (bad JSON, no usable key, over
    /// 1 MiB) the current keys stay in place, so a bad document cannot lock everyone out.
    pub fn replace(&self, jwks_json: &[u8]) -> Result<(usize, Vec<String>), String> {
        let (set, skipped) = KeySet::parse(jwks_json, &self.algorithms)?;
        let count = set.len();
        self.set.store(Arc::new(Published::new(set)));
        Ok((count, skipped))
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.set.load().keys.len()
    }

    /// Whether the set holds no key (a remote JWKS before its first successful fetch).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Notified (`notify_one`) whenever a token names a `kid` the set lacks (or the set is
    /// still empty), so a refresher can fetch early.
    pub fn unknown_kid(&self) -> &Notify {
        &self.unknown_kid
    }
}
