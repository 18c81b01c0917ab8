//! The projection: what the events so far say is true, indexed for `decide` and reads.
//!
//! Indexes are `BTreeMap`s, not hash maps: they grow a node at a time, so the
//! writer never stalls on a whole-table resize, and they iterate in a stable order.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use uuid::Uuid;

use super::{BookingKind, IdempotencyTable, Position, Schedule, Text};
use std::sync::Arc;

/// Business rules that come from configuration, not from events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// An `external_created_at` older than this is refused as stale.
    pub freshness_window: Duration,
    /// How long an Idempotency-Key's stored answer is kept.
    pub idempotency_retention: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Rules { freshness_window: Duration::seconds(30), idempotency_retention: Duration::hours(24) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub rules: Rules,
    /// The position of the last event applied (0 before the first).
    pub position: Position,
    pub tenants: BTreeMap<Text, TenantState>,
    pub idempotency: IdempotencyTable,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantState {
    pub clinics: BTreeMap<Text, Clinic>,
    /// Shared, so that an answer holds a booking without copying it.
    pub bookings: BTreeMap<Uuid, Arc<Booking>>,
    /// External calendar ids, each bound to one booking forever.
    pub external_refs: BTreeMap<Text, Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Clinic {
    pub doctors: BTreeMap<Text, Doctor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doctor {
    pub schedule: Schedule,
    /// The position of the event that set `schedule`.
    pub schedule_position: Position,
    pub days: BTreeMap<NaiveDate, Day>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Day {
    /// The active booking holding each booked slot; a free slot is absent.
    pub slots: BTreeMap<u32, Uuid>,
    /// The last token number issued per kind; the next one is this plus one.
    pub tokens_issued_advance: u32,
    pub tokens_issued_walk_in: u32,
}

impl Day {
    pub fn tokens_issued(&self, kind: BookingKind) -> u32 {
        match kind {
            BookingKind::Advance => self.tokens_issued_advance,
            BookingKind::WalkIn => self.tokens_issued_walk_in,
        }
    }

    pub(super) fn tokens_issued_mut(&mut self, kind: BookingKind) -> &mut u32 {
        match kind {
            BookingKind::Advance => &mut self.tokens_issued_advance,
            BookingKind::WalkIn => &mut self.tokens_issued_walk_in,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingStatus {
    Confirmed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub booking_id: Uuid,
    pub clinic: Text,
    pub doctor: Text,
    pub date: NaiveDate,
    pub slot: u32,
    pub patient: Text,
    pub kind: BookingKind,
    pub token_number: u32,
    pub status: BookingStatus,
    pub external_ref: Option<Text>,
    pub correlation_id: Option<Text>,
    pub external_created_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The position of the last event that changed this booking.
    pub position: Position,
    pub cancel_reason: Option<Text>,
}

impl Booking {
    pub fn token(&self) -> String {
        super::token(self.kind, self.token_number)
    }
}

impl State {
    pub fn new(rules: Rules) -> State {
        State { rules, ..State::default() }
    }

    pub fn tenant(&self, tenant: &str) -> Option<&TenantState> {
        self.tenants.get(tenant)
    }

    pub fn booking(&self, tenant: &str, booking_id: &Uuid) -> Option<&Arc<Booking>> {
        self.tenant(tenant)?.bookings.get(booking_id)
    }

    pub fn doctor(&self, tenant: &str, clinic: &str, doctor: &str) -> Option<&Doctor> {
        self.tenant(tenant)?.clinics.get(clinic)?.doctors.get(doctor)
    }
}
