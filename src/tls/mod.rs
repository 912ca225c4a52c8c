//! TLS: the configuration of the gateway's TLS clients (HTTPS upstreams, JWKS fetches).

pub mod client;
