//! The audit: the ledger's invariants re-derived from the raw events by code
//! that shares nothing with the projections (no `core::apply`, no `State`), so
//! that a bug there, or a log written past `decide`, cannot vouch for itself.
//!
//! An [`Auditor`] is fed one event at a time, so a caller can stream a log of
//! any length; it keeps only the facts the invariants need (per booking, claim,
//! call, number and slug), never the events. It reports, it never refuses,
//! repairs or stops at the first violation: an investigator wants them all.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::core::{BookingCreated, BookingKind, CallState, Event, EventKind, HoldDetails, Position, Rules, Text, Tz, format_date, token};
use crate::log::events::{EventReader, ReadError};

/// The names of the invariants, as reported in [`Violation::rule`].
pub mod rule {
    /// Positions start at 1 and run without gaps or repeats.
    pub const POSITIONS_GAP_FREE: &str = "positions_gap_free";
    /// A slot (clinic, doctor, date, slot) has at most one booking created and not cancelled.
    pub const ONE_ACTIVE_BOOKING_PER_SLOT: &str = "one_active_booking_per_slot";
    /// A booking id is created once.
    pub const UNIQUE_BOOKING_ID: &str = "unique_booking_id";
    /// A booking needs its doctor's schedule and a slot inside it, and a new
    /// schedule never leaves an active booking of an open day outside it (a
    /// closed day keeps the schedule in force when it closed).
    pub const BOOKING_WITHIN_SCHEDULE: &str = "booking_within_schedule";
    /// A token (clinic, doctor, date, kind, number) is issued once, never reused.
    pub const UNIQUE_TOKEN: &str = "unique_token";
    /// A cancellation, a reschedule or an attendance mark refers to a booking
    /// that exists and is still active.
    pub const CANCELLATION_OF_ACTIVE_BOOKING: &str = "cancellation_of_active_booking";
    /// An external calendar's booking id binds to one booking, ever.
    pub const EXTERNAL_REF_BOUND_ONCE: &str = "external_ref_bound_once";
    /// A business has at most one pending (lease running) or active claim.
    pub const ONE_PHONE_CLAIM_PER_BUSINESS: &str = "one_phone_claim_per_business";
    /// Only the business's current pending claim completes or fails.
    pub const CURRENT_PHONE_CLAIM: &str = "current_phone_claim";
    /// An active number belongs to one business.
    pub const ONE_BUSINESS_PER_NUMBER: &str = "one_business_per_number";
    /// A release gives up the number the business actually has.
    pub const RELEASE_OF_ACTIVE_NUMBER: &str = "release_of_active_number";
    /// A number is called at most once per cooldown, and never while a call to it is in progress.
    pub const ONE_CALL_PER_NUMBER_PER_COOLDOWN: &str = "one_call_per_number_per_cooldown";
    /// A call id is started once.
    pub const UNIQUE_CALL_ID: &str = "unique_call_id";
    /// No call starts to a blocked number.
    pub const NO_CALL_TO_BLOCKED_NUMBER: &str = "no_call_to_blocked_number";
    /// No call starts from a halted campaign.
    pub const NO_CALL_BY_HALTED_CAMPAIGN: &str = "no_call_by_halted_campaign";
    /// A call gets one outcome.
    pub const ONE_OUTCOME_PER_CALL: &str = "one_outcome_per_call";
    /// An outcome is recorded for a call that was started.
    pub const OUTCOME_OF_KNOWN_CALL: &str = "outcome_of_known_call";
    /// A community slug is given once.
    pub const UNIQUE_COMMUNITY_SLUG: &str = "unique_community_slug";
    /// A hold is placed on a slot neither booked nor held, under a new id; it
    /// ends once (confirmed, released or expired), never expires before its
    /// `expires_at`, and no booking takes a held slot but the one confirming it.
    pub const HOLD_OF_FREE_SLOT: &str = "hold_of_free_slot";
    /// Attendance is recorded on or after the booking's date, in its clinic's zone.
    pub const ATTENDANCE_FROM_THE_DAY: &str = "attendance_from_the_day";
    /// After `days_closed`, nothing books, holds, cancels, moves, marks or
    /// joins the waitlist on those days, and a clinic's closed days never shrink.
    pub const CLOSED_DAYS_UNCHANGED: &str = "closed_days_unchanged";

    /// Every rule the audit checks.
    pub const ALL: &[&str] = &[
        POSITIONS_GAP_FREE,
        ONE_ACTIVE_BOOKING_PER_SLOT,
        UNIQUE_BOOKING_ID,
        BOOKING_WITHIN_SCHEDULE,
        UNIQUE_TOKEN,
        CANCELLATION_OF_ACTIVE_BOOKING,
        EXTERNAL_REF_BOUND_ONCE,
        ONE_PHONE_CLAIM_PER_BUSINESS,
        CURRENT_PHONE_CLAIM,
        ONE_BUSINESS_PER_NUMBER,
        RELEASE_OF_ACTIVE_NUMBER,
        ONE_CALL_PER_NUMBER_PER_COOLDOWN,
        UNIQUE_CALL_ID,
        NO_CALL_TO_BLOCKED_NUMBER,
        NO_CALL_BY_HALTED_CAMPAIGN,
        ONE_OUTCOME_PER_CALL,
        OUTCOME_OF_KNOWN_CALL,
        UNIQUE_COMMUNITY_SLUG,
        HOLD_OF_FREE_SLOT,
        ATTENDANCE_FROM_THE_DAY,
        CLOSED_DAYS_UNCHANGED,
    ];
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// One of [`rule`]'s names, snake_case.
    pub rule: &'static str,
    /// A sentence naming the tenant, the ids and the slot or number involved.
    pub detail: String,
    /// Every position involved (for example both bookings' creations), ascending.
    pub positions: Vec<u64>,
    /// The tenant whose events broke the rule; none for the log's own rules
    /// (positions), which every tenant's report includes.
    #[serde(skip)]
    pub tenant: Option<Text>,
}

/// What the audit found: `violations` is empty for a clean ledger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditReport {
    /// The events audited (those of the audited tenant when restricted to one).
    pub checked_events: u64,
    /// In the order they were found, that is by the position that broke the rule.
    pub violations: Vec<Violation>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Audits every event of `events` (a convenience over [`Auditor`]).
pub fn audit<'a>(rules: Rules, tenant: Option<&str>, events: impl IntoIterator<Item = &'a Event>) -> AuditReport {
    let mut auditor = Auditor::new(rules, tenant);
    for event in events {
        auditor.check(event);
    }
    auditor.finish()
}

/// The audit in progress: feed it every event of the log, from position 1 on,
/// in order, with [`Auditor::check`], then take the report with [`Auditor::finish`].
#[derive(Debug)]
pub struct Auditor {
    /// Only `call_cooldown` is used: the other rules shape what `decide`
    /// refuses, not what a history may contain.
    rules: Rules,
    /// When set, other tenants' events are skipped: not audited, not counted.
    /// Their positions still take part in the gap check, which is the log's, not a tenant's.
    tenant: Option<Text>,
    checked_events: u64,
    /// The events audited per tenant, for [`Auditor::report_for`].
    checked_by_tenant: BTreeMap<Text, u64>,
    /// The highest position seen so far, of any tenant (0 before the first).
    position_last: Position,
    tenants: BTreeMap<Text, TenantFacts>,
    violations: Vec<Violation>,
    /// Whether a closed day's facts are forgotten at its `days_closed` (the live
    /// audit's memory follows the open days): a later event that changes the
    /// day is still named (`closed_days_unchanged`, or as a change of a booking
    /// never created), but a booking id or token reused from a closed day is
    /// found by `ledger audit` only, which keeps every fact.
    forget_closed_days: bool,
}

/// A violation as the checkpoint keeps it: rule, detail, positions, tenant.
type SavedViolation = (String, String, Vec<u64>, Option<Text>);

/// An [`Auditor`] being saved; read back as a [`SavedAudit`] (same fields, in order).
#[derive(serde::Serialize)]
pub struct SavingAudit<'a> {
    forget_closed_days: bool,
    checked_events: u64,
    checked_by_tenant: &'a BTreeMap<Text, u64>,
    position_last: Position,
    tenants: &'a BTreeMap<Text, TenantFacts>,
    violations: Vec<SavedViolation>,
}

/// A saved [`Auditor`], for [`Auditor::restore`].
#[derive(serde::Deserialize)]
pub struct SavedAudit {
    forget_closed_days: bool,
    checked_events: u64,
    checked_by_tenant: BTreeMap<Text, u64>,
    position_last: Position,
    tenants: BTreeMap<Text, TenantFacts>,
    violations: Vec<SavedViolation>,
}

/// A slot of a doctor's day: (clinic, doctor, date, slot).
type SlotKey = (Text, Text, NaiveDate, u32);
/// A token of a doctor's day: (clinic, doctor, date, kind, number).
type TokenKey = (Text, Text, NaiveDate, BookingKind, u32);

/// What the audit remembers of one tenant. Each map holds the position that
/// established the fact, so a violation can name it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct TenantFacts {
    /// (clinic, doctor) to its slots a day and the position that set them.
    schedules: BTreeMap<(Text, Text), (u32, Position)>,
    bookings: BTreeMap<Uuid, BookingFacts>,
    /// The bookings holding each slot: one, unless the ledger is broken, and
    /// then all of them, so that cancelling one leaves the others holding it.
    slot_holders: BTreeMap<SlotKey, Vec<(Uuid, Position)>>,
    /// The first booking each token was issued to.
    tokens: BTreeMap<TokenKey, (Uuid, Position)>,
    /// The first booking each external ref was bound to.
    external_refs: BTreeMap<Text, (Uuid, Position)>,
    /// Each business's current claim or number; absent when it has neither.
    phones: BTreeMap<Text, Phone>,
    /// Where each claim was made.
    claims: BTreeMap<Uuid, Position>,
    /// Active numbers (E.164) to the first business that completed with them.
    number_owners: BTreeMap<Text, (Text, Position)>,
    calls: BTreeMap<Uuid, CallFacts>,
    /// Per number called or blocked (E.164).
    numbers: BTreeMap<Text, NumberFacts>,
    /// Halted campaigns and the position that halted them.
    halted: BTreeMap<Text, Position>,
    /// Each slug and the first community that got it.
    slugs: BTreeMap<Text, (Uuid, Position)>,
    /// Every hold placed: its slot, expiry, and the position that ended it.
    holds: BTreeMap<Uuid, HoldFacts>,
    /// The active hold on each held slot, and where it was placed.
    held_slots: BTreeMap<SlotKey, (Uuid, Position)>,
    /// Each clinic's zone, as its last `clinic_zone_set` set it (UTC before).
    zones: BTreeMap<Text, Tz>,
    /// Each clinic's last closed day and the `days_closed` that closed it.
    closed: BTreeMap<Text, (NaiveDate, Position)>,
    /// Closings since the facts of closed days were last dropped.
    #[serde(skip)]
    closings_unswept: u32,
}

