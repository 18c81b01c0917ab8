//! Clinics and bookings: schedules, bookings, cancellations, the slot projection.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, NaiveTime, Timelike, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{JsonBody, PathParams, QueryParams, TenantCall};
use super::views::{BookingView, DoctorSlotsView, Problem, ScheduleView, SlotState, SlotView, SlotsView, format_minute};
use crate::core::{Action, BookingDetails, BookingKind, Schedule};
use crate::forensics::clinics::ClinicDay;

pub const NAME_CHARS_MAX: usize = 128;
pub const PATIENT_CHARS_MAX: usize = 200;
pub const REF_CHARS_MAX: usize = 255;
pub const REASON_CHARS_MAX: usize = 1000;
pub const SLOTS_PER_DAY_MAX: u32 = 1000;
pub const SLOT_MINUTES_MAX: u32 = 480;
/// How long a time-travel query waits for the clinic index to reach its position.
pub const AS_OF_INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A text field: 1..=`max` characters, none of them control characters.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if chars == 0 || chars > max {
        return Err(ApiError::field(field, format!("must be 1 to {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::field(field, "must not contain control characters"));
    }
    if value.chars().any(is_bidi_control) {
        return Err(ApiError::field(field, "must not contain bidirectional overrides or isolates (U+202A-U+202E, U+2066-U+2069)"));
    }
    if value.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err(ApiError::field(field, "must contain a visible character"));
    }
    Ok(())
}

/// Characters that reorder the text around them: a name holding one can show
/// as something else (a right-to-left override turns "Asha" into "ahsA").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that take no space of their own: a name made only of them reads as empty.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

fn check_optional_text(field: &str, value: &Option<String>, max: usize) -> Result<(), ApiError> {
    value.as_deref().map_or(Ok(()), |v| check_text(field, v, max))
}

/// `YYYY-MM-DD`, strictly.
pub fn parse_date(field: &str, value: &str) -> Result<NaiveDate, ApiError> {
    // Four digits of year, 0001 to 9999: chrono alone takes "0000", "-001" and "+001".
    let four_digit_year = value.len() == 10 && value.as_bytes()[..4].iter().all(u8::is_ascii_digit) && &value[..4] != "0000";
    let date = four_digit_year.then(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()).flatten();
    date.ok_or_else(|| ApiError::field(field, format!("{value:?} is not a date (YYYY-MM-DD)")))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// 1 to 1000.
    pub slots_per_day: u32,
    /// `HH:MM`, the start of slot 0.
    #[schema(example = "09:00")]
    pub first_slot: Option<String>,
    /// 1 to 480.
    pub slot_minutes: Option<u32>,
}

impl ScheduleRequest {
    fn validate(&self) -> Result<Schedule, ApiError> {
        if !(1..=SLOTS_PER_DAY_MAX).contains(&self.slots_per_day) {
            return Err(ApiError::field("slots_per_day", format!("must be 1 to {SLOTS_PER_DAY_MAX}")));
        }
        if let Some(minutes) = self.slot_minutes
            && !(1..=SLOT_MINUTES_MAX).contains(&minutes)
        {
            return Err(ApiError::field("slot_minutes", format!("must be 1 to {SLOT_MINUTES_MAX}")));
        }
        let first_slot_minute = match &self.first_slot {
            None => None,
            Some(text) => {
                let time = (text.len() == 5).then(|| NaiveTime::parse_from_str(text, "%H:%M").ok()).flatten();
                let time = time.ok_or_else(|| ApiError::field("first_slot", format!("{text:?} is not a time (HH:MM)")))?;
                Some(time.hour() * 60 + time.minute())
            }
        };
        Ok(Schedule { slots_per_day: self.slots_per_day, first_slot_minute, slot_minutes: self.slot_minutes })
    }
}

/// Sets or changes a doctor's daily schedule.
#[utoipa::path(
    put, path = "/v1/{tenant}/clinics/{clinic}/doctors/{doctor}/schedule", tag = "clinics",
    params(("tenant" = String, Path), ("clinic" = String, Path), ("doctor" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = ScheduleRequest,
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 400, description = "invalid_request, invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 409, description = "schedule_conflict: an active booking holds a slot beyond the new schedule", body = Problem),
        (status = 413, description = "payload_too_large", body = Problem),
        (status = 422, description = "too_many_doctors (with limit): a new doctor for a clinic at its limit, idempotency_key_reused", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable, unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn put_schedule(
    call: TenantCall,
    path: PathParams<(String, String, String)>,
    body: JsonBody<ScheduleRequest>,
) -> Result<Response, ApiError> {
    let PathParams((_, clinic, doctor)) = path;
    check_text("clinic", &clinic, NAME_CHARS_MAX)?;
    check_text("doctor", &doctor, NAME_CHARS_MAX)?;
    let schedule = body.value.validate()?;
    call.execute(Action::SetSchedule { clinic: clinic.into(), doctor: doctor.into(), schedule }, &body.raw).await
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KindRequest {
    #[default]
    Advance,
    WalkIn,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingRequest {
    pub clinic: String,
    pub doctor: String,
    #[schema(value_type = String, format = Date, example = "2026-03-02")]
    pub date: String,
    pub slot: u32,
    /// 1 to 200 characters.
    pub patient: String,
    #[serde(default)]
    pub kind: KindRequest,
    /// An external calendar's booking id; binds to one booking in the tenant, forever.
    pub external_ref: Option<String>,
    pub correlation_id: Option<String>,
    /// When the external calendar created the booking; older than the freshness window is refused.
    pub external_created_at: Option<DateTime<Utc>>,
}

impl BookingRequest {
    fn validate(self) -> Result<BookingDetails, ApiError> {
        check_text("clinic", &self.clinic, NAME_CHARS_MAX)?;
        check_text("doctor", &self.doctor, NAME_CHARS_MAX)?;
        let date = parse_date("date", &self.date)?;
        check_text("patient", &self.patient, PATIENT_CHARS_MAX)?;
        check_optional_text("external_ref", &self.external_ref, REF_CHARS_MAX)?;
        check_optional_text("correlation_id", &self.correlation_id, REF_CHARS_MAX)?;
        Ok(BookingDetails {
            booking_id: Uuid::now_v7(),
            clinic: self.clinic.into(),
            doctor: self.doctor.into(),
            date,
            slot: self.slot,
            patient: self.patient.into(),
            kind: match self.kind {
                KindRequest::Advance => BookingKind::Advance,
                KindRequest::WalkIn => BookingKind::WalkIn,
            },
            external_ref: self.external_ref.map(Into::into),
            correlation_id: self.correlation_id.map(Into::into),
            external_created_at: self.external_created_at,
        })
    }
}

/// Books a slot and allocates its token.
#[utoipa::path(
    post, path = "/v1/{tenant}/bookings", tag = "clinics",
    params(("tenant" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = BookingRequest,
    responses(
        (status = 201, description = "Booked", body = BookingView),
        (status = 200, description = "The booking already bound to this external_ref and correlation_id", body = BookingView),
        (status = 400, description = "invalid_request, invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 404, description = "unknown_doctor: no schedule", body = Problem),
        (status = 409, description = "slot_taken (with booking_id), external_ref_bound (with booking_id, correlation_id)", body = Problem),
        (status = 413, description = "payload_too_large", body = Problem),
        (status = 422, description = "slot_out_of_range, stale_external_booking (with age_secs), external_created_in_future (with ahead_secs), idempotency_key_reused", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable, unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn create_booking(call: TenantCall, body: JsonBody<BookingRequest>) -> Result<Response, ApiError> {
    let raw = body.raw;
    call.execute(Action::Book(body.value.validate()?), &raw).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub reason: Option<String>,
}

fn parse_booking_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(text).map_err(|_| ApiError::field("booking_id", format!("{text:?} is not a UUID")))
}

/// Cancels a booking; its slot becomes free, its token is not reused.
#[utoipa::path(
    post, path = "/v1/{tenant}/bookings/{booking_id}/cancel", tag = "clinics",
    params(("tenant" = String, Path), ("booking_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = CancelRequest,
    responses(
        (status = 200, description = "The cancelled booking (also when it was cancelled before)", body = BookingView),
        (status = 400, description = "invalid_request, invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 404, description = "not_found", body = Problem),
        (status = 422, description = "idempotency_key_reused", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable, unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_booking(
    call: TenantCall,
    path: PathParams<(String, String)>,
    body: JsonBody<CancelRequest>,
) -> Result<Response, ApiError> {
    let PathParams((_, booking_id)) = path;
    let booking_id = parse_booking_id(&booking_id)?;
    check_optional_text("reason", &body.value.reason, REASON_CHARS_MAX)?;
    let reason = body.value.reason.as_deref().map(Into::into);
    call.execute(Action::Cancel { booking_id, reason }, &body.raw).await
}

/// A booking as it stands.
#[utoipa::path(
    get, path = "/v1/{tenant}/bookings/{booking_id}", tag = "clinics",
    params(("tenant" = String, Path), ("booking_id" = Uuid, Path)),
    responses(
        (status = 200, description = "The booking", body = BookingView),
        (status = 400, description = "invalid_request", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 404, description = "not_found", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn get_booking(call: TenantCall, path: PathParams<(String, String)>) -> Result<Json<BookingView>, ApiError> {
    let PathParams((_, booking_id)) = path;
    let booking_id = parse_booking_id(&booking_id)?;
    let view = call.writer()?.read(|state| state.booking(&call.tenant, &booking_id).map(|b| BookingView::from(&**b)));
    view.map(Json).ok_or_else(|| ApiError::not_found(format!("no booking {booking_id}")).with("booking_id", booking_id.to_string()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SlotsQuery {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Only this doctor.
    pub doctor: Option<String>,
    /// The projection as it stood right after this position.
    pub as_of: Option<u64>,
}

fn slots_view(clinic: &str, date: NaiveDate, day: &ClinicDay) -> SlotsView {
    let doctors = day
        .doctors
        .iter()
        .map(|d| {
            let slots = (0..d.schedule.slots_per_day)
                .map(|slot| {
                    let booked = d.booked.get(&slot);
                    SlotView {
                        slot,
                        time: d.schedule.slot_minute(slot).map(format_minute),
                        state: if booked.is_some() { SlotState::Booked } else { SlotState::Free },
                        booking_id: booked.map(|(id, _)| *id),
                        token: booked.map(|(_, token)| token.clone()),
                    }
                })
                .collect();
            DoctorSlotsView { doctor: d.doctor.to_string(), slots }
        })
        .collect();
    SlotsView { clinic: clinic.to_owned(), date, as_of: day.position, doctors }
}

/// A clinic's slots on one date: the current projection, or with `as_of` the
/// projection as it stood right after that position.
#[utoipa::path(
    get, path = "/v1/{tenant}/clinics/{clinic}/slots", tag = "clinics",
    params(("tenant" = String, Path), ("clinic" = String, Path), SlotsQuery),
    responses(
        (status = 200, description = "The slots of every scheduled doctor of the clinic", body = SlotsView),
        (status = 400, description = "invalid_request", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn get_slots(
    call: TenantCall,
    path: PathParams<(String, String)>,
    query: QueryParams<SlotsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let (PathParams((_, clinic)), QueryParams(query)) = (path, query);
    let date = parse_date("date", &query.date)?;
    let writer = call.writer()?;
    // The read lock is held only to copy the day out (bounded by doctors ×
    // slots); the answer is rendered without it.
    let current = writer.read(|state| ClinicDay::from_state(state, &call.tenant, &clinic, date, query.doctor.as_deref()));
    let position = current.position;
    let Some(as_of) = query.as_of.filter(|&as_of| as_of != position) else {
        return Ok(Json(slots_view(&clinic, date, &current)));
    };
    if as_of > position {
        return Err(ApiError::field("as_of", format!("the ledger's last position is {position}")));
    }
    let indexes = call.app().indexes.clone().ok_or_else(|| ApiError::field("as_of", "this server keeps no clinic index"))?;
    let permit = call.app().scan_permit()?;
    match tokio::time::timeout(AS_OF_INDEX_WAIT, indexes.wait_for(as_of)).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the clinic index is still catching up with the ledger",
            )
            .retry_after(1));
        }
        Ok(Err(error)) => {
            let position = error.position();
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_failure", error.to_string()).with("position", position));
        }
        Ok(Ok(())) => {}
    }
    let (tenant, clinic_name, doctor) = (call.tenant.clone(), clinic.clone(), query.doctor.clone());
    let day = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        indexes.clinic_day(&tenant, &clinic_name, date, doctor.as_deref(), as_of)
    })
    .await
    .expect("the time-travel read panicked")
    .map_err(|error| {
        tracing::error!(%error, as_of, "reading the ledger for a time-travel query failed");
        let position = error.position();
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_failure", error.to_string()).with("position", position)
    })?;
    Ok(Json(slots_view(&clinic, date, &day)))
}
