//! The app's router: a route per hosted endpoint (and, in gateway mode, per public endpoint
//! hosted elsewhere), checked before it is built, the `/__ovation/*` admin routes, and the 404
//! that an unknown route, a wrong method and an unsigned private endpoint all get alike.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use super::admin::{
    cron_run, cron_state, health, meta, metrics, pubsub_redrive, pubsub_state, workflow_retry,
    workflow_run, workflows_state,
};
use super::wire::not_found_response;
use crate::error::Error;
use crate::registry::{self, Access, DynEndpoint};
use crate::runtime::Runtime;

/// Why the app's routes cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RouteError(pub String);

/// The axum route pattern of an Ovation path: `:id` → `{id}`, `*rest` → `{*rest}`.
pub(crate) fn axum_path(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if let Some(name) = s.strip_prefix(':') {
                format!("{{{name}}}")
            } else if let Some(name) = s.strip_prefix('*') {
                format!("{{*{name}}}")
            } else {
                s.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Builds the router of the endpoints `rt` hosts, checking the routes first: axum panics on
/// a duplicate or conflicting route, we report it.
pub(crate) fn router(rt: &'static Runtime) -> Result<Router, RouteError> {
    // Hosted endpoints run here; in gateway mode, public and `auth` endpoints of the other
    // services are forwarded. Private endpoints of other services get no route at all.
    let endpoints: Vec<&'static dyn DynEndpoint> = registry::endpoints()
        .into_iter()
        .filter(|e| {
            let info = e.info();
            rt.hosts(info.service) || (rt.gateway && info.access != Access::Private)
        })
        .collect();
    check_routes(&endpoints)?;
    crate::auth::check_setup().map_err(RouteError)?;
    let mut by_path: BTreeMap<String, MethodRouter> = BTreeMap::new();
    for e in &endpoints {
        let info = e.info();
        let path = axum_path(info.path);
        let route = if rt.hosts(info.service) {
            // Catches its handler's panics itself (see `route`).
            e.route(rt)
        } else {
            crate::http::gateway::route(rt, info).layer(catch_panic())
        };
        let merged = match by_path.remove(&path) {
            Some(existing) => existing.merge(route),
            None => route,
        };
        by_path.insert(path, merged);
    }
    let mut router = Router::new();
    for (path, route) in by_path {
        router = router.route(&path, route.fallback(not_found_handler));
    }
    let router = router
        .route("/__ovation/health", axum::routing::get(health))
        .route(
            "/__ovation/metrics",
            axum::routing::get(move || async move { metrics(rt) }),
        )
        .route(
            "/__ovation/openapi.json",
            axum::routing::get(|| async { axum::Json(crate::http::openapi::spec()) })
                .layer(catch_panic()),
        )
        .route(
            "/__ovation/meta",
            axum::routing::get(move |req: Request| meta(rt, req)).layer(catch_panic()),
        )
        .route(
            "/__ovation/pubsub",
            axum::routing::get(move |req: Request| pubsub_state(rt, req)).layer(catch_panic()),
        )
        .route(
            "/__ovation/pubsub/{subscription}/redrive",
            axum::routing::post(move |req: Request| pubsub_redrive(rt, req)).layer(catch_panic()),
        )
        .route(
            "/__ovation/cron",
            axum::routing::get(move |req: Request| cron_state(rt, req)).layer(catch_panic()),
        )
        .route(
            "/__ovation/cron/{job}/run",
            axum::routing::post(move |req: Request| cron_run(rt, req)).layer(catch_panic()),
        )
        .route(
            "/__ovation/workflows",
            axum::routing::get(move |req: Request| workflows_state(rt, req)).layer(catch_panic()),
        )
        .route(
            "/__ovation/workflows/runs/{id}",
            axum::routing::get(move |req: Request| workflow_run(rt, req)).layer(catch_panic()),
        )
        .route(
            "/__ovation/workflows/runs/{id}/retry",
            axum::routing::post(move |req: Request| workflow_retry(rt, req)).layer(catch_panic()),
        )
        .fallback(not_found_handler);
    let router = match cors_layer(&rt.cors)? {
        Some(cors) => router.layer(cors),
        None => router,
    };
    // Turns every handler into its route once, here: served as it is, axum would clone and
    // box each request's handler anew.
    Ok(router.with_state(()))
}

/// The CORS layer of `cors`, if it allows any origin. Without one no response carries CORS
/// headers, so browsers refuse every cross-origin call (and a preflight gets the 404 of a
/// route without `OPTIONS`).
fn cors_layer(
    cors: &crate::config::Cors,
) -> Result<Option<tower_http::cors::CorsLayer>, RouteError> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if cors.allowed_origins.is_empty() {
        return Ok(None);
    }
    let bad =
        |what: &str, value: &str| RouteError(format!("cors: {value:?} is not a valid {what}"));
    let origin = if cors.allowed_origins.iter().any(|o| o == "*") {
        if cors.allow_credentials {
            return Err(RouteError(
                "cors: `*` cannot be combined with `allow_credentials` (browsers refuse it): \
                 list the origins"
                    .into(),
            ));
        }
        AllowOrigin::any()
    } else {
        let mut origins = Vec::new();
        for o in &cors.allowed_origins {
            let parsed = url::Url::parse(o).ok().filter(|u| {
                matches!(u.scheme(), "http" | "https") && u.path() == "/" && !o.ends_with('/')
            });
            if parsed.is_none() {
                return Err(bad("origin (scheme://host[:port], no path)", o));
            }
            origins.push(HeaderValue::from_str(o).map_err(|_| bad("origin", o))?);
        }
        AllowOrigin::list(origins)
    };
    let mut headers = vec![header::CONTENT_TYPE];
    for h in &cors.allowed_headers {
        headers.push(HeaderName::try_from(h.as_str()).map_err(|_| bad("header name", h))?);
    }
    let mut exposed = Vec::new();
    for h in &cors.exposed_headers {
        exposed.push(HeaderName::try_from(h.as_str()).map_err(|_| bad("header name", h))?);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::HEAD,
            ])
            .allow_headers(headers)
            .expose_headers(exposed)
            .allow_credentials(cors.allow_credentials)
            .max_age(std::time::Duration::from_secs(
                cors.max_age_secs.unwrap_or(600),
            )),
    ))
}

