//! Personal access tokens (§1.2–1.7), project and group access tokens (§2) and group service
//! accounts with their tokens (§1.8). All of them are one kind of record in GitLab, so listing,
//! filtering and rotation are written once here.

use super::{timestamp, Ctx, Owner, TokenRef};
use crate::simulator::http::{ApiResult, Reply};
use crate::simulator::world::{Id, Source, Token, UserKind, World, MAINTAINER, OWNER};
use chrono::{Duration, NaiveDate};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

/// GitLab's token entity: the PAT fields, plus `access_level` for resource tokens, plus the
/// secret in `token` for create and rotate answers only.
pub fn token_json(world: &World, t: &Token, secret: bool) -> Value {
    let mut v = json!({
        "id": t.id,
        "name": t.name,
        "revoked": t.revoked,
        "created_at": timestamp(t.created_at),
        "description": t.description,
        "scopes": t.scopes,
        "user_id": t.user_id,
        "last_used_at": t.last_used_at.map(timestamp),
        "active": t.active(world.today()),
        "expires_at": t.expires_at.map(|d| d.to_string()),
    });
    if let Some(level) = world.token_access_level(t) {
        v["access_level"] = json!(level);
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
    match p.str("sort").as_deref() {
        None => out.sort_by_key(|t| t.id),
        Some("created_asc") => out.sort_by_key(|t| (t.created_at, t.id)),
        Some("created_desc") => out.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id))),
        Some("expires_asc") => out.sort_by_key(|t| (t.expires_at.unwrap_or(NaiveDate::MAX), t.id)),
        Some("expires_desc") => out.sort_by_key(|t| std::cmp::Reverse((t.expires_at, t.id))),
        Some("last_used_asc") => out.sort_by_key(|t| (t.last_used_at, t.id)),
        Some("last_used_desc") => out.sort_by_key(|t| std::cmp::Reverse((t.last_used_at, t.id))),
        Some("name_asc") => out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id))),
        Some("name_desc") => out.sort_by(|a, b| b.name.cmp(&a.name).then(b.id.cmp(&a.id))),
        Some(_) => return Err(Reply::json(400, json!({"error": "sort does not have a valid value"}))),
    }
    Ok(out)
}

/// A page of tokens, serialized after pagination.
fn token_page(ctx: &Ctx, tokens: Vec<&Token>) -> ApiResult {
    let ids: Vec<Id> = filtered(ctx, tokens)?.into_iter().map(|t| t.id).collect();
    let world = &*ctx.world;
    crate::simulator::http::paginate_map(ctx.origin, ctx.req, ids, |id| {
        world.tokens.get(&id).map(|t| token_json(world, t, false)).unwrap_or(Value::Null)
    })
}

/// The latest date GitLab accepts for `expires_at` (§1.4 "Upper limit").
fn max_expiry(world: &World) -> NaiveDate {
    world.today() + Duration::days(world.settings.max_token_lifetime_days)
}

/// Reads and checks `expires_at`; `default_days` applies when it is omitted and expiry is
/// required (7 for rotation, the maximum lifetime for creation).
fn expiry_param(ctx: &Ctx, default_days: Option<i64>, prefix: bool) -> Result<Option<NaiveDate>, Reply> {
    let world = &ctx.world;
    let max = max_expiry(world);
    match ctx.req.params.date("expires_at")? {
        Some(d) if world.settings.require_token_expiry && d > max => {
            let reason = format!("Expiration date must be before {max}");
            Err(if prefix { Reply::bad_request(&reason) } else { Reply::message(400, reason) })
        }
        Some(d) => Ok(Some(d)),
        None if world.settings.require_token_expiry => {
            let days = default_days.unwrap_or(world.settings.max_token_lifetime_days);
            Ok(Some((world.today() + Duration::days(days)).min(max)))
        }
        None => Ok(None),
    }
}

