//! The request path: from a parsed request to a response, through the route's phases.

pub mod body;
pub mod cache;
pub mod ctx;
pub mod forward;
pub mod headers;
pub mod pipeline;
pub mod request_filter;
pub mod response_filter;
pub mod upgrade;
