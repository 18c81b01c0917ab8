//! Clinics and bookings: schedules, bookings, cancellations, the slot projection.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Role;
use super::error::ApiError;
use super::extract::{JsonBody, PathParams, QueryParams, TenantCall};
use super::views::{
    BookingView, ClinicView, DayChangeView, DoctorChangeView, DoctorSlotsView, Problem, ScheduleView, SlotState, SlotView, SlotsChangeView,
    SlotsHistoryView, SlotsView, format_minute, instants,
};
use crate::core::Text;
use crate::core::{Action, Attendance, BookingDetails, BookingKind, External, Move, Schedule, SlotTime, Tz};
use crate::forensics::clinics::{ClinicDay, DayChange, DoctorDay, LiveDay};
use crate::forensics::feed;
use crate::forensics::follower::Indexes;
use crate::log::events::ReadError;
use crate::validate::{
    Check, Invalid, PATIENT_CHARS_MAX, REASON_CHARS_MAX, REF_CHARS_MAX, SLOT_MINUTES_MAX, SLOTS_PER_DAY_MAX, check_count, check_name,
    check_optional_text, check_patient_id, check_text, parse_date, parse_minute_of_day, parse_uuid,
};

/// Changes of a day listed per page of its history, at most.
pub const HISTORY_LEN_MAX: usize = 1000;
/// How long a time-travel query waits for the clinic index to reach its position.
pub const AS_OF_INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// 1 to 1000.
    #[serde(deserialize_with = "super::extract::whole_u32")]
    pub slots_per_day: u32,
    /// `HH:MM`, the start of slot 0.
    #[schema(example = "09:00")]
    pub first_slot: Option<String>,
    /// 1 to 480.
    #[serde(default, deserialize_with = "super::extract::whole_u32_opt")]
    pub slot_minutes: Option<u32>,
}

impl Check for ScheduleRequest {
    type Checked = Schedule;

    fn check(self) -> Result<Schedule, Invalid> {
        check_count("slots_per_day", self.slots_per_day, SLOTS_PER_DAY_MAX)?;
        if let Some(minutes) = self.slot_minutes {
            check_count("slot_minutes", minutes, SLOT_MINUTES_MAX)?;
        }
        let first_slot_minute = self.first_slot.as_deref().map(|text| parse_minute_of_day("first_slot", text)).transpose()?;
        Ok(Schedule { slots_per_day: self.slots_per_day, first_slot_minute, slot_minutes: self.slot_minutes })
    }
}

/// Sets or changes a doctor's daily schedule.
#[utoipa::path(
    put, path = "/v1/{tenant}/clinics/{clinic}/doctors/{doctor}/schedule", operation_id = "putDoctorSchedule", tag = "clinics",
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
    check_name("clinic", &clinic)?;
    check_name("doctor", &doctor)?;
    let JsonBody { value, raw } = body;
    let schedule = value.check()?;
    call.execute(Action::SetSchedule { clinic: clinic.into(), doctor: doctor.into(), schedule }, &raw).await
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
    #[serde(deserialize_with = "super::extract::whole_u32")]
    pub slot: u32,
    /// 1 to 200 characters.
    pub patient: String,
    /// `[A-Za-z0-9._-]{1,64}`: the caller's id of the patient.
    pub patient_id: Option<String>,
    #[serde(default)]
    pub kind: KindRequest,
    /// An external calendar's booking id; binds to one booking in the tenant, forever.
    pub external_ref: Option<String>,
    pub correlation_id: Option<String>,
    /// When the external calendar created the booking; older than the freshness window is refused.
    pub external_created_at: Option<DateTime<Utc>>,
}

impl Check for BookingRequest {
    type Checked = Action;

    fn check(self) -> Result<Action, Invalid> {
        check_name("clinic", &self.clinic)?;
        check_name("doctor", &self.doctor)?;
        let date = parse_date("date", &self.date)?;
        check_text("patient", &self.patient, PATIENT_CHARS_MAX)?;
        check_optional_text("external_ref", self.external_ref.as_deref(), REF_CHARS_MAX)?;
        check_optional_text("correlation_id", self.correlation_id.as_deref(), REF_CHARS_MAX)?;
        if let Some(patient_id) = &self.patient_id {
            check_patient_id("patient_id", patient_id)?;
        }
        Ok(Action::Book(BookingDetails {
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
            external: External {
                external_ref: self.external_ref.map(Into::into),
                correlation_id: self.correlation_id.map(Into::into),
                external_created_at: self.external_created_at,
                hold_id: None,
                patient_id: self.patient_id.map(Into::into),
            }
            .boxed_if_any(),
        }))
    }
}

