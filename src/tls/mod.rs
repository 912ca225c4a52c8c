//! TLS for the gateway's listeners (rustls with the ring provider).

pub mod server;
