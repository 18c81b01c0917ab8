//! Holds: a slot kept while a patient decides, then confirmed into a booking,
//! released, or expired by the ledger's clock (API.md "Holds").

use axum::Json;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::clinics::KindRequest;
use super::error::ApiError;
use super::extract::{JsonBody, PathParams, TenantCall};
use super::views::{BookingView, HoldView, Problem};
use crate::core::{Action, BookingKind, HoldDetails, Patient, Text};
use crate::validate::{
    Check, HOLD_TTL_SECS, HOLD_TTL_SECS_DEFAULT, Invalid, PATIENT_CHARS_MAX, check_name, check_patient_id, check_text, check_within,
    parse_date, parse_uuid,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    pub clinic: String,
    pub doctor: String,
    #[schema(value_type = String, format = Date, example = "2026-03-02")]
    pub date: String,
    #[serde(deserialize_with = "super::extract::whole_u32")]
    pub slot: u32,
    /// 30 to 3600; 300 when absent.
    #[serde(default, deserialize_with = "super::extract::whole_u32_opt")]
    pub ttl_secs: Option<u32>,
    /// 1 to 200 characters; may instead be given at confirmation.
    pub patient: Option<String>,
    /// `[A-Za-z0-9._-]{1,64}`.
    pub patient_id: Option<String>,
}

/// The patient fields of a hold or its confirmation, checked.
fn patient_fields(patient: Option<String>, patient_id: Option<String>) -> Result<(Option<Patient>, Option<Text>), Invalid> {
    if let Some(patient) = &patient {
        check_text("patient", patient, PATIENT_CHARS_MAX)?;
    }
    if let Some(patient_id) = &patient_id {
        check_patient_id("patient_id", patient_id)?;
    }
    Ok((patient.map(Into::into), patient_id.map(Into::into)))
}

impl Check for HoldRequest {
    type Checked = Action;

