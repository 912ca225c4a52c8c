//! gatehouse: a programmable API gateway and reverse proxy.
//!
//! Routes are described in YAML (`gateway.yaml` plus `routes/*.yaml`), loaded into an immutable
//! [`config::Snapshot`], and served by [`server::Gateway`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod background;
pub mod body;
pub mod cache;
pub mod compress;
pub mod config;
pub mod error;
pub mod explain;
pub mod header_rules;
pub mod http1;
pub mod net;
pub mod observability;
pub mod per_worker;
pub mod proxy;
pub mod ratelimit;
pub mod redis;
pub mod registry;
pub mod routing;
pub mod server;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod trusted_proxies;
pub mod upstream;

pub use server::{Gateway, GatewayHandle, StartOptions};
