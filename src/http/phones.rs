//! Phone numbers, one per business: claim, complete, fail, release, read.

use axum::Json;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{JsonBody, PathParams, TenantCall};
use super::views::{PhoneView, Problem};
use crate::core::{Action, Text};
use crate::validate::{Check, Invalid, NAME_CHARS_MAX, REASON_CHARS_MAX, check_name, check_optional_text, check_text, e164};

fn business(path: PathParams<(String, String)>) -> Result<Text, ApiError> {
    let PathParams((_, business)) = path;
    check_name("business", &business)?;
    Ok(business.into())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {}

impl Check for ClaimRequest {
    type Checked = ();

    fn check(self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// Claims the right to buy the business's number. Exactly one concurrent caller gets a pending claim.
#[utoipa::path(
    post, path = "/v1/{tenant}/businesses/{business}/phone-number/claim", operation_id = "claimPhoneNumber", tag = "phone numbers",
    params(("tenant" = String, Path), ("business" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = ClaimRequest,
    responses(
        (status = 201, description = "A pending claim: buy a number from the carrier now", body = PhoneView),
        (status = 200, description = "The business already has its number (`already_complete`)", body = PhoneView),
        (status = 409, description = "purchase_in_progress (with claim_id, lease_expires_at)", body = Problem),
        (status = 400, description = "invalid_request", body = Problem),
        (status = 401, description = "unauthenticated", body = Problem),
        (status = 403, description = "forbidden", body = Problem),
        (status = 503, description = "overloaded, storage_unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn claim(call: TenantCall, path: PathParams<(String, String)>, body: JsonBody<ClaimRequest>) -> Result<Response, ApiError> {
    let business = business(path)?;
    body.value.check()?;
    call.execute(Action::ClaimPhone { business, claim_id: Uuid::now_v7() }, &body.raw).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub claim_id: Uuid,
    /// Any format; normalized to E.164 (US numbers may omit +1).
    pub phone_number: String,
    pub provider_sid: String,
}

/// A completion's values, checked: the number in E.164.
pub struct Completion {
    pub claim_id: Uuid,
    pub phone_number: Text,
    pub provider_sid: Text,
}

impl Check for CompleteRequest {
    type Checked = Completion;

    fn check(self) -> Result<Completion, Invalid> {
        check_text("provider_sid", &self.provider_sid, NAME_CHARS_MAX)?;
        let phone_number = e164("phone_number", &self.phone_number, None)?;
        Ok(Completion { claim_id: self.claim_id, phone_number, provider_sid: self.provider_sid.into() })
    }
}

/// Records the number the claim bought.
#[utoipa::path(
    post, path = "/v1/{tenant}/businesses/{business}/phone-number/complete", operation_id = "completePhoneNumber", tag = "phone numbers",
    params(("tenant" = String, Path), ("business" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = CompleteRequest,
    responses(
        (status = 200, description = "The business's number is active (also for a repeat of the same completion)", body = PhoneView),
        (status = 409, description = "claim_superseded, phone_number_in_use", body = Problem),
        (status = 422, description = "invalid_phone_number", body = Problem),
        (status = 400, description = "invalid_request", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn complete(call: TenantCall, path: PathParams<(String, String)>, body: JsonBody<CompleteRequest>) -> Result<Response, ApiError> {
    let business = business(path)?;
    let JsonBody { value, raw } = body;
    let Completion { claim_id, phone_number, provider_sid } = value.check()?;
    call.execute(Action::CompletePhone { business, claim_id, phone_number, provider_sid }, &raw).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub claim_id: Uuid,
    pub reason: String,
}

impl Check for FailRequest {
    /// The claim and the reason.
    type Checked = (Uuid, Text);

    fn check(self) -> Result<(Uuid, Text), Invalid> {
        check_text("reason", &self.reason, REASON_CHARS_MAX)?;
        Ok((self.claim_id, self.reason.into()))
    }
}

/// Releases a claim whose purchase failed.
#[utoipa::path(
    post, path = "/v1/{tenant}/businesses/{business}/phone-number/fail", operation_id = "failPhoneNumber", tag = "phone numbers",
    params(("tenant" = String, Path), ("business" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = FailRequest,
    responses(
        (status = 200, description = "`{\"state\": \"none\"}`", body = PhoneView),
        (status = 409, description = "claim_superseded", body = Problem),
        (status = 400, description = "invalid_request", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn fail(call: TenantCall, path: PathParams<(String, String)>, body: JsonBody<FailRequest>) -> Result<Response, ApiError> {
    let business = business(path)?;
    let JsonBody { value, raw } = body;
    let (claim_id, reason) = value.check()?;
    call.execute(Action::FailPhone { business, claim_id, reason }, &raw).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub reason: Option<String>,
}

impl Check for ReleaseRequest {
    /// The reason.
    type Checked = Option<Text>;

    fn check(self) -> Result<Option<Text>, Invalid> {
        check_optional_text("reason", self.reason.as_deref(), REASON_CHARS_MAX)?;
        Ok(self.reason.map(Into::into))
    }
}

/// Gives the business's number up.
#[utoipa::path(
    post, path = "/v1/{tenant}/businesses/{business}/phone-number/release", operation_id = "releasePhoneNumber", tag = "phone numbers",
    params(("tenant" = String, Path), ("business" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = ReleaseRequest,
    responses(
        (status = 200, description = "`{\"state\": \"none\"}`", body = PhoneView),
        (status = 409, description = "purchase_in_progress: a claim is still buying", body = Problem),
        (status = 400, description = "invalid_request", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn release(call: TenantCall, path: PathParams<(String, String)>, body: JsonBody<ReleaseRequest>) -> Result<Response, ApiError> {
    let business = business(path)?;
    let JsonBody { value, raw } = body;
    let reason = value.check()?;
    call.execute(Action::ReleasePhone { business, reason }, &raw).await
}

/// The business's number as it stands.
#[utoipa::path(
    get, path = "/v1/{tenant}/businesses/{business}/phone-number", operation_id = "getPhoneNumber", tag = "phone numbers",
    params(("tenant" = String, Path), ("business" = String, Path)),
    responses((status = 200, description = "none, pending or active", body = PhoneView), (status = 401, description = "unauthenticated", body = Problem)),
    security(("bearer" = []))
)]
pub async fn get(call: TenantCall, path: PathParams<(String, String)>) -> Result<Json<PhoneView>, ApiError> {
    let business = business(path)?;
    let view = call.writer()?.read(|state| {
        let phone = state.tenant(&call.tenant).and_then(|t| t.businesses.get(&business)).and_then(|b| b.phone.as_ref());
        PhoneView::new(phone, false)
    });
    Ok(Json(view))
}