/// A panic becomes a 500 `internal`, and the server keeps serving. (Per route rather than
/// around the whole router: the layer boxes every response body it passes, and endpoints
/// catch their handlers' panics without it.)
fn catch_panic()
-> tower_http::catch_panic::CatchPanicLayer<fn(Box<dyn std::any::Any + Send>) -> Response> {
    fn internal(_: Box<dyn std::any::Any + Send>) -> Response {
        Error::internal("internal error").into_response()
    }
    tower_http::catch_panic::CatchPanicLayer::custom(internal)
}

/// Checks that no two endpoints share a method and path, and that no two paths conflict,
/// naming both endpoints of each problem in the app's own `:param` syntax. Every problem is
/// reported, one a line.
pub(crate) fn check_routes(endpoints: &[&'static dyn DynEndpoint]) -> Result<(), RouteError> {
    let who = |e: &dyn DynEndpoint| {
        let i = e.info();
        format!("{}.{} ({})", i.service, i.name, i.location)
    };
    let mut problems = Vec::new();
    // By shape (parameters unnamed): the first endpoint of each method, and of any method.
    let mut by_route: BTreeMap<(String, &str), &dyn DynEndpoint> = BTreeMap::new();
    let mut by_shape: BTreeMap<String, &dyn DynEndpoint> = BTreeMap::new();
    let mut matcher = matchit::Router::new();
    let mut by_axum_path: BTreeMap<String, &dyn DynEndpoint> = BTreeMap::new();
    // In the order of their names, so a problem reads the same on every run.
    let mut endpoints = endpoints.to_vec();
    endpoints.sort_by_key(|e| (e.info().service, e.info().name));
    for e in endpoints {
        let i = e.info();
        let shape = route_shape(i.path);
        if let Some(other) = by_route.get(&(shape.clone(), i.method.as_str())) {
            let o = other.info();
            let paths = if o.path == i.path {
                i.path.to_owned()
            } else {
                format!("{} and {} {}", o.path, i.method, i.path)
            };
            problems.push(format!(
                "two endpoints serve {} {paths}: {} and {}",
                i.method,
                who(*other),
                who(e)
            ));
            continue;
        }
        by_route.insert((shape.clone(), i.method.as_str()), e);
        match by_shape.get(&shape) {
            Some(other) if other.info().path != i.path => {
                problems.push(format!(
                    "the paths {} of {} and {} of {} differ only in their parameters' names: \
                     one path has one name per parameter, so name them alike",
                    other.info().path,
                    who(*other),
                    i.path,
                    who(e)
                ));
                continue;
            }
            Some(_) => continue,
            None => {
                by_shape.insert(shape, e);
            }
        }
        let path = axum_path(i.path);
        if let Err(err) = matcher.insert(path.clone(), ()) {
            let with = match &err {
                matchit::InsertError::Conflict { with } => by_axum_path
                    .get(with)
                    .map(|o| format!("{} of {}", o.info().path, who(*o)))
                    .unwrap_or_else(|| format!("the path {}", colon_path(with))),
                _ => format!("the router ({err})"),
            };
            problems.push(format!(
                "the path {} of {} conflicts with {with}",
                i.path,
                who(e)
            ));
            continue;
        }
        by_axum_path.insert(path, e);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RouteError(problems.join("\n")))
    }
}

