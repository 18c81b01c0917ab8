//! What the OpenAPI document says about every route at once, added to what
//! each handler's `#[utoipa::path]` says about itself: the answers any route
//! can give (authentication, the tenant, limits, storage), errors as
//! `application/problem+json`, the response headers, and the contract's
//! constraints on path parameters, headers and request bodies, taken from the
//! same constants the handlers check with.

use serde_json::{Map, Value, json};
use utoipa::Modify;

use super::calls::CAMPAIGNS_LISTED_MAX;
use super::clinics::HISTORY_LEN_MAX;
use super::extract::IDEMPOTENCY_KEY_LEN_MAX;
use super::forensics::PAGE_LEN_MAX;
use crate::validate::{
    COMMUNITY_NAME_CHARS_MAX, HOLD_TTL_SECS, NAME_CHARS_MAX, PATIENT_CHARS_MAX, REASON_CHARS_MAX, REF_CHARS_MAX, SLOT_MINUTES_MAX,
    SLOTS_PER_DAY_MAX,
};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// `{tenant}`, as `validate::valid_tenant` checks it (`validate::TENANT_FORM`).
pub const TENANT_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,62}$";

/// A name as `validate::check_name` takes it (clinic, doctor, business,
/// campaign): a text field that is not `.` or `..` and holds no `/` or `\`.
const NAME_PATTERN: &str = concat!(
    "^(?!\\.{1,2}$)[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069/\\\\]*",
    "[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069\\s\\u00ad\\u034f\\u180e\\u200b-\\u200f\\u2060-\\u2064\\ufeff/\\\\]",
    "[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069/\\\\]*$"
);

/// A text field as `validate::check_text` takes it: no control characters, no
/// bidirectional overrides or isolates, and at least one character that is
/// neither white space nor invisible.
const TEXT_PATTERN: &str = concat!(
    "^[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]*",
    "[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069\\s\\u00ad\\u034f\\u180e\\u200b-\\u200f\\u2060-\\u2064\\ufeff]",
    "[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]*$"
);

/// `YYYY-MM-DD`, years 0001 to 9999 (`validate::parse_date`).
const DATE_PATTERN: &str = "^([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})-[0-9]{2}-[0-9]{2}$";

/// Every list's `limit` is 1 to this.
const LIST_LEN_MAX: usize = 1000;
const _: () = assert!(LIST_LEN_MAX == HISTORY_LEN_MAX && LIST_LEN_MAX == CAMPAIGNS_LISTED_MAX && LIST_LEN_MAX as u64 == PAGE_LEN_MAX);

/// The ISO 3166 alpha-2 regions `default_region` takes: those the phone
/// number library knows, or null (the default, US).
fn regions() -> Vec<Value> {
    let letters = b'A'..=b'Z';
    letters
        .clone()
        .flat_map(|a| letters.clone().map(move |b| String::from_utf8(vec![a, b]).expect("ASCII")))
        .filter(|region| region.parse::<phonenumber::country::Id>().is_ok())
        .map(Value::String)
        .chain([Value::Null])
        .collect()
}

/// Answers every route under `/v1/{tenant}` can give, besides its own.
const TENANT_ANSWERS: &[(u16, &str)] = &[
    (400, "invalid_request: a malformed parameter, or a tenant that does not match the pattern"),
    (401, "unauthenticated: no token, or an unknown one"),
    (403, "forbidden: the token is not granted this tenant"),
    (408, "request_timeout: the request did not arrive in full in time"),
    (429, "rate_limited: the token is over its configured rate_per_sec, with Retry-After"),
    (431, "request_header_fields_too_large: headers over 16 KiB"),
    (500, "internal_error"),
    (502, "no_leader (cluster mode): the node leading the tenant's partition cannot be reached"),
    (
        503,
        "not_ready (rebuilding), unavailable (forensic-only), overloaded, storage_unavailable, busy, no_leader (cluster mode), with Retry-After",
    ),
];

/// Answers every command (POST or PUT with a body) can give, besides those.
const COMMAND_ANSWERS: &[(u16, &str)] = &[
    (400, "invalid_request (naming the field), invalid_idempotency_key"),
    (413, "payload_too_large: bodies are limited to 64 KiB"),
    (415, "unsupported_media_type: the body is not sent as application/json"),
    (422, "idempotency_key_reused: the key was used with another request"),
];

/// Answers the routes outside the tenant can give, besides their own.
const OUTSIDE_ANSWERS: &[(u16, &str)] = &[
    (408, "request_timeout: the request did not arrive in full in time"),
    (431, "request_header_fields_too_large: headers over 16 KiB"),
    (500, "internal_error"),
];

/// Fills in the document (see the module's doc).
pub struct Contract;

