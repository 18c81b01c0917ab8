//! The projection: what the events so far say is true, indexed for `decide` and reads.
//!
//! Indexes are `BTreeMap`s, not hash maps: they grow a node at a time, so the
//! writer never stalls on a whole-table resize, and they iterate in a stable order.
//! The one exception is a day's booked slots ([`super::SlotMap`]): a sorted
//! vector bounded by the schedule's 1,000 slots, half the memory of a map.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use uuid::Uuid;

use super::{Booking, Business, Call, Campaign, Clinic, Community, Entry, Hold, IdempotencyTable, NumberCalls, Position, Text};
use std::sync::Arc;

/// Business rules that come from configuration, not from events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// An `external_created_at` older than this is refused as stale.
    pub freshness_window: Duration,
    /// How long an Idempotency-Key's stored answer is kept.
    pub idempotency_retention: Duration,
    /// How long a phone-number claim holds off other claims.
    pub phone_lease: Duration,
    /// A number is called at most once this often, across campaigns.
    pub call_cooldown: Duration,
    /// A campaign halts after this many consecutive failed calls...
    pub campaign_failures_max: u32,
    /// ...or this many refused duplicate calls within `duplicate_window`.
    pub campaign_duplicates_max: u32,
    pub duplicate_window: Duration,
    /// A schedule for a new doctor is refused once the clinic has this many:
    /// a slots read renders every doctor of the clinic while it holds the
    /// published state's read lock, so an unbounded clinic stalls the writer.
    pub doctors_per_clinic_max: u32,
    /// Active holds per tenant (`[limits] holds_max`).
    pub holds_max: u32,
    /// How long a waitlist offer's hold lasts (`[rules] waitlist_offer_secs`).
    pub waitlist_offer_secs: u32,
    /// A clinic's day D stays open through D + this many days, in its zone
    /// (`[retention] open_days_past`).
    pub open_days_past: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            freshness_window: Duration::seconds(30),
            idempotency_retention: Duration::hours(24),
            phone_lease: Duration::minutes(10),
            call_cooldown: Duration::hours(24),
            campaign_failures_max: 3,
            campaign_duplicates_max: 2,
            duplicate_window: Duration::hours(1),
            doctors_per_clinic_max: 64,
            holds_max: 100_000,
            waitlist_offer_secs: 900,
            open_days_past: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub rules: Rules,
    /// The position of the last event applied (0 before the first).
    pub position: Position,
    /// When the last event applied was recorded.
    pub recorded_at_last: DateTime<Utc>,
    pub tenants: BTreeMap<Text, TenantState>,
    pub idempotency: IdempotencyTable,
    /// The position of the last `days_closed` applied (0 before the first):
    /// what the closed-day store must hold for a snapshot to be used.
    pub days_closed_last: Position,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantState {
    pub clinics: BTreeMap<Text, Clinic>,
    /// Shared, so that an answer holds a booking without copying it.
    pub bookings: BTreeMap<Uuid, Arc<Booking>>,
    /// External calendar ids, each bound to one booking forever.
    pub external_refs: BTreeMap<Text, Uuid>,
    pub businesses: BTreeMap<Text, Business>,
    /// Active phone numbers (E.164) and the business each belongs to.
    pub phone_owners: BTreeMap<Text, Text>,
    pub calls: BTreeMap<Uuid, Arc<Call>>,
    /// Calls still `calling`, oldest first.
    pub calling: BTreeSet<(DateTime<Utc>, Uuid)>,
    /// Per number (E.164): its last call, its call in progress, its block.
    pub numbers: BTreeMap<Text, NumberCalls>,
    pub campaigns: BTreeMap<Text, Campaign>,
    pub communities: BTreeMap<Text, Arc<Community>>,
    /// The highest `-N` suffix given to each base slug.
    pub slug_suffixes: BTreeMap<Text, u32>,
    /// Every hold, in any status.
    pub holds: BTreeMap<Uuid, Arc<Hold>>,
    /// The holds still `held` by their events, by expiry: the writer's timer
    /// and the limit of active holds read it.
    pub hold_expiries: BTreeSet<(DateTime<Utc>, Uuid)>,
    /// Every waitlist entry, in any status.
    pub waitlist: BTreeMap<Uuid, Arc<Entry>>,
    /// Per clinic day: its waiting entries by the position they joined at.
    pub waiting: BTreeMap<(Text, NaiveDate), BTreeMap<Position, Uuid>>,
    /// Per clinic day: every booking, hold and entry on it, which leave
    /// memory together when the day closes (`days_closed`).
    pub day_records: BTreeMap<(Text, NaiveDate), DayRecords>,
    /// Records of closed days the writer read back from the closed-day store
    /// for the commands it decides (not part of the state's meaning).
    pub closed: ClosedCache,
}

/// A clinic day's records by id, each list sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DayRecords {
    pub bookings: Vec<Uuid>,
    pub holds: Vec<Uuid>,
    pub entries: Vec<Uuid>,
}

impl DayRecords {
    pub fn is_empty(&self) -> bool {
        self.bookings.is_empty() && self.holds.is_empty() && self.entries.is_empty()
    }

    pub(super) fn add(ids: &mut Vec<Uuid>, id: Uuid) {
        if let Err(at) = ids.binary_search(&id) {
            ids.insert(at, id);
        }
    }

