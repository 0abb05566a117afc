//! GitLab's REST endpoints as the simulator serves them: routing, authentication (§5.1, §5.5),
//! scope checks, and the handlers in the submodules.

mod issues;
mod misc;
mod pipelines;
mod tokens;
mod variables;

use super::http::{ApiResult, Reply, Req};
use super::world::{Id, Source, World};
use serde_json::json;

/// Who is calling: the token that authenticated the request and its user.
#[derive(Debug, Clone)]
pub struct Actor {
    pub token_id: Id,
    pub user_id: Id,
    pub admin: bool,
    pub scopes: Vec<String>,
    /// For a project or group access token, the resource it belongs to.
    pub resource: Option<Source>,
}

/// A token named in a path: a numeric id or `self`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRef {
    Id(Id),
    Current,
}

/// A project or group named in a path, by id or full path, not yet looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Project(String),
    Group(String),
}

/// Every endpoint the simulator serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    PatList,
    PatGet(TokenRef),
    PatRotate(TokenRef),
    PatRevoke(TokenRef),
    UserPatCreate(String),
    AdminTokenInfo,
    ResourceTokenList(Owner),
    ResourceTokenGet(Owner, TokenRef),
    ResourceTokenCreate(Owner),
    ResourceTokenRotate(Owner, TokenRef),
    ResourceTokenRevoke(Owner, TokenRef),
    ServiceAccountList(String),
    ServiceAccountCreate(String),
    ServiceAccountTokenList(String, String),
    ServiceAccountTokenCreate(String, String),
    ServiceAccountTokenRotate(String, String, Id),
    ServiceAccountTokenRevoke(String, String, Id),
    VariableList(Owner),
    VariableGet(Owner, String),
    VariableCreate(Owner),
    VariableUpdate(Owner, String),
    VariableDelete(Owner, String),
    PipelineList(String),
    PipelineGet(String, Id),
    JobGet(String, Id),
    PipelineRetry(String, Id),
    PipelineCreate(String),
    CurrentUser,
    UserList,
    UserGet(Id),
    ProjectGet(String),
    GroupGet(String),
    ProjectList,
    GroupList,
    GroupProjects(String),
    GroupDescendants(String),
    IssueList(String),
    IssueCreate(String),
    IssueNote(String, Id),
    IssueUpdate(String, Id),
}

/// The scopes a route accepts (§1.9, §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `api` or `read_api`.
    Read,
    /// `api`.
    Write,
    /// `api` or `self_rotate`: the self-rotation endpoints.
    SelfRotate,
    /// Any scope: what a token may ask or do about itself.
    AnyScope,
}

impl Need {
    fn accepts(self, scopes: &[String]) -> bool {
        let has = |s: &str| scopes.iter().any(|x| x == s);
        match self {
            Need::Read => has("api") || has("read_api"),
            Need::Write => has("api"),
            Need::SelfRotate => has("api") || has("self_rotate"),
            Need::AnyScope => true,
        }
    }

    fn names(self) -> &'static str {
        match self {
            Need::Read => "api read_api",
            Need::Write => "api",
            Need::SelfRotate => "api self_rotate",
            Need::AnyScope => "",
        }
    }
}

fn token_ref(s: &str) -> Option<TokenRef> {
    if s == "self" {
        Some(TokenRef::Current)
    } else {
        s.parse().ok().map(TokenRef::Id)
    }
}

fn owner(kind: &str, id: &str) -> Option<Owner> {
    match kind {
        "projects" => Some(Owner::Project(id.into())),
        "groups" => Some(Owner::Group(id.into())),
        _ => None,
    }
}

