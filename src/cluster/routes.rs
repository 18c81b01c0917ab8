//! A cluster node's HTTP surface: `/v1/{tenant}/...` served by the ledger of
//! the tenant's partition when this node leads it, else forwarded to the node
//! that does; `GET /cluster`; health, readiness, metrics, the OpenAPI
//! document and the dashboard (whose API calls are then served or forwarded
//! like any other). Every answer carries `Ledger-Node`, naming the node that decided it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tower::ServiceExt;

use super::node::{Node, Slot};
use crate::http::auth::Role;
use crate::http::error::ApiError;

/// Names the node that decided an answer.
pub const LEDGER_NODE: HeaderName = HeaderName::from_static("ledger-node");
/// Set on a forwarded request: its receiver answers it or refuses it, never forwards it again.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("ledger-forwarded-by");

/// Forwards to other nodes over kept-alive HTTP/1.1 connections, at most
/// `FORWARDS_MAX` at once.
pub struct Forwarder {
    client: Client<HttpConnector, Body>,
    permits: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
}

const FORWARDS_MAX: usize = 4096;

impl Forwarder {
    pub fn new(timeout: Duration) -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(connector);
        Forwarder { client, permits: Arc::new(tokio::sync::Semaphore::new(FORWARDS_MAX)), timeout }
    }
}

pub fn router(node: Arc<Node>) -> Router {
    let routes = Router::new()
        .route("/healthz", get(crate::http::ops::healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(crate::http::ops::openapi))
        .route("/cluster", get(cluster))
        .merge(crate::http::ui::routes())
        .fallback(dispatch)
        .layer(middleware::from_fn_with_state(node.clone(), name_the_node));
    // A tenant's request served here is counted by its partition's router;
    // the rest (this node's routes, forwarded and refused requests) here.
    crate::http::layers::count(routes, node.metrics.clone()).with_state(node)
}

/// Adds `Ledger-Node` to answers decided here (forwarded answers carry the leader's).
async fn name_the_node(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if !response.headers().contains_key(&LEDGER_NODE)
        && let Ok(value) = HeaderValue::from_str(&node.config.node)
    {
        response.headers_mut().insert(LEDGER_NODE, value);
    }
    response
}

fn no_leader(partition: u32, detail: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", format!("partition {partition} {detail}; retry shortly"))
        .with("partition", partition)
        .retry_after(1)
}

/// Serves or forwards a tenant's request.
async fn dispatch(State(node): State<Arc<Node>>, request: Request) -> Response {
    let tenant = request.uri().path().strip_prefix("/v1/").and_then(|rest| rest.split('/').next()).filter(|t| !t.is_empty());
    let Some(tenant) = tenant else { return ApiError::not_found("no such route").into_response() };
    let partition = super::partition_of(tenant, node.config.partitions);
    match node.slot(partition) {
        Slot::Leading(_) if !node.lease_confirmed(partition) => {
            return no_leader(partition, "cannot confirm its lease on this node (NATS unreachable?)").into_response();
        }
        Slot::Leading(leading) => return leading.router.clone().oneshot(request).await.into_response(),
        Slot::Loading => return no_leader(partition, "is being loaded by this node").into_response(),
        Slot::Failed(reason) => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("partition {partition} cannot be served: {reason}"),
            )
            .with("partition", partition)
            .retry_after(5)
            .into_response();
        }
        Slot::Follower => {}
    }
    if request.headers().contains_key(&FORWARDED_BY) {
        return no_leader(partition, "moved while the request was forwarded").into_response();
    }
    match node.leader_of(partition) {
        Some((leader, Some(advertise))) if leader != node.config.node => forward(&node, &leader, &advertise, request).await,
        Some((leader, None)) if leader != node.config.node => {
            no_leader(partition, &format!("is led by {leader}, which is not alive")).into_response()
        }
        _ => no_leader(partition, "has no leader").into_response(),
    }
}

async fn forward(node: &Node, leader: &str, advertise: &str, request: Request) -> Response {
    let forwarder = &node.forwarder;
    let Ok(_permit) = forwarder.permits.clone().try_acquire_owned() else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many requests are being forwarded; retry shortly")
            .retry_after(1)
            .into_response();
    };
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match format!("{advertise}{path}").parse() {
        Ok(uri) => uri,
        Err(error) => return ApiError::new(StatusCode::BAD_GATEWAY, "no_leader", format!("{leader}'s address: {error}")).into_response(),
    };
    parts.headers.remove(header::HOST);
    parts.headers.remove(header::CONNECTION);
    // CORS is answered by the node the browser called (its own layer), not again by the leader.
    parts.headers.remove(header::ORIGIN);
    if let Ok(value) = HeaderValue::from_str(&node.config.node) {
        parts.headers.insert(FORWARDED_BY, value);
    }
    let started = Instant::now();
    let sent = tokio::time::timeout(forwarder.timeout, forwarder.client.request(Request::from_parts(parts, body))).await;
    // The leader may have executed the command before it failed to answer.
    let unanswered = |why: String| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", format!("{leader}, the partition's leader, {why}"))
            .with("outcome", "unknown")
            .retry_after(1)
            .into_response()
    };
    match sent {
        Ok(Ok(response)) => {
            node.cluster_metrics.forward_seconds.observe(started.elapsed().as_secs_f64());
            response.map(Body::new)
        }
        Ok(Err(error)) => unanswered(format!("did not answer: {error}")),
        Err(_) => unanswered("did not answer in time".to_owned()),
    }
}

/// 200 once this node has joined the cluster (it reads members and leases)
/// and is connected to NATS; each partition's own readiness shows on `/cluster`.
async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let connected = node.client.connection_state() == async_nats::connection::State::Connected;
    if !connected || !node.has_joined() {
        let why = if connected { "has not joined the cluster yet" } else { "is not connected to NATS" };
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", format!("node {} {why}", node.config.node))
            .retry_after(1)
            .into_response();
    }
    let leading: Vec<u32> = (0..node.config.partitions).filter(|p| matches!(node.slot(*p), Slot::Leading(_))).collect();
    axum::Json(json!({ "status": "ready", "node": node.config.node, "leading": leading })).into_response()
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], node.metrics.render())
}

/// `GET /cluster` (admin): the nodes, and each partition's leader and position.
async fn cluster(State(node): State<Arc<Node>>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    let token = node.auth().authenticate(headers.get_all(header::AUTHORIZATION).iter())?;
    if token.role != Role::Admin {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "GET /cluster needs an admin token"));
    }
    let members = node.members();
    let nodes: Vec<_> = members
        .iter()
        .map(|(name, member)| json!({ "node": name, "advertise": member.as_ref().map(|m| m.advertise.clone()), "alive": member.is_some() }))
        .collect();
    let partitions: Vec<_> = node
        .leaders()
        .into_iter()
        .enumerate()
        .map(|(partition, leader)| {
            let position = leader.as_ref().and_then(|leader| {
                members.iter().find(|(name, _)| name == leader).and_then(|(_, m)| m.as_ref()?.positions.get(&(partition as u32)).copied())
            });
            json!({ "partition": partition, "leader": leader, "position": position })
        })
        .collect();
    Ok(axum::Json(json!({ "node": node.config.node, "nodes": nodes, "partitions": partitions })).into_response())
}