    pub(super) fn remove(ids: &mut Vec<Uuid>, id: &Uuid) {
        if let Ok(at) = ids.binary_search(id) {
            ids.remove(at);
        }
    }
}

/// Records of closed days, as the closed-day store gave them back: a cache
/// the writer fills before deciding, bounded, never written by `apply`. Two
/// states are equal whatever their caches hold.
#[derive(Debug, Clone, Default)]
pub struct ClosedCache {
    pub bookings: BTreeMap<Uuid, Arc<Booking>>,
    pub holds: BTreeMap<Uuid, Arc<Hold>>,
    pub entries: BTreeMap<Uuid, Arc<Entry>>,
    /// External refs of closed days' bookings, to the booking each is bound to.
    pub external_refs: BTreeMap<Text, Uuid>,
    /// The zone each closed clinic day closed in: its bookings' instants.
    pub zones: BTreeMap<(Text, NaiveDate), super::Tz>,
}

impl ClosedCache {
    pub fn len(&self) -> usize {
        self.bookings.len() + self.holds.len() + self.entries.len() + self.external_refs.len() + self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PartialEq for ClosedCache {
    fn eq(&self, _: &ClosedCache) -> bool {
        true
    }
}

impl Eq for ClosedCache {}

impl TenantState {
    /// Indexes every booking, hold and entry by its clinic day (after a
    /// snapshot is loaded: the index is derived from them).
    pub fn rebuild_day_records(&mut self) {
        let mut records: BTreeMap<(Text, NaiveDate), DayRecords> = BTreeMap::new();
        for booking in self.bookings.values() {
            let key = (booking.details.clinic.clone(), booking.details.date);
            records.entry(key).or_default().bookings.push(booking.details.booking_id);
        }
        for hold in self.holds.values() {
            records.entry((hold.details.clinic.clone(), hold.details.date)).or_default().holds.push(hold.details.hold_id);
        }
        for entry in self.waitlist.values() {
            records.entry((entry.details.clinic.clone(), entry.details.date)).or_default().entries.push(entry.details.entry_id);
        }
        // Each list was filled in id order.
        self.day_records = records;
    }

    /// A booking of an open day, or of a closed one the writer read back.
    pub fn find_booking(&self, booking_id: &Uuid) -> Option<&Arc<Booking>> {
        self.bookings.get(booking_id).or_else(|| self.closed.bookings.get(booking_id))
    }

    pub fn find_hold(&self, hold_id: &Uuid) -> Option<&Arc<Hold>> {
        self.holds.get(hold_id).or_else(|| self.closed.holds.get(hold_id))
    }

    pub fn find_entry(&self, entry_id: &Uuid) -> Option<&Arc<Entry>> {
        self.waitlist.get(entry_id).or_else(|| self.closed.entries.get(entry_id))
    }

    /// The booking an external ref is bound to, forever.
    pub fn find_external_ref(&self, external_ref: &str) -> Option<&Uuid> {
        self.external_refs.get(external_ref).or_else(|| self.closed.external_refs.get(external_ref))
    }
}

impl State {
    /// Makes this state hold `other`'s copy of a booking when both copies are
    /// the same, so the writer's working and published states share one
    /// allocation per booking instead of two.
    ///
    /// Both copies are the same when both were last changed by the event at
    /// the same position: `apply` is deterministic and each copy applied the
    /// same events up to it. So positions are compared, not whole bookings
    /// (their strings and options); debug builds compare both.
    pub fn share_booking(&mut self, other: &State, tenant: &str, booking_id: &Uuid) {
        let theirs = other.tenant(tenant).and_then(|t| t.bookings.get(booking_id));
        let ours = self.tenants.get_mut(tenant).and_then(|t| t.bookings.get_mut(booking_id));
        if let (Some(theirs), Some(ours)) = (theirs, ours)
            && !Arc::ptr_eq(theirs, ours)
            && theirs.position == ours.position
        {
            debug_assert_eq!(theirs, ours, "two copies of a booking last changed at one position differ");
            *ours = theirs.clone();
        }
    }

    /// Rebuilds the indexes that grow with every booking and call into full
    /// B-tree nodes. Keys inserted one after another in order (UUIDv7 ids, as
    /// `apply` meets them) leave each node about half full; a tree built from
    /// a sorted run fills them. Linear in the entries and freeing as it goes,
    /// so a start-up that replayed events calls it once, before the state is
    /// copied for the writer. The state's meaning is unchanged.
    pub fn compact(&mut self) {
        fn rebuilt<K: Ord, V>(index: &mut BTreeMap<K, V>) {
            *index = std::mem::take(index).into_iter().collect();
        }
        for tenant in self.tenants.values_mut() {
            rebuilt(&mut tenant.bookings);
            rebuilt(&mut tenant.calls);
            rebuilt(&mut tenant.communities);
            rebuilt(&mut tenant.external_refs);
            for clinic in tenant.clinics.values_mut() {
                for doctor in clinic.doctors.values_mut() {
                    for day in doctor.days.values_mut() {
                        day.slots.shrink_to_fit();
                    }
                }
            }
        }
    }

    pub fn new(rules: Rules) -> State {
        State { rules, ..State::default() }
    }

    pub fn tenant(&self, tenant: &str) -> Option<&TenantState> {
        self.tenants.get(tenant)
    }
}
