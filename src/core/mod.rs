//! The pure core of the ledger: commands, events, rejections and the projection.
//!
//! [`decide`] checks a command against the state and returns the events it
//! produces or why it is refused; [`apply`] folds one event into the state.
//! Neither does I/O or reads a clock: time, positions and ids come in as
//! arguments, so the core is deterministic, exhaustively testable and replayable.
//! Inputs are validated by the caller (the HTTP layer); the core asserts only
//! its own invariants.

mod apply;
pub mod booking;
pub mod calls;
pub mod community;
pub mod days;
mod decide;
pub mod holds;
pub mod idempotency;
pub mod phone;
mod rejection_record;
mod state;
#[cfg(test)]
mod tests;
pub mod waitlist;
pub mod zones;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

pub use apply::apply;
pub use booking::{
    Attendance, Booking, BookingCreated, BookingDetails, BookingKind, BookingStatus, Clinic, Day, Doctor, External, Move, Place, Schedule,
    SlotMap, token,
};
pub use calls::{Call, CallState, Campaign, Duplicate, NumberCalls};
pub use community::Community;
pub use decide::{PhoneReply, Reply, decide, decide_refusal, refusal_on_sight, reply};
pub use holds::{Hold, HoldDetails, HoldStatus};
pub use idempotency::{Fingerprint, IdempotencyCheck, IdempotencyTable, Scope, StoredResponse};
pub use phone::{Business, PhoneState};
pub use rejection_record::RejectionRecord;
pub use state::{ClosedCache, DayRecords, Rules, State, TenantState};
pub use waitlist::{Entry, EntryDetails, EntryStatus};
pub use zones::{ClinicZone, SlotTime, Tz};

pub type Position = u64;

/// Immutable text shared by the command, its events and the projection: a
/// clone is a reference-count increment, not an allocation.
pub type Text = std::sync::Arc<str>;
/// A patient's name: kept inline in the booking when it fits in 24 bytes, as
/// nearly all do, so that a booking costs no allocation for it.
pub type Patient = compact_str::CompactString;

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
    SetSchedule {
        clinic: Text,
        doctor: Text,
        schedule: Schedule,
    },
    Book(BookingDetails),
    Cancel {
        booking_id: Uuid,
        reason: Option<Text>,
    },
    ClaimPhone {
        business: Text,
        claim_id: Uuid,
    },
    /// `phone_number` in E.164.
    CompletePhone {
        business: Text,
        claim_id: Uuid,
        phone_number: Text,
        provider_sid: Text,
    },
    FailPhone {
        business: Text,
        claim_id: Uuid,
        reason: Text,
    },
    ReleasePhone {
        business: Text,
        reason: Option<Text>,
    },
    /// `to` in E.164.
    StartCall {
        call_id: Uuid,
        campaign: Text,
        to: Text,
    },
    /// Any state but `Calling`.
    RecordOutcome {
        call_id: Uuid,
        outcome: CallState,
    },
    ResumeCampaign {
        campaign: Text,
        reason: Text,
    },
    BlockNumber {
        number: Text,
        reason: Text,
    },
    CreateCommunity {
        community_id: Uuid,
        name: Text,
        owner: Text,
        plan: Text,
    },
    /// Holds a slot for `ttl_secs` from the writer's clock.
    Hold {
        hold: HoldDetails,
        ttl_secs: u32,
    },
    /// Books the hold's slot; the patient given here or at hold time.
    ConfirmHold {
        hold_id: Uuid,
        booking_id: Uuid,
        patient: Option<Patient>,
        patient_id: Option<Text>,
        kind: Option<BookingKind>,
    },
    ReleaseHold {
        hold_id: Uuid,
    },
    /// Moves an active booking to another slot of its clinic, in one event.
    Reschedule {
        booking_id: Uuid,
        to: Move,
    },
    /// `correct` replaces the other mark (an admin's; the caller checks).
    MarkAttendance {
        booking_id: Uuid,
        attendance: Attendance,
        correct: bool,
    },
    SetClinicZone {
        clinic: Text,
        zone: Tz,
    },
    JoinWaitlist(EntryDetails),
    WithdrawEntry {
        entry_id: Uuid,
    },
}