impl Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut document = serde_json::to_value(&*openapi).expect("the document serializes");
        complete(&mut document);
        *openapi = serde_json::from_value(document).expect("the completed document deserializes");
    }
}

fn header(description: &str, schema: Value) -> Value {
    json!({ "description": description, "schema": schema })
}

fn complete(document: &mut Value) {
    let problem = json!({ "schema": { "$ref": "#/components/schemas/Problem" } });
    let paths = document["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        let in_tenant = path.starts_with("/v1/{tenant}");
        for (method, operation) in item.as_object_mut().expect("path item").iter_mut() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let command = method == "post" || method == "put";
            constrain_parameters(operation, command);
            let responses = operation["responses"].as_object_mut().expect("responses");
            let mut extra: Vec<(u16, &str)> = Vec::new();
            if in_tenant {
                extra.extend(TENANT_ANSWERS);
                if command {
                    extra.extend(COMMAND_ANSWERS);
                }
            } else {
                extra.extend(OUTSIDE_ANSWERS);
            }
            for (status, description) in extra {
                let response = responses.entry(status.to_string()).or_insert_with(|| json!({ "description": description }));
                if let Some(existing) = response["description"].as_str()
                    && !existing.contains(description.split(':').next().unwrap_or(description))
                    && (status == 400 || status == 503)
                {
                    response["description"] = Value::String(format!("{existing}; {description}"));
                }
            }
            for (status, response) in responses.iter_mut() {
                let status: u16 = status.parse().expect("numeric status");
                let response = response.as_object_mut().expect("response");
                if status >= 400 {
                    response.insert("content".into(), json!({ PROBLEM_JSON: problem.clone() }));
                }
                let headers = response.entry("headers").or_insert_with(|| Value::Object(Map::new()));
                let headers = headers.as_object_mut().expect("headers");
                headers.insert(
                    "X-Request-Id".into(),
                    header("The request's id: the one the client sent, or one the server made up.", json!({ "type": "string" })),
                );
                if in_tenant {
                    headers.insert(
                        "Ledger-Node".into(),
                        header("Cluster mode only: the node that decided the answer.", json!({ "type": "string" })),
                    );
                }
                if command && status < 500 && ![400, 401, 403, 408, 413, 415, 429, 431].contains(&status) {
                    headers.insert(
                        "Idempotent-Replayed".into(),
                        header(
                            "`true` on the stored answer to a repeat of an earlier request with the same Idempotency-Key.",
                            json!({ "type": "string", "enum": ["true"] }),
                        ),
                    );
                }
                if status == 503 || status == 429 {
                    headers.insert(
                        "Retry-After".into(),
                        header("Seconds to wait before retrying (on most 503 answers).", json!({ "type": "integer", "minimum": 0 })),
                    );
                }
            }
        }
    }
    constrain_schemas(document["components"]["schemas"].as_object_mut().expect("schemas"));
}

