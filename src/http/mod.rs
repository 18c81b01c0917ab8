//! The HTTP API of `shared/API.md`: axum routes, request and response types,
//! and the error type. The only JSON-aware code besides export. It submits
//! commands to the writer, reads the published state through the writer's
//! handle, and reads history through `forensics`; it never opens the log's
//! files itself and never changes the core's state.

pub mod auth;
mod calls;
mod clinics;
mod communities;
pub mod error;
pub mod extract;
pub(crate) mod forensics;
mod holds;
pub mod layers;
pub mod openapi;
pub mod ops;
mod phones;
pub mod server;
pub mod ui;
pub mod views;
mod waitlist;

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

use crate::forensics::follower::Indexes;
use crate::metrics::Metrics;
use crate::rejections::JournalHandle;

use crate::writer::{Clock, WriterHandle};
use auth::Auth;
use error::ApiError;
use openapi::Contract;

pub struct AppState {
    /// Set once the projections are rebuilt; until then tenant routes answer 503.
    writer: OnceLock<WriterHandle>,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    /// The ledger's directory, read by time-travel queries.
    pub ledger_dir: Option<PathBuf>,
    /// The writer's clock, for reads that depend on time ("older than", "within an hour").
    pub clock: Arc<dyn Clock>,
    /// The rules the writer decides with, for the audit.
    pub rules: crate::core::Rules,
    /// The rejection journal, read by `GET /rejections`.
    pub journal: Option<JournalHandle>,
    /// The read side's indexes (clinic days for time travel, the live audit).
    pub indexes: Option<Arc<Indexes>>,
    /// Reads that scan the log (`/events`, `/rejections`, `/audit`, `as_of`)
    /// hold a permit while they run: at most `scans_max` at once, the rest get 503 `busy`.
    pub scans: Arc<tokio::sync::Semaphore>,
    /// Live streams hold a permit while open: at most `streams_max`, the rest get 503 `too_many_streams`.
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Set when the ledger breaks its invariants: no writer, commands refused,
    /// forensics served up to this last position, for the reason given.
    pub forensic_only: OnceLock<(u64, String)>,
    /// Set to true when the server starts shutting down: live streams end.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

pub type Shared = Arc<AppState>;

/// The read side's limits (`[limits]` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Log-scanning reads running at once.
    pub scans_max: usize,
    /// Live event streams open at once.
    pub streams_max: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits { scans_max: 4, streams_max: 256 }
    }
}

