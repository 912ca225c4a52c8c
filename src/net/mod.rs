//! Outgoing TCP connections, shared by the upstream pool and the JWKS fetcher, and writes held
//! until the worker's round of tasks is over.

pub mod held_writes;

use std::io;

use tokio::net::{TcpStream, ToSocketAddrs};

/// Resolves `addr` and tries each address in turn; the last error if none connects.
pub async fn connect_any(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
    for addr in tokio::net::lookup_host(addr).await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}
