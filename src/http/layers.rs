//! Layers around the routers that decide nothing about a request: CORS for
//! browser frontends on other origins (`[server] cors_origins`, off by
//! default) and per-route HTTP metrics. A single node and a cluster node put
//! them around their routers the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::metrics::Metrics;

/// Request headers a browser page may send: the token, JSON bodies, the
/// idempotency key, and a live stream's resume point.
const ALLOWED_HEADERS: [HeaderName; 4] =
    [header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("idempotency-key"), HeaderName::from_static("last-event-id")];

/// Response headers the API documents, which a page may read. (No route
/// answers with `Location`.)
const EXPOSED_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("idempotent-replayed"),
    HeaderName::from_static("x-request-id"),
    header::RETRY_AFTER,
    HeaderName::from_static("ledger-node"),
];

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// `router` answering CORS requests from `origins` (exactly these, as the
/// browser sends `Origin`): a preflight (OPTIONS with `Origin` and
/// `Access-Control-Request-Method`) from one of them is answered 204 with the
/// methods and headers allowed; every answer to one of them carries
/// `Access-Control-Allow-Origin` and the exposed headers. Other origins get no
/// CORS header at all, so their browsers refuse the answers. No origins: the
/// router unchanged (an OPTIONS is 405 like any method a route does not take).
pub fn cors(router: Router, origins: &[HeaderValue]) -> Router {
    if origins.is_empty() {
        return router;
    }
    let layer = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST, Method::PUT])
        .allow_headers(ALLOWED_HEADERS)
        .expose_headers(EXPOSED_HEADERS)
        .max_age(PREFLIGHT_MAX_AGE);
    router.layer(layer).layer(middleware::from_fn(preflight_no_content))
}

/// tower-http answers a preflight 200 with an empty body; 204 says the same
/// without one, as the Fetch standard's examples do.
async fn preflight_no_content(request: Request, next: Next) -> Response {
    let preflight = request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ORIGIN)
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = next.run(request).await;
    if preflight && response.status() == StatusCode::OK && response.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}

/// The route label of requests no route matched: the raw path would let any
/// client add a time series per path it makes up.
const UNMATCHED: &str = "unmatched";

/// `router` counting each request in `ledger_http_requests_total{route,
/// method, status}` and timing it in `ledger_http_request_duration_seconds
/// {route, method}` (until the response's head: a live stream counts the
/// time to open it). The route is the template (`/v1/{tenant}/bookings`),
/// never the path, so tenants and ids add no series. Requests the accept loop
/// refuses before the router (503 `overloaded`, 408, 431) are not counted here.
///
/// Around a cluster node's router as around a partition's: a request a
/// partition's router answered is counted there, with its template, once; a
/// tenant's request the node forwarded or refused itself is counted as
/// `/v1/{tenant}/*` (the leader counts a forwarded one by its template too).
pub fn count<S: Clone + Send + Sync + 'static>(router: Router<S>, metrics: Arc<Metrics>) -> Router<S> {
    router.layer(middleware::from_fn_with_state(metrics, observe))
}

/// A tenant's request no route of the router matched: on a cluster node, one
/// it forwarded to the leader or refused (`no_leader`) rather than answered
/// with a partition's router; on a single node, a path of no route (404).
const TENANT_ELSEWHERE: &str = "/v1/{tenant}/*";

/// On a response: a router nearer the handler counted it already (a
/// partition's router inside a cluster node's), so an outer one does not.
#[derive(Debug, Clone, Copy)]
struct Counted;

async fn observe(State(metrics): State<Arc<Metrics>>, matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let tenant_request = request.uri().path().starts_with("/v1/");
    let started = Instant::now();
    let mut response = next.run(request).await;
    if response.extensions().get::<Counted>().is_none() {
        let route = match &matched {
            Some(matched) => matched.as_str(),
            None if tenant_request => TENANT_ELSEWHERE,
            None => UNMATCHED,
        };
        metrics.http_request(route, method, response.status(), started.elapsed());
        response.extensions_mut().insert(Counted);
    }
    response
}

/// The method as a label, from a fixed set: a made-up method adds no series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    /// A cluster node's shape: its own route, and a fallback that hands some
    /// tenants to a partition's (counted) router and refuses the others.
    #[tokio::test]
    async fn a_request_is_counted_once_by_the_router_nearest_its_handler() {
        let metrics = Arc::new(Metrics::new());
        let partition = count(Router::new().route("/v1/{tenant}/bookings", get(|| async { "ok" })), metrics.clone());
        let node = Router::new().route("/healthz", get(|| async { "ok" })).fallback(move |request: Request| {
            let partition = partition.clone();
            async move {
                if request.uri().path().starts_with("/v1/here/") {
                    partition.oneshot(request).await.unwrap()
                } else {
                    Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).body(Body::empty()).unwrap()
                }
            }
        });
        let node = count(node, metrics.clone());
        for path in ["/v1/here/bookings", "/v1/here/bookings", "/v1/elsewhere/bookings", "/healthz", "/nowhere"] {
            node.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        }
        let counted = |route: &str, status: &str| metrics.http_requests.with_label_values(&[route, "GET", status]).get();
        assert_eq!(counted("/v1/{tenant}/bookings", "200"), 2, "counted by the partition's router only");
        assert_eq!(counted(TENANT_ELSEWHERE, "503"), 1);
        assert_eq!(counted(TENANT_ELSEWHERE, "200"), 0);
        assert_eq!(counted("/healthz", "200"), 1);
        assert_eq!(counted(UNMATCHED, "503"), 1);
    }
}
