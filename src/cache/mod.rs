//! The response cache: the HTTP caching rules (`policy`), with the stores, entries and request
//! coalescing built on them.

pub mod policy;
