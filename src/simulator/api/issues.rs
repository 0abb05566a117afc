//! Project issues and their notes (§15): list (state, labels, search), create (201), comment
//! (201), close or reopen through `state_event` (200). patrol's tracking issues live here.

use super::pipelines::project_at;
use super::{timestamp, Ctx};
use crate::simulator::http::{ApiResult, Reply};
use crate::simulator::world::{Id, Issue, Source, World, GUEST, REPORTER};
use serde_json::{json, Value};

fn issue_json(world: &World, i: &Issue) -> Value {
    let path = world.source_path(Source::Project(i.project));
    json!({
        "id": i.id,
        "iid": i.iid,
        "project_id": i.project,
        "title": i.title,
        "description": i.description,
        "state": i.state,
        "labels": i.labels,
        "created_at": timestamp(i.created_at),
        "updated_at": timestamp(i.updated_at),
        "closed_at": i.closed_at.map(timestamp),
        "user_notes_count": i.notes.len(),
        "web_url": format!("{}/{path}/-/issues/{}", world.settings.external_url, i.iid),
    })
}

/// `labels` as GitLab takes it: a comma-separated string (or an array in a JSON body).
fn labels_param(ctx: &Ctx) -> Vec<String> {
    match ctx.req.params.get("labels") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(s)) => s.split(',').map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

pub fn list(ctx: &mut Ctx, project: &str) -> ApiResult {
    let project = project_at(ctx, project, GUEST)?;
    let state = ctx.req.params.str("state").unwrap_or_else(|| "all".into());
    if !["opened", "closed", "all"].contains(&state.as_str()) {
        return Err(Reply::json(400, json!({"error": "state does not have a valid value"})));
    }
    let labels = labels_param(ctx);
    let search = ctx.req.params.str("search").map(|s| s.to_lowercase());
    let mut items: Vec<&Issue> = ctx
        .world
        .issues
        .iter()
        .filter(|i| i.project == project)
        .filter(|i| state == "all" || i.state == state)
        .filter(|i| labels.iter().all(|l| i.labels.contains(l)))
        .filter(|i| {
            search
                .as_deref()
                .is_none_or(|q| i.title.to_lowercase().contains(q) || i.description.to_lowercase().contains(q))
        })
        .collect();
    items.sort_by_key(|i| std::cmp::Reverse(i.id));
    let items = items.into_iter().map(|i| issue_json(ctx.world, i)).collect();
    ctx.paginate(items)
}

pub fn create(ctx: &mut Ctx, project: &str) -> ApiResult {
    let project = project_at(ctx, project, GUEST)?;
    let title = ctx.req.params.required_str("title")?;
    let description = ctx.req.params.str("description").unwrap_or_default();
    let labels = labels_param(ctx);
    let world = &mut *ctx.world;
    let iid = world.issues.iter().filter(|i| i.project == project).map(|i| i.iid).max().unwrap_or(0) + 1;
    let (id, now) = (world.next_id(), world.clock.now());
    let issue = Issue {
        id,
        iid,
        project,
        title,
        description,
        labels,
        state: "opened".into(),
        notes: Vec::new(),
        created_at: now,
        updated_at: now,
        closed_at: None,
    };
    let body = issue_json(world, &issue);
    world.issues.push(issue);
    Ok(Reply::json(201, body))
}

fn issue_mut(world: &mut World, project: Id, iid: Id) -> Result<&mut Issue, Reply> {
    world.issues.iter_mut().find(|i| i.project == project && i.iid == iid).ok_or_else(|| Reply::not_found("Issue"))
}

/// `POST /projects/:id/issues/:iid/notes` with `body`.
pub fn comment(ctx: &mut Ctx, project: &str, iid: Id) -> ApiResult {
    let project = project_at(ctx, project, GUEST)?;
    let body = ctx.req.params.required_str("body")?;
    let now = ctx.world.clock.now();
    let id = ctx.world.next_id();
    let issue = issue_mut(ctx.world, project, iid)?;
    issue.notes.push(body.clone());
    issue.updated_at = now;
    Ok(Reply::json(
        201,
        json!({"id": id, "body": body, "noteable_type": "Issue", "noteable_iid": iid, "system": false,
               "created_at": timestamp(now), "updated_at": timestamp(now)}),
    ))
}

/// `PUT /projects/:id/issues/:iid`: `state_event` (`close` or `reopen`) and `description`.
pub fn update(ctx: &mut Ctx, project: &str, iid: Id) -> ApiResult {
    let project = project_at(ctx, project, REPORTER)?;
    let event = ctx.req.params.str("state_event");
    let description = ctx.req.params.str("description");
    let now = ctx.world.clock.now();
    let issue = issue_mut(ctx.world, project, iid)?;
    match event.as_deref() {
        Some("close") => {
            issue.state = "closed".into();
            issue.closed_at = Some(now);
        }
        Some("reopen") => {
            issue.state = "opened".into();
            issue.closed_at = None;
        }
        Some(_) => return Err(Reply::json(400, json!({"error": "state_event does not have a valid value"}))),
        None => {}
    }
    if let Some(d) = description {
        issue.description = d;
    }
    issue.updated_at = now;
    let issue = issue.clone();
    Ok(Reply::json(200, issue_json(ctx.world, &issue)))
}
