//! Extractors that refuse bad requests in the API's error format: the caller
//! of a tenant route (token, tenant, Idempotency-Key, request id), JSON bodies
//! and query strings; and each command body parsed and checked as its handler
//! does, for the fuzz target.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Path, Query, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower_http::request_id::RequestId;

use super::auth::Token;
use super::error::ApiError;
use super::server::RequestTimedOut;
use super::{AppState, Shared};
use crate::core::{Action, Command, IdempotencyKey, Text};
use crate::rejections::Origin;
use crate::validate::{Check, TENANT_FORM, valid_tenant};
use crate::writer::WriterHandle;

pub const BODY_BYTES_MAX: usize = 64 * 1024;
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

/// An authenticated, authorized call on one tenant's routes.
pub struct TenantCall {
    pub tenant: Text,
    pub token: Arc<Token>,
    pub request_id: Text,
    pub idempotency_key: Option<Text>,
    method: Method,
    path: String,
    app: Shared,
}

fn idempotency_key(parts: &Parts) -> Result<Option<Text>, ApiError> {
    let Some(value) = parts.headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > IDEMPOTENCY_KEY_LEN_MAX || !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(std::str::from_utf8(bytes).expect("visible ASCII").into()))
}

pub const REQUEST_ID_LEN_MAX: usize = 128;

/// The correlation id recorded with the command's events: the `X-Request-Id`
/// the client sent (or the server made up), unless it is over 128 characters or
/// not visible ASCII, in which case the ledger records a fresh UUID instead.
fn recorded_request_id(header: Option<&[u8]>) -> String {
    match header {
        Some(id) if !id.is_empty() && id.len() <= REQUEST_ID_LEN_MAX && id.iter().all(u8::is_ascii_graphic) => {
            String::from_utf8(id.to_vec()).expect("visible ASCII")
        }
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

impl FromRequestParts<Shared> for TenantCall {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        let token = app.auth.authenticate(parts.headers.get_all(header::AUTHORIZATION).iter())?;
        let params = RawPathParams::from_request_parts(parts, app).await.map_err(|e| ApiError::invalid(e.body_text()))?;
        let tenant = params.iter().find(|(name, _)| *name == "tenant").map_or("", |(_, value)| value).to_owned();
        if !valid_tenant(&tenant) {
            return Err(ApiError::field("tenant", format!("must match {TENANT_FORM}")));
        }
        if !token.grants(&tenant) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("this token is not granted tenant {tenant}")));
        }
        let idempotency_key = if parts.method == Method::POST || parts.method == Method::PUT { idempotency_key(parts)? } else { None };
        let request_id = recorded_request_id(parts.extensions.get::<RequestId>().map(|id| id.header_value().as_bytes()));
        Ok(TenantCall {
            tenant: tenant.into(),
            token,
            request_id: request_id.into(),
            idempotency_key,
            method: parts.method.clone(),
            // The full path: inside the nested tenant router `parts.uri` lacks `/v1/{tenant}`.
            path: parts.extensions.get::<OriginalUri>().map_or_else(|| parts.uri.path().to_owned(), |uri| uri.path().to_owned()),
            app: app.clone(),
        })
    }
}

impl TenantCall {
    pub fn app(&self) -> &AppState {
        &self.app
    }

    pub fn writer(&self) -> Result<&WriterHandle, ApiError> {
        self.app.writer()
    }

    /// Submits `action` (from a request with `body`) to the writer and answers
    /// what it decided. A refused command is journaled with its request.
    pub async fn execute(&self, action: Action, body: &Bytes) -> Result<axum::response::Response, ApiError> {
        let command = self.command(action, body);
        let origin = Origin { method: self.method.as_str().into(), path: self.path.as_str().into(), body: body.clone() };
        Ok(super::views::respond(self.writer()?.submit_from(command, Some(origin)).await?))
    }

