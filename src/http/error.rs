//! The HTTP error: every refusal as an RFC 9457 `application/problem+json`
//! document with a machine-readable `code` and the extension members API.md
//! names for it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::core::Rejection;
use crate::validate::Invalid;
use crate::writer::SubmitError;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub extensions: Map<String, Value>,
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, detail: detail.into(), extensions: Map::new(), retry_after_secs: None }
    }

    pub fn invalid(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    /// A request field that failed validation: `detail` names it.
    pub fn field(field: &str, problem: impl std::fmt::Display) -> ApiError {
        ApiError::invalid(format!("{field}: {problem}")).with("field", field)
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn with(mut self, name: &str, value: impl Into<Value>) -> ApiError {
        self.extensions.insert(name.to_owned(), value.into());
        self
    }

    pub fn retry_after(mut self, secs: u32) -> ApiError {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The problem document, serialized.
    pub fn body(&self) -> Vec<u8> {
        let mut problem = Map::new();
        problem.insert("type".into(), json!(format!("urn:booking-ledger:problem:{}", self.code)));
        problem.insert("title".into(), json!(self.status.canonical_reason().unwrap_or("Error")));
        problem.insert("status".into(), json!(self.status.as_u16()));
        problem.insert("detail".into(), json!(self.detail));
        problem.insert("code".into(), json!(self.code));
        for (name, value) in &self.extensions {
            problem.insert(name.clone(), value.clone());
        }
        serde_json::to_vec(&problem).expect("a JSON map serializes")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, [(header::CONTENT_TYPE, PROBLEM_JSON)], self.body()).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // A request cut off by its deadline may still have body bytes on the
        // way: the connection cannot carry another request, so it closes (RFC 9110, 408).
        if self.status == StatusCode::REQUEST_TIMEOUT {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> ApiError {
        match invalid {
            Invalid::Field { field, detail } => ApiError::field(field, detail),
            Invalid::PhoneNumber { field, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_phone_number", invalid.to_string()).with("field", field)
            }
        }
    }
}

impl From<&Rejection> for ApiError {
    fn from(rejection: &Rejection) -> ApiError {
        let detail = rejection.to_string();
        let code = rejection.code();
        match rejection {
            Rejection::UnknownDoctor { clinic, doctor } => {
                ApiError::new(StatusCode::NOT_FOUND, code, detail).with("clinic", &**clinic).with("doctor", &**doctor)
            }
            Rejection::SlotOutOfRange { slot, slots_per_day } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail).with("slot", *slot).with("slots_per_day", *slots_per_day)
            }
            Rejection::TooManyDoctors { limit, .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail).with("limit", *limit),
            Rejection::SlotTaken { booking_id, token } => {
                ApiError::new(StatusCode::CONFLICT, code, detail).with("booking_id", booking_id.to_string()).with("token", token.as_str())
            }
            Rejection::ScheduleConflict { booking_id, date, slot } => ApiError::new(StatusCode::CONFLICT, code, detail)
                .with("booking_id", booking_id.to_string())
                .with("date", crate::core::format_date(*date))
                .with("slot", *slot),
            Rejection::BookingNotFound { booking_id } => {
                ApiError::new(StatusCode::NOT_FOUND, code, detail).with("booking_id", booking_id.to_string())
            }
            Rejection::ExternalRefBound { external_ref, booking_id, correlation_id } => ApiError::new(StatusCode::CONFLICT, code, detail)
                .with("external_ref", &**external_ref)
                .with("booking_id", booking_id.to_string())
                .with("correlation_id", correlation_id.as_deref()),
            Rejection::StaleExternalBooking { age_secs, window_secs } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail).with("age_secs", *age_secs).with("window_secs", *window_secs)
            }
            Rejection::ExternalCreatedInFuture { ahead_secs, window_secs } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
                .with("ahead_secs", *ahead_secs)
                .with("window_secs", *window_secs),
            Rejection::IdempotencyKeyReused => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail),
            Rejection::PurchaseInProgress { claim_id, lease_expires_at } => ApiError::new(StatusCode::CONFLICT, code, detail)
                .with("claim_id", claim_id.to_string())
                .with("lease_expires_at", rfc3339(lease_expires_at)),
            Rejection::ClaimSuperseded { claim_id } => {
                ApiError::new(StatusCode::CONFLICT, code, detail).with("claim_id", claim_id.to_string())
            }
            Rejection::PhoneNumberInUse { phone_number, business } => {
                ApiError::new(StatusCode::CONFLICT, code, detail).with("phone_number", &**phone_number).with("business", &**business)
            }
            Rejection::NumberBlocked { number, reason } => {
                ApiError::new(StatusCode::CONFLICT, code, detail).with("number", &**number).with("reason", &**reason)
            }
            Rejection::CallInProgress { call_id } => ApiError::new(StatusCode::CONFLICT, code, detail).with("call_id", call_id.to_string()),
            Rejection::RecentlyCalled { call_id, called_at, retry_after } => ApiError::new(StatusCode::CONFLICT, code, detail)
                .with("call_id", call_id.to_string())
                .with("called_at", rfc3339(called_at))
                .with("retry_after", rfc3339(retry_after)),
            Rejection::CampaignHalted { campaign, reason } => {
                ApiError::new(StatusCode::CONFLICT, code, detail).with("campaign", &**campaign).with("reason", &**reason)
            }
            Rejection::OutcomeAlreadyRecorded { call_id, outcome } => {
                ApiError::new(StatusCode::CONFLICT, code, detail).with("call_id", call_id.to_string()).with("outcome", outcome.name())
            }
            Rejection::CallNotFound { call_id } => ApiError::new(StatusCode::NOT_FOUND, code, detail).with("call_id", call_id.to_string()),
            Rejection::InvalidName { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail),
            Rejection::SlotHeld { hold_id, expires_at } => ApiError::new(StatusCode::CONFLICT, code, detail)
                .with("hold_id", hold_id.to_string())
                .with("expires_at", rfc3339(expires_at)),
            Rejection::HoldNotFound { hold_id } => ApiError::new(StatusCode::NOT_FOUND, code, detail).with("hold_id", hold_id.to_string()),
            Rejection::HoldExpired { hold_id, expires_at } => ApiError::new(StatusCode::CONFLICT, code, detail)
                .with("hold_id", hold_id.to_string())
                .with("expires_at", rfc3339(expires_at)),
            Rejection::HoldReleased { hold_id } => ApiError::new(StatusCode::CONFLICT, code, detail).with("hold_id", hold_id.to_string()),
            Rejection::HoldConfirmed { hold_id, booking_id } => ApiError::new(StatusCode::CONFLICT, code, detail)
                .with("hold_id", hold_id.to_string())
                .with("booking_id", booking_id.to_string()),
            Rejection::HoldPatientMismatch { field } => ApiError::new(StatusCode::CONFLICT, code, detail).with("field", *field),
            Rejection::PatientRequired => ApiError::field("patient", detail),
            Rejection::BookingCancelled { booking_id } => {
                ApiError::new(StatusCode::CONFLICT, code, detail).with("booking_id", booking_id.to_string())
            }
            Rejection::VersionConflict { booking_id, version } => {
                ApiError::new(StatusCode::CONFLICT, code, detail).with("booking_id", booking_id.to_string()).with("version", *version)
            }
            Rejection::AttendanceRecorded { booking_id, attendance } => ApiError::new(StatusCode::CONFLICT, code, detail)
                .with("booking_id", booking_id.to_string())
                .with("attendance", attendance.name()),
            Rejection::TooEarly { booking_id, date } => ApiError::new(StatusCode::CONFLICT, code, detail)
                .with("booking_id", booking_id.to_string())
                .with("date", crate::core::format_date(*date)),
            Rejection::EntryNotFound { entry_id } => {
                ApiError::new(StatusCode::NOT_FOUND, code, detail).with("entry_id", entry_id.to_string())
            }
            Rejection::EntryBooked { entry_id, booking_id } => ApiError::new(StatusCode::CONFLICT, code, detail)
                .with("entry_id", entry_id.to_string())
                .with("booking_id", booking_id.to_string()),
            Rejection::SlotUnavailable { slot, time } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail).with("slot", *slot).with("time", time.as_str())
            }
            Rejection::TooManyHolds { limit, retry_after_secs } => {
                // In the body too: a keyed command's stored answer keeps it for its repeats' Retry-After.
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, detail)
                    .with("limit", *limit)
                    .with("retry_after_secs", *retry_after_secs)
                    .retry_after(*retry_after_secs)
            }
            Rejection::DayClosed { date, closed_since } => ApiError::new(StatusCode::CONFLICT, code, detail)
                .with("date", crate::core::format_date(*date))
                .with("closed_since", crate::core::format_date(*closed_since)),
        }
    }
}