/// `YYYY-MM-DD`.
pub fn format_date(date: NaiveDate) -> String {
    use chrono::Datelike;
    format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
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
    ScheduleSet {
        clinic: Text,
        doctor: Text,
        schedule: Schedule,
    },
    BookingCreated(BookingCreated),
    BookingCancelled {
        booking_id: Uuid,
        reason: Option<Text>,
    },
    PhoneClaimed {
        business: Text,
        claim_id: Uuid,
        lease_expires_at: DateTime<Utc>,
    },
    PhoneCompleted {
        business: Text,
        claim_id: Uuid,
        phone_number: Text,
        provider_sid: Text,
    },
    PhoneClaimFailed {
        business: Text,
        claim_id: Uuid,
        reason: Text,
    },
    PhoneReleased {
        business: Text,
        phone_number: Text,
        reason: Option<Text>,
    },
    CallStarted {
        call_id: Uuid,
        campaign: Text,
        to: Text,
    },
    CallOutcomeRecorded {
        call_id: Uuid,
        outcome: CallState,
    },
    /// A duplicate call the writer refused: recorded because the kill switch counts them.
    CallRefused {
        campaign: Text,
        to: Text,
        duplicate: Duplicate,
        call_id: Uuid,
    },
    CampaignHalted {
        campaign: Text,
        reason: Text,
    },
    CampaignResumed {
        campaign: Text,
        reason: Text,
    },
    NumberBlocked {
        number: Text,
        reason: Text,
    },
    /// The community, its owner's admin membership and its subscription, at once.
    CommunityCreated {
        community_id: Uuid,
        slug: Text,
        name: Text,
        owner: Text,
        plan: Text,
    },
    HoldPlaced {
        details: HoldDetails,
        expires_at: DateTime<Utc>,
    },
    HoldReleased {
        hold_id: Uuid,
    },
    /// Appended by the writer at the hold's expiry, by its own clock.
    HoldExpired {
        hold_id: Uuid,
    },
    /// The booking's new place and token; `kind` and `patient` are the
    /// booking's, so that the new day's readers need no other record.
    BookingRescheduled {
        booking_id: Uuid,
        clinic: Text,
        doctor: Text,
        date: NaiveDate,
        slot: u32,
        kind: BookingKind,
        token_number: u32,
        patient: Patient,
    },
    AttendanceRecorded {
        booking_id: Uuid,
        attendance: Attendance,
        corrected: bool,
    },
    /// The clinic's zone from now on, and the tzdata release that computes it.
    ClinicZoneSet {
        clinic: Text,
        zone: Tz,
        tzdata: Text,
    },
    WaitlistJoined {
        details: EntryDetails,
    },
    /// A waiting entry left (an offered one leaves by its hold's release).
    WaitlistWithdrawn {
        entry_id: Uuid,
    },
    /// The ledger's own: the clinic's days through `through` closed
    /// ([`days`]); their waiting entries expire, and they never reopen.
    DaysClosed {
        clinic: Text,
        through: NaiveDate,
    },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::ScheduleSet { .. } => "schedule_set",
            EventKind::BookingCreated(_) => "booking_created",
            EventKind::BookingCancelled { .. } => "booking_cancelled",
            EventKind::PhoneClaimed { .. } => "phone_claimed",
            EventKind::PhoneCompleted { .. } => "phone_completed",
            EventKind::PhoneClaimFailed { .. } => "phone_claim_failed",
            EventKind::PhoneReleased { .. } => "phone_released",
            EventKind::CallStarted { .. } => "call_started",
            EventKind::CallOutcomeRecorded { .. } => "call_outcome_recorded",
            EventKind::CallRefused { .. } => "call_refused",
            EventKind::CampaignHalted { .. } => "campaign_halted",
            EventKind::CampaignResumed { .. } => "campaign_resumed",
            EventKind::NumberBlocked { .. } => "number_blocked",
            EventKind::CommunityCreated { .. } => "community_created",
            EventKind::HoldPlaced { .. } => "hold_placed",
            EventKind::HoldReleased { .. } => "hold_released",
            EventKind::HoldExpired { .. } => "hold_expired",
            EventKind::BookingRescheduled { .. } => "booking_rescheduled",
            EventKind::AttendanceRecorded { .. } => "attendance_recorded",
            EventKind::ClinicZoneSet { .. } => "clinic_zone_set",
            EventKind::WaitlistJoined { .. } => "waitlist_joined",
            EventKind::WaitlistWithdrawn { .. } => "waitlist_withdrawn",
            EventKind::DaysClosed { .. } => "days_closed",
        }
    }

    /// What the event is about, for the read side's filters: one exhaustive
    /// match, so that a new event kind says here which subjects it touches.
    pub fn subjects(&self) -> Subjects<'_> {
        let none = Subjects::default();
        match self {
            EventKind::ScheduleSet { clinic, .. } => Subjects { clinic: Some(clinic), ..none },
            EventKind::BookingCreated(created) => {
                Subjects { clinic: Some(&created.details.clinic), booking: Some(created.details.booking_id), ..none }
            }
            EventKind::BookingCancelled { booking_id, .. } => Subjects { booking: Some(*booking_id), ..none },
            EventKind::PhoneClaimed { business, .. } | EventKind::PhoneClaimFailed { business, .. } => {
                Subjects { business: Some(business), ..none }
            }
            EventKind::PhoneCompleted { business, phone_number, .. } | EventKind::PhoneReleased { business, phone_number, .. } => {
                Subjects { business: Some(business), number: Some(phone_number), ..none }
            }
            EventKind::CallStarted { call_id, campaign, to } => {
                Subjects { campaign: Some(campaign), number: Some(to), call: Some(*call_id), ..none }
            }
            EventKind::CallOutcomeRecorded { call_id, .. } => Subjects { call: Some(*call_id), ..none },
            // Its `call_id` is the call the attempt duplicated, not this attempt.
            EventKind::CallRefused { campaign, to, .. } => Subjects { campaign: Some(campaign), number: Some(to), ..none },
            EventKind::CampaignHalted { campaign, .. } | EventKind::CampaignResumed { campaign, .. } => {
                Subjects { campaign: Some(campaign), ..none }
            }
            EventKind::NumberBlocked { number, .. } => Subjects { number: Some(number), ..none },
            EventKind::CommunityCreated { .. } => none,
            EventKind::HoldPlaced { details, .. } => Subjects { clinic: Some(&details.clinic), hold: Some(details.hold_id), ..none },
            EventKind::HoldReleased { hold_id } | EventKind::HoldExpired { hold_id } => Subjects { hold: Some(*hold_id), ..none },
            EventKind::BookingRescheduled { booking_id, .. } | EventKind::AttendanceRecorded { booking_id, .. } => {
                Subjects { booking: Some(*booking_id), ..none }
            }
            EventKind::ClinicZoneSet { clinic, .. } => Subjects { clinic: Some(clinic), ..none },
            EventKind::WaitlistJoined { details } => Subjects { clinic: Some(&details.clinic), entry: Some(details.entry_id), ..none },
            EventKind::WaitlistWithdrawn { entry_id } => Subjects { entry: Some(*entry_id), ..none },
            EventKind::DaysClosed { clinic, .. } => Subjects { clinic: Some(clinic), ..none },
        }
    }
}

