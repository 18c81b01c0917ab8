//! Forensics (admin tokens only): the tenant's events, the live event stream,
//! the refused commands, the audit. Everything here reads the log on disk; a
//! slow reader costs its own disk reads, never the writer's time or memory.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use super::auth::Role;
use super::error::ApiError;
use super::extract::{QueryParams, TenantCall};
use super::views::Problem;
use crate::forensics;
use crate::log::{self, Tail, codec};
use crate::writer::journal;

/// Items per page, at most.
pub const PAGE_LEN_MAX: u64 = 1000;
pub const PAGE_LEN_DEFAULT: u64 = 100;
/// Records read per page, at most, however few belong to the tenant: `next`
/// then says where to go on.
pub const PAGE_SCAN_MAX: u64 = 100_000;
/// Records read per disk visit while streaming.
const STREAM_CHUNK_LEN: usize = 256;
/// Events waiting to be sent to one stream's client, at most.
const STREAM_BUFFER_LEN: usize = 64;

fn admin(call: &TenantCall) -> Result<(), ApiError> {
    if call.token.role != Role::Admin {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "forensics need an admin token"));
    }
    Ok(())
}

fn storage(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_failure", error.to_string())
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

/// Maps a record (position, payload) to the item a page lists, if it belongs there.
type Keep<'a> = dyn Fn(u64, &[u8]) -> Result<Option<Value>, ApiError> + 'a;

/// Reads one page of `dir` from `from` through `last`: the items `keep` maps to
/// something, at most `limit` of them, scanning at most `PAGE_SCAN_MAX` records.
/// Returns the items and the `from` of the next page.
fn page(dir: &std::path::Path, from: u64, last: u64, limit: u64, keep: &Keep) -> Result<(Vec<Value>, u64), ApiError> {
    let mut tail = Tail::new(dir, from);
    let mut items = Vec::new();
    let mut next = from;
    let mut failure = None;
    while (items.len() as u64) < limit && tail.next_position() <= last && tail.next_position() - from < PAGE_SCAN_MAX {
        tail.read(last, 1024, &mut |position, _, payload| {
            if failure.is_some() || items.len() as u64 >= limit {
                return;
            }
            match keep(position, payload) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err(error) => failure = Some(error),
            }
            next = position + 1;
        })
        .map_err(storage)?;
        if let Some(failure) = failure {
            return Err(failure);
        }
    }
    Ok((items, next.max(from)))
}

