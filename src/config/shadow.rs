//! Routes that can never be chosen because an earlier one in routing order takes every request
//! they would. Not an error (the config works, just not as written), so `check` and every load
//! report it as a warning naming both routes.

use std::path::PathBuf;
use std::sync::Arc;

use super::errors::ConfigError;
use super::file::Mark;
use crate::routing::route::Route;

/// Where a route was written.
pub(super) type Place = (PathBuf, Mark);

/// One warning per route that an earlier route shadows, in file order. `places` is parallel to
/// `routes`, which are in file order.
pub(super) fn shadowed_routes(routes: &[Arc<Route>], places: &[Place]) -> Vec<ConfigError> {
    let mut warnings = Vec::new();
    for (later, route) in routes.iter().enumerate() {
        let shadow = routes.iter().enumerate().find(|(earlier, other)| {
            *earlier != later && comes_first_and_covers(other, *earlier, route, later)
        });
        if let Some((first, other)) = shadow {
            let (file, mark) = &places[later];
            let (first_file, first_mark) = &places[first];
            warnings.push(ConfigError::at(
                file,
                *mark,
                format!(
                    "warning: route `{}` can never be chosen: route `{}` ({}:{}:{}) has the same host and \
                     path, accepts every method and header it does, and is tried first",
                    route.name,
                    other.name,
                    first_file.display(),
                    first_mark.line,
                    first_mark.column
                ),
            ));
        }
    }
    warnings
}

/// Whether `a` (at file position `ai`) is tried before `b` and matches every request `b` does.
/// Mirrors the router: within one host and path rule, routes with header conditions first,
/// then those with methods, then file order.
fn comes_first_and_covers(a: &Route, ai: usize, b: &Route, bi: usize) -> bool {
    if a.host.describe() != b.host.describe() || a.path.describe() != b.path.describe() {
        return false;
    }
    let rank = |r: &Route, i: usize| (r.headers.is_empty(), r.methods.is_none(), i);
    if rank(a, ai) >= rank(b, bi) {
        return false;
    }
    let headers_covered = a.headers.iter().all(|ha| {
        b.headers
            .iter()
            .any(|hb| hb.name == ha.name && hb.value == ha.value)
    });
    let methods_covered = match (&a.methods, &b.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(ma), Some(mb)) => mb.methods().iter().all(|m| ma.methods().contains(m)),
    };
    headers_covered && methods_covered
}
