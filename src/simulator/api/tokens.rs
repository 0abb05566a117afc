//! Personal access tokens (§1.2–1.7), project and group access tokens (§2) and group service
//! accounts with their tokens (§1.8). All of them are one kind of record in GitLab, so listing,
//! filtering and rotation are written once here.

use super::{timestamp, Ctx, Owner, TokenRef};
use crate::simulator::http::{ApiResult, Reply};
use crate::simulator::world::{Id, Source, Token, UserKind, World, MAINTAINER, OWNER};
use chrono::{Duration, NaiveDate};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

/// Which of GitLab's token entities an endpoint presents (§11): the same record looks different
/// through the personal-token and the resource-token endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// `Entities::PersonalAccessToken`: never `access_level`; `expired` and `granular`.
    Personal,
    /// `Entities::ResourceAccessToken`: adds `access_level`, `resource_type`, `resource_id`.
    Resource,
}

/// The scopes any user's token may have (`Gitlab::Auth.non_admin_available_scopes`, §11).
const USER_SCOPES: [&str; 14] = [
    "api",
    "read_api",
    "read_user",
    "create_runner",
    "manage_runner",
    "k8s_proxy",
    "self_rotate",
    "read_repository",
    "write_repository",
    "read_registry",
    "write_registry",
    "read_virtual_registry",
    "write_virtual_registry",
    "ai_features",
];

/// Added for an administrator's own tokens (`ADMIN_SCOPES`).
const ADMIN_SCOPES: [&str; 3] = ["sudo", "admin_mode", "read_service_ping"];

/// GitLab's token entity as `entity` presents it, plus the secret in `token` for create and
/// rotate answers only.
pub fn token_json(world: &World, t: &Token, entity: Entity, secret: bool) -> Value {
    let today = world.today();
    let mut v = json!({
        "id": t.id,
        "name": t.name,
        "revoked": t.revoked,
        "created_at": timestamp(t.created_at),
        "description": t.description,
        "scopes": t.scopes,
        "user_id": t.user_id,
        "last_used_at": t.last_used_at.map(timestamp),
        "active": t.active(today),
        "expires_at": t.expires_at.map(|d| d.to_string()),
    });
    match (entity, world.token_resource(t)) {
        (Entity::Personal, _) => {
            v["expired"] = json!(t.expired(today));
            v["granular"] = json!(false);
        }
        (Entity::Resource, resource) => {
            v["access_level"] = json!(world.token_access_level(t));
            let (kind, id) = match resource {
                Some(Source::Project(id)) => ("project", Some(id)),
                Some(Source::Group(id)) => ("group", Some(id)),
                None => ("project", None),
            };
            v["resource_type"] = json!(kind);
            v["resource_id"] = json!(id);
        }
    }
    if secret {
        v["token"] = json!(t.secret);
    }
    v
}

/// GitLab's fuzzy name search (§10): every term of three or more characters must occur in the
/// name, case-insensitively; with no such term the whole query must equal the name.
fn search_matches(query: &str, name: &str) -> bool {
    let name = name.to_lowercase();
    let terms: Vec<String> =
        query.split_whitespace().filter(|t| t.chars().count() >= 3).map(str::to_lowercase).collect();
    if terms.is_empty() {
        return name == query.to_lowercase();
    }
    terms.iter().all(|t| name.contains(t.as_str()))
}