/// A path with its parameters unnamed (`/users/:/files/*`): two paths of one shape match the
/// same requests.
fn route_shape(path: &str) -> String {
    path.split('/')
        .map(|s| match s.as_bytes().first() {
            Some(b':') => ":",
            Some(b'*') => "*",
            _ => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The app's syntax of an axum route pattern: `{id}` → `:id`, `{*rest}` → `*rest`.
fn colon_path(path: &str) -> String {
    path.split('/')
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(inner) => match inner.strip_prefix('*') {
                    Some(name) => format!("*{name}"),
                    None => format!(":{inner}"),
                },
                None => s.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

async fn not_found_handler(req: Request) -> Response {
    not_found_response(req.method().as_str(), req.uri().path())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint known only by its route, to check route validation.
    struct Route(crate::registry::Method, &'static str, &'static str);

    impl DynEndpoint for Route {
        fn info(&self) -> crate::registry::EndpointInfo {
            crate::registry::EndpointInfo {
                service: "svc",
                name: self.2,
                method: self.0,
                path: self.1,
                access: Access::Public,
                path_params: &[],
                location: "test",
                module: "app::svc",
                no_content: false,
                tags: &[],
                kind: crate::registry::EndpointKind::Typed,
            }
        }
        fn request_schema(&self) -> Option<schemars::Schema> {
            None
        }
        fn path_param_schemas(&self) -> Vec<Option<schemars::Schema>> {
            Vec::new()
        }
        fn response_schema(&self) -> Option<schemars::Schema> {
            None
        }
        fn route(&self, _: &'static Runtime) -> MethodRouter {
            axum::routing::get(|| async {})
        }
    }

    #[test]
    fn duplicate_and_conflicting_routes_are_errors_not_panics() {
        use crate::registry::Method::{Get, Post};
        let ok: [&'static dyn DynEndpoint; 5] = [
            &Route(Get, "/users/:id", "get"),
            &Route(Post, "/users/:id", "update"),
            &Route(Get, "/users/:id/orders", "orders"),
            &Route(Get, "/users/me", "me"),
            &Route(Get, "/files/*key", "file"),
        ];
        check_routes(&ok).unwrap();
        let dup: [&'static dyn DynEndpoint; 2] = [
            &Route(Get, "/users/:id", "get"),
            &Route(Get, "/users/:id", "fetch"),
        ];
        let err = check_routes(&dup).unwrap_err().to_string();
        assert_eq!(
            err,
            "two endpoints serve GET /users/:id: svc.fetch (test) and svc.get (test)"
        );
        // One method on paths that differ only in a parameter's name: the same requests.
        let renamed: [&'static dyn DynEndpoint; 2] = [
            &Route(Get, "/site/:site_id", "get"),
            &Route(Get, "/site/:id", "fetch"),
        ];
        let err = check_routes(&renamed).unwrap_err().to_string();
        assert_eq!(
            err,
            "two endpoints serve GET /site/:id and GET /site/:site_id: svc.fetch (test) and \
             svc.get (test)"
        );
        let conflict: [&'static dyn DynEndpoint; 3] = [
            &Route(Get, "/users/:id", "get"),
            &Route(Post, "/users/:name", "rename"),
            &Route(Get, "/status", "status"),
        ];
        let err = check_routes(&conflict).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "the paths /users/:id of svc.get (test) and /users/:name of svc.rename (test) \
                 differ only in their parameters' names"
            ),
            "{err}"
        );
        // Every problem, one a line.
        let many: [&'static dyn DynEndpoint; 4] = [
            &Route(Get, "/a", "a1"),
            &Route(Get, "/a", "a2"),
            &Route(Get, "/b/:x", "b1"),
            &Route(Post, "/b/:y", "b2"),
        ];
        let err = check_routes(&many).unwrap_err().to_string();
        assert_eq!(err.lines().count(), 2, "{err}");
        assert!(!err.contains('{'), "axum's syntax leaked: {err}");
    }

    #[test]
    fn paths_translate_to_axum_syntax() {
        assert_eq!(axum_path("/users/:id"), "/users/{id}");
        assert_eq!(axum_path("/files/*key"), "/files/{*key}");
        assert_eq!(axum_path("/"), "/");
        assert_eq!(colon_path("/users/{id}/{*rest}"), "/users/:id/*rest");
        assert_eq!(route_shape("/users/:id/*rest"), "/users/:/*");
    }
}
