//! Outbound calls (incident 02): a call is recorded before it is dialled, a
//! number is called at most once per cooldown, `bad_number` blocks it forever,
//! and a campaign that fails or repeats itself is halted by an event.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::state::TenantState;
use super::{Context, EventKind, Rejection, Rules, Text};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum CallState {
    Calling,
    Completed,
    NoAnswer,
    Failed,
    BadNumber,
}

impl CallState {
    pub fn name(self) -> &'static str {
        match self {
            CallState::Calling => "calling",
            CallState::Completed => "completed",
            CallState::NoAnswer => "no_answer",
            CallState::Failed => "failed",
            CallState::BadNumber => "bad_number",
        }
    }
}

/// Which duplicate a refused call was: the refusals the kill switch counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicate {
    InProgress,
    RecentlyCalled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub call_id: Uuid,
    pub campaign: Text,
    /// E.164.
    pub to: Text,
    pub state: CallState,
    pub started_at: DateTime<Utc>,
    /// The position of the last event that changed the call.
    pub position: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NumberCalls {
    /// The call that started last.
    pub last_call: Option<(Uuid, DateTime<Utc>)>,
    /// The call still `calling`, if any.
    pub in_progress: Option<Uuid>,
    /// Why the number is blocked: permanent.
    pub blocked: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Campaign {
    pub halt_reason: Option<Text>,
    pub consecutive_failures: u32,
    /// When duplicates were refused since the campaign last started or resumed.
    pub duplicates: VecDeque<DateTime<Utc>>,
}

impl Campaign {
    /// Refused duplicates within `window` of `now`.
    pub fn duplicates_within(&self, now: DateTime<Utc>, window: chrono::Duration) -> usize {
        self.duplicates.iter().filter(|at| now - **at < window).count()
    }
}

pub(super) fn decide_start(
    tenant: Option<&TenantState>,
    call_id: Uuid,
    campaign: &Text,
    to: &Text,
    rules: &Rules,
    context: &Context,
) -> Result<Vec<EventKind>, Rejection> {
    if let Some(reason) = tenant.and_then(|t| t.campaigns.get(campaign)).and_then(|c| c.halt_reason.as_ref()) {
        return Err(Rejection::CampaignHalted { campaign: campaign.clone(), reason: reason.clone() });
    }
    if let Some(number) = tenant.and_then(|t| t.numbers.get(to)) {
        if let Some(reason) = &number.blocked {
            return Err(Rejection::NumberBlocked { number: to.clone(), reason: reason.clone() });
        }
        if let Some(call_id) = number.in_progress {
            return Err(Rejection::CallInProgress { call_id });
        }
        if let Some((call_id, called_at)) = number.last_call
            && context.now - called_at < rules.call_cooldown
        {
            return Err(Rejection::RecentlyCalled { call_id, called_at, retry_after: called_at + rules.call_cooldown });
        }
    }
    Ok(vec![EventKind::CallStarted { call_id, campaign: campaign.clone(), to: to.clone() }])
}

/// The kill switch: a refused duplicate is recorded, and the refusal that
/// reaches the limit within the window halts the campaign.
pub(super) fn decide_refusal(
    tenant: Option<&TenantState>,
    campaign: &Text,
    to: &Text,
    rejection: &Rejection,
    rules: &Rules,
    context: &Context,
) -> Vec<EventKind> {
    let (duplicate, call_id) = match rejection {
        Rejection::CallInProgress { call_id } => (Duplicate::InProgress, *call_id),
        Rejection::RecentlyCalled { call_id, .. } => (Duplicate::RecentlyCalled, *call_id),
        _ => return vec![],
    };
    let mut kinds = vec![EventKind::CallRefused { campaign: campaign.clone(), to: to.clone(), duplicate, call_id }];
    let earlier = tenant.and_then(|t| t.campaigns.get(campaign)).map_or(0, |c| c.duplicates_within(context.now, rules.duplicate_window));
    if earlier + 1 >= rules.campaign_duplicates_max as usize {
        let reason = format!(
            "{} refused duplicate call attempts within {} minutes (the last to {to})",
            earlier + 1,
            rules.duplicate_window.num_minutes()
        );
        kinds.push(EventKind::CampaignHalted { campaign: campaign.clone(), reason: reason.into() });
    }
    kinds
}

pub(super) fn decide_outcome(
    tenant: Option<&TenantState>,
    call_id: Uuid,
    outcome: CallState,
    rules: &Rules,
) -> Result<Vec<EventKind>, Rejection> {
    assert_ne!(outcome, CallState::Calling, "calling is not an outcome");
    let call = tenant.and_then(|t| t.calls.get(&call_id)).ok_or(Rejection::CallNotFound { call_id })?;
    if call.state == outcome {
        return Ok(vec![]);
    }
    if call.state != CallState::Calling {
        return Err(Rejection::OutcomeAlreadyRecorded { call_id, outcome: call.state });
    }
    let tenant = tenant.expect("the call exists");
    let mut kinds = vec![EventKind::CallOutcomeRecorded { call_id, outcome }];
    if outcome == CallState::BadNumber && tenant.numbers.get(&call.to).is_none_or(|n| n.blocked.is_none()) {
        kinds.push(EventKind::NumberBlocked { number: call.to.clone(), reason: format!("bad_number on call {call_id}").into() });
    }
    let campaign = tenant.campaigns.get(&call.campaign);
    let failures = campaign.map_or(0, |c| c.consecutive_failures) + 1;
    if outcome == CallState::Failed && failures >= rules.campaign_failures_max && campaign.is_none_or(|c| c.halt_reason.is_none()) {
        let reason = format!("{failures} consecutive failed calls (the last {call_id})");
        kinds.push(EventKind::CampaignHalted { campaign: call.campaign.clone(), reason: reason.into() });
    }
    Ok(kinds)
}

pub(super) fn decide_block(tenant: Option<&TenantState>, number: &Text, reason: &Text) -> Vec<EventKind> {
    match tenant.and_then(|t| t.numbers.get(number)).and_then(|n| n.blocked.as_ref()) {
        Some(_) => vec![],
        None => vec![EventKind::NumberBlocked { number: number.clone(), reason: reason.clone() }],
    }
}

pub(super) fn decide_resume(tenant: Option<&TenantState>, campaign: &Text, reason: &Text) -> Vec<EventKind> {
    match tenant.and_then(|t| t.campaigns.get(campaign)).and_then(|c| c.halt_reason.as_ref()) {
        None => vec![],
        Some(_) => vec![EventKind::CampaignResumed { campaign: campaign.clone(), reason: reason.clone() }],
    }
}

pub(super) fn apply(tenant: &mut TenantState, kind: &EventKind, at: DateTime<Utc>, position: u64, rules: &Rules) {
    match kind {
        EventKind::CallStarted { call_id, campaign, to } => {
            let number = tenant.numbers.entry(to.clone()).or_default();
            assert!(number.in_progress.is_none() && number.blocked.is_none(), "a call to a free number");
            number.in_progress = Some(*call_id);
            number.last_call = Some((*call_id, at));
            let call =
                Call { call_id: *call_id, campaign: campaign.clone(), to: to.clone(), state: CallState::Calling, started_at: at, position };
            assert!(tenant.calls.insert(*call_id, Arc::new(call)).is_none(), "call ids are unique");
            tenant.calling.insert((at, *call_id));
            tenant.campaigns.entry(campaign.clone()).or_default();
        }
        EventKind::CallOutcomeRecorded { call_id, outcome } => {
            let call = Arc::make_mut(tenant.calls.get_mut(call_id).expect("an outcome of a known call"));
            assert_eq!(call.state, CallState::Calling, "one outcome per call");
            call.state = *outcome;
            call.position = position;
            assert!(tenant.calling.remove(&(call.started_at, *call_id)), "the call was in progress");
            let number = tenant.numbers.get_mut(&call.to).expect("the call's number");
            assert_eq!(number.in_progress, Some(*call_id));
            number.in_progress = None;
            let campaign = tenant.campaigns.entry(call.campaign.clone()).or_default();
            campaign.consecutive_failures = if *outcome == CallState::Failed { campaign.consecutive_failures + 1 } else { 0 };
        }
        EventKind::CallRefused { campaign, .. } => {
            // Only refusals within the window count, so only those are kept.
            let duplicates = &mut tenant.campaigns.entry(campaign.clone()).or_default().duplicates;
            duplicates.retain(|earlier| at - *earlier < rules.duplicate_window);
            duplicates.push_back(at);
        }
        EventKind::CampaignHalted { campaign, reason } => {
            let campaign = tenant.campaigns.entry(campaign.clone()).or_default();
            assert!(campaign.halt_reason.is_none(), "halting a running campaign");
            campaign.halt_reason = Some(reason.clone());
        }
        EventKind::CampaignResumed { campaign, .. } => {
            let campaign = tenant.campaigns.get_mut(campaign).expect("resuming a known campaign");
            assert!(campaign.halt_reason.is_some(), "resuming a halted campaign");
            *campaign = Campaign::default();
        }
        EventKind::NumberBlocked { number, reason } => {
            let number = tenant.numbers.entry(number.clone()).or_default();
            assert!(number.blocked.is_none(), "blocked once");
            number.blocked = Some(reason.clone());
        }
        _ => unreachable!("not a call event"),
    }
}
