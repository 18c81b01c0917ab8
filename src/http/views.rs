//! The JSON the API answers with, and the rendering of the writer's outcomes.

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, PROBLEM_JSON};
use crate::core::{Booking, BookingKind, BookingStatus, Reply, Schedule};
use crate::writer::{Answer, Outcome};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KindView {
    Advance,
    WalkIn,
}

impl From<BookingKind> for KindView {
    fn from(kind: BookingKind) -> Self {
        match kind {
            BookingKind::Advance => KindView::Advance,
            BookingKind::WalkIn => KindView::WalkIn,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusView {
    Confirmed,
    Cancelled,
}

/// A booking.
#[derive(Debug, Serialize, ToSchema)]
pub struct BookingView {
    pub booking_id: Uuid,
    /// `A` (advance) or `W` (walk-in) and at least three digits.
    #[schema(example = "A005")]
    pub token: String,
    pub status: StatusView,
    pub clinic: String,
    pub doctor: String,
    pub date: NaiveDate,
    pub slot: u32,
    pub patient: String,
    pub kind: KindView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The position of the last event that changed the booking.
    pub position: u64,
    pub created_at: DateTime<Utc>,
}

impl From<&Booking> for BookingView {
    fn from(b: &Booking) -> Self {
        BookingView {
            booking_id: b.booking_id,
            token: b.token(),
            status: match b.status {
                BookingStatus::Confirmed => StatusView::Confirmed,
                BookingStatus::Cancelled => StatusView::Cancelled,
            },
            clinic: b.clinic.to_string(),
            doctor: b.doctor.to_string(),
            date: b.date,
            slot: b.slot,
            patient: b.patient.to_string(),
            kind: b.kind.into(),
            external_ref: b.external_ref.as_deref().map(str::to_owned),
            correlation_id: b.correlation_id.as_deref().map(str::to_owned),
            position: b.position,
            created_at: b.created_at,
        }
    }
}

pub fn format_minute(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// A doctor's schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub clinic: String,
    pub doctor: String,
    pub slots_per_day: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "09:00")]
    pub first_slot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_minutes: Option<u32>,
    /// The position of the event that set this schedule.
    pub position: u64,
}

impl ScheduleView {
    pub fn new(clinic: &str, doctor: &str, schedule: &Schedule, position: u64) -> ScheduleView {
        ScheduleView {
            clinic: clinic.to_owned(),
            doctor: doctor.to_owned(),
            slots_per_day: schedule.slots_per_day,
            first_slot: schedule.first_slot_minute.map(format_minute),
            slot_minutes: schedule.slot_minutes,
            position,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    Free,
    Booked,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlotView {
    pub slot: u32,
    /// When the schedule has `first_slot` and `slot_minutes` (and the slot starts before midnight).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub state: SlotState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booking_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DoctorSlotsView {
    pub doctor: String,
    pub slots: Vec<SlotView>,
}

/// One clinic's slots on one date.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlotsView {
    pub clinic: String,
    pub date: NaiveDate,
    /// The position the projection stands at.
    pub as_of: u64,
    pub doctors: Vec<DoctorSlotsView>,
}

/// An RFC 9457 problem document (documentation only: `ApiError` writes them).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Machine-readable, snake_case; extension members depend on it.
    pub code: String,
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("views serialize")
}

/// The status and body of a writer outcome. Also the writer's `Render`: what
/// it stores for a keyed command is exactly what the first caller receives.
pub fn render(outcome: &Outcome) -> (u16, Vec<u8>) {
    match outcome {
        Ok(Reply::Booking { booking, created }) => (if *created { 201 } else { 200 }, json(&BookingView::from(&**booking))),
        Ok(Reply::Schedule { clinic, doctor, schedule, position }) => (200, json(&ScheduleView::new(clinic, doctor, schedule, *position))),
        Err(rejection) => {
            let error = ApiError::from(rejection);
            (error.status.as_u16(), error.body())
        }
    }
}

/// The HTTP response for a writer answer.
pub fn respond(answer: Answer) -> Response {
    let (status, body, replayed) = match answer {
        Answer::Fresh(outcome) => {
            let (status, body) = render(&outcome);
            (status, Bytes::from(body), false)
        }
        Answer::Stored { status, body, replayed } => (status, Bytes::copy_from_slice(&body), replayed),
    };
    let content_type = if status >= 400 { PROBLEM_JSON } else { "application/json" };
    let status = StatusCode::from_u16(status).expect("stored statuses are valid");
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
