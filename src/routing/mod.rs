//! Routing: path normalisation, route conditions, and the table that picks a route.

pub mod matchers;
pub mod normalize;
pub mod route;
pub mod router;