/// Rotation, common to every token kind (§1.4, §2, §1.8). A revoked target is refused with 400
/// "Token already revoked"; the simulator also treats it as reuse and revokes the family, the
/// conservative reading of §1.5 and §10, so a client that replays a rotate is caught.
fn rotate(ctx: &mut Ctx, id: Id) -> ApiResult {
    let revoked = ctx.world.tokens.get(&id).map(|t| t.revoked).ok_or_else(Reply::unauthorized)?;
    if revoked {
        ctx.world.revoke_family(id, &ctx.req.path);
        return Err(Reply::bad_request("Token already revoked"));
    }
    let expires_at = expiry_param(ctx, Some(7), true)?;
    let new_id = ctx.world.rotate_token(id, expires_at).ok_or_else(Reply::unauthorized)?;
    let token = ctx.world.tokens.get(&new_id).ok_or_else(Reply::unauthorized)?;
    Ok(Reply::json(200, token_json(ctx.world, token, true)))
}

fn created(ctx: &Ctx, id: Id, extra: Option<(&str, Value)>) -> ApiResult {
    let token = ctx.world.tokens.get(&id).ok_or_else(Reply::unauthorized)?;
    let mut body = token_json(ctx.world, token, true);
    if let Some((k, v)) = extra {
        body[k] = v;
    }
    Ok(Reply::json(201, body))
}

fn required_scopes(ctx: &Ctx) -> Result<Vec<String>, Reply> {
    let scopes = ctx.req.params.list("scopes")?.ok_or_else(|| Reply::param_missing("scopes"))?;
    if scopes.is_empty() {
        return Err(Reply::param_missing("scopes"));
    }
    Ok(scopes)
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
    token_page(ctx, tokens)
}

pub fn pat_get(ctx: &mut Ctx, which: TokenRef) -> ApiResult {
    let id = visible_pat(ctx, which)?;
    let token = ctx.world.tokens.get(&id).ok_or_else(Reply::unauthorized)?;
    Ok(Reply::json(200, token_json(ctx.world, token, false)))
}

pub fn pat_rotate(ctx: &mut Ctx, which: TokenRef) -> ApiResult {
    let id = visible_pat(ctx, which)?;
    rotate(ctx, id)
}

/// Revoking an already revoked token answers 204, as GitLab's code does (§10).
pub fn pat_revoke(ctx: &mut Ctx, which: TokenRef) -> ApiResult {
    let id = visible_pat(ctx, which)?;
    if let Some(t) = ctx.world.tokens.get_mut(&id) {
        t.revoked = true;
    }
    Ok(Reply::no_content())
}

/// `POST /users/:user_id/personal_access_tokens`, admin only (§1.7).
pub fn user_pat_create(ctx: &mut Ctx, user: &str) -> ApiResult {
    if !ctx.actor.admin {
        return Err(Reply::forbidden());
    }
    let user =
        user.parse::<Id>().ok().filter(|u| ctx.world.users.contains_key(u)).ok_or_else(|| Reply::not_found("User"))?;
    let name = ctx.req.params.required_str("name")?;
    let scopes = required_scopes(ctx)?;
    let description = description(ctx)?;
    let expires_at = expiry_param(ctx, None, false)?;
    let id = ctx.world.insert_token(user, &name, description, scopes, expires_at, None, None);
    created(ctx, id, Some(("last_used_ips", json!([]))))
}

// ---- project and group access tokens (§2) ---------------------------------------------------

/// Managing a project's tokens needs Maintainer, a group's needs Owner; without it GitLab
/// answers 401 (§10).
fn manageable(ctx: &Ctx, owner: &Owner) -> Result<(Source, u8), Reply> {
    let source = ctx.source(owner)?;
    let needed = if matches!(source, Source::Group(_)) { OWNER } else { MAINTAINER };
    let level = ctx.level(source);
    if level < needed {
        return Err(Reply::unauthorized());
    }
    Ok((source, level))
}

fn resource_tokens(world: &World, source: Source) -> Vec<&Token> {
    world.tokens.values().filter(|t| world.token_resource(t) == Some(source)).collect()
}

