//! Logs and request ids.

pub mod logging;
pub mod request_id;
