//! The HTTP API of `shared/API.md`: axum routes, request and response types,
//! and the error type. The only JSON-aware code besides export. It reads the
//! published state and submits commands to the writer; it never touches the log
//! or the core's state directly.

pub mod auth;
mod calls;
mod clinics;
mod communities;
pub mod error;
pub mod extract;
mod ops;
mod phones;
pub mod views;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::metrics::Metrics;
use crate::writer::{Clock, WriterHandle};
use auth::Auth;
use error::ApiError;

pub struct AppState {
    /// Set once the projections are rebuilt; until then tenant routes answer 503.
    writer: OnceLock<WriterHandle>,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    /// The ledger's directory, read by time-travel queries.
    pub ledger_dir: Option<PathBuf>,
    /// The writer's clock, for reads that depend on time ("older than", "within an hour").
    pub clock: Arc<dyn Clock>,
}

pub type Shared = Arc<AppState>;

impl AppState {
    pub fn new(auth: Auth, metrics: Arc<Metrics>, ledger_dir: Option<PathBuf>, clock: Arc<dyn Clock>) -> AppState {
        AppState { writer: OnceLock::new(), auth, metrics, ledger_dir, clock }
    }

    /// Marks the server ready: commands go to `writer` from now on.
    pub fn set_writer(&self, writer: WriterHandle) {
        assert!(self.writer.set(writer).is_ok(), "the writer is set once");
    }

    pub fn writer(&self) -> Result<&WriterHandle, ApiError> {
        self.writer.get().ok_or_else(|| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the ledger is still rebuilding its projections").retry_after(1)
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "booking-ledger", version = "1", description = "The HTTP contract of shared/API.md. Errors are RFC 9457 problem documents with a machine-readable `code`."),
    paths(
        clinics::put_schedule, clinics::create_booking, clinics::cancel_booking, clinics::get_booking, clinics::get_slots,
        phones::claim, phones::complete, phones::fail, phones::release, phones::get,
        calls::start, calls::outcome, calls::list, calls::get_campaign, calls::resume, calls::block,
        communities::create, communities::get,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "the route does not take this method")
}

fn panic_response(_: Box<dyn std::any::Any + Send>) -> Response {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "an internal error occurred").into_response()
}

/// The router with every route and layer; tests drive it on a real port.
pub fn app(state: Shared) -> Router {
    let tenant = Router::new()
        .route("/clinics/{clinic}/doctors/{doctor}/schedule", put(clinics::put_schedule))
        .route("/bookings", post(clinics::create_booking))
        .route("/bookings/{booking_id}", get(clinics::get_booking))
        .route("/bookings/{booking_id}/cancel", post(clinics::cancel_booking))
        .route("/clinics/{clinic}/slots", get(clinics::get_slots))
        .route("/businesses/{business}/phone-number", get(phones::get))
        .route("/businesses/{business}/phone-number/claim", post(phones::claim))
        .route("/businesses/{business}/phone-number/complete", post(phones::complete))
        .route("/businesses/{business}/phone-number/fail", post(phones::fail))
        .route("/businesses/{business}/phone-number/release", post(phones::release))
        .route("/calls", post(calls::start).get(calls::list))
        .route("/calls/{call_id}/outcome", post(calls::outcome))
        .route("/campaigns/{campaign}", get(calls::get_campaign))
        .route("/campaigns/{campaign}/resume", post(calls::resume))
        .route("/blocked-numbers", post(calls::block))
        .route("/communities", post(communities::create))
        .route("/communities/{slug}", get(communities::get));
    let router = Router::new()
        .nest("/v1/{tenant}", tenant)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi));
    #[cfg(feature = "bench")]
    let router = router.route("/bench/echo", post(ops::echo));
    router
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::BODY_BYTES_MAX))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::custom(panic_response)),
        )
        .with_state(state)
}