/// Books a slot and allocates its token.
#[utoipa::path(
    post, path = "/v1/{tenant}/bookings", operation_id = "createBooking", tag = "clinics",
    params(("tenant" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = BookingRequest,
    responses(
        (status = 201, description = "Booked", body = BookingView),
        (status = 200, description = "The booking already bound to this external_ref and correlation_id", body = BookingView),
        (status = 400, description = "invalid_request, invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 404, description = "unknown_doctor: no schedule", body = Problem),
        (status = 409, description = "slot_taken (with booking_id), external_ref_bound (with booking_id, correlation_id), day_closed (with date, closed_since)", body = Problem),
        (status = 413, description = "payload_too_large", body = Problem),
        (status = 422, description = "slot_out_of_range, stale_external_booking (with age_secs), external_created_in_future (with ahead_secs), idempotency_key_reused", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable, unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn create_booking(call: TenantCall, body: JsonBody<BookingRequest>) -> Result<Response, ApiError> {
    let JsonBody { value, raw } = body;
    call.execute(value.check()?, &raw).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub reason: Option<String>,
}

impl Check for CancelRequest {
    /// The reason.
    type Checked = Option<Text>;

    fn check(self) -> Result<Option<Text>, Invalid> {
        check_optional_text("reason", self.reason.as_deref(), REASON_CHARS_MAX)?;
        Ok(self.reason.map(Into::into))
    }
}

/// Cancels a booking; its slot becomes free, its token is not reused.
#[utoipa::path(
    post, path = "/v1/{tenant}/bookings/{booking_id}/cancel", operation_id = "cancelBooking", tag = "clinics",
    params(("tenant" = String, Path), ("booking_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = CancelRequest,
    responses(
        (status = 200, description = "The cancelled booking (also when it was cancelled before)", body = BookingView),
        (status = 400, description = "invalid_request, invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 404, description = "not_found", body = Problem),
        (status = 409, description = "day_closed (with date, closed_since)", body = Problem),
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
    let booking_id = parse_uuid("booking_id", &booking_id)?;
    let JsonBody { value, raw } = body;
    let reason = value.check()?;
    call.execute(Action::Cancel { booking_id, reason }, &raw).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClinicRequest {
    /// An IANA zone name.
    #[schema(example = "Asia/Kolkata")]
    pub time_zone: String,
}

impl Check for ClinicRequest {
    type Checked = Tz;

    fn check(self) -> Result<Tz, Invalid> {
        self.time_zone.parse().map_err(|_| Invalid::field("time_zone", format!("{:?} is not an IANA time zone name", self.time_zone)))
    }
}

/// Sets a clinic's time zone: its slots' instants on open and future days follow it.
#[utoipa::path(
    put, path = "/v1/{tenant}/clinics/{clinic}", operation_id = "putClinic", tag = "clinics",
    params(("tenant" = String, Path), ("clinic" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = ClinicRequest,
    responses(
        (status = 200, description = "The clinic's zone and the tzdata release computing it (the same zone again: nothing appended)", body = ClinicView),
        (status = 400, description = "invalid_request (not an IANA zone), invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 422, description = "idempotency_key_reused", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable, unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn put_clinic(call: TenantCall, path: PathParams<(String, String)>, body: JsonBody<ClinicRequest>) -> Result<Response, ApiError> {
    let PathParams((_, clinic)) = path;
    check_name("clinic", &clinic).map_err(ApiError::from)?;
    let JsonBody { value, raw } = body;
    let zone = value.check()?;
    call.execute(Action::SetClinicZone { clinic: clinic.into(), zone }, &raw).await
}

/// A clinic's time zone: its own, or `UTC`.
#[utoipa::path(
    get, path = "/v1/{tenant}/clinics/{clinic}", operation_id = "getClinic", tag = "clinics",
    params(("tenant" = String, Path), ("clinic" = String, Path)),
    responses(
        (status = 200, description = "The clinic", body = ClinicView),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 404, description = "not_found: no schedule and no zone", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn get_clinic(call: TenantCall, path: PathParams<(String, String)>) -> Result<Json<ClinicView>, ApiError> {
    let PathParams((_, clinic)) = path;
    let view = call.writer()?.read(|state| {
        // A clinic known only by its closed days (a waitlist's) has neither.
        let known =
            state.tenant(&call.tenant).and_then(|t| t.clinics.get(clinic.as_str())).filter(|c| c.zone.is_some() || !c.doctors.is_empty());
        known.map(|c| ClinicView::new(&clinic, c.zone.as_ref()))
    });
    view.map(Json).ok_or_else(|| ApiError::not_found(format!("no clinic {clinic:?}")).with("clinic", clinic))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    /// The booking's own date when absent.
    #[schema(value_type = Option<String>, format = Date, example = "2026-03-03")]
    pub date: Option<String>,
    #[serde(deserialize_with = "super::extract::whole_u32")]
    pub slot: u32,
    /// The booking's own doctor when absent; always of the same clinic.
    pub doctor: Option<String>,
    /// The version the caller last saw: another one is 409 `version_conflict`,
    /// so a reschedule link moves the booking once.
    #[serde(default, deserialize_with = "super::extract::whole_u32_opt")]
    pub expected_version: Option<u32>,
}

impl Check for RescheduleRequest {
    type Checked = Move;

    fn check(self) -> Result<Move, Invalid> {
        let date = self.date.as_deref().map(|d| parse_date("date", d)).transpose()?;
        if let Some(doctor) = &self.doctor {
            check_name("doctor", doctor)?;
        }
        Ok(Move { doctor: self.doctor.map(Into::into), date, slot: self.slot, expected_version: self.expected_version })
    }
}

/// Moves a booking to another slot of its clinic in one event: a new token, the old slot free.
#[utoipa::path(
    post, path = "/v1/{tenant}/bookings/{booking_id}/reschedule", operation_id = "rescheduleBooking", tag = "clinics",
    params(("tenant" = String, Path), ("booking_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = RescheduleRequest,
    responses(
        (status = 200, description = "The booking at its new place, with rescheduled_from (or as it was: its own slot)", body = BookingView),
        (status = 400, description = "invalid_request, invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 404, description = "not_found, unknown_doctor", body = Problem),
        (status = 409, description = "booking_cancelled, version_conflict, attendance_recorded, slot_taken, slot_held, day_closed", body = Problem),
        (status = 422, description = "slot_out_of_range, idempotency_key_reused", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable, unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn reschedule_booking(
    call: TenantCall,
    path: PathParams<(String, String)>,
    body: JsonBody<RescheduleRequest>,
) -> Result<Response, ApiError> {
    let PathParams((_, booking_id)) = path;
    let booking_id = parse_uuid("booking_id", &booking_id)?;
    let JsonBody { value, raw } = body;
    let to = value.check()?;
    call.execute(Action::Reschedule { booking_id, to }, &raw).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttendanceRequest {
    /// Replaces the other mark: an admin token's only; `true` or absent.
    pub correct: Option<bool>,
}

impl Check for AttendanceRequest {
    /// Whether the mark corrects another.
    type Checked = bool;

    fn check(self) -> Result<bool, Invalid> {
        match self.correct {
            Some(false) => Err(Invalid::field("correct", "is only ever true")),
            correct => Ok(correct.is_some()),
        }
    }
}

async fn mark(
    call: TenantCall,
    path: PathParams<(String, String)>,
    body: JsonBody<AttendanceRequest>,
    attendance: Attendance,
) -> Result<Response, ApiError> {
    let PathParams((_, booking_id)) = path;
    let booking_id = parse_uuid("booking_id", &booking_id)?;
    let JsonBody { value, raw } = body;
    let correct = value.check()?;
    if correct && call.token.role != Role::Admin {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only an admin token may correct an attendance mark"));
    }
    call.execute(Action::MarkAttendance { booking_id, attendance, correct }, &raw).await
}

/// Records that the patient arrived, from the booking's day on.
#[utoipa::path(
    post, path = "/v1/{tenant}/bookings/{booking_id}/check-in", operation_id = "checkIn", tag = "clinics",
    params(("tenant" = String, Path), ("booking_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = AttendanceRequest,
    responses(
        (status = 200, description = "The booking with attendance arrived (also when marked so before)", body = BookingView),
        (status = 400, description = "invalid_request, invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden (correct with a client token)", body = Problem),
        (status = 404, description = "not_found", body = Problem),
        (status = 409, description = "too_early, booking_cancelled, attendance_recorded, day_closed", body = Problem),
        (status = 422, description = "idempotency_key_reused", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable, unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn check_in(
    call: TenantCall,
    path: PathParams<(String, String)>,
    body: JsonBody<AttendanceRequest>,
) -> Result<Response, ApiError> {
    mark(call, path, body, Attendance::Arrived).await
}

/// Records that the patient did not come, from the booking's day on.
#[utoipa::path(
    post, path = "/v1/{tenant}/bookings/{booking_id}/no-show", operation_id = "noShow", tag = "clinics",
    params(("tenant" = String, Path), ("booking_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = AttendanceRequest,
    responses(
        (status = 200, description = "The booking with attendance no_show (also when marked so before)", body = BookingView),
        (status = 400, description = "invalid_request, invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden (correct with a client token)", body = Problem),
        (status = 404, description = "not_found", body = Problem),
        (status = 409, description = "too_early, booking_cancelled, attendance_recorded, day_closed", body = Problem),
        (status = 422, description = "idempotency_key_reused", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable, unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn no_show(
    call: TenantCall,
    path: PathParams<(String, String)>,
    body: JsonBody<AttendanceRequest>,
) -> Result<Response, ApiError> {
    mark(call, path, body, Attendance::NoShow).await
}

/// A booking as it stands.
#[utoipa::path(
    get, path = "/v1/{tenant}/bookings/{booking_id}", operation_id = "getBooking", tag = "clinics",
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
    let booking_id = parse_uuid("booking_id", &booking_id)?;
    let writer = call.writer()?;
    let view = writer.read(|state| {
        let tenant = state.tenant(&call.tenant)?;
        tenant.bookings.get(&booking_id).map(|b| BookingView::new(b, tenant.booking_time(b)))
    });
    let view = match view {
        Some(view) => Some(view),
        // A booking of a closed day, shown in the zone its day closed in.
        None => match writer.closed().booking(&Default::default(), &call.tenant, &booking_id).map_err(closed_store_failed)? {
            Some(booking) => {
                let closed = writer.closed().closed_day(&call.tenant, &booking.details.clinic, booking.details.date);
                let zone = closed.map_err(closed_store_failed)?.map_or(crate::core::Tz::UTC, |(_, zone)| zone);
                let time = writer.read(|state| state.tenant(&call.tenant).map(|t| t.booking_time_in(&booking, zone)));
                Some(BookingView::new(&booking, time.unwrap_or(crate::core::SlotTime::Untimed)))
            }
            None => None,
        },
    };
    view.map(Json).ok_or_else(|| ApiError::not_found(format!("no booking {booking_id}")).with("booking_id", booking_id.to_string()))
}

/// A read of the closed-day store that failed: the record may exist, so no answer is given.
pub(super) fn closed_store_failed(error: crate::closed::StoreError) -> ApiError {
    tracing::error!(%error, "reading the closed-day store failed");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_failure", error.to_string())
}

/// The position of the `days_closed` that closed `clinic`'s `date`, if it is
/// closed and had records (the published state holds open days only).
fn closed_at(call: &TenantCall, clinic: &str, date: NaiveDate) -> Result<Option<u64>, ApiError> {
    let writer = call.writer()?;
    let closed = writer.read(|state| {
        state.tenant(&call.tenant).and_then(|t| t.clinics.get(clinic)).and_then(|c| c.closed_through).is_some_and(|t| date <= t)
    });
    if !closed {
        return Ok(None);
    }
    Ok(writer.closed().closed_day(&call.tenant, clinic, date).map_err(closed_store_failed)?.map(|(position, _)| position))
}

/// The day now: from the published state, or, for a closed day, as it stood
/// when it closed (it never changed since), from the clinic index.
async fn day_now(call: &TenantCall, clinic: &str, date: NaiveDate, doctor: Option<&str>) -> Result<ClinicDay, ApiError> {
    match closed_at(call, clinic, date)? {
        Some(position) => day_as_of(call, clinic, date, doctor, position).await,
        None => current_day(call, clinic, date, doctor),
    }
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

/// A slot of `day`'s `date`. A hold shows as its events have it, or, given
/// `now`, only until its `expires_at` (its expiry event may not be written yet).
fn slot_view(day: &ClinicDay, date: NaiveDate, doctor: &DoctorDay, slot: u32, now: Option<DateTime<Utc>>) -> SlotView {
    let booked = doctor.booked.get(&slot);
    let hold = doctor.holds.get(&slot).filter(|h| now.is_none_or(|now| h.expires_at > now));
    let time = if booked.is_some() { SlotTime::booked } else { SlotTime::of };
    let time = time(day.zone, &doctor.schedule, date, slot);
    let (starts_at, ends_at) = instants(time);
    SlotView {
        slot,
        time: time.minute().map(format_minute),
        starts_at,
        ends_at,
        state: match (booked, hold, time) {
            (Some(_), _, _) => SlotState::Booked,
            (None, Some(_), _) => SlotState::Held,
            (None, None, SlotTime::Unavailable { .. }) => SlotState::Unavailable,
            (None, None, _) => SlotState::Free,
        },
        booking_id: booked.map(|h| h.booking_id),
        token: booked.map(|h| h.token.clone()),
        patient: booked.map(|h| h.patient.to_string()),
        hold_id: hold.map(|h| h.hold_id),
        expires_at: hold.map(|h| h.expires_at),
    }
}

fn slots_view(clinic: &str, date: NaiveDate, day: &ClinicDay, now: Option<DateTime<Utc>>) -> SlotsView {
    let doctors = day
        .doctors
        .iter()
        .map(|d| DoctorSlotsView {
            doctor: d.doctor.to_string(),
            slots: (0..d.schedule.slots_per_day).map(|s| slot_view(day, date, d, s, now)).collect(),
        })
        .collect();
    SlotsView { clinic: clinic.to_owned(), date, as_of: day.position, doctors }
}

/// A clinic's slots on one date: the current projection, or with `as_of` the
/// projection as it stood right after that position.
#[utoipa::path(
    get, path = "/v1/{tenant}/clinics/{clinic}/slots", operation_id = "getClinicSlots", tag = "clinics",
    params(("tenant" = String, Path), ("clinic" = String, Path), SlotsQuery),
    responses(
        (status = 200, description = "The slots of every scheduled doctor of the clinic", body = SlotsView),
        (status = 400, description = "invalid_request", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 503, description = "busy (with as_of: scans_max reads of the log are running), not_ready", body = Problem),
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
    let current = day_now(&call, &clinic, date, query.doctor.as_deref()).await?;
    let position = current.position;
    let Some(as_of) = query.as_of.filter(|&as_of| as_of != position) else {
        return Ok(Json(slots_view(&clinic, date, &current, Some(call.app().clock.now()))));
    };
    let last = call.writer()?.read(|state| state.position);
    if as_of > last {
        return Err(ApiError::field("as_of", format!("the ledger's last position is {last}")));
    }
    if as_of > position {
        // A closed day after it closed: as it closed.
        return Ok(Json(slots_view(&clinic, date, &current, None)));
    }
    let day = day_as_of(&call, &clinic, date, query.doctor.as_deref(), as_of).await?;
    Ok(Json(slots_view(&clinic, date, &day, None)))
}

/// The day as the published projection has it now.
fn current_day(call: &TenantCall, clinic: &str, date: NaiveDate, doctor: Option<&str>) -> Result<ClinicDay, ApiError> {
    // The read lock is held only to copy the day out (bounded by doctors ×
    // slots); the answer is rendered without it.
    Ok(call.writer()?.read(|state| ClinicDay::from_state(state, &call.tenant, clinic, date, doctor)))
}

/// Waits (at most `AS_OF_INDEX_WAIT`) until the clinic index reaches `position`.
async fn index_through(call: &TenantCall, position: u64) -> Result<std::sync::Arc<Indexes>, ApiError> {
    let indexes = call.app().indexes.clone().ok_or_else(|| ApiError::invalid("this server keeps no clinic index"))?;
    match tokio::time::timeout(AS_OF_INDEX_WAIT, indexes.wait_for(position)).await {
        Err(_) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the clinic index is still catching up with the ledger")
            .retry_after(1)),
        Ok(Err(error)) => {
            let position = error.position();
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_failure", error.to_string()).with("position", position))
        }
        Ok(Ok(())) => Ok(indexes),
    }
}

fn unreadable(error: ReadError) -> ApiError {
    tracing::error!(%error, "reading a clinic day from the ledger failed");
    let position = error.position();
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_failure", error.to_string()).with("position", position)
}

/// The day as it stood right after `as_of` (at most the ledger's last
/// position), read from the clinic index under a scan permit.
async fn day_as_of(call: &TenantCall, clinic: &str, date: NaiveDate, doctor: Option<&str>, as_of: u64) -> Result<ClinicDay, ApiError> {
    let permit = call.app().scan_permit()?;
    let indexes = index_through(call, as_of).await?;
    let (tenant, clinic, doctor) = (call.tenant.clone(), clinic.to_owned(), doctor.map(str::to_owned));
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        indexes.clinic_day(&tenant, &clinic, date, doctor.as_deref(), as_of)
    })
    .await
    .expect("the time-travel read panicked")
    .map_err(unreadable)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SlotsStreamQuery {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Only this doctor.
    pub doctor: Option<String>,
}

/// The first message of the slots stream: the whole day.
fn day_message(clinic: &str, date: NaiveDate, day: &ClinicDay) -> SseEvent {
    let data = serde_json::to_string(&slots_view(clinic, date, day, None)).expect("a view serializes");
    SseEvent::default().id(day.position.to_string()).event("day").data(data)
}

/// A message for what one event changed in `date`'s day: the changed slots
/// (a reschedule's two, a new zone's every one) with their doctors.
fn change_message(day: &ClinicDay, date: NaiveDate, change: &DayChange) -> SseEvent {
    let changed = |d: &DoctorDay| -> Vec<u32> {
        if change.kind == "clinic_zone_set" {
            return (0..d.schedule.slots_per_day).collect();
        }
        let mut slots = if d.doctor == change.doctor { change.slots.clone() } else { Vec::new() };
        slots.extend(change.moved_from.iter().filter(|(doctor, _)| *doctor == d.doctor).map(|(_, slot)| *slot));
        slots.sort_unstable();
        slots
    };
    let doctors = day
        .doctors
        .iter()
        .map(|d| (d, changed(d)))
        .filter(|(_, slots)| !slots.is_empty())
        .map(|(d, slots)| DoctorChangeView {
            doctor: d.doctor.to_string(),
            slots_per_day: d.schedule.slots_per_day,
            slots: slots.iter().map(|slot| slot_view(day, date, d, *slot, None)).collect(),
        })
        .collect();
    let view = SlotsChangeView {
        as_of: change.position,
        kind: change.kind,
        recorded_at: change.recorded_at,
        summary: change.summary.clone(),
        doctors,
    };
    let data = serde_json::to_string(&view).expect("a view serializes");
    SseEvent::default().id(change.position.to_string()).event("change").data(data)
}

/// A clinic day, live: the whole day, then what each change of it changed.
#[utoipa::path(
    get, path = "/v1/{tenant}/clinics/{clinic}/slots/stream", operation_id = "streamClinicSlots", tag = "clinics",
    params(("tenant" = String, Path), ("clinic" = String, Path), SlotsStreamQuery, ("Last-Event-ID" = Option<u64>, Header, description = "The last position seen: the stream resumes with the changes after it, without the `day` message")),
    responses(
        (status = 200, description = "text/event-stream. The first message (`event: day`, `id:` the position) is the whole day as GET /clinics/{clinic}/slots answers it (SlotsView); then one message per change of that day (`event: change`, `id:` its position, `data:` a SlotsChangeView: the changed slots with their doctor). A record that cannot be read ends the stream with `event: error` naming it.", content_type = "text/event-stream", body = SlotsChangeView),
        (status = 400, description = "invalid_request (a Last-Event-ID beyond the ledger's last position)", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 503, description = "too_many_streams (streams_max streams are open), busy (a resume reads the log: scans_max), not_ready", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn stream_slots(
    call: TenantCall,
    headers: HeaderMap,
    path: PathParams<(String, String)>,
    query: QueryParams<SlotsStreamQuery>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>>>, ApiError> {
    let (PathParams((_, clinic)), QueryParams(query)) = (path, query);
    let date = parse_date("date", &query.date)?;
    let seen = super::forensics::last_event_id(&headers)?;
    let dir = call.app().ledger_dir.clone().ok_or_else(|| super::forensics::storage("this server keeps no log on disk"))?;
    let durable = call.writer()?.durable();
    let permit = call.app().stream_permit()?;
    let current = day_now(&call, &clinic, date, query.doctor.as_deref()).await?;
    let (day, first) = match seen {
        None => {
            let first = day_message(&clinic, date, &current);
            (current, Some(first))
        }
        Some(seen) if seen == current.position => (current, None),
        Some(seen) if seen > current.position => {
            return Err(ApiError::field("Last-Event-ID", format!("the ledger's last position is {}", current.position)));
        }
        Some(seen) => (day_as_of(&call, &clinic, date, query.doctor.as_deref(), seen).await?, None),
    };
    let stopping = call.app().stopping.subscribe();
    let events = feed::follow_events(dir, call.tenant.clone(), day.position + 1, durable, stopping, super::forensics::STREAM_BUFFER_LEN);
    let doctor = query.doctor;
    Ok(super::forensics::live(first, events, permit, LiveDay::new(day), move |live, event| {
        let change = live.apply_for(&event, &clinic, date, doctor.as_deref())?;
        Some(change_message(&live.day, date, &change))
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SlotsHistoryQuery {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Only this doctor.
    pub doctor: Option<String>,
    /// The first position to list, inclusive (default 1).
    pub from: Option<u64>,
    /// 1 to 1000 (default 1000).
    pub limit: Option<u64>,
}

/// Every change of a clinic day, in order (its doctors' schedules, its bookings
/// and cancellations), each in one line: the positions time travel can show.
#[utoipa::path(
    get, path = "/v1/{tenant}/clinics/{clinic}/slots/history", operation_id = "getClinicSlotsHistory", tag = "clinics",
    params(("tenant" = String, Path), ("clinic" = String, Path), SlotsHistoryQuery),
    responses(
        (status = 200, description = "The day's changes through the ledger's last position; GET /clinics/{clinic}/slots?as_of=POSITION shows the day at each", body = SlotsHistoryView),
        (status = 400, description = "invalid_request", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 503, description = "busy (scans_max reads of the log are running), not_ready", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn slots_history(
    call: TenantCall,
    path: PathParams<(String, String)>,
    query: QueryParams<SlotsHistoryQuery>,
) -> Result<Json<SlotsHistoryView>, ApiError> {
    let (PathParams((_, clinic)), QueryParams(query)) = (path, query);
    let date = parse_date("date", &query.date)?;
    let limit = query.limit.unwrap_or(HISTORY_LEN_MAX as u64);
    if !(1..=HISTORY_LEN_MAX as u64).contains(&limit) {
        return Err(ApiError::field("limit", format!("must be 1 to {HISTORY_LEN_MAX}")));
    }
    let from = query.from.unwrap_or(1);
    let last = call.app().durable_position()?;
    let permit = call.app().scan_permit()?;
    let indexes = index_through(&call, last).await?;
    let (tenant, clinic_name, doctor) = (call.tenant.clone(), clinic.clone(), query.doctor.clone());
    let changes = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        indexes.clinic_history(&tenant, &clinic_name, date, doctor.as_deref(), last)
    })
    .await
    .expect("the history read panicked")
    .map_err(unreadable)?;
    let mut page = changes.into_iter().filter(|c| c.position >= from).take(limit as usize + 1);
    let changes: Vec<DayChangeView> = page
        .by_ref()
        .take(limit as usize)
        .map(|c| DayChangeView {
            position: c.position,
            recorded_at: c.recorded_at,
            kind: c.kind,
            doctor: c.doctor.to_string(),
            summary: c.summary,
        })
        .collect();
    let next = page.next().map(|c| c.position);
    Ok(Json(SlotsHistoryView { clinic, date, as_of: last, changes, next }))
}
