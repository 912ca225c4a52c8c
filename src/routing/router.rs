//! Chooses the route for a request, in an order users can predict:
//!
//! 1. host: routes for the exact host, then wildcard hosts (longest suffix first), then routes
//!    without `host`; a request falls through to the next group when nothing in one matches;
//! 2. within a group: `path_exact`, then `path` prefixes longest first, then `path_regex` in
//!    file order;
//! 3. among routes with the same host and path rule: those with `headers` conditions first,
//!    then those with `methods`, then file order (gateway.yaml, then routes/*.yaml by name).
//!
//! A request whose host and path match but whose method does not gets 405 with `Allow`.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, Method};

use super::matchers::{HostMatcher, PathMatcher};
use super::route::Route;

/// The routing table of one config snapshot.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
    exact_hosts: HashMap<Box<str>, Group>,
    /// Suffixes (`.example.com`), longest first.
    wildcard_hosts: Vec<(Box<str>, Group)>,
    any_host: Group,
}

/// Routes sharing a host condition, indexed by path rule.
#[derive(Debug, Default)]
struct Group {
    exact: HashMap<Box<str>, Vec<usize>>,
    /// Longest prefix first; ties by condition specificity, then file order.
    prefixes: Vec<(Box<str>, usize)>,
    /// File order.
    regexes: Vec<usize>,
}

/// The result of routing one request.
#[derive(Debug)]
pub enum RouteOutcome<'a> {
    /// This route serves the request.
    Matched(&'a Arc<Route>),
    /// Routes match the host and path, but none allows the method; these are the methods they do.
    MethodNotAllowed(Vec<Method>),
    /// No route matches.
    NotFound,
}

/// A condition of a route that a request did not meet, for `explain` on a 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmet {
    /// `match.host`.
    Host,
    /// The path rule, missed by a small edit (a typo, a missing or extra letter).
    Path,
    /// `match.methods`.
    Methods,
    /// `match.headers[i]`.
    Header(usize),
}

/// A route that nearly served a request, and what it needed that the request lacked.
#[derive(Debug)]
pub struct NearMiss<'a> {
    /// The route.
    pub route: &'a Arc<Route>,
    /// Its unmet conditions, in the order host, path, methods, headers.
    pub unmet: Vec<Unmet>,
}

/// Near misses shown at most: the closest ones are what a reader acts on.
const NEAR_MISSES_SHOWN: usize = 3;

/// Largest edit distance at which a path rule still counts as nearly matched.
const PATH_EDITS: usize = 2;

/// What the router looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Lower-cased host without port.
    pub host: Option<&'a str>,
    /// Normalised path.
    pub path: &'a str,
    /// Method.
    pub method: &'a Method,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

impl Router {
    /// Builds the table; `routes` are in file order.
    pub fn new(routes: Vec<Arc<Route>>) -> Self {
        let mut router = Router {
            routes,
            ..Default::default()
        };
        for (index, route) in router.routes.iter().enumerate() {
            let group = match &route.host {
                HostMatcher::Any => &mut router.any_host,
                HostMatcher::Exact(h) => router.exact_hosts.entry(h.clone()).or_default(),
                HostMatcher::Suffix(s) => {
                    match router.wildcard_hosts.iter().position(|(k, _)| k == s) {
                        Some(i) => &mut router.wildcard_hosts[i].1,
                        None => {
                            router.wildcard_hosts.push((s.clone(), Group::default()));
                            &mut router.wildcard_hosts.last_mut().expect("just pushed").1
                        }
                    }
                }
            };
            match &route.path {
                PathMatcher::Exact(p) => group.exact.entry(p.clone()).or_default().push(index),
                PathMatcher::Prefix(p) => group.prefixes.push((p.clone(), index)),
                PathMatcher::Regex(_) => group.regexes.push(index),
            }
        }
        let specificity = |route: &Route| {
            // Sorts ascending, so more specific routes get smaller keys.
            (
                usize::from(route.headers.is_empty()),
                usize::from(route.methods.is_none()),
            )
        };
        let routes = &router.routes;
        let mut groups: Vec<&mut Group> = router.exact_hosts.values_mut().collect();
        groups.extend(router.wildcard_hosts.iter_mut().map(|(_, g)| g));
        groups.push(&mut router.any_host);
        for group in groups {
            for indexes in group.exact.values_mut() {
                indexes.sort_by_key(|&i| (specificity(&routes[i]), i));
            }
            group.prefixes.sort_by(|(a, ai), (b, bi)| {
                b.len()
                    .cmp(&a.len())
                    .then_with(|| specificity(&routes[*ai]).cmp(&specificity(&routes[*bi])))
                    .then(ai.cmp(bi))
            });
        }
        router
            .wildcard_hosts
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        router
    }

