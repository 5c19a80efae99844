//! `GET /v1/whoami`: the caller's token name and role, so that a client (the console) can
//! offer only what the role allows. It reveals nothing the caller's own token does not.

use actix_web::HttpResponse;
use serde_json::json;

use super::Caller;
use super::schemas::Identity;

/// The calling token's name and role; with auth off, `anonymous` with the admin role
/// (everyone may do everything).
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "operations",
    operation_id = "whoami",
    responses((status = 200, description = "The caller", body = Identity))
)]
pub(super) async fn whoami(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(json!({"name": caller.name(), "role": caller.role().as_str()}))
}