/// The list filters shared by every token listing (§1.2): `state`, `revoked`, `search`,
/// `expires_before` (strict), `expires_after` (inclusive), `created_*`, `last_used_*`, `sort`.
fn filtered<'w>(ctx: &Ctx, tokens: Vec<&'w Token>) -> Result<Vec<&'w Token>, Reply> {
    let p = &ctx.req.params;
    let today = ctx.world.today();
    let state = p.str("state");
    if state.as_deref().is_some_and(|s| s != "active" && s != "inactive") {
        return Err(Reply::json(400, json!({"error": "state does not have a valid value"})));
    }
    let revoked = p.bool("revoked")?;
    let search = p.str("search");
    let (exp_before, exp_after) = (p.date("expires_before")?, p.date("expires_after")?);
    let (created_after, created_before) = (p.datetime("created_after")?, p.datetime("created_before")?);
    let (used_after, used_before) = (p.datetime("last_used_after")?, p.datetime("last_used_before")?);
    let mut out: Vec<&Token> = tokens
        .into_iter()
        .filter(|t| match state.as_deref() {
            Some("active") => t.active(today),
            Some(_) => !t.active(today),
            None => true,
        })
        .filter(|t| revoked.is_none_or(|r| t.revoked == r))
        .filter(|t| search.as_deref().is_none_or(|q| search_matches(q, &t.name)))
        .filter(|t| exp_before.is_none_or(|d| t.expires_at.is_some_and(|e| e < d)))
        .filter(|t| exp_after.is_none_or(|d| t.expires_at.is_some_and(|e| e >= d)))
        .filter(|t| created_after.is_none_or(|d| t.created_at >= d))
        .filter(|t| created_before.is_none_or(|d| t.created_at <= d))
        .filter(|t| used_after.is_none_or(|d| t.last_used_at.is_some_and(|u| u >= d)))
        .filter(|t| used_before.is_none_or(|d| t.last_used_at.is_some_and(|u| u <= d)))
        .collect();
    // An unknown `sort` is ignored (§11): id order, as with none.
    match p.str("sort").as_deref() {
        Some("created_asc") => out.sort_by_key(|t| (t.created_at, t.id)),
        Some("created_desc") => out.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id))),
        Some("expires_asc") => out.sort_by_key(|t| (t.expires_at.unwrap_or(NaiveDate::MAX), t.id)),
        Some("expires_desc") => out.sort_by_key(|t| std::cmp::Reverse((t.expires_at, t.id))),
        Some("last_used_asc") => out.sort_by_key(|t| (t.last_used_at, t.id)),
        Some("last_used_desc") => out.sort_by_key(|t| std::cmp::Reverse((t.last_used_at, t.id))),
        Some("name_asc") => out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id))),
        Some("name_desc") => out.sort_by(|a, b| b.name.cmp(&a.name).then(b.id.cmp(&a.id))),
        _ => out.sort_by_key(|t| t.id),
    }
    Ok(out)
}

/// A page of tokens, serialized after pagination.
fn token_page(ctx: &Ctx, tokens: Vec<&Token>, entity: Entity) -> ApiResult {
    let ids: Vec<Id> = filtered(ctx, tokens)?.into_iter().map(|t| t.id).collect();
    let world = &*ctx.world;
    crate::simulator::http::paginate_map(ctx.origin, ctx.req, ids, |id| {
        world.tokens.get(&id).map(|t| token_json(world, t, entity, false)).unwrap_or(Value::Null)
    })
}

/// The latest date GitLab accepts for `expires_at` (§1.4 "Upper limit").
fn max_expiry(world: &World) -> NaiveDate {
    world.today() + Duration::days(world.settings.max_token_lifetime_days)
}

/// How an endpoint refuses an `expires_at` past the lifetime limit (§11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `bad_request!(message)`: rotation of any kind, project and group token creation.
    BadRequest,
    /// `render_api_error!(message, :unprocessable_entity)`: a user's or a service account's
    /// token creation.
    Unprocessable,
}

/// Reads and checks `expires_at`; `default_days` applies when it is omitted and expiry is
/// required (7 for rotation, the maximum lifetime for creation).
fn expiry_param(ctx: &Ctx, default_days: Option<i64>, refusal: Refusal) -> Result<Option<NaiveDate>, Reply> {
    let world = &ctx.world;
    let max = max_expiry(world);
    match ctx.req.params.date("expires_at")? {
        Some(d) if world.settings.require_token_expiry && d > max => {
            let reason = format!("Expiration date must be before {max}");
            Err(match refusal {
                Refusal::BadRequest => Reply::bad_request(&reason),
                Refusal::Unprocessable => Reply::message(422, reason),
            })
        }
        Some(d) => Ok(Some(d)),
        None if world.settings.require_token_expiry => {
            let days = default_days.unwrap_or(world.settings.max_token_lifetime_days);
            Ok(Some((world.today() + Duration::days(days)).min(max)))
        }
        None => Ok(None),
    }
}