    /// Every route, in file order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The routes that came closest to serving a request no route serves: those whose path
    /// rule matches, or (when none does) misses by a small edit; fewest unmet conditions first,
    /// then file order. A route missing both host and path is not near.
    pub fn near_misses(&self, req: RequestFacts<'_>) -> Vec<NearMiss<'_>> {
        let mut misses: Vec<NearMiss<'_>> = Vec::new();
        for route in &self.routes {
            let mut unmet = Vec::new();
            if !route.host.matches(req.host) {
                unmet.push(Unmet::Host);
            }
            if !route.path.matches(req.path) {
                if !path_nearly_matches(&route.path, req.path) {
                    continue;
                }
                unmet.push(Unmet::Path);
            }
            if !route.allows_method(req.method) {
                unmet.push(Unmet::Methods);
            }
            for (i, condition) in route.headers.iter().enumerate() {
                if !condition.matches(req.headers) {
                    unmet.push(Unmet::Header(i));
                }
            }
            // A route needing nothing else would have matched; one missing its host and its
            // path both is not near.
            let far = unmet.contains(&Unmet::Host) && unmet.contains(&Unmet::Path);
            if !unmet.is_empty() && !far {
                misses.push(NearMiss { route, unmet });
            }
        }
        // A path typo is a guess; routes whose path does match are what the request aimed at.
        if misses.iter().any(|m| !m.unmet.contains(&Unmet::Path)) {
            misses.retain(|m| !m.unmet.contains(&Unmet::Path));
        }
        // Stable: equal counts keep file order.
        misses.sort_by_key(|m| m.unmet.len());
        misses.truncate(NEAR_MISSES_SHOWN);
        misses
    }

    /// Finds the route for a request.
    pub fn find(&self, req: RequestFacts<'_>) -> RouteOutcome<'_> {
        let mut allowed: Vec<Method> = Vec::new();
        let mut try_group = |group: &Group| -> Option<usize> {
            // Exact and prefix candidates are already known to match the path; only a regex
            // still has to be run.
            let exact = group.exact.get(req.path).into_iter().flatten();
            let prefixes = group
                .prefixes
                .iter()
                .filter(|(p, _)| super::matchers::prefix_matches(p, req.path))
                .map(|(_, i)| i);
            let candidates = exact
                .chain(prefixes)
                .map(|&i| (i, false))
                .chain(group.regexes.iter().map(|&i| (i, true)));
            for (index, is_regex) in candidates {
                let route = &self.routes[index];
                if is_regex && !route.path.matches(req.path) {
                    continue;
                }
                if !route.headers.iter().all(|h| h.matches(req.headers)) {
                    continue;
                }
                if route.allows_method(req.method) {
                    return Some(index);
                }
                if let Some(methods) = &route.methods {
                    for m in methods.methods() {
                        if !allowed.contains(m) {
                            allowed.push(m.clone());
                        }
                    }
                }
            }
            None
        };

        if let Some(host) = req.host {
            if let Some(group) = self.exact_hosts.get(host) {
                if let Some(i) = try_group(group) {
                    return RouteOutcome::Matched(&self.routes[i]);
                }
            }
            for (suffix, group) in &self.wildcard_hosts {
                if host.len() > suffix.len() && host.ends_with(&**suffix) {
                    if let Some(i) = try_group(group) {
                        return RouteOutcome::Matched(&self.routes[i]);
                    }
                }
            }
        }
        if let Some(i) = try_group(&self.any_host) {
            return RouteOutcome::Matched(&self.routes[i]);
        }
        if allowed.is_empty() {
            RouteOutcome::NotFound
        } else {
            RouteOutcome::MethodNotAllowed(allowed)
        }
    }
}

/// Whether `path` misses the rule by at most [`PATH_EDITS`] single-character edits: compared
/// with the whole path for `path_exact`, with as many leading segments as the prefix has for
/// `path`. Regexes are never near.
fn path_nearly_matches(rule: &PathMatcher, path: &str) -> bool {
    let (wanted, got) = match rule {
        PathMatcher::Exact(exact) => (&**exact, path),
        PathMatcher::Prefix(prefix) => {
            let segments = prefix.trim_end_matches('/').matches('/').count();
            // The request's first `segments` segments: `/api/v1/order/7` against
            // `/api/v1/orders` compares `/api/v1/order`.
            let end = path
                .match_indices('/')
                .nth(segments)
                .map_or(path.len(), |(i, _)| i);
            (prefix.trim_end_matches('/'), &path[..end])
        }
        PathMatcher::Regex(_) => return false,
    };
    // Bounded work: route paths and request paths can be long, and the distance is quadratic.
    const LONGEST: usize = 256;
    if wanted.len() > LONGEST || got.len() > LONGEST {
        return false;
    }
    // As compilers do for names: a third of the length at most, so `/a` never suggests `/b`.
    let allowed = PATH_EDITS.min(wanted.chars().count() / 3);
    allowed > 0 && strsim::levenshtein(wanted, got) <= allowed
}