/// Closings between two passes that drop closed days' facts (the live audit's)
/// or bookings (the clinic index's).
pub const SWEEP_CLOSINGS: u32 = 1024;

impl TenantFacts {
    /// The same facts, their clinics', doctors' and numbers' names shared
    /// through `names` (a deserialized map holds a copy of each in every key).
    fn interned(mut self, names: &mut Interner) -> TenantFacts {
        use std::mem::take;
        let slot = |names: &mut Interner, (clinic, doctor, date, slot): SlotKey| (names.text(clinic), names.text(doctor), date, slot);
        self.schedules = take(&mut self.schedules).into_iter().map(|((c, d), v)| ((names.text(c), names.text(d)), v)).collect();
        for booking in self.bookings.values_mut() {
            booking.slot = slot(names, booking.slot.clone());
        }
        self.slot_holders = take(&mut self.slot_holders).into_iter().map(|(key, v)| (slot(names, key), v)).collect();
        self.tokens = take(&mut self.tokens)
            .into_iter()
            .map(|((clinic, doctor, date, kind, number), v)| ((names.text(clinic), names.text(doctor), date, kind, number), v))
            .collect();
        for call in self.calls.values_mut() {
            call.to = names.text(call.to.clone());
        }
        for hold in self.holds.values_mut() {
            hold.slot = slot(names, hold.slot.clone());
        }
        self.held_slots = take(&mut self.held_slots).into_iter().map(|(key, v)| (slot(names, key), v)).collect();
        self.zones = take(&mut self.zones).into_iter().map(|(clinic, zone)| (names.text(clinic), zone)).collect();
        self.closed = take(&mut self.closed).into_iter().map(|(clinic, v)| (names.text(clinic), v)).collect();
        self
    }
}

/// Names shared: each distinct text once, as a decoder's interning does.
#[derive(Default)]
pub struct Interner(std::collections::HashSet<Text>);