    fn check(self) -> Result<Action, Invalid> {
        check_name("clinic", &self.clinic)?;
        check_name("doctor", &self.doctor)?;
        let date = parse_date("date", &self.date)?;
        let ttl_secs = self.ttl_secs.unwrap_or(HOLD_TTL_SECS_DEFAULT);
        check_within("ttl_secs", ttl_secs, HOLD_TTL_SECS)?;
        let (patient, patient_id) = patient_fields(self.patient, self.patient_id)?;
        let hold = HoldDetails {
            hold_id: Uuid::now_v7(),
            clinic: self.clinic.into(),
            doctor: self.doctor.into(),
            date,
            slot: self.slot,
            patient,
            patient_id,
            entry_id: None,
        };
        Ok(Action::Hold { hold, ttl_secs })
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldConfirmRequest {
    /// Required unless given at hold time; if given both times, the same.
    pub patient: Option<String>,
    pub patient_id: Option<String>,
    pub kind: Option<KindRequest>,
}

/// A confirmation's fields, checked; the hold it names comes from the path.
pub struct Confirmation {
    patient: Option<Patient>,
    patient_id: Option<Text>,
    kind: Option<BookingKind>,
}

impl Check for HoldConfirmRequest {
    type Checked = Confirmation;

    fn check(self) -> Result<Confirmation, Invalid> {
        let (patient, patient_id) = patient_fields(self.patient, self.patient_id)?;
        let kind = self.kind.map(|kind| match kind {
            KindRequest::Advance => BookingKind::Advance,
            KindRequest::WalkIn => BookingKind::WalkIn,
        });
        Ok(Confirmation { patient, patient_id, kind })
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldReleaseRequest {}

impl Check for HoldReleaseRequest {
    type Checked = ();

    fn check(self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// Holds a slot for `ttl_secs`: nobody else may book or hold it until then.
#[utoipa::path(
    post, path = "/v1/{tenant}/holds", operation_id = "createHold", tag = "holds",
    params(("tenant" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = HoldRequest,
    responses(
        (status = 201, description = "Held", body = HoldView),
        (status = 400, description = "invalid_request, invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 404, description = "unknown_doctor", body = Problem),
        (status = 409, description = "slot_taken, slot_held, day_closed (with date, closed_since)", body = Problem),
        (status = 422, description = "slot_out_of_range, idempotency_key_reused", body = Problem),
        (status = 429, description = "too_many_holds (with Retry-After)", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable, unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn create(call: TenantCall, body: JsonBody<HoldRequest>) -> Result<Response, ApiError> {
    let JsonBody { value, raw } = body;
    call.execute(value.check()?, &raw).await
}

/// Books the held slot for the hold's patient; again, the same booking.
#[utoipa::path(
    post, path = "/v1/{tenant}/holds/{hold_id}/confirm", operation_id = "confirmHold", tag = "holds",
    params(("tenant" = String, Path), ("hold_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = HoldConfirmRequest,
    responses(
        (status = 201, description = "Booked, with the hold_id", body = BookingView),
        (status = 200, description = "Confirmed before: the booking as it is now", body = BookingView),
        (status = 400, description = "invalid_request (no patient at hold time or now), invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 404, description = "not_found", body = Problem),
        (status = 409, description = "hold_expired, hold_released, hold_patient_mismatch, day_closed", body = Problem),
        (status = 422, description = "slot_out_of_range (the schedule shrank), idempotency_key_reused", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable, unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn confirm(
    call: TenantCall,
    path: PathParams<(String, String)>,
    body: JsonBody<HoldConfirmRequest>,
) -> Result<Response, ApiError> {
    let PathParams((_, hold_id)) = path;
    let hold_id = parse_uuid("hold_id", &hold_id)?;
    let JsonBody { value, raw } = body;
    let Confirmation { patient, patient_id, kind } = value.check()?;
    call.execute(Action::ConfirmHold { hold_id, booking_id: Uuid::now_v7(), patient, patient_id, kind }, &raw).await
}

/// Gives the slot back before the hold expires; again, the same answer.
#[utoipa::path(
    post, path = "/v1/{tenant}/holds/{hold_id}/release", operation_id = "releaseHold", tag = "holds",
    params(("tenant" = String, Path), ("hold_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = HoldReleaseRequest,
    responses(
        (status = 200, description = "Released (also when released before)", body = HoldView),
        (status = 400, description = "invalid_request, invalid_idempotency_key", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 404, description = "not_found", body = Problem),
        (status = 409, description = "hold_confirmed (with booking_id), hold_expired", body = Problem),
        (status = 422, description = "idempotency_key_reused", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable, unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn release(
    call: TenantCall,
    path: PathParams<(String, String)>,
    body: JsonBody<HoldReleaseRequest>,
) -> Result<Response, ApiError> {
    let PathParams((_, hold_id)) = path;
    let hold_id = parse_uuid("hold_id", &hold_id)?;
    let JsonBody { value, raw } = body;
    value.check()?;
    call.execute(Action::ReleaseHold { hold_id }, &raw).await
}

/// A hold as it stands: `expired` from its `expires_at` on, even before its event is written.
#[utoipa::path(
    get, path = "/v1/{tenant}/holds/{hold_id}", operation_id = "getHold", tag = "holds",
    params(("tenant" = String, Path), ("hold_id" = Uuid, Path)),
    responses(
        (status = 200, description = "The hold", body = HoldView),
        (status = 400, description = "invalid_request", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 404, description = "not_found", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn get(call: TenantCall, path: PathParams<(String, String)>) -> Result<Json<HoldView>, ApiError> {
    let PathParams((_, hold_id)) = path;
    let hold_id = parse_uuid("hold_id", &hold_id)?;
    let now = call.app().clock.now();
    let writer = call.writer()?;
    let view =
        writer.read(|state| state.tenant(&call.tenant).and_then(|t| t.holds.get(&hold_id)).map(|h| HoldView::new(h, h.status_at(now))));
    let view = match view {
        Some(view) => Some(view),
        // A hold of a closed day.
        None => {
            let hold = writer.closed().hold(&Default::default(), &call.tenant, &hold_id).map_err(super::clinics::closed_store_failed)?;
            hold.map(|h| HoldView::new(&h, h.status_at(now)))
        }
    };
    view.map(Json).ok_or_else(|| ApiError::not_found(format!("no hold {hold_id}")).with("hold_id", hold_id.to_string()))
}
