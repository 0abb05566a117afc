//! Pipelines (§4): list with filters, get, retry (201), create (201). A retried or created
//! pipeline succeeds only if every CI/CD variable its jobs read holds an active token at that
//! moment, which makes "the dependent pipeline passes after rotation" a real check.

use super::{timestamp, Ctx};
use crate::simulator::http::{ApiResult, Reply};
use crate::simulator::world::{Id, Pipeline, Source, World, DEVELOPER, REPORTER};
use serde_json::{json, Value};

/// `Ci::Pipeline.sources` (§4), validated on the list (§11).
const SOURCES: [&str; 16] = [
    "unknown",
    "push",
    "web",
    "trigger",
    "schedule",
    "api",
    "external",
    "pipeline",
    "chat",
    "webide",
    "merge_request_event",
    "external_pull_request_event",
    "parent_pipeline",
    "ondemand_dast_scan",
    "ondemand_dast_validation",
    "security_orchestration_policy",
];

const STATUSES: [&str; 11] = [
    "created",
    "waiting_for_resource",
    "preparing",
    "pending",
    "running",
    "success",
    "failed",
    "canceled",
    "skipped",
    "manual",
    "scheduled",
];

fn web_url(world: &World, p: &Pipeline) -> String {
    let path = world.source_path(Source::Project(p.project));
    format!("{}/{path}/-/pipelines/{}", world.settings.external_url, p.id)
}

/// The list entity (`fixtures/list_project_pipelines.json`).
fn basic_json(world: &World, p: &Pipeline) -> Value {
    json!({
        "id": p.id,
        "iid": p.iid,
        "project_id": p.project,
        "status": p.status,
        "source": p.source,
        "ref": p.ref_,
        "sha": p.sha,
        "name": p.name,
        "web_url": web_url(world, p),
        "created_at": timestamp(p.created_at),
        "updated_at": timestamp(p.updated_at),
    })
}

/// The full entity (`fixtures/retry_pipeline.json`, `trigger_pipeline.json`).
fn full_json(world: &World, p: &Pipeline) -> Value {
    let mut v = basic_json(world, p);
    let duration = match (p.started_at, p.finished_at) {
        (Some(s), Some(f)) => json!((f - s).num_seconds()),
        _ => Value::Null,
    };
    let extra = json!({
        "before_sha": "0000000000000000000000000000000000000000",
        "tag": false,
        "yaml_errors": null,
        "user": {"id": 1, "username": "root", "name": "Administrator", "state": "active",
                 "avatar_url": null, "web_url": format!("{}/root", world.settings.external_url)},
        "started_at": p.started_at.map(timestamp),
        "finished_at": p.finished_at.map(timestamp),
        "committed_at": null,
        "duration": duration,
        "queued_duration": null,
        "coverage": null,
        "detailed_status": {"icon": format!("status_{}", p.status), "text": p.status, "label": p.status,
                            "group": p.status, "tooltip": p.status, "has_details": true,
                            "details_path": format!("/{}/-/pipelines/{}", world.source_path(Source::Project(p.project)), p.id),
                            "illustration": null, "favicon": format!("/assets/ci_favicons/favicon_status_{}.png", p.status)},
    });
    if let (Value::Object(base), Value::Object(extra)) = (&mut v, extra) {
        base.extend(extra);
    }
    v
}

pub(super) fn project_at(ctx: &Ctx, project: &str, needed: u8) -> Result<Id, Reply> {
    let id = ctx.project(project)?;
    if ctx.level(Source::Project(id)) < needed {
        return Err(Reply::forbidden());
    }
    Ok(id)
}

fn pipeline<'a>(ctx: &'a Ctx, project: Id, id: Id) -> Result<&'a Pipeline, Reply> {
    ctx.world.pipelines.get(&id).filter(|p| p.project == project).ok_or_else(|| Reply::not_found("Pipeline"))
}