/// Maps a method and the decoded path segments after `/api/v4` to a route and its scope need.
pub fn route(method: &str, segments: &[String]) -> Option<(Route, Need)> {
    use Need::*;
    use Route::*;
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let r = match (method, s.as_slice()) {
        ("GET", ["personal_access_tokens"]) => (PatList, Read),
        ("GET", ["personal_access_tokens", "self"]) => (PatGet(TokenRef::Current), AnyScope),
        ("DELETE", ["personal_access_tokens", "self"]) => (PatRevoke(TokenRef::Current), AnyScope),
        ("GET", ["personal_access_tokens", id]) => (PatGet(token_ref(id)?), Read),
        ("DELETE", ["personal_access_tokens", id]) => (PatRevoke(token_ref(id)?), Write),
        ("POST", ["personal_access_tokens", "self", "rotate"]) => (PatRotate(TokenRef::Current), SelfRotate),
        ("POST", ["personal_access_tokens", id, "rotate"]) => (PatRotate(token_ref(id)?), Write),
        ("POST", ["users", user, "personal_access_tokens"]) => (UserPatCreate(user.to_string()), Write),
        ("POST", ["admin", "token"]) => (AdminTokenInfo, Write),
        ("GET", ["user"]) => (CurrentUser, AnyScope),
        ("GET", ["users"]) => (UserList, Read),
        ("GET", ["users", id]) => (UserGet(id.parse().ok()?), Read),
        ("GET", ["projects"]) => (ProjectList, Read),
        ("GET", ["groups"]) => (GroupList, Read),
        ("GET", ["projects", p]) => (ProjectGet(p.to_string()), Read),
        ("GET", ["groups", g]) => (GroupGet(g.to_string()), Read),
        ("GET", ["groups", g, "projects"]) => (GroupProjects(g.to_string()), Read),
        ("GET", ["groups", g, "descendant_groups"]) => (GroupDescendants(g.to_string()), Read),
        ("GET", [k, id, "access_tokens"]) => (ResourceTokenList(owner(k, id)?), Read),
        ("POST", [k, id, "access_tokens"]) => (ResourceTokenCreate(owner(k, id)?), Write),
        ("GET", [k, id, "access_tokens", t]) => (ResourceTokenGet(owner(k, id)?, token_ref(t)?), Read),
        ("DELETE", [k, id, "access_tokens", t]) => (ResourceTokenRevoke(owner(k, id)?, token_ref(t)?), Write),
        ("POST", [k, id, "access_tokens", "self", "rotate"]) => {
            (ResourceTokenRotate(owner(k, id)?, TokenRef::Current), SelfRotate)
        }
        ("POST", [k, id, "access_tokens", t, "rotate"]) => (ResourceTokenRotate(owner(k, id)?, token_ref(t)?), Write),
        ("GET", ["groups", g, "service_accounts"]) => (ServiceAccountList(g.to_string()), Read),
        ("POST", ["groups", g, "service_accounts"]) => (ServiceAccountCreate(g.to_string()), Write),
        ("GET", ["groups", g, "service_accounts", u, "personal_access_tokens"]) => {
            (ServiceAccountTokenList(g.to_string(), u.to_string()), Read)
        }
        ("POST", ["groups", g, "service_accounts", u, "personal_access_tokens"]) => {
            (ServiceAccountTokenCreate(g.to_string(), u.to_string()), Write)
        }
        ("POST", ["groups", g, "service_accounts", u, "personal_access_tokens", t, "rotate"]) => {
            (ServiceAccountTokenRotate(g.to_string(), u.to_string(), t.parse().ok()?), Write)
        }
        ("DELETE", ["groups", g, "service_accounts", u, "personal_access_tokens", t]) => {
            (ServiceAccountTokenRevoke(g.to_string(), u.to_string(), t.parse().ok()?), Write)
        }
        ("GET", [k, id, "variables"]) => (VariableList(owner(k, id)?), Read),
        ("POST", [k, id, "variables"]) => (VariableCreate(owner(k, id)?), Write),
        ("GET", [k, id, "variables", key]) => (VariableGet(owner(k, id)?, key.to_string()), Read),
        ("PUT", [k, id, "variables", key]) => (VariableUpdate(owner(k, id)?, key.to_string()), Write),
        ("DELETE", [k, id, "variables", key]) => (VariableDelete(owner(k, id)?, key.to_string()), Write),
        ("GET", ["projects", p, "pipelines"]) => (PipelineList(p.to_string()), Read),
        ("GET", ["projects", p, "pipelines", id]) => (PipelineGet(p.to_string(), id.parse().ok()?), Read),
        ("GET", ["projects", p, "jobs", id]) => (JobGet(p.to_string(), id.parse().ok()?), Read),
        ("POST", ["projects", p, "pipelines", id, "retry"]) => (PipelineRetry(p.to_string(), id.parse().ok()?), Write),
        ("POST", ["projects", p, "pipeline"]) => (PipelineCreate(p.to_string()), Write),
        ("GET", ["projects", p, "issues"]) => (IssueList(p.to_string()), Read),
        ("POST", ["projects", p, "issues"]) => (IssueCreate(p.to_string()), Write),
        ("POST", ["projects", p, "issues", iid, "notes"]) => (IssueNote(p.to_string(), iid.parse().ok()?), Write),
        ("PUT", ["projects", p, "issues", iid]) => (IssueUpdate(p.to_string(), iid.parse().ok()?), Write),
        _ => return None,
    };
    Some(r)
}

/// GitLab's path test for reuse detection: `access_tokens/(\d+|self)/rotate$` (§1.5).
pub fn is_rotate_path(path: &str) -> bool {
    let Some(rest) = path.strip_suffix("/rotate") else { return false };
    let Some((head, id)) = rest.rsplit_once('/') else { return false };
    head.ends_with("access_tokens") && (id == "self" || (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())))
}

