//! The response cache: settings, keys, the HTTP caching rules, stored entries and their
//! encoding, the stores that hold them, the body that fills a store, and the coalescing of
//! concurrent misses for one key into one upstream request.

pub mod coalesce;
pub mod directory;
pub mod entry;
pub mod fill;
pub mod key;
pub mod memory;
pub mod policy;
pub mod redis;
pub mod settings;
pub mod store;
