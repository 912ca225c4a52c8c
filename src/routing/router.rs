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