impl Interner {
    pub fn text(&mut self, text: Text) -> Text {
        match self.0.get(&*text) {
            Some(shared) => shared.clone(),
            None => {
                self.0.insert(text.clone());
                text
            }
        }
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct HoldFacts {
    slot: SlotKey,
    placed: Position,
    expires_at: DateTime<Utc>,
    ended: Option<Position>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct BookingFacts {
    slot: SlotKey,
    created: Position,
    cancelled: Option<Position>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Phone {
    Pending { claim_id: Uuid, lease_expires_at: DateTime<Utc>, claimed: Position },
    Active { claim_id: Uuid, phone_number: Text, completed: Position },
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct CallFacts {
    to: Text,
    started: Position,
    outcome: Option<(CallState, Position)>,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct NumberFacts {
    /// The call that started last: its id, when and where.
    last_call: Option<(Uuid, DateTime<Utc>, Position)>,
    /// The call still waiting for its outcome.
    in_progress: Option<(Uuid, Position)>,
    /// Where the number was first blocked (a block is permanent).
    blocked: Option<Position>,
}

/// Where violations go while one event is audited.
struct Found<'a> {
    tenant: &'a str,
    violations: &'a mut Vec<Violation>,
}

impl Found<'_> {
    fn add(&mut self, rule: &'static str, mut positions: Vec<Position>, detail: String) {
        positions.sort_unstable();
        positions.dedup();
        let (tenant, detail) = (Some(Text::from(self.tenant)), format!("tenant {}: {detail}", self.tenant));
        self.violations.push(Violation { rule, detail, positions, tenant });
    }
}

fn describe_slot((clinic, doctor, date, slot): &SlotKey) -> String {
    format!("slot {slot} of doctor {doctor} at clinic {clinic} on {}", format_date(*date))
}

impl Auditor {
    /// An audit of every tenant, or of `tenant` only.
    pub fn new(rules: Rules, tenant: Option<&str>) -> Auditor {
        Auditor {
            rules,
            tenant: tenant.map(Text::from),
            checked_events: 0,
            checked_by_tenant: BTreeMap::new(),
            position_last: 0,
            tenants: BTreeMap::new(),
            violations: Vec::new(),
            forget_closed_days: false,
        }
    }

    /// An audit that forgets each closed day's facts at its `days_closed` (the live one).
    pub fn forgetting_closed_days(mut self) -> Auditor {
        self.forget_closed_days = true;
        self
    }

    /// The events audited so far.
    pub fn checked_events(&self) -> u64 {
        self.checked_events
    }

    /// The violations found so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Audits the next event of the log.
    pub fn check(&mut self, event: &Event) {
        self.check_position(event.position);
        if self.tenant.as_ref().is_some_and(|t| *t != event.tenant) {
            return;
        }
        self.checked_events += 1;
        *self.checked_by_tenant.entry(event.tenant.clone()).or_default() += 1;
        let facts = self.tenants.entry(event.tenant.clone()).or_default();
        let mut found = Found { tenant: &event.tenant, violations: &mut self.violations };
        facts.check(event, &self.rules, &mut found);
        if let (true, EventKind::DaysClosed { .. }) = (self.forget_closed_days, &event.kind) {
            facts.forget_days();
        }
    }

    /// The report so far for one tenant: its events and violations, and the
    /// log's own (positions), as an audit restricted to it would give.
    pub fn report_for(&self, tenant: &str) -> AuditReport {
        AuditReport {
            checked_events: self.checked_by_tenant.get(tenant).copied().unwrap_or(0),
            violations: self.violations.iter().filter(|v| v.tenant.as_deref().is_none_or(|t| t == tenant)).cloned().collect(),
        }
    }

    /// The position of the last event audited (0 before the first).
    pub fn position(&self) -> Position {
        self.position_last
    }

    pub fn finish(self) -> AuditReport {
        AuditReport { checked_events: self.checked_events, violations: self.violations }
    }

    /// What the audit has learnt (not its rules), for the read side's checkpoint.
    pub fn saving(&self) -> SavingAudit<'_> {
        SavingAudit {
            forget_closed_days: self.forget_closed_days,
            checked_events: self.checked_events,
            checked_by_tenant: &self.checked_by_tenant,
            position_last: self.position_last,
            tenants: &self.tenants,
            violations: self
                .violations
                .iter()
                .map(|v| (v.rule.to_owned(), v.detail.clone(), v.positions.clone(), v.tenant.clone()))
                .collect(),
        }
    }

    /// The audit of every tenant that [`Auditor::saving`] saved, continued
    /// under `rules`; None if it names a rule this build does not check.
    /// Its names are shared through `names`, as a fed audit's are.
    pub fn restore(rules: Rules, saved: SavedAudit, names: &mut Interner) -> Option<Auditor> {
        let violations = saved
            .violations
            .into_iter()
            .map(|(name, detail, positions, tenant)| {
                let rule = rule::ALL.iter().find(|r| **r == name)?;
                Some(Violation { rule, detail, positions, tenant })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Auditor {
            rules,
            tenant: None,
            checked_events: saved.checked_events,
            checked_by_tenant: saved.checked_by_tenant.into_iter().map(|(tenant, n)| (names.text(tenant), n)).collect(),
            position_last: saved.position_last,
            tenants: saved.tenants.into_iter().map(|(tenant, facts)| (names.text(tenant), facts.interned(names))).collect(),
            violations,
            forget_closed_days: saved.forget_closed_days,
        })
    }

    fn check_position(&mut self, position: Position) {
        let last = self.position_last;
        self.position_last = last.max(position);
        let detail = if position <= last {
            format!("position {position} does not increase: it comes after position {last}")
        } else if position > last + 1 {
            let missing = if position == last + 2 {
                format!("position {} is", last + 1)
            } else {
                format!("positions {} to {} are", last + 1, position - 1)
            };
            let after = if last == 0 { "the log starts there".to_owned() } else { format!("right after position {last}") };
            format!("{missing} missing: the log jumps to position {position} {after}")
        } else {
            return;
        };
        let mut positions: Vec<Position> = [last, position].into_iter().filter(|p| *p > 0).collect();
        positions.sort_unstable();
        positions.dedup();
        self.violations.push(Violation { rule: rule::POSITIONS_GAP_FREE, detail, positions, tenant: None });
    }
}

impl TenantFacts {
    fn check(&mut self, event: &Event, rules: &Rules, found: &mut Found<'_>) {
        let p = event.position;
        self.check_open(event, found);
        match &event.kind {
            EventKind::ScheduleSet { clinic, doctor, schedule } => self.schedule_set(clinic, doctor, schedule.slots_per_day, p, found),
            EventKind::BookingCreated(created) => self.booking_created(created, p, found),
            EventKind::BookingCancelled { booking_id, .. } => self.booking_cancelled(*booking_id, p, found),
            EventKind::PhoneClaimed { business, claim_id, lease_expires_at } => {
                self.phone_claimed(business, *claim_id, *lease_expires_at, event.recorded_at, p, found)
            }
            EventKind::PhoneCompleted { business, claim_id, phone_number, .. } => {
                self.phone_completed(business, *claim_id, phone_number, p, found)
            }
            EventKind::PhoneClaimFailed { business, claim_id, .. } => self.phone_claim_failed(business, *claim_id, p, found),
            EventKind::PhoneReleased { business, phone_number, .. } => self.phone_released(business, phone_number, p, found),
            EventKind::CallStarted { call_id, campaign, to } => {
                self.call_started(*call_id, campaign, to, event.recorded_at, rules, p, found)
            }
            EventKind::CallOutcomeRecorded { call_id, outcome } => self.call_outcome(*call_id, *outcome, p, found),
            // A refusal is the writer keeping count for the kill switch: no invariant rests on it.
            EventKind::CallRefused { .. } => {}
            EventKind::CampaignHalted { campaign, .. } => {
                self.halted.entry(campaign.clone()).or_insert(p);
            }
            EventKind::CampaignResumed { campaign, .. } => {
                self.halted.remove(campaign);
            }
            EventKind::NumberBlocked { number, .. } => {
                self.numbers.entry(number.clone()).or_default().blocked.get_or_insert(p);
            }
            EventKind::CommunityCreated { community_id, slug, .. } => match self.slugs.get(slug) {
                Some((first, at)) => found.add(
                    rule::UNIQUE_COMMUNITY_SLUG,
                    vec![*at, p],
                    format!(
                        "slug {slug} is given to community {first} (position {at}) and again to community {community_id} (position {p})"
                    ),
                ),
                None => {
                    self.slugs.insert(slug.clone(), (*community_id, p));
                }
            },
            EventKind::HoldPlaced { details, expires_at } => self.hold_placed(details, *expires_at, p, found),
            EventKind::HoldReleased { hold_id } => self.hold_ended(*hold_id, None, p, found),
            EventKind::HoldExpired { hold_id } => self.hold_ended(*hold_id, Some(event.recorded_at), p, found),
            EventKind::BookingRescheduled { booking_id, clinic, doctor, date, slot, kind, token_number, .. } => {
                self.booking_rescheduled(*booking_id, clinic, doctor, *date, *slot, *kind, *token_number, p, found)
            }
            EventKind::AttendanceRecorded { booking_id, .. } => {
                let Some(booking) = self.active(*booking_id, "marked", p, found) else { return };
                let (clinic, date) = (booking.slot.0.clone(), booking.slot.2);
                let today = event.recorded_at.with_timezone(&self.zones.get(&clinic).copied().unwrap_or(Tz::UTC)).date_naive();
                if today < date {
                    let detail = format!("booking {booking_id} of {date} is marked at position {p}, on {today} at its clinic");
                    found.add(rule::ATTENDANCE_FROM_THE_DAY, vec![p], detail);
                }
            }
            EventKind::ClinicZoneSet { clinic, zone, .. } => {
                self.zones.insert(clinic.clone(), *zone);
            }
            // An entry holds no slot: its offer is a hold, checked as one.
            EventKind::WaitlistJoined { .. } | EventKind::WaitlistWithdrawn { .. } => {}
            EventKind::DaysClosed { clinic, through } => {
                if let Some((before, at)) = self.closed.get(clinic)
                    && before > through
                {
                    let detail = format!(
                        "clinic {clinic}'s days were closed through {before} at position {at}, then only through {through} at position {p}"
                    );
                    found.add(rule::CLOSED_DAYS_UNCHANGED, vec![*at, p], detail);
                } else {
                    self.closed.insert(clinic.clone(), (*through, p));
                }
            }
        }
    }

    /// After a closing: forgets the facts of closed days, but the external
    /// refs bound on them (bound forever) and the closings themselves.
    ///
    /// Lazily: every `SWEEP_CLOSINGS` closings, one pass over the facts drops
    /// those of every day closed by then (`closed`). A pass per closing cost
    /// the tenant's open bookings each time: a clinic closes a day a day, so
    /// indexing years of history was quadratic. Until the pass, a closed
    /// day's facts stay; no event of a clean ledger touches them.
    fn forget_days(&mut self) {
        self.closings_unswept += 1;
        if self.closings_unswept >= SWEEP_CLOSINGS {
            self.sweep();
        }
    }

    /// Drops the facts of every day closed so far.
    fn sweep(&mut self) {
        self.closings_unswept = 0;
        let closed_days = &self.closed;
        let closed = |c: &Text, date: NaiveDate| closed_days.get(c).is_some_and(|(through, _)| date <= *through);
        self.bookings.retain(|_, b| !closed(&b.slot.0, b.slot.2));
        self.slot_holders.retain(|(c, _, date, _), _| !closed(c, *date));
        self.tokens.retain(|(c, _, date, _, _), _| !closed(c, *date));
        self.holds.retain(|_, h| !closed(&h.slot.0, h.slot.2));
        self.held_slots.retain(|(c, _, date, _), _| !closed(c, *date));
    }

    /// Reports an event that changes a day its clinic had closed.
    fn check_open(&self, event: &Event, found: &mut Found<'_>) {
        let p = event.position;
        let booking_day = |id: &Uuid| self.bookings.get(id).map(|b| (b.slot.0.clone(), b.slot.2));
        let days: Vec<(Text, NaiveDate)> = match &event.kind {
            EventKind::BookingCreated(created) => vec![(created.details.clinic.clone(), created.details.date)],
            EventKind::HoldPlaced { details, .. } => vec![(details.clinic.clone(), details.date)],
            EventKind::WaitlistJoined { details } => vec![(details.clinic.clone(), details.date)],
            EventKind::BookingCancelled { booking_id, .. } | EventKind::AttendanceRecorded { booking_id, .. } => {
                booking_day(booking_id).into_iter().collect()
            }
            EventKind::BookingRescheduled { booking_id, clinic, date, .. } => {
                booking_day(booking_id).into_iter().chain([(clinic.clone(), *date)]).collect()
            }
            // Closing expires holds; releasing and withdrawing stay allowed.
            EventKind::HoldExpired { .. }
            | EventKind::HoldReleased { .. }
            | EventKind::WaitlistWithdrawn { .. }
            | EventKind::DaysClosed { .. }
            | EventKind::ScheduleSet { .. }
            | EventKind::ClinicZoneSet { .. }
            | EventKind::PhoneClaimed { .. }
            | EventKind::PhoneCompleted { .. }
            | EventKind::PhoneClaimFailed { .. }
            | EventKind::PhoneReleased { .. }
            | EventKind::CallStarted { .. }
            | EventKind::CallOutcomeRecorded { .. }
            | EventKind::CallRefused { .. }
            | EventKind::CampaignHalted { .. }
            | EventKind::CampaignResumed { .. }
            | EventKind::NumberBlocked { .. }
            | EventKind::CommunityCreated { .. } => return,
        };
        for (clinic, date) in days {
            if let Some((through, at)) = self.closed.get(&clinic)
                && date <= *through
            {
                let detail = format!("{} at position {p} changes clinic {clinic}'s {date}, closed at position {at}", event.kind.name());
                found.add(rule::CLOSED_DAYS_UNCHANGED, vec![*at, p], detail);
            }
        }
    }

    fn hold_placed(&mut self, hold: &HoldDetails, expires_at: DateTime<Utc>, p: Position, found: &mut Found<'_>) {
        let (id, key): (Uuid, SlotKey) = (hold.hold_id, (hold.clinic.clone(), hold.doctor.clone(), hold.date, hold.slot));
        if let Some(first) = self.holds.get(&id) {
            let detail = format!("hold {id} is placed at position {} and again at position {p}", first.placed);
            return found.add(rule::HOLD_OF_FREE_SLOT, vec![first.placed, p], detail);
        }
        if let Some((booking_id, at)) = self.slot_holders.get(&key).and_then(|holders| holders.first()) {
            let detail = format!("hold {id} (position {p}) holds {}, booked by booking {booking_id} (position {at})", describe_slot(&key));
            found.add(rule::HOLD_OF_FREE_SLOT, vec![*at, p], detail);
        }
        if let Some((other, at)) = self.held_slots.get(&key) {
            let detail = format!("hold {id} (position {p}) holds {}, held by hold {other} (position {at})", describe_slot(&key));
            found.add(rule::HOLD_OF_FREE_SLOT, vec![*at, p], detail);
        }
        self.held_slots.insert(key.clone(), (id, p));
        self.holds.insert(id, HoldFacts { slot: key, placed: p, expires_at, ended: None });
    }

    /// A hold ends: released (`expired_at` none), expired at `expired_at`, or confirmed.
    fn hold_ended(&mut self, id: Uuid, expired_at: Option<DateTime<Utc>>, p: Position, found: &mut Found<'_>) {
        let Some(hold) = self.holds.get_mut(&id) else {
            return found.add(rule::HOLD_OF_FREE_SLOT, vec![p], format!("hold {id} ends at position {p} but was never placed"));
        };
        if let Some(ended) = hold.ended {
            let detail =
                format!("hold {id} (placed at position {}) ends at position {p}, though it ended at position {ended}", hold.placed);
            return found.add(rule::HOLD_OF_FREE_SLOT, vec![hold.placed, ended, p], detail);
        }
        if let Some(at) = expired_at
            && at < hold.expires_at
        {
            let detail = format!(
                "hold {id} (placed at position {}) expires at position {p}, at {at}, before its expiry {}",
                hold.placed, hold.expires_at
            );
            found.add(rule::HOLD_OF_FREE_SLOT, vec![hold.placed, p], detail);
        }
        hold.ended = Some(p);
        if self.held_slots.get(&hold.slot).is_some_and(|(holder, _)| *holder == id) {
            self.held_slots.remove(&hold.slot);
        }
    }

    fn schedule_set(&mut self, clinic: &Text, doctor: &Text, slots_per_day: u32, p: Position, found: &mut Found<'_>) {
        // A closed day keeps the schedule in force when it closed: only open days' bookings must fit.
        let open_from = self.closed.get(clinic).map_or(NaiveDate::MIN, |(through, _)| through.succ_opt().unwrap_or(NaiveDate::MAX));
        let doctor_slots = (clinic.clone(), doctor.clone(), open_from, 0)..=(clinic.clone(), doctor.clone(), NaiveDate::MAX, u32::MAX);
        for (key, holders) in self.slot_holders.range(doctor_slots) {
            if key.3 < slots_per_day {
                continue;
            }
            for (booking_id, created) in holders {
                found.add(
                    rule::BOOKING_WITHIN_SCHEDULE,
                    vec![*created, p],
                    format!(
                        "the schedule set at position {p} gives doctor {doctor} at clinic {clinic} {slots_per_day} slots a day, \
                         but booking {booking_id} (position {created}) still holds {}",
                        describe_slot(key)
                    ),
                );
            }
        }
        self.schedules.insert((clinic.clone(), doctor.clone()), (slots_per_day, p));
    }

    fn booking_created(&mut self, created: &BookingCreated, p: Position, found: &mut Found<'_>) {
        let id = created.details.booking_id;
        let key: SlotKey = (created.details.clinic.clone(), created.details.doctor.clone(), created.details.date, created.details.slot);
        if let Some(first) = self.bookings.get(&id) {
            found.add(
                rule::UNIQUE_BOOKING_ID,
                vec![first.created, p],
                format!("booking {id} is created at position {} and again at position {p}", first.created),
            );
        }
        let (kind, token_number) = (created.details.kind, created.token_number);
        self.take_slot(id, &key, kind, token_number, created.details.hold_id(), p, found);
        if let Some(external_ref) = created.details.external_ref() {
            match self.external_refs.get(external_ref) {
                Some((first, at)) => found.add(
                    rule::EXTERNAL_REF_BOUND_ONCE,
                    vec![*at, p],
                    format!(
                        "external ref {external_ref} is bound to booking {first} (position {at}) and again to booking {id} (position {p})"
                    ),
                ),
                None => {
                    self.external_refs.insert(external_ref.clone(), (id, p));
                }
            }
        }
        self.bookings.entry(id).or_insert(BookingFacts { slot: key, created: p, cancelled: None });
    }

    /// Booking `id` takes the slot `key` with a token at position `p`
    /// (created there, or moved there): the schedule, holds, holders and
    /// token rules, each checked where the booking arrives.
    #[allow(clippy::too_many_arguments)]
    fn take_slot(
        &mut self,
        id: Uuid,
        key: &SlotKey,
        kind: BookingKind,
        token_number: u32,
        hold_id: Option<Uuid>,
        p: Position,
        found: &mut Found<'_>,
    ) {
        match self.schedules.get(&(key.0.clone(), key.1.clone())) {
            None => found.add(
                rule::BOOKING_WITHIN_SCHEDULE,
                vec![p],
                format!("booking {id} (position {p}) holds {} but that doctor has no schedule", describe_slot(key)),
            ),
            Some((slots_per_day, set)) if key.3 >= *slots_per_day => found.add(
                rule::BOOKING_WITHIN_SCHEDULE,
                vec![*set, p],
                format!(
                    "booking {id} (position {p}) holds {} but the schedule set at position {set} has {slots_per_day} slots a day",
                    describe_slot(key)
                ),
            ),
            Some(_) => {}
        }
        match (hold_id, self.held_slots.get(key)) {
            (Some(hold_id), Some((holder, _))) if *holder == hold_id => self.hold_ended(hold_id, None, p, found),
            (_, Some((holder, at))) => {
                let detail = format!("booking {id} (position {p}) takes {}, held by hold {holder} (position {at})", describe_slot(key));
                found.add(rule::HOLD_OF_FREE_SLOT, vec![*at, p], detail);
            }
            (Some(hold_id), None) => {
                let detail = format!("booking {id} (position {p}) confirms hold {hold_id}, which does not hold {}", describe_slot(key));
                found.add(rule::HOLD_OF_FREE_SLOT, vec![p], detail);
            }
            (None, None) => {}
        }
        let holders = self.slot_holders.entry(key.clone()).or_default();
        if !holders.is_empty() {
            let held_by: Vec<String> = holders.iter().map(|(b, at)| format!("booking {b} (position {at})")).collect();
            let mut positions: Vec<Position> = holders.iter().map(|(_, at)| *at).collect();
            positions.push(p);
            found.add(
                rule::ONE_ACTIVE_BOOKING_PER_SLOT,
                positions,
                format!("{} is held by {} and booked again by booking {id} (position {p})", describe_slot(key), held_by.join(" and ")),
            );
        }
        // Almost every slot has one holder: room for exactly one, not the four
        // a first push reserves (the live audit keeps this for every booking).
        holders.reserve_exact(1);
        holders.push((id, p));
        let token_key: TokenKey = (key.0.clone(), key.1.clone(), key.2, kind, token_number);
        match self.tokens.get(&token_key) {
            Some((first, at)) => found.add(
                rule::UNIQUE_TOKEN,
                vec![*at, p],
                format!(
                    "token {} of doctor {} at clinic {} on {} is issued to booking {first} (position {at}) and again to booking {id} (position {p})",
                    token(kind, token_number),
                    key.1,
                    key.0,
                    format_date(key.2)
                ),
            ),
            None => {
                self.tokens.insert(token_key, (id, p));
            }
        }
    }

    /// The facts of booking `id`, still active, for an event at `p` that
    /// changes it (`what` it does, for the detail).
    fn active(&mut self, id: Uuid, what: &str, p: Position, found: &mut Found<'_>) -> Option<&mut BookingFacts> {
        let Some(booking) = self.bookings.get(&id) else {
            found.add(
                rule::CANCELLATION_OF_ACTIVE_BOOKING,
                vec![p],
                format!("booking {id} is {what} at position {p} but was never created"),
            );
            return None;
        };
        if let Some(cancelled) = booking.cancelled {
            let detail = format!(
                "booking {id} (created at position {}) is {what} at position {p}, though cancelled at position {cancelled}",
                booking.created
            );
            found.add(rule::CANCELLATION_OF_ACTIVE_BOOKING, vec![booking.created, cancelled, p], detail);
            return None;
        }
        self.bookings.get_mut(&id)
    }

    #[allow(clippy::too_many_arguments)]
    fn booking_rescheduled(
        &mut self,
        id: Uuid,
        clinic: &Text,
        doctor: &Text,
        date: NaiveDate,
        slot: u32,
        kind: BookingKind,
        token_number: u32,
        p: Position,
        found: &mut Found<'_>,
    ) {
        let Some(booking) = self.active(id, "rescheduled", p, found) else { return };
        let key: SlotKey = (clinic.clone(), doctor.clone(), date, slot);
        let old = std::mem::replace(&mut booking.slot, key.clone());
        if let Some(holders) = self.slot_holders.get_mut(&old) {
            holders.retain(|(holder, _)| *holder != id);
            if holders.is_empty() {
                self.slot_holders.remove(&old);
            }
        }
        self.take_slot(id, &key, kind, token_number, None, p, found);
    }

    fn booking_cancelled(&mut self, id: Uuid, p: Position, found: &mut Found<'_>) {
        let Some(booking) = self.bookings.get_mut(&id) else {
            found.add(
                rule::CANCELLATION_OF_ACTIVE_BOOKING,
                vec![p],
                format!("booking {id} is cancelled at position {p} but was never created"),
            );
            return;
        };
        if let Some(cancelled) = booking.cancelled {
            found.add(
                rule::CANCELLATION_OF_ACTIVE_BOOKING,
                vec![booking.created, cancelled, p],
                format!(
                    "booking {id} (created at position {}) is cancelled at position {p}, though already cancelled at position {cancelled}",
                    booking.created
                ),
            );
            return;
        }
        booking.cancelled = Some(p);
        if let Some(holders) = self.slot_holders.get_mut(&booking.slot) {
            holders.retain(|(holder, _)| *holder != id);
            if holders.is_empty() {
                self.slot_holders.remove(&booking.slot);
            }
        }
    }

    fn phone_claimed(
        &mut self,
        business: &Text,
        claim_id: Uuid,
        lease_expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
        p: Position,
        found: &mut Found<'_>,
    ) {
        match self.phones.get(business) {
            Some(Phone::Active { claim_id: active, phone_number, completed }) => found.add(
                rule::ONE_PHONE_CLAIM_PER_BUSINESS,
                vec![*completed, p],
                format!(
                    "business {business} is claimed again by claim {claim_id} (position {p}) though claim {active} gave it {phone_number} at position {completed}"
                ),
            ),
            Some(Phone::Pending { claim_id: pending, lease_expires_at: lease, claimed }) if at < *lease => found.add(
                rule::ONE_PHONE_CLAIM_PER_BUSINESS,
                vec![*claimed, p],
                format!(
                    "business {business} is claimed by claim {claim_id} at {} (position {p}) while the lease of claim {pending} (position {claimed}) runs until {}",
                    at.to_rfc3339(),
                    lease.to_rfc3339()
                ),
            ),
            // An expired lease is taken over: the old claim is fenced off.
            Some(Phone::Pending { .. }) | None => {}
        }
        self.claims.entry(claim_id).or_insert(p);
        self.phones.insert(business.clone(), Phone::Pending { claim_id, lease_expires_at, claimed: p });
    }

    fn phone_completed(&mut self, business: &Text, claim_id: Uuid, phone_number: &Text, p: Position, found: &mut Found<'_>) {
        let claimed: Vec<Position> = self.claims.get(&claim_id).copied().into_iter().collect();
        match self.phones.get(business) {
            Some(Phone::Pending { claim_id: pending, .. }) if *pending == claim_id => {}
            Some(Phone::Pending { claim_id: pending, claimed: current, .. }) => found.add(
                rule::CURRENT_PHONE_CLAIM,
                [claimed.as_slice(), &[*current, p]].concat(),
                format!(
                    "claim {claim_id} completes business {business} with {phone_number} at position {p}, but claim {pending} (position {current}) took over"
                ),
            ),
            Some(Phone::Active { claim_id: active, phone_number: number, completed }) => found.add(
                rule::ONE_PHONE_CLAIM_PER_BUSINESS,
                [claimed.as_slice(), &[*completed, p]].concat(),
                format!(
                    "claim {claim_id} completes business {business} with {phone_number} at position {p}, though claim {active} gave it {number} at position {completed}"
                ),
            ),
            None => found.add(
                rule::CURRENT_PHONE_CLAIM,
                [claimed.as_slice(), &[p]].concat(),
                format!("claim {claim_id} completes business {business} with {phone_number} at position {p}, but the business has no pending claim"),
            ),
        }
        match self.number_owners.get(phone_number) {
            Some((owner, completed)) if owner != business => found.add(
                rule::ONE_BUSINESS_PER_NUMBER,
                vec![*completed, p],
                format!("{phone_number} is the active number of business {owner} (position {completed}) and is given to business {business} at position {p}"),
            ),
            Some(_) => {}
            None => {
                self.number_owners.insert(phone_number.clone(), (business.clone(), p));
            }
        }
        self.phones.insert(business.clone(), Phone::Active { claim_id, phone_number: phone_number.clone(), completed: p });
    }

    fn phone_claim_failed(&mut self, business: &Text, claim_id: Uuid, p: Position, found: &mut Found<'_>) {
        match self.phones.get(business) {
            Some(Phone::Pending { claim_id: pending, .. }) if *pending == claim_id => {
                self.phones.remove(business);
            }
            _ => {
                let positions = self.claims.get(&claim_id).copied().into_iter().chain([p]).collect();
                found.add(
                    rule::CURRENT_PHONE_CLAIM,
                    positions,
                    format!("claim {claim_id} of business {business} fails at position {p}, but it is not the business's pending claim"),
                );
            }
        }
    }

    fn phone_released(&mut self, business: &Text, phone_number: &Text, p: Position, found: &mut Found<'_>) {
        match self.phones.get(business) {
            Some(Phone::Active { phone_number: number, .. }) if number == phone_number => {
                self.phones.remove(business);
                if self.number_owners.get(phone_number).is_some_and(|(owner, _)| owner == business) {
                    self.number_owners.remove(phone_number);
                }
            }
            Some(Phone::Active { phone_number: number, completed, .. }) => found.add(
                rule::RELEASE_OF_ACTIVE_NUMBER,
                vec![*completed, p],
                format!("business {business} releases {phone_number} at position {p}, but its number is {number} (position {completed})"),
            ),
            _ => found.add(
                rule::RELEASE_OF_ACTIVE_NUMBER,
                vec![p],
                format!("business {business} releases {phone_number} at position {p}, but it has no active number"),
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn call_started(
        &mut self,
        call_id: Uuid,
        campaign: &Text,
        to: &Text,
        at: DateTime<Utc>,
        rules: &Rules,
        p: Position,
        found: &mut Found<'_>,
    ) {
        if let Some(first) = self.calls.get(&call_id) {
            found.add(
                rule::UNIQUE_CALL_ID,
                vec![first.started, p],
                format!("call {call_id} is started at position {} and again at position {p}", first.started),
            );
        }
        if let Some(halted) = self.halted.get(campaign) {
            found.add(
                rule::NO_CALL_BY_HALTED_CAMPAIGN,
                vec![*halted, p],
                format!("call {call_id} to {to} starts at position {p} from campaign {campaign}, halted at position {halted}"),
            );
        }
        let number = self.numbers.entry(to.clone()).or_default();
        if let Some(blocked) = number.blocked {
            found.add(
                rule::NO_CALL_TO_BLOCKED_NUMBER,
                vec![blocked, p],
                format!("call {call_id} (position {p}) dials {to}, blocked at position {blocked}"),
            );
        }
        if let Some((previous, started)) = number.in_progress {
            found.add(
                rule::ONE_CALL_PER_NUMBER_PER_COOLDOWN,
                vec![started, p],
                format!("call {call_id} (position {p}) dials {to} while call {previous} (position {started}) to it is still calling"),
            );
        } else if let Some((previous, called_at, started)) = number.last_call
            && at - called_at < rules.call_cooldown
        {
            found.add(
                rule::ONE_CALL_PER_NUMBER_PER_COOLDOWN,
                vec![started, p],
                format!(
                    "call {call_id} dials {to} at {} (position {p}), {} s after call {previous} at {} (position {started}), within the {} s cooldown",
                    at.to_rfc3339(),
                    (at - called_at).num_seconds(),
                    called_at.to_rfc3339(),
                    rules.call_cooldown.num_seconds()
                ),
            );
        }
        number.last_call = Some((call_id, at, p));
        number.in_progress = Some((call_id, p));
        self.calls.entry(call_id).or_insert(CallFacts { to: to.clone(), started: p, outcome: None });
    }

    fn call_outcome(&mut self, call_id: Uuid, outcome: CallState, p: Position, found: &mut Found<'_>) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            found.add(
                rule::OUTCOME_OF_KNOWN_CALL,
                vec![p],
                format!("outcome {} is recorded for call {call_id} at position {p}, but that call never started", outcome.name()),
            );
            return;
        };
        if let Some((first, at)) = call.outcome {
            found.add(
                rule::ONE_OUTCOME_PER_CALL,
                vec![call.started, at, p],
                format!(
                    "call {call_id} to {} (position {}) gets outcome {} at position {p} after outcome {} at position {at}",
                    call.to,
                    call.started,
                    outcome.name(),
                    first.name()
                ),
            );
            return;
        }
        call.outcome = Some((outcome, p));
        if let Some(number) = self.numbers.get_mut(&call.to)
            && number.in_progress.is_some_and(|(current, _)| current == call_id)
        {
            number.in_progress = None;
        }
    }
}

/// Audits the log in `dir` through position `last`, streaming it: memory does
/// not grow with the log. `progress` learns how many records were read.
pub fn audit_dir(
    dir: &std::path::Path,
    last: u64,
    rules: Rules,
    tenant: Option<&str>,
    progress: &mut dyn FnMut(u64),
) -> Result<AuditReport, ReadError> {
    let mut auditor = Auditor::new(rules, tenant);
    let mut reader = EventReader::new(dir, 1);
    let mut visit = |event: Event, _| {
        auditor.check(&event);
        ControlFlow::Continue(())
    };
    reader.read_through(Some(last), &mut visit, |read| {
        progress(read as u64);
        Ok::<_, ReadError>(())
    })?;
    Ok(auditor.finish())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::core::{Action, BookingDetails, Command, Context, PhoneState, Schedule, State, apply, decide, decide_refusal};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
    }

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    // ---- Clean histories, made by the real core as the writer makes them ----

    /// A log written by `decide` (or, for a refusal, `decide_refusal`) and `apply`.
    struct History {
        state: State,
        log: Vec<Event>,
    }

    impl History {
        fn new(rules: Rules) -> History {
            History { state: State::new(rules), log: Vec::new() }
        }

        fn run(&mut self, tenant: &str, action: Action, now: DateTime<Utc>) {
            let command = Command { tenant: tenant.into(), actor: "web".into(), request_id: "req".into(), idempotency: None, action };
            let context = Context { now, position_next: self.state.position + 1 };
            let events = match decide(&self.state, &command, &context) {
                Ok(events) => events,
                Err(rejection) => decide_refusal(&self.state, &command, &rejection, &context),
            };
            for event in &events {
                apply(&mut self.state, event);
            }
            self.log.extend(events);
        }
    }

    fn schedule(slots_per_day: u32) -> Action {
        Action::SetSchedule {
            clinic: "c".into(),
            doctor: "d".into(),
            schedule: Schedule { slots_per_day, first_slot_minute: Some(9 * 60), slot_minutes: Some(15) },
        }
    }

    fn book(n: u128, slot: u32, kind: BookingKind) -> Action {
        Action::Book(BookingDetails {
            booking_id: id(n),
            clinic: "c".into(),
            doctor: "d".into(),
            date: date(),
            slot,
            patient: format!("patient {n}").into(),
            kind,
            external: crate::core::External::boxed(None, None, None),
        })
    }

    /// Builds an action from the state so far and a fresh id.
    type MakeAction = dyn Fn(&State, u128) -> Action;

    /// Audits every history of up to `depth` actions drawn from `pool` (with
    /// repetition), `step` apart, and expects each to be clean. Returns the
    /// kinds of event the histories contained, so that a test can show its
    /// pool reached the events it is about.
    fn audit_every_history(rules: Rules, pool: &[&MakeAction], depth: usize, step: Duration) -> BTreeSet<&'static str> {
        let mut seen = BTreeSet::new();
        let mut sequences: Vec<Vec<usize>> = vec![vec![]];
        for _ in 0..depth {
            sequences = sequences.into_iter().flat_map(|s| (0..pool.len()).map(move |c| [s.clone(), vec![c]].concat())).collect();
            for sequence in &sequences {
                let mut history = History::new(rules);
                for (i, &c) in sequence.iter().enumerate() {
                    let action = pool[c](&history.state, 1000 + i as u128);
                    history.run("kloqo", action, t0() + step * i as i32);
                }
                let report = audit(rules, None, &history.log);
                assert_eq!(report.violations, vec![], "{sequence:?}: {:#?}", history.log);
                assert_eq!(report.checked_events, history.log.len() as u64);
                seen.extend(history.log.iter().map(|e| e.kind.name()));
            }
        }
        seen
    }

    #[test]
    fn every_short_booking_history_is_clean() {
        let pool: [&MakeAction; 8] = [
            &|_, _| schedule(2),
            &|_, _| schedule(1),
            &|_, n| book(n, 0, BookingKind::Advance),
            &|_, n| book(n, 0, BookingKind::WalkIn),
            &|_, n| book(n, 1, BookingKind::Advance),
            &|_, n| {
                let Action::Book(request) = book(n, 1, BookingKind::WalkIn) else { unreachable!() };
                Action::Book(BookingDetails {
                    external: crate::core::External::boxed(Some("ext".into()), Some("corr".into()), None),
                    ..request
                })
            },
            // The bookings the first two steps may have made.
            &|_, _| Action::Cancel { booking_id: id(1000), reason: None },
            &|_, _| Action::Cancel { booking_id: id(1001), reason: Some("ill".into()) },
        ];
        let seen = audit_every_history(Rules::default(), &pool, 4, Duration::seconds(1));
        assert_eq!(seen, BTreeSet::from(["schedule_set", "booking_created", "booking_cancelled"]));
    }

    fn pending_claim(state: &State, business: &str) -> Option<Uuid> {
        match state.tenant("kloqo")?.businesses.get(business)?.phone.as_ref()? {
            PhoneState::Pending { claim_id, .. } => Some(*claim_id),
            PhoneState::Active { .. } => None,
        }
    }

    /// Claims 6 minutes apart with 10-minute leases: takeovers of expired
    /// claims, fenced completions, numbers released and given to the other business.
    #[test]
    fn every_short_phone_history_is_clean() {
        let claim = |business: &'static str| move |_: &State, n| Action::ClaimPhone { business: business.into(), claim_id: id(n) };
        let complete = |business: &'static str, number: &'static str| {
            move |state: &State, n| Action::CompletePhone {
                business: business.into(),
                claim_id: pending_claim(state, business).unwrap_or(id(n)),
                phone_number: number.into(),
                provider_sid: "PN1".into(),
            }
        };
        let (claim_a, claim_b) = (claim("a"), claim("b"));
        let (a1, b1, a2) = (complete("a", "+1"), complete("b", "+1"), complete("a", "+2"));
        let pool: [&MakeAction; 8] = [
            &claim_a,
            &claim_b,
            &a1,
            &b1,
            &a2,
            &|state, n| Action::FailPhone {
                business: "a".into(),
                claim_id: pending_claim(state, "a").unwrap_or(id(n)),
                reason: "x".into(),
            },
            &|_, _| Action::ReleasePhone { business: "a".into(), reason: None },
            // The first claim, fenced off if another took over since.
            &|_, _| Action::CompletePhone {
                business: "a".into(),
                claim_id: id(1000),
                phone_number: "+3".into(),
                provider_sid: "PN3".into(),
            },
        ];
        let seen = audit_every_history(Rules::default(), &pool, 4, Duration::minutes(6));
        assert_eq!(seen, BTreeSet::from(["phone_claimed", "phone_completed", "phone_claim_failed", "phone_released"]));
    }

    fn last_call(state: &State, to: &str) -> Option<Uuid> {
        Some(state.tenant("kloqo")?.numbers.get(to)?.last_call?.0)
    }

    /// Attempts 7 hours apart (cooldown 24 h), then 20 minutes apart (the
    /// kill switch halts on refused duplicates), with outcomes, blocks and resumes.
    #[test]
    fn every_short_call_history_is_clean() {
        let start = |campaign: &'static str, to: &'static str| {
            move |_: &State, n| Action::StartCall { call_id: id(n), campaign: campaign.into(), to: to.into() }
        };
        let outcome = |outcome: CallState| {
            move |state: &State, n| Action::RecordOutcome { call_id: last_call(state, "+1").unwrap_or(id(n)), outcome }
        };
        let (a1, a2, b1) = (start("a", "+1"), start("a", "+2"), start("b", "+1"));
        let (failed, bad, done) = (outcome(CallState::Failed), outcome(CallState::BadNumber), outcome(CallState::Completed));
        let pool: [&MakeAction; 8] = [
            &a1,
            &a2,
            &b1,
            &failed,
            &bad,
            &done,
            &|_, _| Action::ResumeCampaign { campaign: "a".into(), reason: "checked".into() },
            &|_, _| Action::BlockNumber { number: "+2".into(), reason: "asked".into() },
        ];
        let rules = Rules { campaign_failures_max: 2, ..Rules::default() };
        let mut seen = audit_every_history(rules, &pool, 4, Duration::hours(7));
        seen.extend(audit_every_history(rules, &pool, 4, Duration::minutes(20)));
        let expected = ["call_started", "call_outcome_recorded", "call_refused", "campaign_halted", "campaign_resumed", "number_blocked"];
        assert_eq!(seen, BTreeSet::from(expected));
    }

    /// Incident 02: a scheduler asking every 2 minutes for 2 hours. One call, refusals, a halt; clean.
    #[test]
    fn the_49_calls_history_is_clean() {
        let mut history = History::new(Rules::default());
        for minute in (0..120).step_by(2) {
            let action = Action::StartCall { call_id: id(minute as u128), campaign: "outreach".into(), to: "+14243242113".into() };
            history.run("kloqo", action, t0() + Duration::minutes(minute));
        }
        assert_eq!(history.log.len(), 4);
        assert_eq!(audit(Rules::default(), None, &history.log), AuditReport { checked_events: 4, violations: vec![] });
    }

    #[test]
    fn every_short_community_history_is_clean() {
        let create = |name: &'static str| {
            move |_: &State, n| Action::CreateCommunity { community_id: id(n), name: name.into(), owner: "asha".into(), plan: "pro".into() }
        };
        let (a, b, c) = (create("My Community"), create("my community!"), create("My Community 1"));
        let seen = audit_every_history(Rules::default(), &[&a, &b, &c], 4, Duration::seconds(1));
        assert_eq!(seen, BTreeSet::from(["community_created"]));
    }

    /// Holds placed, confirmed, released and left to expire (the writer's sweep
    /// before each command), bookings moved and cancelled, patients joining and
    /// leaving the waitlist, and attendance marked: every history of up to four
    /// such commands, made by the core as the writer makes them, audits clean.
    #[test]
    fn every_short_history_of_holds_moves_and_the_waitlist_is_clean() {
        use crate::core::{Attendance, EntryDetails, HoldDetails, HoldStatus, Move};
        let first_hold = |state: &State| {
            state
                .tenant("kloqo")
                .and_then(|t| t.holds.values().find(|h| h.status == HoldStatus::Held))
                .map_or(Uuid::nil(), |h| h.details.hold_id)
        };
        let first_booking = |state: &State| {
            let tenant = state.tenant("kloqo");
            tenant
                .and_then(|t| t.bookings.values().find(|b| b.status == crate::core::BookingStatus::Confirmed))
                .map(|b| (b.details.booking_id, b.details.slot))
        };
        let hold = |slot| {
            move |_: &State, n| Action::Hold {
                hold: HoldDetails {
                    hold_id: id(n),
                    clinic: "c".into(),
                    doctor: "d".into(),
                    date: date(),
                    slot,
                    patient: Some("p".into()),
                    patient_id: None,
                    entry_id: None,
                },
                ttl_secs: 30,
            }
        };
        let (hold_0, hold_1) = (hold(0), hold(1));
        let booked = |_: &State, n| book(n, 0, BookingKind::Advance);
        let confirmed = move |state: &State, n| Action::ConfirmHold {
            hold_id: first_hold(state),
            booking_id: id(n),
            patient: None,
            patient_id: None,
            kind: None,
        };
        let released = move |state: &State, _| Action::ReleaseHold { hold_id: first_hold(state) };
        let cancelled =
            move |state: &State, _| Action::Cancel { booking_id: first_booking(state).map_or(Uuid::nil(), |b| b.0), reason: None };
        let moved = move |state: &State, _| {
            let (booking_id, slot) = first_booking(state).unwrap_or_default();
            Action::Reschedule { booking_id, to: Move { doctor: None, date: None, slot: 1 - slot.min(1), expected_version: None } }
        };
        let joined = |_: &State, n| {
            let details =
                EntryDetails { entry_id: id(n), clinic: "c".into(), date: date(), doctor: None, patient: "w".into(), patient_id: None };
            Action::JoinWaitlist(details)
        };
        let marked = move |state: &State, _| Action::MarkAttendance {
            booking_id: first_booking(state).map_or(Uuid::nil(), |b| b.0),
            attendance: Attendance::Arrived,
            correct: false,
        };
        let pool: [&MakeAction; 9] = [&hold_0, &hold_1, &booked, &confirmed, &released, &cancelled, &moved, &joined, &marked];
        let mut seen = BTreeSet::new();
        let mut sequences: Vec<Vec<usize>> = vec![vec![]];
        for _ in 0..4 {
            sequences = sequences.into_iter().flat_map(|s| (0..pool.len()).map(move |c| [s.clone(), vec![c]].concat())).collect();
            for sequence in &sequences {
                let mut history = History::new(Rules::default());
                history.run("kloqo", schedule(2), t0());
                for (i, &c) in sequence.iter().enumerate() {
                    // 20 s apart: a 30 s hold outlives one step, not two. The booking's
                    // date comes on the third step, so early marks are refused.
                    let now = t0() + Duration::seconds(20 * (i as i64 + 1)) + Duration::hours(if i >= 2 { 15 } else { 0 });
                    let swept =
                        crate::core::holds::expiries_due(&history.state, &Context { now, position_next: history.state.position + 1 });
                    for event in &swept {
                        apply(&mut history.state, event);
                    }
                    history.log.extend(swept);
                    let action = pool[c](&history.state, 1000 + i as u128);
                    history.run("kloqo", action, now);
                }
                let report = audit(Rules::default(), None, &history.log);
                assert_eq!(report.violations, vec![], "{sequence:?}: {:#?}", history.log);
                seen.extend(history.log.iter().map(|e| e.kind.name()));
            }
        }
        let expected = [
            "schedule_set",
            "booking_created",
            "booking_cancelled",
            "booking_rescheduled",
            "attendance_recorded",
            "hold_placed",
            "hold_released",
            "hold_expired",
            "waitlist_joined",
        ];
        assert_eq!(seen, BTreeSet::from(expected));
    }

    /// Two tenants may book the same slot: invariants are per tenant.
    #[test]
    fn tenants_are_audited_apart_and_a_restricted_audit_counts_only_its_own() {
        let mut history = History::new(Rules::default());
        for tenant in ["kloqo", "other"] {
            history.run(tenant, schedule(1), t0());
            history.run(tenant, book(u128::from(tenant == "other"), 0, BookingKind::Advance), t0());
        }
        assert_eq!(history.log.len(), 4);
        assert_eq!(audit(Rules::default(), None, &history.log), AuditReport { checked_events: 4, violations: vec![] });
        assert_eq!(audit(Rules::default(), Some("kloqo"), &history.log), AuditReport { checked_events: 2, violations: vec![] });
        assert_eq!(audit(Rules::default(), Some("nobody"), &history.log), AuditReport { checked_events: 0, violations: vec![] });
    }

    // ---- Hand-built histories, each breaking one invariant ----

    fn event_at(position: Position, recorded_at: DateTime<Utc>, tenant: &str, kind: EventKind) -> Event {
        Event {
            position,
            recorded_at,
            tenant: tenant.into(),
            actor: "forger".into(),
            request_id: "req".into(),
            idempotency_key: None,
            kind,
            response: None,
        }
    }

    /// A history of tenant `kloqo`, one second between events, from position 1.
    fn history(kinds: Vec<EventKind>) -> Vec<Event> {
        kinds.into_iter().enumerate().map(|(i, kind)| event_at(i as u64 + 1, t0() + Duration::seconds(i as i64), "kloqo", kind)).collect()
    }

    /// A history of tenant `kloqo` with explicit times, from position 1.
    fn timed(kinds: Vec<(DateTime<Utc>, EventKind)>) -> Vec<Event> {
        kinds.into_iter().enumerate().map(|(i, (at, kind))| event_at(i as u64 + 1, at, "kloqo", kind)).collect()
    }

    fn schedule_set(slots_per_day: u32) -> EventKind {
        EventKind::ScheduleSet {
            clinic: "c".into(),
            doctor: "d".into(),
            schedule: Schedule { slots_per_day, first_slot_minute: None, slot_minutes: None },
        }
    }

    fn created(n: u128, slot: u32, token_number: u32) -> BookingCreated {
        BookingCreated {
            details: BookingDetails {
                booking_id: id(n),
                clinic: "c".into(),
                doctor: "d".into(),
                date: date(),
                slot,
                patient: "p".into(),
                kind: BookingKind::Advance,
                external: crate::core::External::boxed(None, None, None),
            },
            token_number,
        }
    }

    fn booking(n: u128, slot: u32, token_number: u32) -> EventKind {
        EventKind::BookingCreated(created(n, slot, token_number))
    }

    fn cancel(n: u128) -> EventKind {
        EventKind::BookingCancelled { booking_id: id(n), reason: None }
    }

    /// The violations' rules and positions.
    fn found(events: &[Event]) -> Vec<(&'static str, Vec<u64>)> {
        found_with(Rules::default(), events)
    }

    fn found_with(rules: Rules, events: &[Event]) -> Vec<(&'static str, Vec<u64>)> {
        let report = audit(rules, None, events);
        assert_eq!(report.checked_events, events.len() as u64);
        report.violations.into_iter().map(|v| (v.rule, v.positions)).collect()
    }

    #[test]
    fn two_bookings_of_one_slot_are_named_with_both_positions() {
        let events = history(vec![schedule_set(2), booking(1, 0, 1), booking(2, 0, 2)]);
        let report = audit(Rules::default(), None, &events);
        assert_eq!(report.checked_events, 3);
        assert_eq!(report.violations.len(), 1, "{report:#?}");
        let violation = &report.violations[0];
        assert_eq!((violation.rule, violation.positions.clone()), (rule::ONE_ACTIVE_BOOKING_PER_SLOT, vec![2, 3]));
        for part in ["tenant kloqo", &id(1).to_string(), &id(2).to_string(), "slot 0 of doctor d at clinic c on 2026-03-02"] {
            assert!(violation.detail.contains(part), "{part:?} not in {:?}", violation.detail);
        }
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["violations"][0]["rule"], "one_active_booking_per_slot");
        assert_eq!(json["violations"][0]["positions"], serde_json::json!([2, 3]));
        assert_eq!(json["checked_events"], 3);
    }

    #[test]
    fn a_cancelled_slot_may_be_rebooked_but_a_second_holder_outlives_the_first_cancellation() {
        let rebooked = history(vec![schedule_set(1), booking(1, 0, 1), cancel(1), booking(2, 0, 2)]);
        assert_eq!(found(&rebooked), vec![]);
        let doubled = history(vec![schedule_set(1), booking(1, 0, 1), booking(2, 0, 2), cancel(1), booking(3, 0, 3)]);
        assert_eq!(found(&doubled), vec![(rule::ONE_ACTIVE_BOOKING_PER_SLOT, vec![2, 3]), (rule::ONE_ACTIVE_BOOKING_PER_SLOT, vec![3, 5])]);
    }

    #[test]
    fn a_token_issued_twice_is_named_even_after_a_cancellation() {
        let events = history(vec![schedule_set(2), booking(1, 0, 1), cancel(1), booking(2, 1, 1)]);
        let report = audit(Rules::default(), None, &events);
        assert_eq!(
            report.violations.iter().map(|v| (v.rule, v.positions.clone())).collect::<Vec<_>>(),
            vec![(rule::UNIQUE_TOKEN, vec![2, 4])]
        );
        assert!(report.violations[0].detail.contains("token A001"), "{}", report.violations[0].detail);
        // Walk-in tokens count apart from advance ones.
        let mut walk_in = created(2, 1, 1);
        walk_in.details.kind = BookingKind::WalkIn;
        let walk_in = EventKind::BookingCreated(walk_in);
        assert_eq!(found(&history(vec![schedule_set(2), booking(1, 0, 1), walk_in])), vec![]);
    }

    #[test]
    fn cancelling_an_unknown_or_cancelled_booking_is_named() {
        assert_eq!(found(&history(vec![schedule_set(1), cancel(9)])), vec![(rule::CANCELLATION_OF_ACTIVE_BOOKING, vec![2])]);
        let twice = history(vec![schedule_set(1), booking(1, 0, 1), cancel(1), cancel(1)]);
        assert_eq!(found(&twice), vec![(rule::CANCELLATION_OF_ACTIVE_BOOKING, vec![2, 3, 4])]);
    }

    #[test]
    fn an_external_ref_bound_twice_is_named() {
        let with_ref = |n, slot, token| {
            let mut created = created(n, slot, token);
            created.details.external = crate::core::External::boxed(Some("cal-7".into()), None, None);
            EventKind::BookingCreated(created)
        };
        let events = history(vec![schedule_set(2), with_ref(1, 0, 1), cancel(1), with_ref(2, 1, 2)]);
        assert_eq!(found(&events), vec![(rule::EXTERNAL_REF_BOUND_ONCE, vec![2, 4])]);
    }

    #[test]
    fn a_booking_id_created_twice_is_named() {
        let events = history(vec![schedule_set(2), booking(1, 0, 1), booking(1, 1, 2)]);
        assert_eq!(found(&events), vec![(rule::UNIQUE_BOOKING_ID, vec![2, 3])]);
    }

    #[test]
    fn bookings_outside_the_schedule_are_named() {
        assert_eq!(found(&history(vec![booking(1, 0, 1)])), vec![(rule::BOOKING_WITHIN_SCHEDULE, vec![1])]);
        assert_eq!(found(&history(vec![schedule_set(2), booking(1, 2, 1)])), vec![(rule::BOOKING_WITHIN_SCHEDULE, vec![1, 2])]);
        let shrunk = history(vec![schedule_set(3), booking(1, 2, 1), booking(2, 0, 2), schedule_set(2)]);
        assert_eq!(found(&shrunk), vec![(rule::BOOKING_WITHIN_SCHEDULE, vec![2, 4])]);
        // Shrinking below a cancelled booking is fine.
        assert_eq!(found(&history(vec![schedule_set(3), booking(1, 2, 1), cancel(1), schedule_set(2)])), vec![]);
    }

    fn claimed(business: &str, claim: u128, at: DateTime<Utc>) -> (DateTime<Utc>, EventKind) {
        (at, EventKind::PhoneClaimed { business: business.into(), claim_id: id(claim), lease_expires_at: at + Duration::minutes(10) })
    }

    fn completed(business: &str, claim: u128, number: &str) -> EventKind {
        EventKind::PhoneCompleted { business: business.into(), claim_id: id(claim), phone_number: number.into(), provider_sid: "PN".into() }
    }

    fn released(business: &str, number: &str) -> EventKind {
        EventKind::PhoneReleased { business: business.into(), phone_number: number.into(), reason: None }
    }

    #[test]
    fn a_claim_while_another_lease_runs_is_named_and_after_it_expires_is_a_takeover() {
        let early = timed(vec![claimed("a", 1, t0()), claimed("a", 2, t0() + Duration::minutes(5))]);
        assert_eq!(found(&early), vec![(rule::ONE_PHONE_CLAIM_PER_BUSINESS, vec![1, 2])]);
        let takeover = timed(vec![
            claimed("a", 1, t0()),
            claimed("a", 2, t0() + Duration::minutes(10)),
            (t0() + Duration::minutes(11), completed("a", 2, "+1")),
        ]);
        assert_eq!(found(&takeover), vec![]);
    }

    #[test]
    fn a_fenced_claim_completing_or_failing_is_named() {
        let later = t0() + Duration::minutes(11);
        let completes = timed(vec![claimed("a", 1, t0()), claimed("a", 2, later), (later, completed("a", 1, "+1"))]);
        assert_eq!(found(&completes), vec![(rule::CURRENT_PHONE_CLAIM, vec![1, 2, 3])]);
        let fails = timed(vec![
            claimed("a", 1, t0()),
            claimed("a", 2, later),
            (later, EventKind::PhoneClaimFailed { business: "a".into(), claim_id: id(1), reason: "x".into() }),
        ]);
        assert_eq!(found(&fails), vec![(rule::CURRENT_PHONE_CLAIM, vec![1, 3])]);
        assert_eq!(found(&history(vec![completed("a", 7, "+1")])), vec![(rule::CURRENT_PHONE_CLAIM, vec![1])]);
    }

    #[test]
    fn a_business_with_a_number_claimed_or_completed_again_is_named() {
        let claim_again = timed(vec![claimed("a", 1, t0()), (t0(), completed("a", 1, "+1")), claimed("a", 2, t0() + Duration::hours(1))]);
        assert_eq!(found(&claim_again), vec![(rule::ONE_PHONE_CLAIM_PER_BUSINESS, vec![2, 3])]);
        let complete_again = timed(vec![claimed("a", 1, t0()), (t0(), completed("a", 1, "+1")), (t0(), completed("a", 1, "+2"))]);
        assert_eq!(found(&complete_again), vec![(rule::ONE_PHONE_CLAIM_PER_BUSINESS, vec![1, 2, 3])]);
    }

    #[test]
    fn one_number_active_for_two_businesses_is_named_and_a_released_number_is_free() {
        let shared =
            timed(vec![claimed("a", 1, t0()), (t0(), completed("a", 1, "+1")), claimed("b", 2, t0()), (t0(), completed("b", 2, "+1"))]);
        assert_eq!(found(&shared), vec![(rule::ONE_BUSINESS_PER_NUMBER, vec![2, 4])]);
        let passed_on = timed(vec![
            claimed("a", 1, t0()),
            (t0(), completed("a", 1, "+1")),
            (t0(), released("a", "+1")),
            claimed("b", 2, t0()),
            (t0(), completed("b", 2, "+1")),
            claimed("a", 3, t0()),
        ]);
        assert_eq!(found(&passed_on), vec![]);
    }

    #[test]
    fn releasing_a_number_the_business_does_not_have_is_named() {
        assert_eq!(found(&history(vec![released("a", "+1")])), vec![(rule::RELEASE_OF_ACTIVE_NUMBER, vec![1])]);
        let other = timed(vec![claimed("a", 1, t0()), (t0(), completed("a", 1, "+1")), (t0(), released("a", "+2"))]);
        assert_eq!(found(&other), vec![(rule::RELEASE_OF_ACTIVE_NUMBER, vec![2, 3])]);
    }

    fn started(call: u128, campaign: &str, to: &str) -> EventKind {
        EventKind::CallStarted { call_id: id(call), campaign: campaign.into(), to: to.into() }
    }

    fn outcome(call: u128, outcome: CallState) -> EventKind {
        EventKind::CallOutcomeRecorded { call_id: id(call), outcome }
    }

    #[test]
    fn a_second_call_within_the_cooldown_or_while_calling_is_named() {
        let hour = Duration::hours(1);
        let within =
            timed(vec![(t0(), started(1, "a", "+1")), (t0(), outcome(1, CallState::Completed)), (t0() + hour, started(2, "b", "+1"))]);
        let violations = audit(Rules::default(), None, &within).violations;
        assert_eq!(
            violations.iter().map(|v| (v.rule, v.positions.clone())).collect::<Vec<_>>(),
            vec![(rule::ONE_CALL_PER_NUMBER_PER_COOLDOWN, vec![1, 3])]
        );
        assert!(violations[0].detail.contains("3600 s after call"), "{}", violations[0].detail);
        // The cooldown is the audit's rule: with one of an hour, the same history is clean.
        assert_eq!(found_with(Rules { call_cooldown: hour, ..Rules::default() }, &within), vec![]);
        let calling = timed(vec![(t0(), started(1, "a", "+1")), (t0() + Duration::hours(30), started(2, "a", "+1"))]);
        assert_eq!(found(&calling), vec![(rule::ONE_CALL_PER_NUMBER_PER_COOLDOWN, vec![1, 2])]);
        let after = timed(vec![
            (t0(), started(1, "a", "+1")),
            (t0(), outcome(1, CallState::NoAnswer)),
            (t0() + Duration::hours(24), started(2, "a", "+1")),
            (t0() + Duration::hours(24), started(3, "a", "+2")),
        ]);
        assert_eq!(found(&after), vec![]);
    }

    #[test]
    fn a_call_to_a_blocked_number_or_from_a_halted_campaign_is_named() {
        let blocked = history(vec![EventKind::NumberBlocked { number: "+1".into(), reason: "asked".into() }, started(1, "a", "+1")]);
        assert_eq!(found(&blocked), vec![(rule::NO_CALL_TO_BLOCKED_NUMBER, vec![1, 2])]);
        let halt = EventKind::CampaignHalted { campaign: "a".into(), reason: "3 failures".into() };
        assert_eq!(found(&history(vec![halt.clone(), started(1, "a", "+1")])), vec![(rule::NO_CALL_BY_HALTED_CAMPAIGN, vec![1, 2])]);
        let resume = EventKind::CampaignResumed { campaign: "a".into(), reason: "checked".into() };
        assert_eq!(found(&history(vec![halt.clone(), resume, started(1, "a", "+1")])), vec![]);
        assert_eq!(found(&history(vec![halt, started(1, "b", "+1")])), vec![]);
    }

    #[test]
    fn a_second_outcome_or_an_outcome_of_no_call_is_named() {
        let twice = history(vec![started(1, "a", "+1"), outcome(1, CallState::Failed), outcome(1, CallState::Completed)]);
        assert_eq!(found(&twice), vec![(rule::ONE_OUTCOME_PER_CALL, vec![1, 2, 3])]);
        assert_eq!(found(&history(vec![outcome(5, CallState::Failed)])), vec![(rule::OUTCOME_OF_KNOWN_CALL, vec![1])]);
    }

    #[test]
    fn a_call_id_started_twice_is_named() {
        let events = timed(vec![
            (t0(), started(1, "a", "+1")),
            (t0(), outcome(1, CallState::Completed)),
            (t0() + Duration::days(2), started(1, "a", "+2")),
        ]);
        assert_eq!(found(&events), vec![(rule::UNIQUE_CALL_ID, vec![1, 3])]);
    }

    #[test]
    fn a_slug_given_twice_is_named() {
        let community = |n| EventKind::CommunityCreated {
            community_id: id(n),
            slug: "my-community".into(),
            name: "My Community".into(),
            owner: "asha".into(),
            plan: "pro".into(),
        };
        let report = audit(Rules::default(), None, &history(vec![community(1), community(2)]));
        assert_eq!(
            report.violations.iter().map(|v| (v.rule, v.positions.clone())).collect::<Vec<_>>(),
            vec![(rule::UNIQUE_COMMUNITY_SLUG, vec![1, 2])]
        );
        assert!(report.violations[0].detail.contains("slug my-community"), "{}", report.violations[0].detail);
    }

    fn placed(n: u128, slot: u32) -> EventKind {
        EventKind::HoldPlaced {
            details: HoldDetails {
                hold_id: id(n),
                clinic: "c".into(),
                doctor: "d".into(),
                date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
                slot,
                patient: None,
                patient_id: None,
                entry_id: None,
            },
            // `history` records event i at t0 + i seconds.
            expires_at: t0() + Duration::seconds(3),
        }
    }

    #[test]
    fn attendance_before_the_bookings_day_at_its_clinic_is_named() {
        let mark = EventKind::AttendanceRecorded { booking_id: id(1), attendance: crate::core::Attendance::Arrived, corrected: false };
        // t0 is 09:00 UTC on the day before the booking's date.
        let early = timed(vec![(t0(), schedule_set(3)), (t0(), booking(1, 0, 1)), (t0(), mark.clone())]);
        assert_eq!(found(&early), vec![(rule::ATTENDANCE_FROM_THE_DAY, vec![3])]);
        // At 11:00 UTC it is already the booking's day at UTC+14.
        let zone = EventKind::ClinicZoneSet { clinic: "c".into(), zone: "Pacific/Kiritimati".parse().unwrap(), tzdata: "2025b".into() };
        let east = timed(vec![(t0(), schedule_set(3)), (t0(), zone), (t0(), booking(1, 0, 1)), (t0() + Duration::hours(2), mark.clone())]);
        assert_eq!(found(&east), vec![]);
        let on_the_day = timed(vec![(t0(), schedule_set(3)), (t0(), booking(1, 0, 1)), (t0() + Duration::days(1), mark)]);
        assert_eq!(found(&on_the_day), vec![]);
    }

    #[test]
    fn the_live_audit_forgets_a_closed_days_facts_and_still_names_a_later_change() {
        let closed = EventKind::DaysClosed { clinic: "c".into(), through: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap() };
        let cancel = EventKind::BookingCancelled { booking_id: id(1), reason: None };
        let events = history(vec![schedule_set(3), booking(1, 0, 1), placed(2, 1), closed, cancel]);
        let mut live = Auditor::new(Rules::default(), None).forgetting_closed_days();
        for event in &events[..4] {
            live.check(event);
        }
        assert!(!live.tenants["kloqo"].bookings.is_empty(), "forgotten at the next sweep, not at each closing");
        live.tenants.get_mut("kloqo").unwrap().sweep();
        let facts = &live.tenants["kloqo"];
        assert!(facts.bookings.is_empty() && facts.slot_holders.is_empty() && facts.tokens.is_empty(), "{facts:?}");
        assert!(facts.holds.is_empty() && facts.held_slots.is_empty(), "{facts:?}");
        live.check(&events[4]);
        let named: Vec<_> = live.violations().iter().map(|v| (v.rule, v.positions.clone())).collect();
        assert_eq!(named, vec![(rule::CANCELLATION_OF_ACTIVE_BOOKING, vec![5])]);
        // `ledger audit` keeps every fact, and names the change of the closed day itself.
        assert_eq!(found(&events), vec![(rule::CLOSED_DAYS_UNCHANGED, vec![4, 5])]);
    }

    #[test]
    fn a_change_to_a_closed_day_and_closed_days_that_shrink_are_named() {
        let closed =
            |through: u32| EventKind::DaysClosed { clinic: "c".into(), through: NaiveDate::from_ymd_opt(2026, 3, through).unwrap() };
        let cancel = EventKind::BookingCancelled { booking_id: id(1), reason: None };
        // Booked on 03-02, closed through it, then booked, cancelled and held there.
        let late = history(vec![schedule_set(3), booking(1, 0, 1), closed(2), booking(2, 1, 2), cancel.clone(), placed(3, 2)]);
        assert_eq!(
            found(&late),
            vec![
                (rule::CLOSED_DAYS_UNCHANGED, vec![3, 4]),
                (rule::CLOSED_DAYS_UNCHANGED, vec![3, 5]),
                (rule::CLOSED_DAYS_UNCHANGED, vec![3, 6])
            ]
        );
        // A schedule that shrinks below a closed day's booking leaves it as it closed.
        let shrunk = history(vec![schedule_set(3), booking(1, 2, 1), closed(2), schedule_set(2)]);
        assert_eq!(found(&shrunk), vec![]);
        let open = history(vec![schedule_set(3), booking(1, 2, 1), closed(1), schedule_set(2)]);
        assert_eq!(found(&open), vec![(rule::BOOKING_WITHIN_SCHEDULE, vec![2, 4])]);
        // Closed through the day before: nothing wrong, and closed days only grow.
        let fine = history(vec![schedule_set(3), booking(1, 0, 1), closed(1), cancel, placed(3, 2), closed(2), closed(1)]);
        assert_eq!(found(&fine), vec![(rule::CLOSED_DAYS_UNCHANGED, vec![6, 7])]);
    }

    #[test]
    fn a_hold_on_a_taken_slot_a_booking_over_a_hold_and_an_early_expiry_are_named() {
        let confirming = |n, hold: u128| {
            let mut c = created(n, 0, 1);
            c.details.external = crate::core::External {
                external_ref: None,
                correlation_id: None,
                external_created_at: None,
                hold_id: Some(id(hold)),
                patient_id: None,
            }
            .boxed_if_any();
            EventKind::BookingCreated(c)
        };
        // Clean: held, confirmed; held, released; held, expired at its time.
        let clean = history(vec![
            schedule_set(3),
            placed(10, 0),
            confirming(1, 10),
            placed(11, 1),
            EventKind::HoldReleased { hold_id: id(11) },
            placed(12, 1),
            EventKind::HoldExpired { hold_id: id(12) },
        ]);
        assert_eq!(found(&clean[..6]), vec![]);
        // Hold 12 was placed at t0 + 5 s and expires at t0 + 3 s: expired at t0 + 6 s is fine.
        assert_eq!(found(&clean), vec![]);
        assert_eq!(found(&history(vec![schedule_set(3), booking(1, 0, 1), placed(10, 0)])), vec![(rule::HOLD_OF_FREE_SLOT, vec![2, 3])]);
        assert_eq!(found(&history(vec![schedule_set(3), placed(10, 0), booking(1, 0, 1)])), vec![(rule::HOLD_OF_FREE_SLOT, vec![2, 3])]);
        assert_eq!(found(&history(vec![schedule_set(3), placed(10, 0), placed(11, 0)])), vec![(rule::HOLD_OF_FREE_SLOT, vec![2, 3])]);
        // Expired at t0 + 2 s, before its t0 + 3 s.
        let early = history(vec![schedule_set(3), placed(10, 0), EventKind::HoldExpired { hold_id: id(10) }]);
        assert_eq!(found(&early), vec![(rule::HOLD_OF_FREE_SLOT, vec![2, 3])]);
        let twice = history(vec![
            schedule_set(3),
            placed(10, 0),
            EventKind::HoldReleased { hold_id: id(10) },
            EventKind::HoldReleased { hold_id: id(10) },
        ]);
        assert_eq!(found(&twice), vec![(rule::HOLD_OF_FREE_SLOT, vec![2, 3, 4])]);
        assert_eq!(found(&history(vec![schedule_set(3), confirming(1, 10)])), vec![(rule::HOLD_OF_FREE_SLOT, vec![2])]);
    }

    #[test]
    fn gaps_and_repeats_of_positions_are_named() {
        let mut events = history(vec![schedule_set(1), schedule_set(2), schedule_set(3), schedule_set(4)]);
        events[2].position = 4;
        events[3].position = 4;
        let report = audit(Rules::default(), None, &events);
        let rules: Vec<_> = report.violations.iter().map(|v| (v.rule, v.positions.clone())).collect();
        assert_eq!(rules, vec![(rule::POSITIONS_GAP_FREE, vec![2, 4]), (rule::POSITIONS_GAP_FREE, vec![4])]);
        assert!(report.violations[0].detail.starts_with("position 3 is missing"), "{}", report.violations[0].detail);
        let late = &history(vec![schedule_set(1), schedule_set(2)])[1..];
        assert_eq!(found(late), vec![(rule::POSITIONS_GAP_FREE, vec![2])]);
    }

    /// Other tenants' events are skipped but their positions keep the log gap-free;
    /// one tenant's violation is not another's.
    #[test]
    fn a_restricted_audit_sees_only_its_tenant_violations() {
        let events = vec![
            event_at(1, t0(), "kloqo", schedule_set(1)),
            event_at(2, t0(), "other", schedule_set(1)),
            event_at(3, t0(), "other", booking(1, 0, 1)),
            event_at(4, t0(), "other", booking(2, 0, 2)),
            event_at(5, t0(), "kloqo", booking(3, 0, 1)),
        ];
        assert_eq!(audit(Rules::default(), Some("kloqo"), &events), AuditReport { checked_events: 2, violations: vec![] });
        let other = audit(Rules::default(), Some("other"), &events);
        assert_eq!(other.checked_events, 3);
        assert_eq!(
            other.violations.iter().map(|v| (v.rule, v.positions.clone())).collect::<Vec<_>>(),
            vec![(rule::ONE_ACTIVE_BOOKING_PER_SLOT, vec![3, 4])]
        );
        assert!(other.violations[0].detail.starts_with("tenant other: "), "{}", other.violations[0].detail);
    }

    #[test]
    fn every_rule_is_named_once_in_snake_case() {
        let names: BTreeSet<_> = rule::ALL.iter().collect();
        assert_eq!(names.len(), rule::ALL.len());
        for name in rule::ALL {
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
        }
    }
}
