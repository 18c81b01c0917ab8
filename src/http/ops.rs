//! Routes outside the tenants: health, readiness, metrics, the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use utoipa::OpenApi;

use super::error::{ApiError, rfc3339};
use super::views::Problem;
use super::{ApiDoc, Shared};
use crate::writer::Health;

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", operation_id = "getHealth", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 once the projections are rebuilt and the writer accepts commands; 503 before, while storage is
/// down (`storage_unavailable`, naming the cause, with `retrying`), and once the writer stopped.
#[utoipa::path(get, path = "/readyz", operation_id = "getReadiness", tag = "operations", responses(
    (status = 200, description = "Ready"),
    (status = 503, description = "not_ready, storage_unavailable, unavailable", body = Problem),
))]
pub async fn readyz(State(app): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let writer = app.writer()?;
    match writer.health() {
        Health::Writing => {}
        Health::StorageDown { cause, since, retrying } => {
            let detail = if retrying {
                format!("a write or sync of the log failed: {cause}; commands are refused while the log is re-opened")
            } else {
                format!("a write or sync of the log failed and the log cannot be re-opened: {cause}; restart the server to recover")
            };
            let error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", detail)
                .with("cause", cause)
                .with("since", rfc3339(&since))
                .with("retrying", retrying);
            return Err(if retrying { error.retry_after(1) } else { error });
        }
        Health::Stopped => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the writer has stopped")),
    }
    let position = writer.read(|state| state.position);
    Ok(Json(json!({ "status": "ready", "position": position })))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "operations", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
pub async fn metrics(State(app): State<Shared>) -> impl IntoResponse {
    if let Ok(writer) = app.writer() {
        app.metrics.queue_depth.set(writer.queue_depth() as i64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "getOpenApiDocument", tag = "operations", responses((status = 200, description = "The OpenAPI document")))]
pub async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

/// The throughput baseline of `make bench`: the body back, untouched.
#[cfg(feature = "bench")]
pub async fn echo(body: axum::body::Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body)
}