pub fn list(ctx: &mut Ctx, project: &str) -> ApiResult {
    let project = project_at(ctx, project, REPORTER)?;
    let p = &ctx.req.params;
    let status = p.str("status");
    if status.as_deref().is_some_and(|s| !STATUSES.contains(&s)) {
        return Err(Reply::json(400, json!({"error": "status does not have a valid value"})));
    }
    let (reference, source) = (p.str("ref"), p.str("source"));
    if source.as_deref().is_some_and(|s| !SOURCES.contains(&s)) {
        return Err(Reply::json(400, json!({"error": "source does not have a valid value"})));
    }
    let scope = p.str("scope");
    let finished = ["success", "failed", "canceled", "skipped"];
    let in_scope = |x: &Pipeline| match scope.as_deref() {
        None | Some("branches") => true,
        Some("running") => x.status == "running",
        Some("pending") => x.status == "pending",
        Some("finished") => finished.contains(&x.status.as_str()),
        // Every simulated pipeline runs on a branch.
        _ => false,
    };
    if scope.as_deref().is_some_and(|s| !["running", "pending", "finished", "branches", "tags"].contains(&s)) {
        return Err(Reply::json(400, json!({"error": "scope does not have a valid value"})));
    }
    let (sha, name, username) = (p.str("sha"), p.str("name"), p.str("username"));
    // Simulated pipelines have no YAML errors, and every one is started by `root`.
    let yaml_errors = p.bool("yaml_errors")?;
    let (after, before) = (p.datetime("updated_after")?, p.datetime("updated_before")?);
    let mut items: Vec<&Pipeline> = ctx
        .world
        .pipelines
        .values()
        .filter(|x| x.project == project)
        .filter(|x| status.as_deref().is_none_or(|s| x.status == s))
        .filter(|x| reference.as_deref().is_none_or(|r| x.ref_ == r))
        .filter(|x| source.as_deref().is_none_or(|s| x.source == s))
        .filter(|x| in_scope(x))
        .filter(|x| sha.as_deref().is_none_or(|s| x.sha == s))
        .filter(|x| name.as_deref().is_none_or(|n| x.name.as_deref() == Some(n)))
        .filter(|_| username.as_deref().is_none_or(|u| u == "root"))
        .filter(|_| yaml_errors != Some(true))
        .filter(|x| after.is_none_or(|a| x.updated_at >= a))
        .filter(|x| before.is_none_or(|b| x.updated_at <= b))
        .collect();
    match p.str("order_by").as_deref().unwrap_or("id") {
        "id" => items.sort_by_key(|x| x.id),
        "status" => items.sort_by(|a, b| a.status.cmp(&b.status).then(a.id.cmp(&b.id))),
        "ref" => items.sort_by(|a, b| a.ref_.cmp(&b.ref_).then(a.id.cmp(&b.id))),
        "updated_at" => items.sort_by_key(|x| (x.updated_at, x.id)),
        "user_id" => items.sort_by_key(|x| x.id),
        _ => return Err(Reply::json(400, json!({"error": "order_by does not have a valid value"}))),
    }
    match p.str("sort").as_deref().unwrap_or("desc") {
        "desc" => items.reverse(),
        "asc" => {}
        _ => return Err(Reply::json(400, json!({"error": "sort does not have a valid value"}))),
    }
    let items = items.into_iter().map(|x| basic_json(ctx.world, x)).collect();
    ctx.paginate(items)
}

pub fn get(ctx: &mut Ctx, project: &str, id: Id) -> ApiResult {
    let project = project_at(ctx, project, REPORTER)?;
    Ok(Reply::json(200, full_json(ctx.world, pipeline(ctx, project, id)?)))
}

/// `GET /projects/:id/jobs/:job_id` (§4): the job's id and status (Reporter).
pub fn job(ctx: &mut Ctx, project: &str, id: Id) -> ApiResult {
    let project = project_at(ctx, project, REPORTER)?;
    match ctx.world.jobs.get(&id) {
        Some((p, status)) if *p == project => Ok(Reply::json(200, json!({ "id": id, "status": status }))),
        _ => Err(Reply::not_found("Job")),
    }
}

/// Retries failed or canceled jobs; a pipeline with none is left as it is (§4).
pub fn retry(ctx: &mut Ctx, project: &str, id: Id) -> ApiResult {
    let project = project_at(ctx, project, DEVELOPER)?;
    let outcome = ctx.world.run_pipeline(pipeline(ctx, project, id)?);
    let now = ctx.world.clock.now();
    let p = ctx.world.pipelines.get_mut(&id).ok_or_else(|| Reply::not_found("Pipeline"))?;
    if p.status == "failed" || p.status == "canceled" {
        p.status = "pending".into();
        p.retries += 1;
        p.updated_at = now;
        p.started_at = Some(now);
        p.finished_at = None;
        ctx.world.set_pending_outcome(id, outcome);
    }
    let p = pipeline(ctx, project, id)?;
    Ok(Reply::json(201, full_json(ctx.world, p)))
}

/// Starts a pipeline on `ref`; its jobs read what the ref's latest pipeline read, or the
/// project's `ci_uses`.
pub fn create(ctx: &mut Ctx, project: &str) -> ApiResult {
    let project = project_at(ctx, project, DEVELOPER)?;
    let reference = ctx.req.params.required_str("ref")?;
    let world = &mut *ctx.world;
    // A ref that does not exist fails the pipeline's validation: 400, nothing created (§11).
    if !world.projects.get(&project).is_some_and(|p| p.refs.contains(&reference)) {
        return Err(Reply::json(400, json!({"message": {"base": ["Reference not found"]}})));
    }
    let latest = world.pipelines.values().filter(|p| p.project == project && p.ref_ == reference).max_by_key(|p| p.id);
    let (uses, environment) = match latest {
        Some(p) => (p.uses.clone(), p.environment.clone()),
        None => (world.projects.get(&project).map(|p| p.ci_uses.clone()).unwrap_or_default(), None),
    };
    let iid = world.pipelines.values().filter(|p| p.project == project).map(|p| p.iid).max().unwrap_or(0) + 1;
    let (id, now, sha) = (world.next_id(), world.clock.now(), world.new_sha());
    let p = Pipeline {
        id,
        iid,
        project,
        status: "pending".into(),
        source: "api".into(),
        ref_: reference,
        sha,
        name: None,
        created_at: now,
        updated_at: now,
        started_at: Some(now),
        finished_at: None,
        uses,
        environment,
        pending_outcome: None,
        retries: 0,
    };
    let outcome = world.run_pipeline(&p);
    let body = full_json(world, &p);
    world.pipelines.insert(id, p);
    world.set_pending_outcome(id, outcome);
    Ok(Reply::json(201, body))
}