/// Rotation, common to every token kind (§1.4, §2, §1.8). A revoked target, named by id with
/// a valid credential, is refused with 400 "Token already revoked" and nothing else changes, as
/// in GitLab's code (§11): the family is revoked only when the *authenticating* token is revoked
/// (see `authenticate`). The seed setting `revoked_rotate_revokes_family` keeps the stricter
/// reading, which also revokes the family here.
fn rotate(ctx: &mut Ctx, id: Id, entity: Entity) -> ApiResult {
    let revoked = ctx.world.tokens.get(&id).map(|t| t.revoked).ok_or_else(Reply::unauthorized)?;
    if revoked {
        if ctx.world.settings.revoked_rotate_revokes_family {
            ctx.world.revoke_family(id, &ctx.req.path);
        }
        return Err(Reply::bad_request("Token already revoked"));
    }
    let expires_at = expiry_param(ctx, Some(7), Refusal::BadRequest)?;
    let new_id = ctx.world.rotate_token(id, expires_at).ok_or_else(Reply::unauthorized)?;
    let token = ctx.world.tokens.get(&new_id).ok_or_else(Reply::unauthorized)?;
    Ok(Reply::json(200, token_json(ctx.world, token, entity, true)))
}

fn created(ctx: &Ctx, id: Id, entity: Entity, extra: Option<(&str, Value)>) -> ApiResult {
    let token = ctx.world.tokens.get(&id).ok_or_else(Reply::unauthorized)?;
    let mut body = token_json(ctx.world, token, entity, true);
    if let Some((k, v)) = extra {
        body[k] = v;
    }
    Ok(Reply::json(201, body))
}

/// `scopes`, required and checked against what the token's owner may hold (§11): a user's or
/// service account's token the instance's scopes (with the admin scopes for an administrator's
/// own), a project or group token the resource-bot scopes (no `read_user`, no admin scopes).
fn required_scopes(ctx: &Ctx, allowed: &[&str]) -> Result<Vec<String>, Reply> {
    let scopes = ctx.req.params.list("scopes")?.ok_or_else(|| Reply::param_missing("scopes"))?;
    if scopes.is_empty() {
        return Err(Reply::param_missing("scopes"));
    }
    if scopes.iter().any(|s| !allowed.contains(&s.as_str())) {
        return Err(Reply::json(400, json!({"error": "scopes does not have a valid value"})));
    }
    Ok(scopes)
}

fn user_scopes(admin: bool) -> Vec<&'static str> {
    let mut scopes = USER_SCOPES.to_vec();
    if admin {
        scopes.extend(ADMIN_SCOPES);
    }
    scopes
}

fn resource_bot_scopes() -> Vec<&'static str> {
    USER_SCOPES.iter().copied().filter(|s| *s != "read_user").collect()
}

fn description(ctx: &Ctx) -> Result<Option<String>, Reply> {
    let d = ctx.req.params.str("description");
    if d.as_ref().is_some_and(|d| d.chars().count() > 255) {
        return Err(Reply::validation("description", "is too long (maximum is 255 characters)"));
    }
    Ok(d)
}

// ---- personal access tokens (§1) -------------------------------------------------------------

