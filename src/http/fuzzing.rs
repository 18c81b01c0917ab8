//! The JSON command bodies as the fuzzer drives them (`fuzz/fuzz_targets/commands.rs`):
//! each request type's body parsed the way [`super::extract::JsonBody`] parses
//! it, then checked the way its handler checks it before anything reaches the
//! writer. Nothing is executed. Not part of the API: public only for the fuzzer.

use super::calls::{BlockRequest, OutcomeBody, ResumeRequest, StartCallRequest};
use super::clinics::{BookingRequest, CancelRequest, ScheduleRequest};
use super::communities::CommunityRequest;
use super::error::ApiError;
use super::extract::parse_json;
use super::phones::{ClaimRequest, CompleteRequest, FailRequest, ReleaseRequest};
use crate::validate::{COMMUNITY_NAME_CHARS_MAX, NAME_CHARS_MAX, REASON_CHARS_MAX, check_name, check_optional_text, check_text, e164};

/// The command routes whose bodies [`check_command_body`] takes, by index.
pub const COMMAND_ROUTES: [&str; 12] = [
    "PUT schedule",
    "POST bookings",
    "POST cancel",
    "POST phone-number/claim",
    "POST phone-number/complete",
    "POST phone-number/fail",
    "POST phone-number/release",
    "POST calls",
    "POST calls/outcome",
    "POST campaigns/resume",
    "POST blocked-numbers",
    "POST communities",
];

/// Parses and checks `body` as the body of `COMMAND_ROUTES[route % 12]`:
/// `Ok` when its handler would submit a command, else the problem it answers.
#[doc(hidden)]
pub fn check_command_body(route: usize, body: &[u8]) -> Result<(), ApiError> {
    // As `JsonBody`: an empty (or all-whitespace) body is `{}`.
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    match route % COMMAND_ROUTES.len() {
        0 => parse_json::<ScheduleRequest>(body)?.validate().map(drop),
        1 => parse_json::<BookingRequest>(body)?.validate().map(drop),
        2 => {
            let request = parse_json::<CancelRequest>(body)?;
            Ok(check_optional_text("reason", request.reason.as_deref(), REASON_CHARS_MAX)?)
        }
        3 => parse_json::<ClaimRequest>(body).map(drop),
        4 => {
            let request = parse_json::<CompleteRequest>(body)?;
            check_text("provider_sid", &request.provider_sid, NAME_CHARS_MAX)?;
            e164("phone_number", &request.phone_number, None).map(drop).map_err(ApiError::from)
        }
        5 => Ok(check_text("reason", &parse_json::<FailRequest>(body)?.reason, REASON_CHARS_MAX)?),
        6 => {
            let request = parse_json::<ReleaseRequest>(body)?;
            Ok(check_optional_text("reason", request.reason.as_deref(), REASON_CHARS_MAX)?)
        }
        7 => {
            let request = parse_json::<StartCallRequest>(body)?;
            check_name("campaign", &request.campaign)?;
            e164("to", &request.to, request.default_region.as_deref()).map(drop).map_err(ApiError::from)
        }
        8 => parse_json::<OutcomeBody>(body).map(drop),
        9 => Ok(check_text("reason", &parse_json::<ResumeRequest>(body)?.reason, REASON_CHARS_MAX)?),
        10 => {
            let request = parse_json::<BlockRequest>(body)?;
            check_text("reason", &request.reason, REASON_CHARS_MAX)?;
            e164("number", &request.number, request.default_region.as_deref()).map(drop).map_err(ApiError::from)
        }
        _ => {
            let request = parse_json::<CommunityRequest>(body)?;
            check_text("name", &request.name, COMMUNITY_NAME_CHARS_MAX)?;
            check_text("owner", &request.owner, NAME_CHARS_MAX)?;
            Ok(check_text("plan", &request.plan, NAME_CHARS_MAX)?)
        }
    }
}
