//! Routes outside the tenants: health, readiness, metrics, the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use utoipa::OpenApi;

use super::error::ApiError;
use super::{ApiDoc, Shared};

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 once the projections are rebuilt and the writer accepts commands; 503 before, and after a storage failure.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "Ready"), (status = 503, description = "not_ready")))]
pub async fn readyz(State(app): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let writer = app.writer()?;
    if !writer.is_writable() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the writer stopped after a storage failure"));
    }
    let position = writer.read(|state| state.position);
    Ok(Json(json!({ "status": "ready", "position": position })))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
pub async fn metrics(State(app): State<Shared>) -> impl IntoResponse {
    if let Ok(writer) = app.writer() {
        app.metrics.queue_depth.set(writer.queue_depth() as i64);
    }
    if let Some(journal) = &app.journal {
        app.metrics.rejections_dropped.set(journal.dropped() as i64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "The OpenAPI document")))]
pub async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

/// The throughput baseline of `make bench`: the body back, untouched.
#[cfg(feature = "bench")]
pub async fn echo(body: axum::body::Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body)
}
