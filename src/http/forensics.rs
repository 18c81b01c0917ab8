//! Forensics (admin tokens only): the tenant's events, the live event stream,
//! the refused commands, the audit. The reading is `forensics`'s; this module
//! authenticates, parses the query, takes a permit (`scans_max`,
//! `streams_max`) and renders JSON. A slow reader costs its own disk reads and
//! its own bounded buffer, never the writer's time or memory.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use utoipa::IntoParams;

use super::auth::Role;
use super::error::ApiError;
use super::extract::{QueryParams, TenantCall};
use super::views::Problem;
use crate::core::Event;
use crate::forensics::{feed, feed::EventFilter, json};
use crate::log::events::ReadError;

/// Items per page, at most.
pub const PAGE_LEN_MAX: u64 = 1000;
pub const PAGE_LEN_DEFAULT: u64 = 100;
/// Events waiting to be sent to one stream's client, at most.
pub(super) const STREAM_BUFFER_LEN: usize = 64;
/// How long `/audit` waits for the live audit to reach the durable position.
const AUDIT_WAIT: Duration = Duration::from_secs(5);

fn admin(call: &TenantCall) -> Result<(), ApiError> {
    if call.token.role != Role::Admin {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "forensics need an admin token"));
    }
    Ok(())
}

pub(super) fn storage(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_failure", error.to_string())
}

/// A read of the log that failed: the record it could not read, named.
fn unreadable(error: ReadError) -> ApiError {
    let position = error.position();
    storage(error).with("position", position)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The first position (or sequence) to list, inclusive (default 1).
    pub from: Option<u64>,
    /// 1 to 1000 (default 100).
    pub limit: Option<u64>,
}

impl PageQuery {
    fn limit(&self) -> Result<u64, ApiError> {
        let limit = self.limit.unwrap_or(PAGE_LEN_DEFAULT);
        if !(1..=PAGE_LEN_MAX).contains(&limit) {
            return Err(ApiError::field("limit", format!("must be 1 to {PAGE_LEN_MAX}")));
        }
        Ok(limit)
    }
}

/// The tenant's events in order, each with its provenance.
#[utoipa::path(
    get, path = "/v1/{tenant}/events", operation_id = "listEvents", tag = "forensics",
    params(("tenant" = String, Path), PageQuery),
    responses(
        (status = 200, description = "`{\"events\": [{\"position\", \"recorded_at\", \"type\", \"data\", \"actor\", \"correlation_id\"?, \"idempotency_key\"?}], \"next\"}`"),
        (status = 403, description = "forbidden: not an admin token", body = Problem),
        (status = 400, description = "invalid_request", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn events(call: TenantCall, query: QueryParams<PageQuery>) -> Result<impl IntoResponse, ApiError> {
    admin(&call)?;
    let QueryParams(query) = query;
    let (from, limit) = (query.from.unwrap_or(1).max(1), query.limit()?);
    let last = call.app().durable_position()?;
    let dir = call.app().ledger_dir.clone().ok_or_else(|| storage("this server keeps no log on disk"))?;
    let permit = call.app().scan_permit()?;
    let tenant = call.tenant.clone();
    let page = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        feed::events_page(&dir, &mut EventFilter::tenant(&tenant), from, last, limit as usize)
    })
    .await
    .expect("the events read panicked")
    .map_err(unreadable)?;
    Ok(json_body(json::events_page(&page.items, page.next.max(from))))
}