/// The subjects an event names ([`EventKind::subjects`]). An event that names a
/// clinic, campaign or number and creates a booking, hold or call makes it
/// part of that; an event that names only a booking, hold or call belongs to
/// whatever that belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subjects<'a> {
    pub clinic: Option<&'a Text>,
    pub booking: Option<Uuid>,
    pub campaign: Option<&'a Text>,
    /// A phone number, E.164: called, refused, blocked, bought or released.
    pub number: Option<&'a Text>,
    pub call: Option<Uuid>,
    pub business: Option<&'a Text>,
    pub hold: Option<Uuid>,
    /// A waitlist entry.
    pub entry: Option<Uuid>,
}

/// Why a command was refused. Every variant is a business answer (4xx), never a fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("doctor {doctor} of clinic {clinic} has no schedule")]
    UnknownDoctor { clinic: Text, doctor: Text },
    #[error("slot {slot} is outside the schedule's {slots_per_day} slots a day")]
    SlotOutOfRange { slot: u32, slots_per_day: u32 },
    #[error("clinic {clinic} already has {limit} doctors, the most a clinic may have")]
    TooManyDoctors { clinic: Text, limit: u32 },
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
    /// An external calendar's clock ahead of ours by more than the freshness
    /// window: its timestamp cannot be trusted to say the booking is fresh.
    #[error("the external booking says it was created {ahead_secs} s in the future, beyond the {window_secs} s allowed for clock skew")]
    ExternalCreatedInFuture { ahead_secs: i64, window_secs: i64 },
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    #[error("claim {claim_id} is buying a number until {lease_expires_at}")]
    PurchaseInProgress { claim_id: Uuid, lease_expires_at: DateTime<Utc> },
    #[error(
        "claim {claim_id} is not the business's current claim (it expired and was taken over, completed differently, or never existed)"
    )]
    ClaimSuperseded { claim_id: Uuid },
    #[error("{phone_number} is the active number of business {business}")]
    PhoneNumberInUse { phone_number: Text, business: Text },
    #[error("{number} is blocked: {reason}")]
    NumberBlocked { number: Text, reason: Text },
    #[error("call {call_id} to this number is still in progress")]
    CallInProgress { call_id: Uuid },
    #[error("call {call_id} reached this number at {called_at}; it may be called again from {retry_after}")]
    RecentlyCalled { call_id: Uuid, called_at: DateTime<Utc>, retry_after: DateTime<Utc> },
    #[error("campaign {campaign} is halted: {reason}")]
    CampaignHalted { campaign: Text, reason: Text },
    #[error("call {call_id} already has the outcome {}", outcome.name())]
    OutcomeAlreadyRecorded { call_id: Uuid, outcome: CallState },
    #[error("no call {call_id}")]
    CallNotFound { call_id: Uuid },
    #[error("the name {name:?} has no letters or digits to make a slug of")]
    InvalidName { name: Text },
    #[error("the slot is held by hold {hold_id} until {expires_at}")]
    SlotHeld { hold_id: Uuid, expires_at: DateTime<Utc> },
    #[error("no hold {hold_id}")]
    HoldNotFound { hold_id: Uuid },
    #[error("hold {hold_id} expired at {expires_at}")]
    HoldExpired { hold_id: Uuid, expires_at: DateTime<Utc> },
    #[error("hold {hold_id} was released")]
    HoldReleased { hold_id: Uuid },
    #[error("hold {hold_id} was confirmed as booking {booking_id}")]
    HoldConfirmed { hold_id: Uuid, booking_id: Uuid },
    #[error("the hold was made with a different {field}")]
    HoldPatientMismatch { field: &'static str },
    /// Neither the hold nor its confirmation named the patient.
    #[error("patient is required: the hold names none")]
    PatientRequired,
    #[error("the tenant has {limit} active holds, the most it may have")]
    TooManyHolds { limit: u32, retry_after_secs: u32 },
    #[error("booking {booking_id} is cancelled")]
    BookingCancelled { booking_id: Uuid },
    #[error("booking {booking_id} is at version {version}, not the one expected")]
    VersionConflict { booking_id: Uuid, version: u32 },
    #[error("booking {booking_id} already has its attendance recorded: {}", attendance.name())]
    AttendanceRecorded { booking_id: Uuid, attendance: Attendance },
    #[error("booking {booking_id} is on {date}, which has not come yet")]
    TooEarly { booking_id: Uuid, date: NaiveDate },
    #[error("slot {slot} starts at {time}, a time the clinic's clock skips that day")]
    SlotUnavailable { slot: u32, time: String },
    #[error("no waitlist entry {entry_id}")]
    EntryNotFound { entry_id: Uuid },
    #[error("waitlist entry {entry_id} was booked as booking {booking_id}")]
    EntryBooked { entry_id: Uuid, booking_id: Uuid },
    #[error("{date} closed on {closed_since}: its bookings, holds and waitlist no longer change")]
    DayClosed { date: NaiveDate, closed_since: NaiveDate },
}