/// A non-admin may only see their own tokens, and gets 401 for any other; an admin gets 404
/// for a token that does not exist (§1.3).
fn visible_pat(ctx: &Ctx, which: TokenRef) -> Result<Id, Reply> {
    let id = match which {
        TokenRef::Current => return Ok(ctx.actor.token_id),
        TokenRef::Id(id) => id,
    };
    match ctx.world.tokens.get(&id) {
        Some(t) if ctx.actor.admin || t.user_id == ctx.actor.user_id => Ok(id),
        None if ctx.actor.admin => Err(Reply::not_found("Personal Access Token")),
        _ => Err(Reply::unauthorized()),
    }
}

pub fn pat_list(ctx: &mut Ctx) -> ApiResult {
    let user = ctx.req.params.u64("user_id")?;
    let user = match (ctx.actor.admin, user) {
        (true, Some(u)) if !ctx.world.users.contains_key(&u) => return Err(Reply::not_found("User")),
        (true, u) => u,
        (false, Some(u)) if u != ctx.actor.user_id => return Err(Reply::unauthorized()),
        (false, _) => Some(ctx.actor.user_id),
    };
    let tokens = ctx.world.tokens.values().filter(|t| user.is_none_or(|u| t.user_id == u)).collect();
    token_page(ctx, tokens, Entity::Personal)
}

pub fn pat_get(ctx: &mut Ctx, which: TokenRef) -> ApiResult {
    let id = visible_pat(ctx, which)?;
    let token = ctx.world.tokens.get(&id).ok_or_else(Reply::unauthorized)?;
    Ok(Reply::json(200, token_json(ctx.world, token, Entity::Personal, false)))
}

pub fn pat_rotate(ctx: &mut Ctx, which: TokenRef) -> ApiResult {
    let id = visible_pat(ctx, which)?;
    rotate(ctx, id, Entity::Personal)
}

/// Revoking an already revoked token answers 204, as GitLab's code does (§10). By id, a token
/// that does not exist is 404 and someone else's (for a non-admin) 400 (§11).
pub fn pat_revoke(ctx: &mut Ctx, which: TokenRef) -> ApiResult {
    let id = match which {
        TokenRef::Current => ctx.actor.token_id,
        TokenRef::Id(id) => match ctx.world.tokens.get(&id) {
            None => return Err(Reply::message(404, "404 Not found")),
            Some(t) if !ctx.actor.admin && t.user_id != ctx.actor.user_id => {
                return Err(Reply::bad_request("Not permitted to revoke"))
            }
            Some(_) => id,
        },
    };
    if let Some(t) = ctx.world.tokens.get_mut(&id) {
        t.revoked = true;
    }
    Ok(Reply::no_content())
}

/// `POST /users/:user_id/personal_access_tokens`, admin only (§1.7); past the lifetime limit
/// 422 (§11).
pub fn user_pat_create(ctx: &mut Ctx, user: &str) -> ApiResult {
    if !ctx.actor.admin {
        return Err(Reply::forbidden());
    }
    let user =
        user.parse::<Id>().ok().filter(|u| ctx.world.users.contains_key(u)).ok_or_else(|| Reply::not_found("User"))?;
    let name = ctx.req.params.required_str("name")?;
    let admin = ctx.world.users.get(&user).is_some_and(|u| u.admin);
    let scopes = required_scopes(ctx, &user_scopes(admin))?;
    let description = description(ctx)?;
    let expires_at = expiry_param(ctx, None, Refusal::Unprocessable)?;
    let id = ctx.world.insert_token(user, &name, description, scopes, expires_at, None, None);
    created(ctx, id, Entity::Personal, Some(("last_used_ips", json!([]))))
}

/// The token information API, `POST /admin/token` (§14): an administrator learns whose a value
/// is, revoked and expired tokens included, without authenticating as it. 404 where the
/// feature flag is off (the seed's `token_info_api = false`) and for an unknown value; 422 for
/// a value that is not an access token.
pub fn admin_token_info(ctx: &mut Ctx) -> ApiResult {
    if !ctx.world.settings.token_info_api {
        return Err(Reply::message(404, "404 Not Found"));
    }
    if !ctx.actor.admin {
        return Err(Reply::forbidden());
    }
    let value = ctx.req.params.required_str("token")?;
    if !value.starts_with("glpat-") {
        return Err(Reply::message(422, "422 Unprocessable Entity"));
    }
    let token = ctx.world.token_by_secret(&value).ok_or_else(|| Reply::message(404, "404 Not Found"))?;
    Ok(Reply::json(200, token_json(ctx.world, token, Entity::Personal, false)))
}