/// A body `forensics::json` rendered, as `application/json`.
fn json_body(body: Vec<u8>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// The refused commands of the tenant, from the rejection journal.
#[utoipa::path(
    get, path = "/v1/{tenant}/rejections", operation_id = "listRejections", tag = "forensics",
    params(("tenant" = String, Path), PageQuery),
    responses(
        (status = 200, description = "`{\"rejections\": [{\"seq\", \"recorded_at\", \"code\", \"command\", \"actor\", \"conflicts_with\"?}], \"next\"}`"),
        (status = 403, description = "forbidden: not an admin token", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn rejections(call: TenantCall, query: QueryParams<PageQuery>) -> Result<impl IntoResponse, ApiError> {
    admin(&call)?;
    let QueryParams(query) = query;
    let limit = query.limit()?;
    let journal = call.app().journal.clone().ok_or_else(|| storage("this server keeps no rejection journal"))?;
    let permit = call.app().scan_permit()?;
    let tenant = call.tenant.clone();
    let from = query.from.unwrap_or(1).max(1);
    let page = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        feed::rejections_page(&journal.dir, &tenant, from, journal.written(), limit as usize)
    })
    .await
    .expect("the journal read panicked")
    .map_err(unreadable)?;
    Ok(json_body(json::rejections_page(&page.items, page.next)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The first position to send (default 1); a `Last-Event-ID` header resumes after that id instead.
    pub from: Option<u64>,
}

/// The tenant's events as Server-Sent Events: catching up from `from`, then live.
#[utoipa::path(
    get, path = "/v1/{tenant}/events/stream", operation_id = "streamEvents", tag = "forensics",
    params(("tenant" = String, Path), StreamQuery, ("Last-Event-ID" = Option<u64>, Header)),
    responses(
        (status = 200, description = "text/event-stream: `id:` the position, `event:` the type, `data:` the event as in GET /events", content_type = "text/event-stream"),
        (status = 403, description = "forbidden: not an admin token", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn stream(
    call: TenantCall,
    headers: HeaderMap,
    query: QueryParams<StreamQuery>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    admin(&call)?;
    let QueryParams(query) = query;
    let from = match last_event_id(&headers)? {
        Some(id) => id.checked_add(1).ok_or_else(|| ApiError::field("Last-Event-ID", "is beyond any position"))?,
        None => query.from.unwrap_or(1).max(1),
    };
    let durable = call.app().durable_watch()?;
    let dir = call.app().ledger_dir.clone().ok_or_else(|| storage("this server keeps no log on disk"))?;
    let permit = call.app().stream_permit()?;
    let stopping = call.app().stopping.subscribe();
    let events = feed::follow_events(dir, call.tenant.clone(), from, durable, stopping, STREAM_BUFFER_LEN);
    Ok(live(None, events, permit, (), |(), event| {
        let mut data = Vec::with_capacity(512);
        json::write_event(&mut data, &event, false);
        let data = String::from_utf8(data).expect("JSON text is UTF-8");
        Some(SseEvent::default().id(event.position.to_string()).event(event.kind.name()).data(data))
    }))
}

/// The position in a `Last-Event-ID` header (the last one a client saw), if any.
pub(super) fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get("last-event-id").map(|id| id.to_str().ok().and_then(|id| id.trim().parse::<u64>().ok())) {
        None => Ok(None),
        Some(Some(id)) => Ok(Some(id)),
        Some(None) => Err(ApiError::field("Last-Event-ID", "must be an event position")),
    }
}

/// A live Server-Sent Events response over `events` (a `feed::follow_events`
/// feed): `first` if given, then what `render` makes of each event, which may
/// be nothing (an event the client does not follow). The stream holds
/// `permit` (`streams_max`) as long as it is open; a record that cannot be
/// read ends it with an `error` message naming it, so a client never silently
/// misses an event.
pub(super) fn live<S: Send + 'static>(
    first: Option<SseEvent>,
    events: mpsc::Receiver<Result<Event, ReadError>>,
    permit: OwnedSemaphorePermit,
    state: S,
    render: impl FnMut(&mut S, Event) -> Option<SseEvent> + Send + 'static,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    // The permit lives as long as the stream: dropping the stream frees it.
    let messages = futures_util::stream::unfold(Some((first, events, permit, state, render)), |open| async move {
        let (mut first, mut events, permit, mut state, mut render) = open?;
        if let Some(message) = first.take() {
            return Some((Ok(message), Some((None, events, permit, state, render))));
        }
        loop {
            match events.recv().await? {
                Ok(event) => {
                    if let Some(message) = render(&mut state, event) {
                        return Some((Ok(message), Some((None, events, permit, state, render))));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "a live stream could not read the log");
                    let data = json!({ "code": "storage_failure", "position": error.position(), "detail": error.to_string() }).to_string();
                    return Some((Ok(SseEvent::default().event("error").data(data)), None));
                }
            }
        }
    });
    Sse::new(messages).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The ledger's invariants re-derived from the tenant's raw events, by code
/// written apart from the projections.
#[utoipa::path(
    get, path = "/v1/{tenant}/audit", operation_id = "getAudit", tag = "forensics",
    params(("tenant" = String, Path)),
    responses(
        (status = 200, description = "`{\"checked_events\", \"violations\": [{\"rule\", \"detail\", \"positions\"}]}`; a clean ledger has `violations: []`"),
        (status = 403, description = "forbidden: not an admin token", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn audit(call: TenantCall) -> Result<Json<Value>, ApiError> {
    admin(&call)?;
    let last = call.app().durable_position()?;
    let indexes = call.app().indexes.clone().ok_or_else(|| storage("this server keeps no audit"))?;
    let _permit = call.app().scan_permit()?;
    match tokio::time::timeout(AUDIT_WAIT, indexes.wait_for(last)).await {
        Err(_) => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the audit is still catching up with the ledger")
                .retry_after(1));
        }
        Ok(Err(error)) => {
            let position = error.position();
            return Err(storage(error).with("position", position));
        }
        Ok(Ok(())) => {}
    }
    let report = indexes.audit(&call.tenant);
    Ok(Json(serde_json::to_value(report).expect("a report serializes")))
}
