//! The pure core of the ledger: commands, events, rejections and the projection.
//!
//! [`decide`] checks a command against the state and returns the events it
//! produces or why it is refused; [`apply`] folds one event into the state.
//! Neither does I/O or reads a clock: time, positions and ids come in as
//! arguments, so the core is deterministic, exhaustively testable and replayable.
//! Inputs are validated by the caller (the HTTP layer); the core asserts only
//! its own invariants.

mod apply;
mod decide;
pub mod idempotency;
mod state;
#[cfg(test)]
mod tests;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

pub use apply::apply;
pub use decide::{Reply, decide, reply};
pub use idempotency::{Fingerprint, IdempotencyCheck, IdempotencyTable, Scope, StoredResponse};
pub use state::{Booking, BookingStatus, Clinic, Day, Doctor, Rules, State, TenantState};

pub type Position = u64;

/// Immutable text shared by the command, its events and the projection: a
/// clone is a reference-count increment, not an allocation.
pub type Text = std::sync::Arc<str>;

/// What the writer hands `decide` besides the state and the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The writer's clock when it took the batch (monotonic across batches).
    pub now: DateTime<Utc>,
    /// The position the first event of this command will get.
    pub position_next: Position,
}

/// A command and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub tenant: Text,
    /// The token name that sent it.
    pub actor: Text,
    /// The request's correlation id.
    pub request_id: Text,
    pub idempotency: Option<IdempotencyKey>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: Text,
    pub fingerprint: Fingerprint,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SetSchedule { clinic: Text, doctor: Text, schedule: Schedule },
    Book(BookRequest),
    Cancel { booking_id: Uuid, reason: Option<Text> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// 1..=1000.
    pub slots_per_day: u32,
    /// Minutes after midnight of slot 0.
    pub first_slot_minute: Option<u32>,
    /// 1..=480.
    pub slot_minutes: Option<u32>,
}

impl Schedule {
    /// The wall-clock start of `slot` in minutes after midnight, when the schedule
    /// says and the slot starts before midnight.
    pub fn slot_minute(&self, slot: u32) -> Option<u32> {
        let minute = self.first_slot_minute? + slot * self.slot_minutes?;
        (minute < 24 * 60).then_some(minute)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BookingKind {
    Advance,
    WalkIn,
}

impl BookingKind {
    pub fn token_prefix(self) -> char {
        match self {
            BookingKind::Advance => 'A',
            BookingKind::WalkIn => 'W',
        }
    }
}

/// `A005`: the kind's letter and at least three digits.
pub fn token(kind: BookingKind, number: u32) -> String {
    format!("{}{number:03}", kind.token_prefix())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookRequest {
    /// Chosen by the caller: a UUIDv7, so that new ids sort last and the booking
    /// index grows at its edge. `apply` asserts it is new.
    pub booking_id: Uuid,
    pub clinic: Text,
    pub doctor: Text,
    pub date: NaiveDate,
    pub slot: u32,
    pub patient: Text,
    pub kind: BookingKind,
    pub external_ref: Option<Text>,
    pub correlation_id: Option<Text>,
    pub external_created_at: Option<DateTime<Utc>>,
}

/// One ledger event with its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub position: Position,
    pub recorded_at: DateTime<Utc>,
    pub tenant: Text,
    pub actor: Text,
    pub request_id: Text,
    pub idempotency_key: Option<Text>,
    pub kind: EventKind,
    /// The stored answer for the command's Idempotency-Key, on its last event.
    pub response: Option<StoredResponse>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    ScheduleSet { clinic: Text, doctor: Text, schedule: Schedule },
    BookingCreated(BookingCreated),
    BookingCancelled { booking_id: Uuid, reason: Option<Text> },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::ScheduleSet { .. } => "schedule_set",
            EventKind::BookingCreated(_) => "booking_created",
            EventKind::BookingCancelled { .. } => "booking_cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingCreated {
    pub booking_id: Uuid,
    pub clinic: Text,
    pub doctor: Text,
    pub date: NaiveDate,
    pub slot: u32,
    pub patient: Text,
    pub kind: BookingKind,
    pub token_number: u32,
    pub external_ref: Option<Text>,
    pub correlation_id: Option<Text>,
    pub external_created_at: Option<DateTime<Utc>>,
}

/// Why a command was refused. Every variant is a business answer (4xx), never a fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("doctor {doctor} of clinic {clinic} has no schedule")]
    UnknownDoctor { clinic: Text, doctor: Text },
    #[error("slot {slot} is outside the schedule's {slots_per_day} slots a day")]
    SlotOutOfRange { slot: u32, slots_per_day: u32 },
    #[error("the slot is already held by booking {booking_id}")]
    SlotTaken { booking_id: Uuid, token: String },
    #[error("booking {booking_id} holds slot {slot} on {date}, beyond the new schedule")]
    ScheduleConflict { booking_id: Uuid, date: NaiveDate, slot: u32 },
    #[error("no booking {booking_id}")]
    BookingNotFound { booking_id: Uuid },
    #[error("external booking {external_ref} is already bound to booking {booking_id}")]
    ExternalRefBound { external_ref: Text, booking_id: Uuid, correlation_id: Option<Text> },
    #[error("the external booking was created {age_secs} s ago, beyond the {window_secs} s freshness window")]
    StaleExternalBooking { age_secs: i64, window_secs: i64 },
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
}

impl Rejection {
    /// The machine-readable code of API.md.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::UnknownDoctor { .. } => "unknown_doctor",
            Rejection::SlotOutOfRange { .. } => "slot_out_of_range",
            Rejection::SlotTaken { .. } => "slot_taken",
            Rejection::ScheduleConflict { .. } => "schedule_conflict",
            Rejection::BookingNotFound { .. } => "not_found",
            Rejection::ExternalRefBound { .. } => "external_ref_bound",
            Rejection::StaleExternalBooking { .. } => "stale_external_booking",
            Rejection::IdempotencyKeyReused => "idempotency_key_reused",
        }
    }
}
