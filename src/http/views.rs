//! The JSON the API answers with, and the rendering of the writer's outcomes.

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, PROBLEM_JSON};
use crate::core::zones::TZDATA;
use crate::core::{
    Attendance, Booking, BookingKind, BookingStatus, Call, Campaign, ClinicZone, Community, Entry, EntryStatus, Hold, HoldStatus,
    PhoneReply, PhoneState, Reply, Schedule, SlotTime,
};
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
    /// The slot's wall-clock time, when the schedule has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// RFC 3339, with the clinic zone's offset in force then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<FixedOffset>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<FixedOffset>>,
    pub patient: String,
    /// The caller's id of the patient, null when none was given.
    pub patient_id: Option<String>,
    pub kind: KindView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The hold this booking confirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<Uuid>,
    /// 1 when created, one more at each change (cancellation, reschedule, attendance).
    pub version: u32,
    /// `arrived` or `no_show`; absent until recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attendance: Option<AttendanceView>,
    /// Where its latest reschedule moved it from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rescheduled_from: Option<PlaceView>,
    /// The position of the last event that changed the booking.
    pub position: u64,
    pub created_at: DateTime<Utc>,
}

impl BookingView {
    /// The booking, with when its slot is (`TenantState::booking_time`).
    pub fn new(b: &Booking, time: SlotTime) -> Self {
        let (starts_at, ends_at) = instants(time);
        BookingView {
            time: time.minute().map(format_minute),
            starts_at,
            ends_at,
            booking_id: b.details.booking_id,
            token: b.token(),
            status: match b.status {
                BookingStatus::Confirmed => StatusView::Confirmed,
                BookingStatus::Cancelled => StatusView::Cancelled,
            },
            clinic: b.details.clinic.to_string(),
            doctor: b.details.doctor.to_string(),
            date: b.details.date,
            slot: b.details.slot,
            patient: b.details.patient.to_string(),
            kind: b.details.kind.into(),
            external_ref: b.details.external_ref().map(|r| r.to_string()),
            correlation_id: b.details.correlation_id().map(|c| c.to_string()),
            hold_id: b.details.hold_id(),
            patient_id: b.details.patient_id().map(|p| p.to_string()),
            version: b.version,
            attendance: b.attendance.map(|a| match a {
                Attendance::Arrived => AttendanceView::Arrived,
                Attendance::NoShow => AttendanceView::NoShow,
            }),
            rescheduled_from: b.rescheduled_from.as_deref().map(|p| PlaceView {
                doctor: p.doctor.to_string(),
                date: p.date,
                slot: p.slot,
                token: p.token(),
            }),
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
    /// Kept for a patient deciding, until `expires_at`.
    Held,
    /// Its wall-clock time does not exist that day (the clock skips it).
    Unavailable,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlotView {
    pub slot: u32,
    /// When the schedule has `first_slot` and `slot_minutes` (and the slot starts before midnight).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// RFC 3339, with the clinic zone's offset in force then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<FixedOffset>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<FixedOffset>>,
    pub state: SlotState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booking_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The patient of the booking holding the slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// `held`: the hold, and when it ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
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

/// One message of the live slots stream after the first: what one event
/// changed in the day. A client sets the doctor's row to `slots_per_day` slots
/// and replaces the slots listed (a new schedule lists every slot).
#[derive(Debug, Serialize, ToSchema)]
pub struct SlotsChangeView {
    /// The position of the event: the day now stands as of it (also the message's `id:`).
    pub as_of: u64,
    /// `schedule_set`, `booking_created` or `booking_cancelled`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub recorded_at: DateTime<Utc>,
    /// The event in one line.
    pub summary: String,
    pub doctors: Vec<DoctorChangeView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DoctorChangeView {
    pub doctor: String,
    /// The doctor's slots that day, after the change.
    pub slots_per_day: u32,
    /// The slots that changed, as they now stand.
    pub slots: Vec<SlotView>,
}

/// A clinic day's changes, for time travel: each position `as_of` can show.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlotsHistoryView {
    pub clinic: String,
    pub date: NaiveDate,
    /// The history is read through this position (the ledger's last).
    pub as_of: u64,
    pub changes: Vec<DayChangeView>,
    /// The `from` of the next page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DayChangeView {
    pub position: u64,
    pub recorded_at: DateTime<Utc>,
    /// `schedule_set`, `booking_created` or `booking_cancelled`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub doctor: String,
    /// The event in one line, for people.
    #[schema(example = "d1 slot 2 (09:30) booked for Asha: token A003")]
    pub summary: String,
}

/// A business's phone number: `none`, `pending` (a claim is buying one) or `active`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PhoneView {
    #[schema(example = "active")]
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// E.164.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_sid: Option<String>,
    /// True when a claim found the number already bought.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub already_complete: Option<bool>,
}

impl PhoneView {
    pub fn new(phone: Option<&PhoneState>, already_complete: bool) -> PhoneView {
        let none = PhoneView {
            state: "none",
            claim_id: None,
            lease_expires_at: None,
            phone_number: None,
            provider_sid: None,
            already_complete: None,
        };
        match phone {
            None => none,
            Some(PhoneState::Pending { claim_id, lease_expires_at }) => {
                PhoneView { state: "pending", claim_id: Some(*claim_id), lease_expires_at: Some(*lease_expires_at), ..none }
            }
            Some(PhoneState::Active { claim_id, phone_number, provider_sid }) => PhoneView {
                state: "active",
                claim_id: Some(*claim_id),
                phone_number: Some(phone_number.to_string()),
                provider_sid: Some(provider_sid.to_string()),
                already_complete: already_complete.then_some(true),
                ..none
            },
        }
    }
}

/// An outbound call.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallView {
    pub call_id: Uuid,
    pub campaign: String,
    /// E.164.
    pub to: String,
    /// `calling` until its outcome: `completed`, `no_answer`, `failed` or `bad_number`.
    #[schema(example = "calling")]
    pub state: &'static str,
    pub started_at: DateTime<Utc>,
}

impl From<&Call> for CallView {
    fn from(call: &Call) -> Self {
        CallView {
            call_id: call.call_id,
            campaign: call.campaign.to_string(),
            to: call.to.to_string(),
            state: call.state.name(),
            started_at: call.started_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CallsView {
    pub calls: Vec<CallView>,
}

/// A campaign and its kill switch.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignView {
    pub campaign: String,
    #[schema(example = "running")]
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halt_reason: Option<String>,
    pub consecutive_failures: u32,
    /// Refused duplicate calls within the window.
    pub duplicate_attempts: u32,
}

impl CampaignView {
    pub fn new(name: &str, campaign: &Campaign, duplicate_attempts: usize) -> CampaignView {
        CampaignView {
            campaign: name.to_owned(),
            state: if campaign.halt_reason.is_some() { "halted" } else { "running" },
            halt_reason: campaign.halt_reason.as_deref().map(str::to_owned),
            consecutive_failures: campaign.consecutive_failures,
            duplicate_attempts: duplicate_attempts as u32,
        }
    }
}

/// A page of the tenant's campaigns, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignsView {
    pub campaigns: Vec<CampaignView>,
    /// The last name listed, for `after`, when more campaigns remain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A number on the tenant's block list.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlockedView {
    /// E.164.
    pub number: String,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipView {
    pub user: String,
    #[schema(example = "admin")]
    pub role: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub plan: String,
}

/// A community with its owner's admin membership and its subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommunityView {
    pub community_id: Uuid,
    pub slug: String,
    pub name: String,
    pub owner: String,
    pub membership: MembershipView,
    pub subscription: SubscriptionView,
}

impl From<&Community> for CommunityView {
    fn from(c: &Community) -> Self {
        CommunityView {
            community_id: c.community_id,
            slug: c.slug.to_string(),
            name: c.name.to_string(),
            owner: c.owner.to_string(),
            membership: MembershipView { user: c.owner.to_string(), role: "admin" },
            subscription: SubscriptionView { plan: c.plan.to_string() },
        }
    }
}

/// A slot's start and end, when it has them.
pub fn instants(time: SlotTime) -> (Option<DateTime<FixedOffset>>, Option<DateTime<FixedOffset>>) {
    match time {
        SlotTime::At { starts_at, ends_at, .. } => (Some(starts_at), Some(ends_at)),
        SlotTime::Untimed | SlotTime::Unavailable { .. } => (None, None),
    }
}

/// A waitlist entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryView {
    pub entry_id: Uuid,
    pub clinic: String,
    pub date: NaiveDate,
    /// Any doctor of the clinic when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doctor: Option<String>,
    pub patient: String,
    pub patient_id: Option<String>,
    /// `waiting`, `offered`, `booked`, `expired` or `withdrawn`.
    #[schema(example = "waiting")]
    pub status: &'static str,
    /// `offered`: the hold keeping the slot, and when it ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// `booked`: the booking its offer became.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booking_id: Option<Uuid>,
    /// The position of the event that last changed the entry (not its place in the line).
    pub position: u64,
}

impl EntryView {
    /// The entry with `status`; `expires` gives an offer's hold's expiry.
    pub fn new(e: &Entry, status: EntryStatus, expires: impl Fn(Uuid) -> Option<DateTime<Utc>>) -> EntryView {
        let (hold_id, booking_id) = match status {
            EntryStatus::Offered(hold_id) => (Some(hold_id), None),
            EntryStatus::Booked(booking_id) => (None, Some(booking_id)),
            EntryStatus::Waiting | EntryStatus::Expired | EntryStatus::Withdrawn => (None, None),
        };
        EntryView {
            entry_id: e.details.entry_id,
            clinic: e.details.clinic.to_string(),
            date: e.details.date,
            doctor: e.details.doctor.as_ref().map(|d| d.to_string()),
            patient: e.details.patient.to_string(),
            patient_id: e.details.patient_id.as_ref().map(|p| p.to_string()),
            status: status.name(),
            hold_id,
            expires_at: hold_id.and_then(expires),
            booking_id,
            position: e.position,
        }
    }
}

/// A clinic's time zone.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClinicView {
    pub clinic: String,
    /// An IANA zone name; `UTC` until one is set.
    #[schema(example = "Asia/Kolkata")]
    pub time_zone: String,
    /// The IANA tzdata release computing the clinic's times.
    #[schema(example = "2025b")]
    pub tzdata: String,
    /// The position of the event that set the zone (0: never set).
    pub position: u64,
}

impl ClinicView {
    pub fn new(clinic: &str, zone: Option<&ClinicZone>) -> ClinicView {
        match zone {
            Some(z) => ClinicView {
                clinic: clinic.to_owned(),
                time_zone: z.zone.name().to_owned(),
                tzdata: z.tzdata.to_string(),
                position: z.position,
            },
            None => ClinicView { clinic: clinic.to_owned(), time_zone: "UTC".into(), tzdata: TZDATA.into(), position: 0 },
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttendanceView {
    Arrived,
    NoShow,
}

/// Where a booking was before its latest reschedule, with the token it had there.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlaceView {
    pub doctor: String,
    pub date: NaiveDate,
    pub slot: u32,
    pub token: String,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatusView {
    Held,
    Confirmed,
    Released,
    Expired,
}

/// A hold: a slot kept for a patient deciding, until `expires_at`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldView {
    pub hold_id: Uuid,
    pub status: HoldStatusView,
    pub clinic: String,
    pub doctor: String,
    pub date: NaiveDate,
    pub slot: u32,
    pub patient: Option<String>,
    pub patient_id: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// The booking that confirmed it (`confirmed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booking_id: Option<Uuid>,
    /// The position of the last event that changed the hold.
    pub position: u64,
}

impl HoldView {
    /// The hold with `status`: its events' (in an answer), or the clock's (`Hold::status_at`).
    pub fn new(h: &Hold, status: HoldStatus) -> HoldView {
        let (status, booking_id) = match status {
            HoldStatus::Held => (HoldStatusView::Held, None),
            HoldStatus::Confirmed(booking_id) => (HoldStatusView::Confirmed, Some(booking_id)),
            HoldStatus::Released => (HoldStatusView::Released, None),
            HoldStatus::Expired => (HoldStatusView::Expired, None),
        };
        HoldView {
            hold_id: h.details.hold_id,
            status,
            clinic: h.details.clinic.to_string(),
            doctor: h.details.doctor.to_string(),
            date: h.details.date,
            slot: h.details.slot,
            patient: h.details.patient.as_ref().map(|p| p.to_string()),
            patient_id: h.details.patient_id.as_ref().map(|p| p.to_string()),
            expires_at: h.expires_at,
            booking_id,
            position: h.position,
        }
    }
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
    /// 400 `invalid_request`: the offending field, when one is named.
    pub field: Option<String>,
    /// `slot_taken`, `schedule_conflict`, `external_ref_bound`, `not_found`: the booking concerned.
    pub booking_id: Option<Uuid>,
    /// `slot_taken`: the holder's token.
    pub token: Option<String>,
    /// `slot_out_of_range`, `schedule_conflict`.
    pub slot: Option<u32>,
    /// `slot_out_of_range`.
    pub slots_per_day: Option<u32>,
    /// `too_many_doctors`: the most doctors a clinic may have.
    pub limit: Option<u32>,
    /// `storage_failure`: the position (or journal sequence) of the record that could not be read.
    pub position: Option<u64>,
    /// `schedule_conflict`.
    pub date: Option<NaiveDate>,
    /// `unknown_doctor`.
    pub clinic: Option<String>,
    /// `unknown_doctor`.
    pub doctor: Option<String>,
    /// `external_ref_bound`.
    pub external_ref: Option<String>,
    /// `external_ref_bound`: the bound booking's correlation id (the evidence).
    pub correlation_id: Option<String>,
    /// `stale_external_booking`.
    pub age_secs: Option<i64>,
    /// `stale_external_booking`, `external_created_in_future`.
    pub window_secs: Option<i64>,
    /// `external_created_in_future`: how far ahead of the ledger's clock the timestamp is.
    pub ahead_secs: Option<i64>,
    /// `purchase_in_progress`, `claim_superseded`.
    pub claim_id: Option<Uuid>,
    /// `purchase_in_progress`.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// `phone_number_in_use`, with the `business` that has it.
    pub phone_number: Option<String>,
    pub business: Option<String>,
    /// `number_blocked`.
    pub number: Option<String>,
    /// `number_blocked`, `campaign_halted`.
    pub reason: Option<String>,
    /// `call_in_progress`, `recently_called`, `outcome_already_recorded`, `not_found`.
    pub call_id: Option<Uuid>,
    /// `recently_called`.
    pub called_at: Option<DateTime<Utc>>,
    /// `recently_called`: from when the number may be called again.
    pub retry_after: Option<DateTime<Utc>>,
    /// `campaign_halted`.
    pub campaign: Option<String>,
    /// `outcome_already_recorded`: the outcome on record. `storage_unavailable`:
    /// `unknown` (the command was in a batch whose write or sync failed: it may
    /// or may not have taken effect; repeat it with its Idempotency-Key once
    /// the ledger is ready) or `not_executed`.
    pub outcome: Option<String>,
    /// `storage_unavailable` on `/readyz`: the failure that took storage down...
    pub cause: Option<String>,
    /// ...when...
    pub since: Option<DateTime<Utc>>,
    /// ...and whether the server is re-opening its logs (false: a restart is needed).
    pub retrying: Option<bool>,
    /// `not_found` of a community.
    pub slug: Option<String>,
    /// `slot_held`, `hold_expired`, `hold_released`, `hold_confirmed`, `not_found`: the hold concerned.
    pub hold_id: Option<Uuid>,
    /// `slot_held`, `hold_expired`: when the hold ends or ended.
    pub expires_at: Option<DateTime<Utc>>,
    /// `version_conflict`: the booking's version now.
    pub version: Option<u32>,
    /// `attendance_recorded`: the mark on record.
    pub attendance: Option<String>,
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("views serialize")
}

/// The status and body of a writer outcome. Also the writer's `Render`: what
/// it stores for a keyed command is exactly what the first caller receives.
pub fn render(outcome: &Outcome) -> (u16, Vec<u8>) {
    match outcome {
        Ok(Reply::Booking { booking, created, time }) => (if *created { 201 } else { 200 }, json(&BookingView::new(booking, *time))),
        Ok(Reply::Entry { entry, created, expires_at }) => {
            let status = if *created { 201 } else { 200 };
            (status, json(&EntryView::new(entry, entry.status, |_| *expires_at)))
        }
        Ok(Reply::Clinic { clinic, zone }) => (200, json(&ClinicView::new(clinic, zone.as_ref()))),
        Ok(Reply::Schedule { clinic, doctor, schedule, position }) => (200, json(&ScheduleView::new(clinic, doctor, schedule, *position))),
        Ok(Reply::Phone { phone, reply, .. }) => {
            let status = if *reply == PhoneReply::Claimed { 201 } else { 200 };
            (status, json(&PhoneView::new(phone.as_ref(), *reply == PhoneReply::AlreadyComplete)))
        }
        Ok(Reply::Call { call, created }) => (if *created { 201 } else { 200 }, json(&CallView::from(&**call))),
        Ok(Reply::Campaign { campaign, state }) => (200, json(&CampaignView::new(campaign, state, state.duplicates.len()))),
        Ok(Reply::Blocked { number, reason, created }) => {
            (if *created { 201 } else { 200 }, json(&BlockedView { number: number.to_string(), reason: reason.to_string() }))
        }
        Ok(Reply::Community { community }) => (201, json(&CommunityView::from(&**community))),
        Ok(Reply::Hold { hold, created }) => (if *created { 201 } else { 200 }, json(&HoldView::new(hold, hold.status))),
        Err(rejection) => {
            let error = ApiError::from(rejection);
            (error.status.as_u16(), error.body())
        }
    }
}

/// The HTTP response for a writer answer.
pub fn respond(answer: Answer) -> Response {
    let (status, body, repeated) = match answer {
        Answer::Fresh(outcome) => {
            let (status, body) = render(&outcome);
            (status, Bytes::from(body), false)
        }
        Answer::Stored { status, body, repeated } => (status, Bytes::copy_from_slice(&body), repeated),
    };
    let content_type = if status >= 400 { PROBLEM_JSON } else { "application/json" };
    let status = StatusCode::from_u16(status).expect("stored statuses are valid");
    let retry_after = (status == StatusCode::TOO_MANY_REQUESTS)
        .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok()?.get("retry_after_secs")?.as_u64())
        .flatten();
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(secs) = retry_after {
        // A stored 429 (a keyed command's) says when to retry as the fresh one did.
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if repeated {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
