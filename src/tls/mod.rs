//! TLS: the gateway's listeners (server) and its TLS clients (HTTPS upstreams, JWKS
//! fetches), with rustls and the ring provider.

pub mod client;
pub mod client_auth;
pub mod server;
