//! The response cache: stored entries and their encoding, the stores that hold them, and the
//! coalescing of concurrent misses for one key into one upstream request.

pub mod coalesce;
pub mod entry;
pub mod memory;
pub mod store;