// ---- project and group access tokens (§2) ---------------------------------------------------

fn resource_noun(source: Source) -> &'static str {
    match source {
        Source::Project(_) => "project",
        Source::Group(_) => "group",
    }
}

/// Whether the caller may manage a resource's tokens: Maintainer on a project, Owner on a
/// group (`read_resource_access_tokens`, `manage_resource_access_tokens`).
fn may_manage(ctx: &Ctx, source: Source) -> bool {
    let needed = if matches!(source, Source::Group(_)) { OWNER } else { MAINTAINER };
    ctx.level(source) >= needed
}

/// Listing and reading need that role; without it GitLab answers 401 (§10).
fn manageable(ctx: &Ctx, owner: &Owner) -> Result<Source, Reply> {
    let source = ctx.source(owner)?;
    if !may_manage(ctx, source) {
        return Err(Reply::unauthorized());
    }
    Ok(source)
}

fn resource_tokens(world: &World, source: Source) -> Vec<&Token> {
    world.tokens.values().filter(|t| world.token_resource(t) == Some(source)).collect()
}

/// `find_token(resource, id)`: a token of this resource's bots, or none.
fn find_resource_token(ctx: &Ctx, source: Source, id: Id) -> Option<Id> {
    ctx.world.tokens.get(&id).filter(|t| ctx.world.token_resource(t) == Some(source)).map(|t| t.id)
}

/// `…/access_tokens/self`: only the resource's own token may name itself.
fn own_token(ctx: &Ctx, source: Source) -> Result<Id, Reply> {
    if ctx.actor.resource == Some(source) {
        Ok(ctx.actor.token_id)
    } else {
        Err(Reply::unauthorized())
    }
}

pub fn resource_list(ctx: &mut Ctx, owner: &Owner) -> ApiResult {
    let source = manageable(ctx, owner)?;
    token_page(ctx, resource_tokens(ctx.world, source), Entity::Resource)
}

/// 401 without the role, then 404 `<type> Access Token Not Found` for a token the resource
/// does not have (§11).
pub fn resource_get(ctx: &mut Ctx, owner: &Owner, which: TokenRef) -> ApiResult {
    let id = match which {
        TokenRef::Current => own_token(ctx, ctx.source(owner)?)?,
        TokenRef::Id(id) => {
            let source = manageable(ctx, owner)?;
            find_resource_token(ctx, source, id)
                .ok_or_else(|| Reply::not_found(&format!("{} Access Token", resource_noun(source))))?
        }
    };
    let token = ctx.world.tokens.get(&id).ok_or_else(Reply::unauthorized)?;
    Ok(Reply::json(200, token_json(ctx.world, token, Entity::Resource, false)))
}

/// Creating needs a personal access token (not a resource token) and a role at least as high
/// as the level granted (§2 "Create"); refusals are 400 (§11).
pub fn resource_create(ctx: &mut Ctx, owner: &Owner) -> ApiResult {
    let source = ctx.source(owner)?;
    if ctx.actor.resource.is_some() {
        return Err(Reply::forbidden());
    }
    let name = ctx.req.params.required_str("name")?;
    let scopes = required_scopes(ctx, &resource_bot_scopes())?;
    let access_level = ctx.req.params.u64("access_level")?.unwrap_or(u64::from(MAINTAINER));
    let access_level = u8::try_from(access_level)
        .ok()
        .filter(|l| [10, 15, 20, 30, 40, 50].contains(l))
        .ok_or_else(|| Reply::json(400, json!({"error": "access_level does not have a valid value"})))?;
    if !may_manage(ctx, source) {
        let noun = resource_noun(source);
        return Err(Reply::bad_request(&format!("User does not have permission to create {noun} access token")));
    }
    let description = description(ctx)?;
    if access_level > ctx.level(source) {
        return Err(Reply::bad_request(
            "Access level of the token can't be greater than the access level of the user who created the token",
        ));
    }
    let expires_at = expiry_param(ctx, None, Refusal::BadRequest)?;
    let bot = ctx.world.add_bot(source, access_level);
    let id = ctx.world.insert_token(bot, &name, description, scopes, expires_at, None, None);
    created(ctx, id, Entity::Resource, None)
}