impl Rejection {
    /// What the command ran into, as `kind:id`, for the rejection journal.
    pub fn conflicts_with(&self) -> Option<String> {
        Some(match self {
            Rejection::SlotTaken { booking_id, .. }
            | Rejection::ScheduleConflict { booking_id, .. }
            | Rejection::ExternalRefBound { booking_id, .. }
            | Rejection::BookingCancelled { booking_id }
            | Rejection::VersionConflict { booking_id, .. }
            | Rejection::AttendanceRecorded { booking_id, .. }
            | Rejection::TooEarly { booking_id, .. } => format!("booking:{booking_id}"),
            Rejection::PurchaseInProgress { claim_id, .. } | Rejection::ClaimSuperseded { claim_id } => format!("claim:{claim_id}"),
            Rejection::PhoneNumberInUse { business, .. } => format!("business:{business}"),
            Rejection::NumberBlocked { number, .. } => format!("number:{number}"),
            Rejection::CallInProgress { call_id }
            | Rejection::RecentlyCalled { call_id, .. }
            | Rejection::OutcomeAlreadyRecorded { call_id, .. } => format!("call:{call_id}"),
            Rejection::CampaignHalted { campaign, .. } => format!("campaign:{campaign}"),
            Rejection::SlotHeld { hold_id, .. }
            | Rejection::HoldExpired { hold_id, .. }
            | Rejection::HoldReleased { hold_id }
            | Rejection::HoldConfirmed { hold_id, .. } => format!("hold:{hold_id}"),
            Rejection::UnknownDoctor { .. }
            | Rejection::SlotOutOfRange { .. }
            | Rejection::TooManyDoctors { .. }
            | Rejection::BookingNotFound { .. }
            | Rejection::StaleExternalBooking { .. }
            | Rejection::ExternalCreatedInFuture { .. }
            | Rejection::IdempotencyKeyReused
            | Rejection::CallNotFound { .. }
            | Rejection::InvalidName { .. }
            | Rejection::HoldNotFound { .. }
            | Rejection::HoldPatientMismatch { .. }
            | Rejection::PatientRequired
            | Rejection::TooManyHolds { .. }
            | Rejection::SlotUnavailable { .. }
            | Rejection::EntryNotFound { .. }
            | Rejection::DayClosed { .. } => return None,
            Rejection::EntryBooked { booking_id, .. } => format!("booking:{booking_id}"),
        })
    }

