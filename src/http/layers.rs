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
pub fn count(router: Router, metrics: Arc<Metrics>) -> Router {
    router.layer(middleware::from_fn_with_state(metrics, observe))
}

/// The same for a router's own routes only, not its fallback (a cluster node
/// hands its fallback's requests to a partition's router, which counts them).
pub fn count_routes<S: Clone + Send + Sync + 'static>(router: Router<S>, metrics: Arc<Metrics>) -> Router<S> {
    router.route_layer(middleware::from_fn_with_state(metrics, observe))
}

async fn observe(State(metrics): State<Arc<Metrics>>, matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = matched.as_ref().map_or(UNMATCHED, |m| m.as_str());
    metrics.http_request(route, method, response.status(), started.elapsed());
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