impl AppState {
    pub fn new(auth: Auth, metrics: Arc<Metrics>, ledger_dir: Option<PathBuf>, clock: Arc<dyn Clock>) -> AppState {
        AppState {
            writer: OnceLock::new(),
            auth,
            metrics,
            ledger_dir,
            clock,
            rules: Default::default(),
            journal: None,
            indexes: None,
            scans: Arc::new(tokio::sync::Semaphore::new(ReadLimits::default().scans_max)),
            streams: Arc::new(tokio::sync::Semaphore::new(ReadLimits::default().streams_max)),
            forensic_only: OnceLock::new(),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    pub fn with_read_limits(mut self, limits: ReadLimits) -> AppState {
        self.scans = Arc::new(tokio::sync::Semaphore::new(limits.scans_max));
        self.streams = Arc::new(tokio::sync::Semaphore::new(limits.streams_max));
        self
    }

    /// A permit to scan the log, or 503 `busy` when `scans_max` reads already run.
    pub fn scan_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.scans.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many reads of the ledger's history are running; retry shortly")
                .retry_after(1)
        })
    }

    /// A permit to hold a live stream open, or 503 `too_many_streams`.
    pub fn stream_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_streams", "the server holds as many live streams as it allows")
                .retry_after(5)
        })
    }

    /// Marks the server ready: commands go to `writer` from now on.
    pub fn set_writer(&self, writer: WriterHandle) {
        assert!(self.writer.set(writer).is_ok(), "the writer is set once");
    }

    pub fn writer(&self) -> Result<&WriterHandle, ApiError> {
        if let Some((_, reason)) = self.forensic_only.get() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{reason}; only forensics are served (GET /v1/{{tenant}}/audit)"),
            ));
        }
        self.writer.get().ok_or_else(|| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the ledger is still rebuilding its projections").retry_after(1)
        })
    }

    /// The last durable position forensics may read: the writer's, or in
    /// forensic-only mode the last record on disk.
    pub fn durable_position(&self) -> Result<u64, ApiError> {
        match self.forensic_only.get() {
            Some((last, _)) => Ok(*last),
            None => Ok(self.writer()?.read(|state| state.position)),
        }
    }

    /// Follows the durable position; in forensic-only mode it never moves and
    /// its sender is gone, so a live stream ends once it has caught up.
    pub fn durable_watch(&self) -> Result<tokio::sync::watch::Receiver<u64>, ApiError> {
        match self.forensic_only.get() {
            Some((last, _)) => Ok(tokio::sync::watch::channel(*last).1),
            None => Ok(self.writer()?.durable()),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "booking-ledger", version = "1", description = "The HTTP contract of shared/API.md. Errors are RFC 9457 problem documents with a machine-readable `code`. Any request may also be answered 408 request_timeout (with request_timeout_secs) when it does not arrive in full in time, or 431 request_header_fields_too_large when its headers exceed 16 KiB."),
    paths(
        clinics::put_clinic, clinics::get_clinic, clinics::put_schedule, clinics::create_booking, clinics::cancel_booking, clinics::reschedule_booking, clinics::check_in, clinics::no_show, clinics::get_booking, clinics::get_slots, clinics::stream_slots, clinics::slots_history,
        phones::claim, phones::complete, phones::fail, phones::release, phones::get,
        calls::start, calls::outcome, calls::list, calls::list_campaigns, calls::get_campaign, calls::resume, calls::block,
        communities::create, communities::get,
        holds::create, holds::confirm, holds::release, holds::get,
        waitlist::join, waitlist::list, waitlist::withdraw,
        forensics::events, forensics::stream, forensics::rejections, forensics::audit,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    modifiers(&BearerAuth, &Contract)
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
    let metrics = state.metrics.clone();
    let tenant = Router::new()
        .route("/clinics/{clinic}", put(clinics::put_clinic).get(clinics::get_clinic))
        .route("/clinics/{clinic}/doctors/{doctor}/schedule", put(clinics::put_schedule))
        .route("/bookings", post(clinics::create_booking))
        .route("/bookings/{booking_id}", get(clinics::get_booking))
        .route("/bookings/{booking_id}/cancel", post(clinics::cancel_booking))
        .route("/bookings/{booking_id}/reschedule", post(clinics::reschedule_booking))
        .route("/bookings/{booking_id}/check-in", post(clinics::check_in))
        .route("/bookings/{booking_id}/no-show", post(clinics::no_show))
        .route("/clinics/{clinic}/slots", get(clinics::get_slots))
        .route("/clinics/{clinic}/slots/stream", get(clinics::stream_slots))
        .route("/clinics/{clinic}/slots/history", get(clinics::slots_history))
        .route("/businesses/{business}/phone-number", get(phones::get))
        .route("/businesses/{business}/phone-number/claim", post(phones::claim))
        .route("/businesses/{business}/phone-number/complete", post(phones::complete))
        .route("/businesses/{business}/phone-number/fail", post(phones::fail))
        .route("/businesses/{business}/phone-number/release", post(phones::release))
        .route("/calls", post(calls::start).get(calls::list))
        .route("/calls/{call_id}/outcome", post(calls::outcome))
        .route("/campaigns", get(calls::list_campaigns))
        .route("/campaigns/{campaign}", get(calls::get_campaign))
        .route("/campaigns/{campaign}/resume", post(calls::resume))
        .route("/blocked-numbers", post(calls::block))
        .route("/communities", post(communities::create))
        .route("/communities/{slug}", get(communities::get))
        .route("/clinics/{clinic}/waitlist", post(waitlist::join).get(waitlist::list))
        .route("/waitlist/{entry_id}/withdraw", post(waitlist::withdraw))
        .route("/holds", post(holds::create))
        .route("/holds/{hold_id}", get(holds::get))
        .route("/holds/{hold_id}/confirm", post(holds::confirm))
        .route("/holds/{hold_id}/release", post(holds::release))
        .route("/events", get(forensics::events))
        .route("/events/stream", get(forensics::stream))
        .route("/rejections", get(forensics::rejections))
        .route("/audit", get(forensics::audit));
    let router = Router::new()
        .nest("/v1/{tenant}", tenant)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .merge(ui::routes());
    #[cfg(feature = "bench")]
    let router = router.route("/bench/echo", post(ops::echo));
    let router = router
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::BODY_BYTES_MAX))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::custom(panic_response)),
        )
        .with_state(state);
    layers::count(router, metrics)
}
