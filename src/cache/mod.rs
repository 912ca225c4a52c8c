//! The response cache: settings, keys, the HTTP caching rules, what is stored and where, the
//! body that fills the store, and request coalescing.

pub mod directory;
pub mod fill;
pub mod key;
pub mod policy;
pub mod settings;
pub mod store;