/// By id: without the role, or for a token the resource does not have, 401 (an administrator
/// is told 404); a project or group token may only name itself. `self`: only a bot may
/// self-rotate here, a human's token is answered 405 (§11). The caller's level must cover the
/// token's, else 400 (§2 "Rotate").
pub fn resource_rotate(ctx: &mut Ctx, owner: &Owner, which: TokenRef) -> ApiResult {
    let id = match which {
        TokenRef::Current => {
            let source = ctx.source(owner)?;
            if ctx.actor.resource.is_none() {
                return Err(Reply::message(405, "405 Method Not Allowed"));
            }
            own_token(ctx, source)?
        }
        TokenRef::Id(id) => {
            let source = ctx.source(owner)?;
            let found = may_manage(ctx, source)
                .then(|| find_resource_token(ctx, source, id))
                .flatten()
                .filter(|t| ctx.actor.resource.is_none() || *t == ctx.actor.token_id);
            let Some(id) = found else {
                return Err(if ctx.actor.admin { Reply::message(404, "404 Not found") } else { Reply::unauthorized() });
            };
            let token_level = ctx.world.tokens.get(&id).and_then(|t| ctx.world.token_access_level(t)).unwrap_or(0);
            if ctx.level(source) < token_level {
                return Err(Reply::bad_request("Not eligible to rotate token with access level higher than the user"));
            }
            id
        }
    };
    rotate(ctx, id, Entity::Resource)
}

/// 404 for a token the resource does not have; without the role to delete it, 400
/// `<user> cannot delete <bot>` (§11).
pub fn resource_revoke(ctx: &mut Ctx, owner: &Owner, which: TokenRef) -> ApiResult {
    let source = ctx.source(owner)?;
    let id = match which {
        TokenRef::Current => own_token(ctx, source)?,
        TokenRef::Id(id) => {
            let id = find_resource_token(ctx, source, id)
                .ok_or_else(|| Reply::not_found(&format!("{} Access Token", resource_noun(source))))?;
            if !may_manage(ctx, source) {
                let name = |u: Id| ctx.world.users.get(&u).map(|u| u.name.clone()).unwrap_or_default();
                let bot = ctx.world.tokens.get(&id).map(|t| t.user_id).unwrap_or_default();
                let (who, bot) = (name(ctx.actor.user_id), name(bot));
                return Err(Reply::bad_request(&format!("{who} cannot delete {bot}")));
            }
            id
        }
    };
    if let Some(t) = ctx.world.tokens.get_mut(&id) {
        t.revoked = true;
    }
    Ok(Reply::no_content())
}

// ---- group service accounts (§1.8) ----------------------------------------------------------

/// Service accounts live on top-level groups and are managed by the group's Owner or an admin.
fn sa_group(ctx: &Ctx, group: &str) -> Result<Id, Reply> {
    let id = ctx.group(group)?;
    if ctx.world.groups.get(&id).is_some_and(|g| g.parent.is_some()) {
        return Err(Reply::bad_request("Group is not a top-level group"));
    }
    if ctx.level(Source::Group(id)) < OWNER {
        return Err(Reply::forbidden());
    }
    Ok(id)
}

