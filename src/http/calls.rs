//! Outbound calls: recorded before dialling, outcomes, the stale-call list,
//! campaigns and their kill switch, the block list.

use axum::Json;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Role;
use super::error::ApiError;
use super::extract::{JsonBody, PathParams, QueryParams, TenantCall};
use super::views::{BlockedView, CallView, CallsView, CampaignView, CampaignsView, Problem};
use crate::core::{Action, CallState, Campaign, Text};
use crate::validate::{Check, Invalid, REASON_CHARS_MAX, check_name, check_text, e164, parse_uuid};

/// At most this many calls are listed by one `GET /calls`.
pub const CALLS_LISTED_MAX: usize = 1000;
/// At most this many campaigns are listed by one `GET /campaigns`.
pub const CAMPAIGNS_LISTED_MAX: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartCallRequest {
    pub campaign: String,
    /// Any format; normalized to E.164.
    pub to: String,
    /// ISO 3166 alpha-2, for numbers without a country code (default "US").
    pub default_region: Option<String>,
}

impl Check for StartCallRequest {
    type Checked = Action;

    fn check(self) -> Result<Action, Invalid> {
        check_name("campaign", &self.campaign)?;
        let to = e164("to", &self.to, self.default_region.as_deref())?;
        Ok(Action::StartCall { call_id: Uuid::now_v7(), campaign: self.campaign.into(), to })
    }
}