/// RFC 3339 in UTC, spelled exactly as serde writes the times in bodies.
pub fn rfc3339(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> ApiError {
        match error {
            SubmitError::Overloaded => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the ledger is at capacity; retry shortly").retry_after(1)
            }
            SubmitError::Stopped => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the ledger is not accepting commands (shutting down)")
                    .retry_after(5)
            }
            SubmitError::IdempotencyFull { retry_after_secs } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the ledger holds as many Idempotency-Keys as it may (limits.idempotency_keys_max); \
                 a new key is accepted once the oldest answer expires",
            )
            .retry_after(retry_after_secs),
            SubmitError::OutcomeUnknown { cause, retry_after_secs } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                format!(
                    "a write or sync of the ledger failed while this command was being made durable ({cause}): it may or may not \
                     have taken effect; repeat it with the same Idempotency-Key once the ledger is ready to get its real answer"
                ),
            )
            .with("outcome", "unknown")
            .retry_after(retry_after_secs),
            SubmitError::StorageDown { cause, retry_after_secs } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                format!("the ledger's storage is unavailable ({cause}); the command was not executed"),
            )
            .with("outcome", "not_executed")
            .retry_after(retry_after_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overloaded_writer_is_503_with_retry_after() {
        let response = ApiError::from(SubmitError::Overloaded).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body: Value = serde_json::from_slice(&ApiError::from(SubmitError::Overloaded).body()).unwrap();
        assert_eq!((body["code"].as_str(), body["status"].as_u64()), (Some("overloaded"), Some(503)));
    }

    /// API.md, General and Phone numbers: a value outside its rules is 400
    /// `invalid_request` with `detail` naming the field; a phone number that is
    /// none is 422 `invalid_phone_number`.
    #[test]
    fn invalid_values_are_problems_naming_the_field() {
        let problem = |invalid: Invalid| -> Value { serde_json::from_slice(&ApiError::from(invalid).body()).unwrap() };
        assert_eq!(
            problem(Invalid::field("patient", "must be 1 to 200 characters")),
            json!({
                "type": "urn:booking-ledger:problem:invalid_request", "title": "Bad Request", "status": 400,
                "detail": "patient: must be 1 to 200 characters", "code": "invalid_request", "field": "patient",
            })
        );
        assert_eq!(
            problem(Invalid::PhoneNumber { field: "to", text: "12".into() }),
            json!({
                "type": "urn:booking-ledger:problem:invalid_phone_number", "title": "Unprocessable Entity", "status": 422,
                "detail": "to: \"12\" is not a valid phone number", "code": "invalid_phone_number", "field": "to",
            })
        );
    }

    /// API.md, Storage: a command of the failed batch is 503 storage_unavailable
    /// with `"outcome": "unknown"`; one refused while storage is down was not executed.
    #[test]
    fn storage_failures_are_503_storage_unavailable_with_retry_after_and_the_outcome() {
        for (error, outcome) in [
            (SubmitError::OutcomeUnknown { cause: "EIO".into(), retry_after_secs: 2 }, "unknown"),
            (SubmitError::StorageDown { cause: "EIO".into(), retry_after_secs: 2 }, "not_executed"),
        ] {
            let body: Value = serde_json::from_slice(&ApiError::from(error.clone()).body()).unwrap();
            let response = ApiError::from(error).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "2");
            assert_eq!((body["code"].as_str(), body["outcome"].as_str()), (Some("storage_unavailable"), Some(outcome)));
        }
    }
}