    /// The machine-readable code of API.md.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::UnknownDoctor { .. } => "unknown_doctor",
            Rejection::SlotOutOfRange { .. } => "slot_out_of_range",
            Rejection::TooManyDoctors { .. } => "too_many_doctors",
            Rejection::SlotTaken { .. } => "slot_taken",
            Rejection::ScheduleConflict { .. } => "schedule_conflict",
            Rejection::BookingNotFound { .. } => "not_found",
            Rejection::ExternalRefBound { .. } => "external_ref_bound",
            Rejection::StaleExternalBooking { .. } => "stale_external_booking",
            Rejection::ExternalCreatedInFuture { .. } => "external_created_in_future",
            Rejection::IdempotencyKeyReused => "idempotency_key_reused",
            Rejection::PurchaseInProgress { .. } => "purchase_in_progress",
            Rejection::ClaimSuperseded { .. } => "claim_superseded",
            Rejection::PhoneNumberInUse { .. } => "phone_number_in_use",
            Rejection::NumberBlocked { .. } => "number_blocked",
            Rejection::CallInProgress { .. } => "call_in_progress",
            Rejection::RecentlyCalled { .. } => "recently_called",
            Rejection::CampaignHalted { .. } => "campaign_halted",
            Rejection::OutcomeAlreadyRecorded { .. } => "outcome_already_recorded",
            Rejection::CallNotFound { .. } => "not_found",
            Rejection::InvalidName { .. } => "invalid_name",
            Rejection::SlotHeld { .. } => "slot_held",
            Rejection::HoldNotFound { .. } => "not_found",
            Rejection::HoldExpired { .. } => "hold_expired",
            Rejection::HoldReleased { .. } => "hold_released",
            Rejection::HoldConfirmed { .. } => "hold_confirmed",
            Rejection::HoldPatientMismatch { .. } => "hold_patient_mismatch",
            Rejection::PatientRequired => "invalid_request",
            Rejection::TooManyHolds { .. } => "too_many_holds",
            Rejection::BookingCancelled { .. } => "booking_cancelled",
            Rejection::VersionConflict { .. } => "version_conflict",
            Rejection::AttendanceRecorded { .. } => "attendance_recorded",
            Rejection::TooEarly { .. } => "too_early",
            Rejection::SlotUnavailable { .. } => "slot_unavailable",
            Rejection::EntryNotFound { .. } => "not_found",
            Rejection::EntryBooked { .. } => "entry_booked",
            Rejection::DayClosed { .. } => "day_closed",
        }
    }
}