/// Authenticates a request (§5.5): unknown → 401; expired (checked first) → 401
/// `invalid_token`; revoked → 401 `invalid_token`, and on a rotate path the token family is
/// revoked (§1.5).
fn authenticate(world: &mut World, req: &Req) -> Result<Actor, Reply> {
    let Some(secret) = req.credential() else { return Err(Reply::unauthorized()) };
    let today = world.today();
    let Some(token) = world.token_by_secret(&secret) else { return Err(Reply::unauthorized()) };
    let (id, user_id) = (token.id, token.user_id);
    if token.expired(today) {
        return Err(invalid_token("Token is expired. You can either do re-authorization or token refresh."));
    }
    if token.revoked {
        if is_rotate_path(&req.path) {
            world.revoke_family(id, &req.path);
        }
        return Err(invalid_token("Token was revoked. You have to re-authorize from the user."));
    }
    let now = world.clock.now();
    let scopes = match world.tokens.get_mut(&id) {
        Some(t) => {
            t.last_used_at = Some(now);
            t.scopes.clone()
        }
        None => return Err(Reply::unauthorized()),
    };
    let resource = world.tokens.get(&id).and_then(|t| world.token_resource(t));
    let admin = world.users.get(&user_id).is_some_and(|u| u.admin);
    Ok(Actor { token_id: id, user_id, admin, scopes, resource })
}

fn invalid_token(description: &str) -> Reply {
    Reply::json(401, json!({"error": "invalid_token", "error_description": description})).with_header(
        "www-authenticate",
        format!("Bearer realm=\"The API\", error=\"invalid_token\", error_description=\"{description}\""),
    )
}

fn insufficient_scope(need: Need) -> Reply {
    let description = "The request requires higher privileges than provided by the access token.";
    Reply::json(403, json!({"error": "insufficient_scope", "error_description": description, "scope": need.names()}))
        .with_header(
            "www-authenticate",
            format!(
            "Bearer realm=\"The API\", error=\"insufficient_scope\", error_description=\"{description}\", scope=\"{}\"",
            need.names()
        ),
        )
}

/// What a handler works with.
pub struct Ctx<'a> {
    pub world: &'a mut World,
    pub req: &'a Req,
    pub actor: Actor,
    pub origin: &'a str,
}

/// Answers one request; also returns the id of the token that authenticated it.
pub fn serve(world: &mut World, origin: &str, req: &Req) -> (Reply, Option<Id>) {
    let Some((route, need)) = route(&req.method, &req.segments) else {
        return (Reply::json(404, json!({"error": "404 Not Found"})), None);
    };
    let actor = match authenticate(world, req) {
        Ok(actor) => actor,
        Err(reply) => return (reply, None),
    };
    let token_id = Some(actor.token_id);
    if !need.accepts(&actor.scopes) {
        return (insufficient_scope(need), token_id);
    }
    world.settle_pipelines();
    let mut ctx = Ctx { world, req, actor, origin };
    let result: ApiResult = match route {
        Route::PatList => tokens::pat_list(&mut ctx),
        Route::PatGet(t) => tokens::pat_get(&mut ctx, t),
        Route::PatRotate(t) => tokens::pat_rotate(&mut ctx, t),
        Route::PatRevoke(t) => tokens::pat_revoke(&mut ctx, t),
        Route::UserPatCreate(u) => tokens::user_pat_create(&mut ctx, &u),
        Route::AdminTokenInfo => tokens::admin_token_info(&mut ctx),
        Route::ResourceTokenList(o) => tokens::resource_list(&mut ctx, &o),
        Route::ResourceTokenGet(o, t) => tokens::resource_get(&mut ctx, &o, t),
        Route::ResourceTokenCreate(o) => tokens::resource_create(&mut ctx, &o),
        Route::ResourceTokenRotate(o, t) => tokens::resource_rotate(&mut ctx, &o, t),
        Route::ResourceTokenRevoke(o, t) => tokens::resource_revoke(&mut ctx, &o, t),
        Route::ServiceAccountList(g) => tokens::service_account_list(&mut ctx, &g),
        Route::ServiceAccountCreate(g) => tokens::service_account_create(&mut ctx, &g),
        Route::ServiceAccountTokenList(g, u) => tokens::sa_token_list(&mut ctx, &g, &u),
        Route::ServiceAccountTokenCreate(g, u) => tokens::sa_token_create(&mut ctx, &g, &u),
        Route::ServiceAccountTokenRotate(g, u, t) => tokens::sa_token_rotate(&mut ctx, &g, &u, t),
        Route::ServiceAccountTokenRevoke(g, u, t) => tokens::sa_token_revoke(&mut ctx, &g, &u, t),
        Route::VariableList(o) => variables::list(&mut ctx, &o),
        Route::VariableGet(o, k) => variables::get(&mut ctx, &o, &k),
        Route::VariableCreate(o) => variables::create(&mut ctx, &o),
        Route::VariableUpdate(o, k) => variables::update(&mut ctx, &o, &k),
        Route::VariableDelete(o, k) => variables::delete(&mut ctx, &o, &k),
        Route::PipelineList(p) => pipelines::list(&mut ctx, &p),
        Route::PipelineGet(p, id) => pipelines::get(&mut ctx, &p, id),
        Route::JobGet(p, id) => pipelines::job(&mut ctx, &p, id),
        Route::PipelineRetry(p, id) => pipelines::retry(&mut ctx, &p, id),
        Route::PipelineCreate(p) => pipelines::create(&mut ctx, &p),
        Route::CurrentUser => misc::current_user(&mut ctx),
        Route::UserList => misc::user_list(&mut ctx),
        Route::UserGet(id) => misc::user_get(&mut ctx, id),
        Route::ProjectGet(p) => misc::project_get(&mut ctx, &p),
        Route::GroupGet(g) => misc::group_get(&mut ctx, &g),
        Route::ProjectList => misc::project_list(&mut ctx),
        Route::GroupList => misc::group_list(&mut ctx),
        Route::GroupProjects(g) => misc::group_projects(&mut ctx, &g),
        Route::GroupDescendants(g) => misc::group_descendants(&mut ctx, &g),
        Route::IssueList(p) => issues::list(&mut ctx, &p),
        Route::IssueCreate(p) => issues::create(&mut ctx, &p),
        Route::IssueNote(p, iid) => issues::comment(&mut ctx, &p, iid),
        Route::IssueUpdate(p, iid) => issues::update(&mut ctx, &p, iid),
    };
    (result.unwrap_or_else(|e| e), token_id)
}