/// The tenant's events in order, each with its provenance.
#[utoipa::path(
    get, path = "/v1/{tenant}/events", tag = "forensics",
    params(("tenant" = String, Path), PageQuery),
    responses(
        (status = 200, description = "`{\"events\": [{\"position\", \"recorded_at\", \"type\", \"data\", \"actor\", \"correlation_id\"?, \"idempotency_key\"?}], \"next\"}`"),
        (status = 403, description = "forbidden: not an admin token", body = Problem),
        (status = 400, description = "invalid_request", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn events(call: TenantCall, query: QueryParams<PageQuery>) -> Result<Json<Value>, ApiError> {
    admin(&call)?;
    let QueryParams(query) = query;
    let (from, limit) = (query.from.unwrap_or(1).max(1), query.limit()?);
    let last = call.app().durable_position()?;
    let dir = call.app().ledger_dir.clone().ok_or_else(|| storage("this server keeps no log on disk"))?;
    let tenant = call.tenant.clone();
    let (events, next) = tokio::task::spawn_blocking(move || {
        page(&dir, from, last, limit, &|position, payload| {
            let event = codec::decode_event(payload).map_err(|e| storage(format!("position {position}: {e}")))?;
            Ok((event.tenant == tenant).then(|| forensics::json::event(&event, false)))
        })
    })
    .await
    .expect("the events read panicked")?;
    Ok(Json(json!({ "events": events, "next": next })))
}

/// The refused commands of the tenant, from the rejection journal.
#[utoipa::path(
    get, path = "/v1/{tenant}/rejections", tag = "forensics",
    params(("tenant" = String, Path), PageQuery),
    responses(
        (status = 200, description = "`{\"rejections\": [{\"seq\", \"recorded_at\", \"code\", \"command\", \"actor\", \"conflicts_with\"?}], \"next\"}`"),
        (status = 403, description = "forbidden: not an admin token", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn rejections(call: TenantCall, query: QueryParams<PageQuery>) -> Result<Json<Value>, ApiError> {
    admin(&call)?;
    let QueryParams(query) = query;
    let limit = query.limit()?;
    let journal = call.app().journal.clone().ok_or_else(|| storage("this server keeps no rejection journal"))?;
    let tenant = call.tenant.clone();
    let (rejections, next) = tokio::task::spawn_blocking(move || {
        // Rotated-away records are gone: start at the oldest one kept.
        let oldest = log::first_position(&journal.dir).map_err(storage)?.unwrap_or(1);
        let from = query.from.unwrap_or(1).max(oldest);
        page(&journal.dir, from, journal.synced(), limit, &|seq, payload| {
            let rejected = journal::decode(payload).map_err(|e| storage(format!("journal record {seq}: {e}")))?;
            Ok((rejected.tenant == tenant).then(|| forensics::json::rejection(seq, &rejected)))
        })
    })
    .await
    .expect("the journal read panicked")?;
    Ok(Json(json!({ "rejections": rejections, "next": next })))
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
    get, path = "/v1/{tenant}/events/stream", tag = "forensics",
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
    let resume = headers.get("last-event-id").map(|id| id.to_str().ok().and_then(|id| id.trim().parse::<u64>().ok()));
    let from = match resume {
        Some(Some(id)) => id + 1,
        Some(None) => return Err(ApiError::field("Last-Event-ID", "must be an event position")),
        None => query.from.unwrap_or(1).max(1),
    };
    let mut durable = call.app().durable_watch()?;
    let dir = call.app().ledger_dir.clone().ok_or_else(|| storage("this server keeps no log on disk"))?;
    let mut stopping = call.app().stopping.subscribe();
    let tenant = call.tenant.clone();
    let (sender, receiver) = tokio::sync::mpsc::channel::<SseEvent>(STREAM_BUFFER_LEN);
    tokio::spawn(async move {
        let mut tail = Some(Tail::new(&dir, from));
        loop {
            let last = *durable.borrow_and_update();
            let mut follower = tail.take().expect("the tail is put back after every read");
            if follower.next_position() <= last {
                let tenant = tenant.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let mut events = Vec::new();
                    let result = follower.read(last, STREAM_CHUNK_LEN, &mut |_, _, payload| {
                        if let Ok(event) = codec::decode_event(payload)
                            && event.tenant == tenant
                        {
                            events.push(event);
                        }
                    });
                    (follower, events, result)
                })
                .await;
                let Ok((follower, events, result)) = read else { return };
                if let Err(error) = result {
                    tracing::error!(%error, "the event stream could not read the log");
                    return;
                }
                tail = Some(follower);
                for event in events {
                    let data = forensics::json::event(&event, false).to_string();
                    let message = SseEvent::default().id(event.position.to_string()).event(event.kind.name()).data(data);
                    // A slow client makes this wait, and only this task.
                    if sender.send(message).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            tail = Some(follower);
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                _ = stopping.changed() => return,
                () = sender.closed() => return,
            }
        }
    });
    let events =
        futures_util::stream::unfold(receiver, |mut receiver| async move { receiver.recv().await.map(|event| (Ok(event), receiver)) });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The ledger's invariants re-derived from the tenant's raw events, by code
/// written apart from the projections.
#[utoipa::path(
    get, path = "/v1/{tenant}/audit", tag = "forensics",
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
    let dir = call.app().ledger_dir.clone().ok_or_else(|| storage("this server keeps no log on disk"))?;
    let (tenant, rules) = (call.tenant.clone(), call.app().rules);
    let report = tokio::task::spawn_blocking(move || forensics::audit::audit_dir(&dir, last, rules, Some(&tenant), &mut |_| {}))
        .await
        .expect("the audit panicked")
        .map_err(storage)?;
    Ok(Json(serde_json::to_value(report).expect("a report serializes")))
}