    /// The command for `action`, with the fingerprint of this request (method,
    /// path and body) when it carries an Idempotency-Key.
    pub fn command(&self, action: Action, body: &[u8]) -> Command {
        let idempotency = self.idempotency_key.as_ref().map(|key| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(self.method.as_str().as_bytes());
            hasher.update(b"\0");
            hasher.update(self.path.as_bytes());
            hasher.update(b"\0");
            hasher.update(body);
            IdempotencyKey { key: key.clone(), fingerprint: *hasher.finalize().as_bytes() }
        });
        Command { tenant: self.tenant.clone(), actor: self.token.name.clone(), request_id: self.request_id.clone(), idempotency, action }
    }
}

/// A JSON body: the parsed value and the raw bytes (for the request fingerprint).
/// Malformed JSON, missing, mistyped or unknown fields are 400 naming the field;
/// a body over `BODY_BYTES_MAX` is 413, one still incomplete at the request's
/// deadline (`request_timeout_secs`) 408. An empty body reads as `{}`; a
/// non-empty one sent as anything but JSON (`text/plain`, a form, no
/// `Content-Type` at all) is 415, since parsing it anyway would accept what
/// the client did not mean as JSON.
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // A declared length over the limit is refused before a byte of it is
        // read: waiting for 10 GB that will never come would hold the
        // connection until the request's deadline.
        let declared = request.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > BODY_BYTES_MAX as u64) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("bodies are limited to {BODY_BYTES_MAX} bytes"),
            ));
        }
        // Kept to at most 100 characters: it is echoed in the refusal.
        let content_type =
            request.headers().get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(&v.as_bytes()[..v.len().min(100)]).into_owned());
        let raw = Bytes::from_request(request, state).await.map_err(|e| {
            if let Some(timed_out) = RequestTimedOut::cause_of(&e) {
                timed_out.problem()
            } else if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("bodies are limited to {BODY_BYTES_MAX} bytes"))
            } else {
                ApiError::invalid(e.body_text())
            }
        })?;
        if !is_empty_body(&raw) && !is_json(content_type.as_deref()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a request body must be sent as `Content-Type: application/json`",
            )
            .with("content_type", content_type.map_or(Value::Null, Value::from)));
        }
        let value = parse_body(&raw)?;
        Ok(JsonBody { value, raw })
    }
}

/// A body of nothing but white space, which reads as `{}`.
fn is_empty_body(raw: &[u8]) -> bool {
    raw.iter().all(u8::is_ascii_whitespace)
}

/// A body's bytes parsed as [`JsonBody`] parses them once they are known to
/// be JSON: an empty body is `{}`.
pub fn parse_body<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    parse_json(if is_empty_body(raw) { b"{}" } else { raw })
}

/// A command route's body, as the fuzz target drives it.
struct CommandBody {
    /// The body parsed and checked: `Ok` when its handler would submit a command.
    check: fn(&[u8]) -> Result<(), ApiError>,
    /// The request type's path, which ends in its OpenAPI schema's name.
    type_name: fn() -> &'static str,
}

const fn command_body<T: DeserializeOwned + Check>() -> CommandBody {
    fn parse_and_check<T: DeserializeOwned + Check>(body: &[u8]) -> Result<(), ApiError> {
        parse_body::<T>(body)?.check()?;
        Ok(())
    }
    CommandBody { check: parse_and_check::<T>, type_name: std::any::type_name::<T> }
}

