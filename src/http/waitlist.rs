//! The waitlist: patients waiting for a clinic day, offered freed slots as
//! holds in the order they joined (API.md "Waitlist").

use axum::Json;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{JsonBody, PathParams, QueryParams, TenantCall};
use super::views::{EntryView, Problem};
use crate::core::{Action, EntryDetails};
use crate::validate::{Check, Invalid, PATIENT_CHARS_MAX, check_name, check_patient_id, check_text, parse_date, parse_uuid};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    #[schema(value_type = String, format = Date, example = "2026-03-02")]
    pub date: String,
    /// Any doctor of the clinic when absent.
    pub doctor: Option<String>,
    /// 1 to 200 characters.
    pub patient: String,
    /// `[A-Za-z0-9._-]{1,64}`.
    pub patient_id: Option<String>,
}

/// A join's fields, checked; the clinic comes from the path.
pub struct Join {
    date: chrono::NaiveDate,
    doctor: Option<String>,
    patient: String,
    patient_id: Option<String>,
}

impl Check for JoinRequest {
    type Checked = Join;

    fn check(self) -> Result<Join, Invalid> {
        let date = parse_date("date", &self.date)?;
        if let Some(doctor) = &self.doctor {
            check_name("doctor", doctor)?;
        }
        check_text("patient", &self.patient, PATIENT_CHARS_MAX)?;
        if let Some(patient_id) = &self.patient_id {
            check_patient_id("patient_id", patient_id)?;
        }
        Ok(Join { date, doctor: self.doctor, patient: self.patient, patient_id: self.patient_id })
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawRequest {}

impl Check for WithdrawRequest {
    type Checked = ();

    fn check(self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// Joins a clinic day's waitlist; a matching free slot is offered at once.
#[utoipa::path(
    post, path = "/v1/{tenant}/clinics/{clinic}/waitlist", operation_id = "joinWaitlist", tag = "waitlist",
    params(("tenant" = String, Path), ("clinic" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = JoinRequest,
    responses(
        (status = 201, description = "Waiting, or offered a free slot at once (status offered, with hold_id and expires_at)", body = EntryView),
        (status = 400, description = "invalid_request, invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 404, description = "unknown_doctor", body = Problem),
        (status = 409, description = "day_closed (with date, closed_since)", body = Problem),
        (status = 422, description = "idempotency_key_reused", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable, unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn join(call: TenantCall, path: PathParams<(String, String)>, body: JsonBody<JoinRequest>) -> Result<Response, ApiError> {
    let PathParams((_, clinic)) = path;
    check_name("clinic", &clinic)?;
    let JsonBody { value, raw } = body;
    let Join { date, doctor, patient, patient_id } = value.check()?;
    let entry = EntryDetails {
        entry_id: Uuid::now_v7(),
        clinic: clinic.into(),
        date,
        doctor: doctor.map(Into::into),
        patient: patient.into(),
        patient_id: patient_id.map(Into::into),
    };
    call.execute(Action::JoinWaitlist(entry), &raw).await
}

/// Leaves the waitlist; an offered entry's hold is released (its slot offered to the next).
#[utoipa::path(
    post, path = "/v1/{tenant}/waitlist/{entry_id}/withdraw", operation_id = "withdrawEntry", tag = "waitlist",
    params(("tenant" = String, Path), ("entry_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = WithdrawRequest,
    responses(
        (status = 200, description = "Withdrawn (again, or expired: the entry as it is)", body = EntryView),
        (status = 400, description = "invalid_request, invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 404, description = "not_found", body = Problem),
        (status = 409, description = "entry_booked (with booking_id)", body = Problem),
        (status = 422, description = "idempotency_key_reused", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable, unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn withdraw(call: TenantCall, path: PathParams<(String, String)>, body: JsonBody<WithdrawRequest>) -> Result<Response, ApiError> {
    let PathParams((_, entry_id)) = path;
    let entry_id = parse_uuid("entry_id", &entry_id)?;
    let JsonBody { value, raw } = body;
    value.check()?;
    call.execute(Action::WithdrawEntry { entry_id }, &raw).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitlistQuery {
    /// `YYYY-MM-DD`.
    pub date: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WaitlistView {
    /// Every entry of the day, in the order they joined.
    pub entries: Vec<EntryView>,
}

/// A clinic day's waitlist: every entry in the order they joined, with its status now.
#[utoipa::path(
    get, path = "/v1/{tenant}/clinics/{clinic}/waitlist", operation_id = "getWaitlist", tag = "waitlist",
    params(("tenant" = String, Path), ("clinic" = String, Path), WaitlistQuery),
    responses(
        (status = 200, description = "The entries", body = WaitlistView),
        (status = 400, description = "invalid_request", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    call: TenantCall,
    path: PathParams<(String, String)>,
    query: QueryParams<WaitlistQuery>,
) -> Result<Json<WaitlistView>, ApiError> {
    let (PathParams((_, clinic)), QueryParams(query)) = (path, query);
    let date = parse_date("date", &query.date)?;
    let now = call.app().clock.now();
    let writer = call.writer()?;
    let closed = writer.read(|state| {
        state.tenant(&call.tenant).and_then(|t| t.clinics.get(clinic.as_str())).and_then(|c| c.closed_through).is_some_and(|t| date <= t)
    });
    if closed {
        // A closed day's waitlist, from the closed-day store; every entry has ended.
        let entries =
            writer.closed().entries_of(&Default::default(), &call.tenant, &clinic, date).map_err(super::clinics::closed_store_failed)?;
        let entries = entries.iter().map(|e| EntryView::new(e, e.status, |_| None)).collect();
        return Ok(Json(WaitlistView { entries }));
    }
    let entries = writer.read(|state| {
        let Some(tenant) = state.tenant(&call.tenant) else { return Vec::new() };
        let mut entries: Vec<_> = tenant.waitlist.values().filter(|e| *e.details.clinic == *clinic && e.details.date == date).collect();
        entries.sort_by_key(|e| e.joined);
        let expires = |hold_id: Uuid| tenant.holds.get(&hold_id).map(|h| h.expires_at);
        entries.into_iter().map(|e| EntryView::new(e, e.status_at(tenant, now), expires)).collect()
    });
    Ok(Json(WaitlistView { entries }))
}