impl Ctx<'_> {
    /// Looks up a project the caller can see; GitLab answers 404 for one it cannot.
    pub fn project(&self, id_or_path: &str) -> Result<Id, Reply> {
        let id = self.world.find_project(id_or_path).map(|p| p.id).ok_or_else(|| Reply::not_found("Project"))?;
        if self.world.access_level(self.actor.user_id, Source::Project(id)) == 0 {
            return Err(Reply::not_found("Project"));
        }
        Ok(id)
    }

    pub fn group(&self, id_or_path: &str) -> Result<Id, Reply> {
        let id = self.world.find_group(id_or_path).map(|g| g.id).ok_or_else(|| Reply::not_found("Group"))?;
        if self.world.access_level(self.actor.user_id, Source::Group(id)) == 0 {
            return Err(Reply::not_found("Group"));
        }
        Ok(id)
    }

    pub fn source(&self, owner: &Owner) -> Result<Source, Reply> {
        match owner {
            Owner::Project(p) => self.project(p).map(Source::Project),
            Owner::Group(g) => self.group(g).map(Source::Group),
        }
    }

    pub fn level(&self, source: Source) -> u8 {
        self.world.access_level(self.actor.user_id, source)
    }

    pub fn paginate(&self, items: Vec<serde_json::Value>) -> ApiResult {
        super::http::paginate(self.origin, self.req, items)
    }
}

/// GitLab's timestamp format: `2020-07-23T14:31:47.729Z`.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_paths_match_gitlabs_regex() {
        assert!(is_rotate_path("/api/v4/personal_access_tokens/12/rotate"));
        assert!(is_rotate_path("/api/v4/personal_access_tokens/self/rotate"));
        assert!(is_rotate_path("/api/v4/projects/a%2Fb/access_tokens/7/rotate"));
        assert!(is_rotate_path("/api/v4/groups/3/service_accounts/9/personal_access_tokens/4/rotate"));
        assert!(!is_rotate_path("/api/v4/personal_access_tokens/12"));
        assert!(!is_rotate_path("/api/v4/personal_access_tokens/x1/rotate"));
    }

    #[test]
    fn routes_decode_project_paths_and_self() {
        let segs: Vec<String> = ["projects", "sec/app", "access_tokens", "self", "rotate"].map(String::from).into();
        assert_eq!(
            route("POST", &segs),
            Some((Route::ResourceTokenRotate(Owner::Project("sec/app".into()), TokenRef::Current), Need::SelfRotate))
        );
        assert!(route("PATCH", &segs).is_none());
    }
}
