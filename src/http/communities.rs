//! Communities: created with their owner's admin membership and subscription
//! in one event, under a slug the writer allocates.

use axum::Json;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{JsonBody, PathParams, TenantCall};
use super::views::{CommunityView, Problem};
use crate::core::Action;
use crate::validate::{COMMUNITY_NAME_CHARS_MAX, Check, Invalid, NAME_CHARS_MAX, check_text};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommunityRequest {
    pub name: String,
    pub owner: String,
    pub plan: String,
}

impl Check for CommunityRequest {
    type Checked = Action;

    fn check(self) -> Result<Action, Invalid> {
        check_text("name", &self.name, COMMUNITY_NAME_CHARS_MAX)?;
        check_text("owner", &self.owner, NAME_CHARS_MAX)?;
        check_text("plan", &self.plan, NAME_CHARS_MAX)?;
        Ok(Action::CreateCommunity {
            community_id: Uuid::now_v7(),
            name: self.name.into(),
            owner: self.owner.into(),
            plan: self.plan.into(),
        })
    }
}

/// Creates a community; its slug is the name transliterated, with the smallest free `-N` suffix if taken.
#[utoipa::path(
    post, path = "/v1/{tenant}/communities", operation_id = "createCommunity", tag = "communities",
    params(("tenant" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = CommunityRequest,
    responses(
        (status = 201, description = "Created, with the owner's admin membership and the subscription", body = CommunityView),
        (status = 422, description = "invalid_name: the name yields an empty slug", body = Problem),
        (status = 400, description = "invalid_request", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn create(call: TenantCall, body: JsonBody<CommunityRequest>) -> Result<Response, ApiError> {
    let JsonBody { value, raw } = body;
    call.execute(value.check()?, &raw).await
}

/// A community by its slug.
#[utoipa::path(
    get, path = "/v1/{tenant}/communities/{slug}", operation_id = "getCommunity", tag = "communities",
    params(("tenant" = String, Path), ("slug" = String, Path)),
    responses((status = 200, description = "The community", body = CommunityView), (status = 404, description = "not_found", body = Problem)),
    security(("bearer" = []))
)]
pub async fn get(call: TenantCall, path: PathParams<(String, String)>) -> Result<Json<CommunityView>, ApiError> {
    let PathParams((_, slug)) = path;
    let view = call
        .writer()?
        .read(|state| state.tenant(&call.tenant).and_then(|t| t.communities.get(slug.as_str())).map(|c| CommunityView::from(&**c)));
    view.map(Json).ok_or_else(|| ApiError::not_found(format!("no community {slug:?}")).with("slug", slug))
}
