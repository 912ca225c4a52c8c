//! HTTP caching rules (RFC 9111, with the parts of RFC 9110 they lean on) as pure functions over
//! `http` types: no I/O, no clock reads (callers pass `now`), no global state.
//!
//! - [`cache_control`]: `Cache-Control` directives of requests and responses.
//! - [`storable`]: whether a request may be answered from the cache and a response stored.
//! - [`freshness`]: lifetimes, ages and when a stored response may be served (fresh or stale).
//! - [`vary`]: `Vary` and the bytes that tell one stored variant from another.
//! - [`conditional`]: entity tags and a client's `If-None-Match` / `If-Modified-Since`.
//! - [`revalidate`]: conditional requests to the origin and merging its 304 answer.
//! - [`invalidate`]: the URLs an unsafe request's success invalidates.

pub mod cache_control;
pub mod conditional;
pub mod freshness;
pub mod invalidate;
pub mod revalidate;
pub mod storable;
mod syntax;
pub mod vary;

pub use cache_control::{RequestCacheControl, ResponseCacheControl, Seconds};
pub use conditional::{evaluate_conditional, not_modified_headers, ClientConditional, EntityTag};
pub use freshness::{age_header, Freshness, RouteDefaults, Usable};
pub use invalidate::{invalidation_targets, RequestTarget};
pub use revalidate::{add_validators, merge_not_modified, NotModifiedMatch};
pub use storable::{lookup, storable, Lookup, NotStored, RequestView, ResponseView, Storable};
pub use syntax::{date_field, DateField, DELTA_SECONDS_CAP};
pub use vary::{parse_vary, variant_key, Vary};