/// Every command route's body, in the order of the fuzz inputs' first byte
/// (`fuzz/seeds/commands/route-NN`): a new route goes last.
const COMMAND_BODIES: [CommandBody; 20] = {
    use super::{calls, clinics, communities, holds, phones, waitlist};
    [
        command_body::<clinics::ScheduleRequest>(),      // PUT clinics/{clinic}/doctors/{doctor}/schedule
        command_body::<clinics::BookingRequest>(),       // POST bookings
        command_body::<clinics::CancelRequest>(),        // POST bookings/{booking_id}/cancel
        command_body::<phones::ClaimRequest>(),          // POST businesses/{business}/phone-number/claim
        command_body::<phones::CompleteRequest>(),       // POST .../phone-number/complete
        command_body::<phones::FailRequest>(),           // POST .../phone-number/fail
        command_body::<phones::ReleaseRequest>(),        // POST .../phone-number/release
        command_body::<calls::StartCallRequest>(),       // POST calls
        command_body::<calls::OutcomeBody>(),            // POST calls/{call_id}/outcome
        command_body::<calls::ResumeRequest>(),          // POST campaigns/{campaign}/resume
        command_body::<calls::BlockRequest>(),           // POST blocked-numbers
        command_body::<communities::CommunityRequest>(), // POST communities
        command_body::<holds::HoldRequest>(),            // POST holds
        command_body::<holds::HoldConfirmRequest>(),     // POST holds/{hold_id}/confirm
        command_body::<holds::HoldReleaseRequest>(),     // POST holds/{hold_id}/release
        command_body::<clinics::RescheduleRequest>(),    // POST bookings/{booking_id}/reschedule
        command_body::<clinics::AttendanceRequest>(),    // POST bookings/{booking_id}/check-in, no-show
        command_body::<clinics::ClinicRequest>(),        // PUT clinics/{clinic}
        command_body::<waitlist::JoinRequest>(),         // POST clinics/{clinic}/waitlist
        command_body::<waitlist::WithdrawRequest>(),     // POST waitlist/{entry_id}/withdraw
    ]
};

/// The request types whose bodies [`check_command_body`] takes, by index
/// (`ScheduleRequest` first): the schemas of the OpenAPI document's request bodies.
pub fn command_bodies() -> impl Iterator<Item = &'static str> {
    COMMAND_BODIES.iter().map(|body| (body.type_name)().rsplit("::").next().expect("a type name"))
}

/// Parses `body` as a JSON body of the `route % 20`th command route (see
/// [`command_bodies`]) and checks it with that request's [`Check`], the very
/// function its handler calls: `Ok` when the handler would submit a command
/// (its path and token allowing), else the problem it answers. No check of its
/// own. Not part of the API: public for `fuzz/fuzz_targets/commands.rs`.
#[doc(hidden)]
pub fn check_command_body(route: usize, body: &[u8]) -> Result<(), ApiError> {
    (COMMAND_BODIES[route % COMMAND_BODIES.len()].check)(body)
}

/// `application/json`, or a `+json` type, with any parameters (`; charset=utf-8`).
fn is_json(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else { return false };
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub fn parse_json<T: DeserializeOwned>(source: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(source);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." { ApiError::invalid(format!("{inner}")) } else { ApiError::field(&path, inner) }
    })?;
    deserializer.end().map_err(|e| ApiError::invalid(format!("trailing characters after the JSON value: {e}")))?;
    Ok(value)
}