/// Records a call as started, before the caller dials.
#[utoipa::path(
    post, path = "/v1/{tenant}/calls", operation_id = "startCall", tag = "calls",
    params(("tenant" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = StartCallRequest,
    responses(
        (status = 201, description = "Recorded as calling: dial now", body = CallView),
        (status = 409, description = "campaign_halted (with reason), number_blocked (with reason), call_in_progress (with call_id), recently_called (with call_id, called_at, retry_after)", body = Problem),
        (status = 422, description = "invalid_phone_number", body = Problem),
        (status = 400, description = "invalid_request", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn start(call: TenantCall, body: JsonBody<StartCallRequest>) -> Result<Response, ApiError> {
    let JsonBody { value, raw } = body;
    call.execute(value.check()?, &raw).await
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeRequest {
    Completed,
    NoAnswer,
    Failed,
    BadNumber,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeBody {
    pub outcome: OutcomeRequest,
}

impl Check for OutcomeBody {
    type Checked = CallState;

    fn check(self) -> Result<CallState, Invalid> {
        Ok(match self.outcome {
            OutcomeRequest::Completed => CallState::Completed,
            OutcomeRequest::NoAnswer => CallState::NoAnswer,
            OutcomeRequest::Failed => CallState::Failed,
            OutcomeRequest::BadNumber => CallState::BadNumber,
        })
    }
}

fn call_id(path: PathParams<(String, String)>) -> Result<Uuid, ApiError> {
    let PathParams((_, id)) = path;
    Ok(parse_uuid("call_id", &id)?)
}

/// Records a call's outcome, once.
#[utoipa::path(
    post, path = "/v1/{tenant}/calls/{call_id}/outcome", operation_id = "recordCallOutcome", tag = "calls",
    params(("tenant" = String, Path), ("call_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = OutcomeBody,
    responses(
        (status = 200, description = "The call with its outcome (also for a repeat of the same outcome)", body = CallView),
        (status = 404, description = "not_found", body = Problem),
        (status = 409, description = "outcome_already_recorded", body = Problem),
        (status = 400, description = "invalid_request", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn outcome(call: TenantCall, path: PathParams<(String, String)>, body: JsonBody<OutcomeBody>) -> Result<Response, ApiError> {
    let call_id = call_id(path)?;
    let outcome = body.value.check()?;
    call.execute(Action::RecordOutcome { call_id, outcome }, &body.raw).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CallsQuery {
    /// Only `calling` is listed.
    pub state: String,
    /// Calls started at least this many seconds ago (default 0: all).
    pub older_than_secs: Option<u64>,
}

/// Calls still in progress, oldest first: the ones whose outcome never arrived.
#[utoipa::path(
    get, path = "/v1/{tenant}/calls", operation_id = "listCalls", tag = "calls",
    params(("tenant" = String, Path), CallsQuery),
    responses((status = 200, description = "At most 1000 calls, oldest first", body = CallsView), (status = 400, description = "invalid_request", body = Problem)),
    security(("bearer" = []))
)]
pub async fn list(call: TenantCall, query: QueryParams<CallsQuery>) -> Result<Json<CallsView>, ApiError> {
    let QueryParams(query) = query;
    if query.state != "calling" {
        return Err(ApiError::field("state", "only calls in state `calling` are listed"));
    }
    let older_than = chrono::Duration::seconds(query.older_than_secs.unwrap_or(0).min(100 * 365 * 86400) as i64);
    let started_before = call.app().clock.now() - older_than;
    let calls = call.writer()?.read(|state| {
        let Some(tenant) = state.tenant(&call.tenant) else { return vec![] };
        tenant
            .calling
            .iter()
            .take_while(|(started_at, _)| *started_at <= started_before)
            .take(CALLS_LISTED_MAX)
            .map(|(_, id)| CallView::from(&*tenant.calls[id]))
            .collect()
    });
    Ok(Json(CallsView { calls }))
}

fn campaign(path: PathParams<(String, String)>) -> Result<String, ApiError> {
    let PathParams((_, campaign)) = path;
    check_name("campaign", &campaign)?;
    Ok(campaign)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CampaignsQuery {
    /// List the campaigns named after this one (the `next` of the previous page).
    pub after: Option<String>,
    /// 1 to 1000 (default 1000).
    pub limit: Option<usize>,
}

/// The tenant's campaigns, by name: each one's state and kill-switch counters.
#[utoipa::path(
    get, path = "/v1/{tenant}/campaigns", operation_id = "listCampaigns", tag = "calls",
    params(("tenant" = String, Path), CampaignsQuery),
    responses(
        (status = 200, description = "`{\"campaigns\": [CampaignView], \"next\"?}`: `next` (a name, for `after`) when more remain", body = CampaignsView),
        (status = 400, description = "invalid_request", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn list_campaigns(call: TenantCall, query: QueryParams<CampaignsQuery>) -> Result<Json<CampaignsView>, ApiError> {
    let QueryParams(query) = query;
    let limit = query.limit.unwrap_or(CAMPAIGNS_LISTED_MAX);
    if !(1..=CAMPAIGNS_LISTED_MAX).contains(&limit) {
        return Err(ApiError::field("limit", format!("must be 1 to {CAMPAIGNS_LISTED_MAX}")));
    }
    let now = call.app().clock.now();
    // The read lock is held for at most `limit` + 1 campaigns.
    let (campaigns, more) = call.writer()?.read(|state| {
        let Some(tenant) = state.tenant(&call.tenant) else { return (Vec::new(), false) };
        let after = query.after.as_deref().map(crate::core::Text::from);
        let range = match &after {
            Some(after) => tenant.campaigns.range::<crate::core::Text, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => tenant.campaigns.range::<crate::core::Text, _>(..),
        };
        let mut listed = range.take(limit + 1);
        let campaigns: Vec<CampaignView> = listed
            .by_ref()
            .take(limit)
            .map(|(name, c)| CampaignView::new(name, c, c.duplicates_within(now, state.rules.duplicate_window)))
            .collect();
        (campaigns, listed.next().is_some())
    });
    let next = more.then(|| campaigns.last().map(|c| c.campaign.clone())).flatten();
    Ok(Json(CampaignsView { campaigns, next }))
}

/// A campaign's state and kill-switch counters.
#[utoipa::path(
    get, path = "/v1/{tenant}/campaigns/{campaign}", operation_id = "getCampaign", tag = "calls",
    params(("tenant" = String, Path), ("campaign" = String, Path)),
    responses((status = 200, description = "running or halted", body = CampaignView)),
    security(("bearer" = []))
)]
pub async fn get_campaign(call: TenantCall, path: PathParams<(String, String)>) -> Result<Json<CampaignView>, ApiError> {
    let name = campaign(path)?;
    let now = call.app().clock.now();
    let view = call.writer()?.read(|state| {
        let campaign = state.tenant(&call.tenant).and_then(|t| t.campaigns.get(name.as_str()));
        let default = Campaign::default();
        let campaign = campaign.unwrap_or(&default);
        CampaignView::new(&name, campaign, campaign.duplicates_within(now, state.rules.duplicate_window))
    });
    Ok(Json(view))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    pub reason: String,
}

impl Check for ResumeRequest {
    /// The reason.
    type Checked = Text;

    fn check(self) -> Result<Text, Invalid> {
        check_text("reason", &self.reason, REASON_CHARS_MAX)?;
        Ok(self.reason.into())
    }
}

/// Resumes a halted campaign (admin tokens only); the reason is recorded.
#[utoipa::path(
    post, path = "/v1/{tenant}/campaigns/{campaign}/resume", operation_id = "resumeCampaign", tag = "calls",
    params(("tenant" = String, Path), ("campaign" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = ResumeRequest,
    responses(
        (status = 200, description = "The campaign, running", body = CampaignView),
        (status = 403, description = "forbidden: not an admin token", body = Problem),
        (status = 400, description = "invalid_request", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn resume(call: TenantCall, path: PathParams<(String, String)>, body: JsonBody<ResumeRequest>) -> Result<Response, ApiError> {
    if call.token.role != Role::Admin {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only an admin token may resume a campaign"));
    }
    let campaign = campaign(path)?;
    let JsonBody { value, raw } = body;
    let reason = value.check()?;
    call.execute(Action::ResumeCampaign { campaign: campaign.into(), reason }, &raw).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    pub number: String,
    pub reason: String,
    pub default_region: Option<String>,
}

impl Check for BlockRequest {
    type Checked = Action;

    fn check(self) -> Result<Action, Invalid> {
        check_text("reason", &self.reason, REASON_CHARS_MAX)?;
        let number = e164("number", &self.number, self.default_region.as_deref())?;
        Ok(Action::BlockNumber { number, reason: self.reason.into() })
    }
}

/// Puts a number on the tenant's block list, permanently.
#[utoipa::path(
    post, path = "/v1/{tenant}/blocked-numbers", operation_id = "blockNumber", tag = "calls",
    params(("tenant" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = BlockRequest,
    responses(
        (status = 201, description = "Blocked", body = BlockedView),
        (status = 200, description = "Already blocked (the first reason stands)", body = BlockedView),
        (status = 422, description = "invalid_phone_number", body = Problem),
        (status = 400, description = "invalid_request", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn block(call: TenantCall, body: JsonBody<BlockRequest>) -> Result<Response, ApiError> {
    let JsonBody { value, raw } = body;
    call.execute(value.check()?, &raw).await
}