/// A token of this resource; a project or group token may only name itself (§2 "Rotate").
fn resource_token(ctx: &Ctx, source: Source, which: TokenRef) -> Result<Id, Reply> {
    let id = match which {
        TokenRef::Current if ctx.actor.resource == Some(source) => return Ok(ctx.actor.token_id),
        TokenRef::Current => return Err(Reply::unauthorized()),
        TokenRef::Id(id) => id,
    };
    if ctx.actor.resource.is_some() && id != ctx.actor.token_id {
        return Err(Reply::unauthorized());
    }
    let kind = if matches!(source, Source::Group(_)) { "Group" } else { "Project" };
    match ctx.world.tokens.get(&id) {
        Some(t) if ctx.world.token_resource(t) == Some(source) => Ok(id),
        _ if ctx.actor.admin => Err(Reply::not_found(&format!("{} Access Token", kind.to_lowercase()))),
        _ => Err(Reply::unauthorized()),
    }
}

/// Self-access through `…/access_tokens/self` needs no role beyond being that token.
fn resource_access(ctx: &Ctx, owner: &Owner, which: TokenRef) -> Result<(Source, Id), Reply> {
    if which == TokenRef::Current {
        let source = ctx.source(owner)?;
        return Ok((source, resource_token(ctx, source, which)?));
    }
    let (source, _) = manageable(ctx, owner)?;
    Ok((source, resource_token(ctx, source, which)?))
}

pub fn resource_list(ctx: &mut Ctx, owner: &Owner) -> ApiResult {
    let (source, _) = manageable(ctx, owner)?;
    token_page(ctx, resource_tokens(ctx.world, source))
}

pub fn resource_get(ctx: &mut Ctx, owner: &Owner, which: TokenRef) -> ApiResult {
    let (_, id) = resource_access(ctx, owner, which)?;
    let token = ctx.world.tokens.get(&id).ok_or_else(Reply::unauthorized)?;
    Ok(Reply::json(200, token_json(ctx.world, token, false)))
}

/// Creating needs a personal access token (not a resource token) and a role at least as high
/// as the level granted (§2 "Create").
pub fn resource_create(ctx: &mut Ctx, owner: &Owner) -> ApiResult {
    let (source, level) = manageable(ctx, owner)?;
    if ctx.actor.resource.is_some() {
        return Err(Reply::forbidden());
    }
    let name = ctx.req.params.required_str("name")?;
    let scopes = required_scopes(ctx)?;
    let description = description(ctx)?;
    let access_level = ctx.req.params.u64("access_level")?.unwrap_or(u64::from(MAINTAINER));
    let access_level = u8::try_from(access_level)
        .ok()
        .filter(|l| [10, 15, 20, 30, 40, 50].contains(l))
        .ok_or_else(|| Reply::param_invalid("access_level"))?;
    if access_level > level {
        return Err(Reply::bad_request(
            "Access level of the token can't be greater than the access level of the user who created the token",
        ));
    }
    let expires_at = expiry_param(ctx, None, true)?;
    let bot = ctx.world.add_bot(source, access_level);
    let id = ctx.world.insert_token(bot, &name, description, scopes, expires_at, None, None);
    created(ctx, id, None)
}

/// The caller's level must cover the token's, else 400 (§2 "Rotate").
pub fn resource_rotate(ctx: &mut Ctx, owner: &Owner, which: TokenRef) -> ApiResult {
    let (source, id) = resource_access(ctx, owner, which)?;
    if which != TokenRef::Current {
        let token_level = ctx.world.tokens.get(&id).and_then(|t| ctx.world.token_access_level(t)).unwrap_or(0);
        if ctx.level(source) < token_level {
            return Err(Reply::bad_request("Not eligible to rotate tokens with permissions not held by the user"));
        }
    }
    rotate(ctx, id)
}

pub fn resource_revoke(ctx: &mut Ctx, owner: &Owner, which: TokenRef) -> ApiResult {
    let (_, id) = resource_access(ctx, owner, which)?;
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
            "email": format!("{}@noreply.{}", u.username, world.settings.web_host),
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
    token_page(ctx, tokens)
}

pub fn sa_token_create(ctx: &mut Ctx, group: &str, user: &str) -> ApiResult {
    let group = sa_group(ctx, group)?;
    let user = sa_user(ctx, group, user)?;
    let name = ctx.req.params.required_str("name")?;
    let scopes = required_scopes(ctx)?;
    let description = description(ctx)?;
    let expires_at = expiry_param(ctx, None, true)?;
    let id = ctx.world.insert_token(user, &name, description, scopes, expires_at, None, None);
    created(ctx, id, None)
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
    rotate(ctx, id)
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