/// The tenant pattern, the Idempotency-Key's form, the path names' lengths,
/// and the query parameters' ranges.
/// Clinics and doctors in the path are checked as text only by commands (a
/// read of a name never written answers empty); businesses and campaigns always.
fn constrain_parameters(operation: &mut Value, command: bool) {
    let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) else {
        return;
    };
    let name_schema = || json!({ "type": "string", "minLength": 1, "maxLength": NAME_CHARS_MAX, "pattern": NAME_PATTERN });
    for parameter in parameters {
        let name = parameter["name"].as_str().unwrap_or_default().to_owned();
        let location = parameter["in"].as_str().unwrap_or_default().to_owned();
        let schema = match (location.as_str(), name.as_str()) {
            ("path", "tenant") => json!({ "type": "string", "pattern": TENANT_PATTERN }),
            ("path", "clinic" | "doctor") if command => name_schema(),
            ("path", "business" | "campaign") => name_schema(),
            ("query", "limit") => json!({ "type": "integer", "minimum": 1, "maximum": LIST_LEN_MAX }),
            ("query", "date") => json!({ "type": "string", "format": "date", "pattern": DATE_PATTERN }),
            ("query", "from" | "as_of" | "older_than_secs") => json!({ "type": "integer", "minimum": 0, "maximum": u64::MAX }),
            ("query", "state") => json!({ "type": "string", "enum": ["calling"] }),
            ("header", "Idempotency-Key") => {
                json!({ "type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_LEN_MAX, "pattern": "^[\\x21-\\x7e]+$" })
            }
            _ => continue,
        };
        parameter["schema"] = schema;
    }
}

/// The request bodies' constraints, as the handlers check them.
fn constrain_schemas(schemas: &mut Map<String, Value>) {
    let text = |max: usize| json!({ "minLength": 1, "maxLength": max, "pattern": TEXT_PATTERN });
    let name = || json!({ "minLength": 1, "maxLength": NAME_CHARS_MAX, "pattern": NAME_PATTERN });
    let patient_id = json!({ "pattern": "^[A-Za-z0-9._-]{1,64}$" });
    let rules: &[(&str, &str, Value)] = &[
        ("ScheduleRequest", "slots_per_day", json!({ "minimum": 1, "maximum": SLOTS_PER_DAY_MAX })),
        ("ScheduleRequest", "slot_minutes", json!({ "minimum": 1, "maximum": SLOT_MINUTES_MAX })),
        ("ScheduleRequest", "first_slot", json!({ "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$" })),
        ("BookingRequest", "clinic", name()),
        ("BookingRequest", "doctor", name()),
        ("BookingRequest", "patient", text(PATIENT_CHARS_MAX)),
        ("BookingRequest", "external_ref", text(REF_CHARS_MAX)),
        ("BookingRequest", "correlation_id", text(REF_CHARS_MAX)),
        ("BookingRequest", "date", json!({ "pattern": DATE_PATTERN })),
        ("BookingRequest", "patient_id", json!({ "pattern": "^[A-Za-z0-9._-]{1,64}$" })),
        ("CancelRequest", "reason", text(REASON_CHARS_MAX)),
        ("CompleteRequest", "provider_sid", text(NAME_CHARS_MAX)),
        ("FailRequest", "reason", text(REASON_CHARS_MAX)),
        ("ReleaseRequest", "reason", text(REASON_CHARS_MAX)),
        ("StartCallRequest", "campaign", name()),
        ("StartCallRequest", "default_region", json!({ "enum": regions() })),
        ("BlockRequest", "reason", text(REASON_CHARS_MAX)),
        ("BlockRequest", "default_region", json!({ "enum": regions() })),
        ("ResumeRequest", "reason", text(REASON_CHARS_MAX)),
        ("CommunityRequest", "name", text(COMMUNITY_NAME_CHARS_MAX)),
        ("CommunityRequest", "owner", text(NAME_CHARS_MAX)),
        ("CommunityRequest", "plan", text(NAME_CHARS_MAX)),
        ("HoldRequest", "clinic", name()),
        ("HoldRequest", "doctor", name()),
        ("HoldRequest", "date", json!({ "pattern": DATE_PATTERN })),
        ("HoldRequest", "patient", text(PATIENT_CHARS_MAX)),
        ("HoldRequest", "patient_id", patient_id.clone()),
        ("HoldRequest", "ttl_secs", json!({ "minimum": HOLD_TTL_SECS.start(), "maximum": HOLD_TTL_SECS.end() })),
        ("HoldConfirmRequest", "patient", text(PATIENT_CHARS_MAX)),
        ("HoldConfirmRequest", "patient_id", patient_id),
        ("JoinRequest", "doctor", name()),
        ("JoinRequest", "date", json!({ "pattern": DATE_PATTERN })),
        ("JoinRequest", "patient", text(PATIENT_CHARS_MAX)),
        ("JoinRequest", "patient_id", json!({ "pattern": "^[A-Za-z0-9._-]{1,64}$" })),
        ("AttendanceRequest", "correct", json!({ "enum": [true, null] })),
        ("ClinicRequest", "time_zone", json!({ "enum": chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect::<Vec<_>>() })),
        ("RescheduleRequest", "doctor", name()),
        ("RescheduleRequest", "date", json!({ "pattern": DATE_PATTERN })),
    ];
    for (schema, property, constraints) in rules {
        let Some(target) = schemas.get_mut(*schema).and_then(|s| s["properties"].get_mut(*property)) else {
            panic!("the document has no {schema}.{property} to constrain");
        };
        for (key, value) in constraints.as_object().expect("constraints") {
            target[key] = value.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_a_unique_id_and_problem_answers() {
        let document = serde_json::to_value(<super::super::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                assert!(ids.insert(id.to_owned()), "operationId {id} twice");
                let responses = operation["responses"].as_object().unwrap();
                for (status, response) in responses {
                    if status.as_str() >= "400" {
                        assert!(response["content"].get(PROBLEM_JSON).is_some(), "{method} {path} {status} is not a problem");
                    }
                }
                // A token's rate limit applies to every tenant route, the JSON-only body to every command.
                let expected: &[&str] = match (path.starts_with("/v1/{tenant}"), method == "post" || method == "put") {
                    (true, true) => &["401", "403", "413", "415", "429", "503"],
                    (true, false) => &["401", "403", "429", "503"],
                    (false, _) => &["408", "431", "500"],
                };
                for status in expected {
                    assert!(responses.contains_key(*status), "{method} {path} does not declare {status}");
                }
                if responses.contains_key("429") {
                    assert!(responses["429"]["headers"].get("Retry-After").is_some(), "{method} {path}: 429 without Retry-After");
                }
            }
        }
    }
}
