//! Users, projects and groups: what a client needs to turn names into ids and to walk a group.

use super::Ctx;
use crate::simulator::http::{ApiResult, Reply};
use crate::simulator::world::{Id, Source, User, World};
use serde_json::{json, Value};

fn user_json(world: &World, u: &User, full: bool) -> Value {
    let mut v = json!({
        "id": u.id,
        "username": u.username,
        "name": u.name,
        "state": "active",
        "avatar_url": null,
        "web_url": format!("{}/{}", world.settings.external_url, u.username),
        "bot": !matches!(u.kind, crate::simulator::world::UserKind::Human),
    });
    if full {
        v["is_admin"] = json!(u.admin);
    }
    v
}

fn project_json(world: &World, id: Id) -> Value {
    let Some(p) = world.projects.get(&id) else { return Value::Null };
    let ns = p.group.and_then(|g| world.groups.get(&g));
    json!({
        "id": p.id,
        "name": p.name,
        "path": p.name,
        "path_with_namespace": p.path_with_namespace,
        "default_branch": "main",
        "namespace": ns.map(|g| json!({"id": g.id, "name": g.name, "path": g.name, "kind": "group", "full_path": g.full_path})),
        "web_url": format!("{}/{}", world.settings.external_url, p.path_with_namespace),
    })
}

fn group_json(world: &World, id: Id) -> Value {
    let Some(g) = world.groups.get(&id) else { return Value::Null };
    json!({
        "id": g.id,
        "name": g.name,
        "path": g.name,
        "full_path": g.full_path,
        "parent_id": g.parent,
        "web_url": format!("{}/groups/{}", world.settings.external_url, g.full_path),
    })
}

pub fn current_user(ctx: &mut Ctx) -> ApiResult {
    let u = ctx.world.users.get(&ctx.actor.user_id).ok_or_else(Reply::unauthorized)?;
    Ok(Reply::json(200, user_json(ctx.world, u, true)))
}

/// `GET /users?username=`: exact, case-insensitive match, as GitLab's finder does.
pub fn user_list(ctx: &mut Ctx) -> ApiResult {
    let username = ctx.req.params.str("username");
    let items = ctx
        .world
        .users
        .values()
        .filter(|u| username.as_deref().is_none_or(|n| u.username.eq_ignore_ascii_case(n)))
        .map(|u| user_json(ctx.world, u, false))
        .collect();
    ctx.paginate(items)
}

pub fn user_get(ctx: &mut Ctx, id: Id) -> ApiResult {
    let u = ctx.world.users.get(&id).ok_or_else(|| Reply::not_found("User"))?;
    Ok(Reply::json(200, user_json(ctx.world, u, ctx.actor.admin)))
}

pub fn project_get(ctx: &mut Ctx, project: &str) -> ApiResult {
    let id = ctx.project(project)?;
    Ok(Reply::json(200, project_json(ctx.world, id)))
}

pub fn group_get(ctx: &mut Ctx, group: &str) -> ApiResult {
    let id = ctx.group(group)?;
    Ok(Reply::json(200, group_json(ctx.world, id)))
}

fn descendants(world: &World, group: Id) -> Vec<Id> {
    world.groups.values().filter(|g| g.id != group && world.group_chain(g.id).contains(&group)).map(|g| g.id).collect()
}

/// `GET /groups/:id/projects`, with `include_subgroups=true` for the whole tree.
pub fn group_projects(ctx: &mut Ctx, group: &str) -> ApiResult {
    let id = ctx.group(group)?;
    let mut groups = vec![id];
    if ctx.req.params.bool("include_subgroups")?.unwrap_or(false) {
        groups.extend(descendants(ctx.world, id));
    }
    let user = ctx.actor.user_id;
    let items = ctx
        .world
        .projects
        .values()
        .filter(|p| p.group.is_some_and(|g| groups.contains(&g)))
        .filter(|p| ctx.world.access_level(user, Source::Project(p.id)) > 0)
        .map(|p| project_json(ctx.world, p.id))
        .collect();
    ctx.paginate(items)
}

pub fn group_descendants(ctx: &mut Ctx, group: &str) -> ApiResult {
    let id = ctx.group(group)?;
    let items = descendants(ctx.world, id).into_iter().map(|g| group_json(ctx.world, g)).collect();
    ctx.paginate(items)
}

/// The level a user holds through memberships alone (direct, or inherited from ancestor groups),
/// without an administrator's implied Owner: what `min_access_level` filters on (§16).
fn member_level(world: &World, user: Id, source: Source) -> u8 {
    let group = match source {
        Source::Project(p) => world.projects.get(&p).and_then(|p| p.group),
        Source::Group(g) => Some(g),
    };
    let inherited = group
        .map(|g| world.group_chain(g))
        .unwrap_or_default()
        .into_iter()
        .map(|g| world.direct_level(user, Source::Group(g)))
        .max()
        .unwrap_or(0);
    let direct = if matches!(source, Source::Project(_)) { world.direct_level(user, source) } else { 0 };
    direct.max(inherited)
}

/// Which projects or groups a listing shows (§16): an administrator sees every one; anyone else
/// those they are a member of (the simulator has no public or internal ones). `min_access_level`
/// keeps those where the caller's membership reaches that level, an administrator's included
/// (harder reading: GitLab's finder filters on `project_authorizations`, which an
/// administrator's implied access does not add to).
fn listed(ctx: &Ctx, source: Source) -> Result<bool, Reply> {
    let user = ctx.actor.user_id;
    match ctx.req.params.i64("min_access_level")? {
        Some(level) => Ok(i64::from(member_level(ctx.world, user, source)) >= level),
        None => Ok(ctx.actor.admin || member_level(ctx.world, user, source) > 0),
    }
}

/// `GET /projects` (§16), paginated, by id.
pub fn project_list(ctx: &mut Ctx) -> ApiResult {
    let mut ids: Vec<Id> = ctx.world.projects.keys().copied().collect();
    ids.sort_unstable();
    let mut items = Vec::new();
    for id in ids {
        if listed(ctx, Source::Project(id))? {
            items.push(project_json(ctx.world, id));
        }
    }
    ctx.paginate(items)
}

/// `GET /groups` (§16), paginated, by id.
pub fn group_list(ctx: &mut Ctx) -> ApiResult {
    let mut ids: Vec<Id> = ctx.world.groups.keys().copied().collect();
    ids.sort_unstable();
    let mut items = Vec::new();
    for id in ids {
        if listed(ctx, Source::Group(id))? {
            items.push(group_json(ctx.world, id));
        }
    }
    ctx.paginate(items)
}