/// Path parameters, refused in the API's error format.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state).await.map(|Path(p)| PathParams(p)).map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// A query string, refused in the API's error format.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state).await.map(|Query(q)| QueryParams(q)).map_err(|e| ApiError::invalid(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_recorded_only_when_short_and_visible() {
        assert_eq!(recorded_request_id(Some(b"req-42")), "req-42");
        for bad in [&b""[..], &[b'x'; 129][..], b"has space", "é".as_bytes()] {
            let recorded = recorded_request_id(Some(bad));
            assert!(uuid::Uuid::parse_str(&recorded).is_ok(), "{bad:?} recorded as {recorded}");
        }
    }

    /// The fuzz target covers every body the API takes: a new command route's
    /// body must join `COMMAND_BODIES` (or this fails).
    #[test]
    fn the_fuzz_target_checks_every_request_body() {
        use utoipa::OpenApi;
        let document = serde_json::to_value(crate::http::ApiDoc::openapi()).unwrap();
        let operations = document["paths"].as_object().unwrap().values().flat_map(|path| path.as_object().unwrap().values());
        let mut documented: Vec<&str> = operations
            .filter_map(|operation| operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str())
            .map(|reference| reference.rsplit('/').next().unwrap())
            .collect();
        let mut fuzzed: Vec<&str> = command_bodies().collect();
        // One body may serve several routes (check-in and no-show).
        documented.sort_unstable();
        documented.dedup();
        fuzzed.sort_unstable();
        assert_eq!(documented, fuzzed);
    }

    /// `check_command_body` answers as the handler does, since it calls the
    /// handler's own check: a campaign is a name (it once checked it as text).
    #[test]
    fn command_bodies_are_checked_as_their_handlers_check_them() {
        let route = |name: &str| command_bodies().position(|body| body == name).unwrap();
        let problem = |route: usize, body: &str| check_command_body(route, body.as_bytes()).map_err(|e| (e.status.as_u16(), e.detail));
        let start_call = route("StartCallRequest");
        assert_eq!(problem(start_call, r#"{"campaign": "spring", "to": "+1 (424) 324-2113"}"#), Ok(()));
        assert_eq!(
            problem(start_call, r#"{"campaign": "spring/2026", "to": "+14243242113"}"#),
            Err((400, "campaign: must not be `.` or `..`, nor contain `/` or `\\`".to_owned()))
        );
        assert_eq!(
            problem(start_call, r#"{"campaign": "spring", "to": "12"}"#),
            Err((422, "to: \"12\" is not a valid phone number".to_owned()))
        );
        // An empty body reads as `{}`, as `JsonBody` reads it.
        assert_eq!(problem(route("ClaimRequest"), " \n"), Ok(()));
        assert_eq!(problem(route("CancelRequest"), ""), Ok(()));
        assert_eq!(problem(route("ScheduleRequest"), ""), Err((400, "missing field `slots_per_day` at line 1 column 2".to_owned())));
        assert_eq!(problem(route("ScheduleRequest"), r#"{"slots_per_day": 0}"#), Err((400, "slots_per_day: must be 1 to 1000".to_owned())));
        let bad_campaign = r#"{"campaign": "..", "to": "+14243242113"}"#;
        assert!(problem(start_call, bad_campaign).is_err());
        assert_eq!(problem(start_call + COMMAND_BODIES.len(), bad_campaign), problem(start_call, bad_campaign), "routes wrap around");
    }

    #[test]
    fn json_content_types() {
        for good in ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"] {
            assert!(is_json(Some(good)), "{good}");
        }
        for bad in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/jsonx"), Some("")] {
            assert!(!is_json(bad), "{bad:?}");
        }
    }
}

/// A JSON number that is a whole number from 0 to `u32::MAX`, written as an
/// integer or not (`8`, `8.0`, `8e0`): what JSON Schema's `integer` means,
/// which the OpenAPI document promises for these fields.
pub fn whole_u32<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = match number.as_u64() {
        Some(n) => u32::try_from(n).ok(),
        None => number.as_f64().filter(|f| f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(f)).map(|f| f as u32),
    };
    whole.ok_or_else(|| serde::de::Error::custom(format!("invalid value: {number}, expected a whole number from 0 to {}", u32::MAX)))
}

/// [`whole_u32`], for an optional field (`null` or absent is `None`).
pub fn whole_u32_opt<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    struct Whole(#[serde(deserialize_with = "whole_u32")] u32);
    Ok(Option::<Whole>::deserialize(deserializer)?.map(|Whole(n)| n))
}

#[cfg(test)]
mod whole_number_tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "whole_u32")]
        n: u32,
        #[serde(default, deserialize_with = "whole_u32_opt")]
        m: Option<u32>,
    }

    /// Found by schemathesis: `{"slot": 8388608.0}` is an integer to JSON Schema.
    #[test]
    fn whole_numbers_are_integers_however_written() {
        for (text, n, m) in
            [(r#"{"n": 8}"#, 8, None), (r#"{"n": 8.0, "m": 2e0}"#, 8, Some(2)), (r#"{"n": 4294967295, "m": null}"#, u32::MAX, None)]
        {
            let body: Body = parse_json(text.as_bytes()).unwrap();
            assert_eq!((body.n, body.m), (n, m), "{text}");
        }
        for text in [r#"{"n": 8.5}"#, r#"{"n": -1}"#, r#"{"n": 4294967296}"#, r#"{"n": 1e300}"#, r#"{"n": "8"}"#, r#"{"n": 1, "m": 0.5}"#] {
            let error = parse_json::<Body>(text.as_bytes()).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{text}");
        }
    }
}