fn sa_user(ctx: &Ctx, group: Id, user: &str) -> Result<Id, Reply> {
    user.parse::<Id>()
        .ok()
        .filter(|u| ctx.world.users.get(u).is_some_and(|u| u.kind == UserKind::ServiceAccount { group: Some(group) }))
        .ok_or_else(|| Reply::not_found("User"))
}

fn user_json(world: &World, id: Id) -> Value {
    match world.users.get(&id) {
        Some(u) => json!({
            "id": u.id,
            "username": u.username,
            "name": u.name,
            "email": format!("{}@noreply.{}", u.username, world.settings.web_host()),
        }),
        None => Value::Null,
    }
}

pub fn service_account_list(ctx: &mut Ctx, group: &str) -> ApiResult {
    let group = sa_group(ctx, group)?;
    let ids: Vec<Id> = ctx.world.group_service_accounts(group).map(|u| u.id).collect();
    let items = ids.into_iter().map(|id| user_json(ctx.world, id)).collect();
    ctx.paginate(items)
}

pub fn service_account_create(ctx: &mut Ctx, group: &str) -> ApiResult {
    let group = sa_group(ctx, group)?;
    let suffix = Alphanumeric.sample_string(&mut rand::rng(), 8).to_lowercase();
    let username = ctx.req.params.str("username").unwrap_or_else(|| format!("service_account_group_{group}_{suffix}"));
    if ctx.world.user_by_username(&username).is_some() {
        return Err(Reply::bad_request("Username has already been taken"));
    }
    let name = ctx.req.params.str("name").unwrap_or_else(|| "Service account user".into());
    let id = ctx.world.add_user(&username, &name, false, UserKind::ServiceAccount { group: Some(group) });
    Ok(Reply::json(201, user_json(ctx.world, id)))
}

pub fn sa_token_list(ctx: &mut Ctx, group: &str, user: &str) -> ApiResult {
    let group = sa_group(ctx, group)?;
    let user = sa_user(ctx, group, user)?;
    let tokens = ctx.world.tokens.values().filter(|t| t.user_id == user).collect();
    token_page(ctx, tokens, Entity::Personal)
}

pub fn sa_token_create(ctx: &mut Ctx, group: &str, user: &str) -> ApiResult {
    let group = sa_group(ctx, group)?;
    let user = sa_user(ctx, group, user)?;
    let name = ctx.req.params.required_str("name")?;
    let scopes = required_scopes(ctx, &user_scopes(false))?;
    let description = description(ctx)?;
    let expires_at = expiry_param(ctx, None, Refusal::Unprocessable)?;
    let id = ctx.world.insert_token(user, &name, description, scopes, expires_at, None, None);
    created(ctx, id, Entity::Personal, None)
}

fn sa_token(ctx: &Ctx, group: &str, user: &str, token: Id) -> Result<Id, Reply> {
    let group = sa_group(ctx, group)?;
    let user = sa_user(ctx, group, user)?;
    match ctx.world.tokens.get(&token) {
        Some(t) if t.user_id == user => Ok(token),
        _ => Err(Reply::not_found("Personal Access Token")),
    }
}

pub fn sa_token_rotate(ctx: &mut Ctx, group: &str, user: &str, token: Id) -> ApiResult {
    let id = sa_token(ctx, group, user, token)?;
    rotate(ctx, id, Entity::Personal)
}

pub fn sa_token_revoke(ctx: &mut Ctx, group: &str, user: &str, token: Id) -> ApiResult {
    let id = sa_token(ctx, group, user, token)?;
    if let Some(t) = ctx.world.tokens.get_mut(&id) {
        t.revoked = true;
    }
    Ok(Reply::no_content())
}

#[cfg(test)]
mod tests {
    use super::search_matches;

    #[test]
    fn search_is_fuzzy_like_gitlab() {
        assert!(search_matches("Inventory", "Inventory (backup)"));
        assert!(search_matches("security inventory", "GitLab Security Service - Inventory"));
        assert!(!search_matches("ab", "abc"));
        assert!(search_matches("ab", "AB"));
    }
}
