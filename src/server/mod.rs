//! Listeners, connections, built-in endpoints, and the gateway's lifecycle.

pub mod builtin;
pub mod connection;
mod h2_streams;
mod http1;
mod http2;
mod https;
pub mod lifecycle;
pub mod listener;
pub mod reload;
mod side_wake;
pub mod state;
mod tls_listener;
mod tunnel;
mod upgrade;
pub mod workers;

pub use lifecycle::{Gateway, GatewayHandle, ShutdownOutcome, StartError, StartOptions};
