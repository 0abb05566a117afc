//! The state of the simulated GitLab instance: users, groups, projects, memberships, tokens,
//! CI/CD variables and pipelines, plus what tests inspect afterwards.
//!
//! Everything here is plain data behind one lock; the HTTP layer (`http.rs`) and the endpoint
//! handlers (`api/`) are the only writers while the server runs.

use super::clock::Clock;
use chrono::{DateTime, NaiveDate, Utc};
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

pub type Id = u64;

/// GitLab's access levels (gitlab-api.md §2).
pub const GUEST: u8 = 10;
pub const REPORTER: u8 = 20;
pub const DEVELOPER: u8 = 30;
pub const MAINTAINER: u8 = 40;
pub const OWNER: u8 = 50;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum UserKind {
    Human,
    /// A service account; `group` is its top-level group for group service accounts (§1.8),
    /// `None` for instance service accounts.
    ServiceAccount {
        group: Option<Id>,
    },
    /// The bot user behind a project access token (§2 "Bot user").
    ProjectBot {
        project: Id,
    },
    /// The bot user behind a group access token.
    GroupBot {
        group: Id,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: Id,
    pub username: String,
    pub name: String,
    pub admin: bool,
    pub kind: UserKind,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub id: Id,
    pub full_path: String,
    pub name: String,
    pub parent: Option<Id>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Project {
    pub id: Id,
    pub path_with_namespace: String,
    pub name: String,
    pub group: Option<Id>,
    /// The CI/CD variables the project's jobs read; new pipelines inherit this list.
    pub ci_uses: Vec<String>,
    /// The branches and tags that exist: `main`, and every seeded pipeline's ref. A pipeline
    /// can only be created on one of them (§11).
    pub refs: std::collections::BTreeSet<String>,
}

/// What a membership, variable or resource token belongs to.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case", tag = "type", content = "id")]
pub enum Source {
    Project(Id),
    Group(Id),
}

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub user: Id,
    pub source: Source,
    pub access_level: u8,
}

/// A personal, project, group or service-account access token. Which one it is follows from
/// its user's kind, as in GitLab, where all of them are `PersonalAccessToken` records.
#[derive(Clone, Serialize)]
pub struct Token {
    pub id: Id,
    pub name: String,
    pub description: Option<String>,
    pub scopes: Vec<String>,
    pub user_id: Id,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<NaiveDate>,
    pub revoked: bool,
    pub last_used_at: Option<DateTime<Utc>>,
    /// `previous_personal_access_token_id`: the token this one replaced by rotation (§1.4).
    pub previous: Option<Id>,
    #[serde(skip)]
    pub secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .field("previous", &self.previous)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl Token {
    /// A token with `expires_at` = D works through D−1 23:59:59 UTC (§6).
    pub fn expired(&self, today: NaiveDate) -> bool {
        self.expires_at.is_some_and(|d| d <= today)
    }

    pub fn active(&self, today: NaiveDate) -> bool {
        !self.revoked && !self.expired(today)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Personal,
    Project,
    Group,
    ServiceAccount,
}

#[derive(Clone, Serialize)]
pub struct Variable {
    pub owner: Source,
    pub key: String,
    #[serde(skip)]
    pub value: String,
    pub variable_type: String,
    pub protected: bool,
    pub masked: bool,
    pub hidden: bool,
    pub raw: bool,
    pub environment_scope: String,
    pub description: Option<String>,
}

impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variable")
            .field("owner", &self.owner)
            .field("key", &self.key)
            .field("environment_scope", &self.environment_scope)
            .field("masked", &self.masked)
            .field("hidden", &self.hidden)
            .field("protected", &self.protected)
            .field("raw", &self.raw)
            .field("value", &"[REDACTED]")
            .finish()
    }
}

/// A project issue (§15) with its comments, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    pub id: Id,
    pub iid: Id,
    pub project: Id,
    pub title: String,
    pub description: String,
    pub labels: Vec<String>,
    /// `opened` or `closed`.
    pub state: String,
    pub notes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pipeline {
    pub id: Id,
    pub iid: Id,
    pub project: Id,
    pub status: String,
    pub source: String,
    pub ref_: String,
    pub sha: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// CI/CD variables this pipeline's jobs read: it passes only if each holds an active token.
    pub uses: Vec<String>,
    /// The environment its jobs deploy to, which selects environment-scoped variables.
    pub environment: Option<String>,
    /// The status a retried or created pipeline reaches; shown from the next read on, so a
    /// client sees `pending` first, as from GitLab.
    pub pending_outcome: Option<String>,
    /// How often it was retried through the API.
    pub retries: u32,
}

/// A request as the simulator saw it. Holds no secret: the credential is named by token id.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The query string, with any `private_token` value removed.
    pub query: String,
    /// The HTTP status sent; 0 when the connection was closed without an answer.
    pub status: u16,
    /// The token that authenticated the request, when one did.
    pub token_id: Option<Id>,
    /// The name of the token whose secret the request carried (even a revoked or expired one):
    /// with method, path and `key`, what tells one client's request from another's.
    pub token_name: Option<String>,
    /// The `key` parameter, when there is one (a variable's create).
    pub key: Option<String>,
    /// A fault the simulator injected into this request, if any.
    pub fault: Option<String>,
}

/// One firing of GitLab's reuse detection (§1.5).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReuseDetection {
    /// The revoked token that was presented, or that a rotate request targeted.
    pub token_id: Id,
    /// The active descendants that were revoked as a result.
    pub revoked: Vec<Id>,
    pub path: String,
}

/// Instance settings that change token rules (§1.10).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Maximum token lifetime in days: 365 by default, lower on Ultimate with a limit set.
    pub max_token_lifetime_days: i64,
    /// `require_personal_access_token_expiry`.
    pub require_token_expiry: bool,
    /// The instance's external URL, which every `web_url` starts with (§11); a running
    /// simulator sets it to the address it listens on.
    pub external_url: String,
    /// The stricter reading of rotating an already-revoked token by id: also revoke its family.
    /// GitLab's code answers 400 and changes nothing else (§11), the default here.
    pub revoked_rotate_revokes_family: bool,
    /// Whether `POST /admin/token` answers (§14); off where the feature flag is.
    pub token_info_api: bool,
    /// Whether group variables may have an environment scope (Premium and up); without it
    /// `environment_scope` is dropped on create and update (§11).
    pub scoped_group_variables: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_token_lifetime_days: 365,
            require_token_expiry: true,
            external_url: "https://gitlab.example.com".into(),
            revoked_rotate_revokes_family: false,
            token_info_api: true,
            scoped_group_variables: true,
        }
    }
}

impl Settings {
    /// The host of the external URL, for e-mail addresses.
    pub fn web_host(&self) -> &str {
        let rest = self.external_url.split_once("://").map_or(self.external_url.as_str(), |(_, r)| r);
        rest.split(['/', ':']).next().unwrap_or(rest)
    }
}

pub struct World {
    pub clock: Clock,
    pub settings: Settings,
    pub users: BTreeMap<Id, User>,
    pub groups: BTreeMap<Id, Group>,
    pub projects: BTreeMap<Id, Project>,
    pub members: Vec<Member>,
    pub tokens: BTreeMap<Id, Token>,
    pub variables: Vec<Variable>,
    pub pipelines: BTreeMap<Id, Pipeline>,
    pub issues: Vec<Issue>,
    /// CI jobs by id: their project and status (§4), set by tests that need a job's state.
    pub jobs: BTreeMap<Id, (Id, String)>,
    pub requests: Vec<RequestRecord>,
    pub reuse_detections: Vec<ReuseDetection>,
    /// Every secret ever issued, in order, so tests can scan output for leaks.
    pub issued_secrets: Vec<String>,
    by_secret: HashMap<String, Id>,
    /// Pipelines with a `pending_outcome`, so settling costs what is pending, not every pipeline.
    unsettled: Vec<Id>,
    next_id: Id,
}

/// Leaves out the secret index and the issued secrets: `Debug` never shows a secret.
impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("clock", &self.clock)
            .field("settings", &self.settings)
            .field("users", &self.users)
            .field("groups", &self.groups)
            .field("projects", &self.projects)
            .field("members", &self.members)
            .field("tokens", &self.tokens)
            .field("variables", &self.variables)
            .field("pipelines", &self.pipelines)
            .field("issues", &self.issues)
            .field("requests", &self.requests.len())
            .field("reuse_detections", &self.reuse_detections)
            .field("issued_secrets", &self.issued_secrets.len())
            .finish()
    }
}

impl World {
    pub fn new(clock: Clock) -> Self {
        World {
            clock,
            settings: Settings::default(),
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            projects: BTreeMap::new(),
            members: Vec::new(),
            tokens: BTreeMap::new(),
            variables: Vec::new(),
            pipelines: BTreeMap::new(),
            issues: Vec::new(),
            jobs: BTreeMap::new(),
            requests: Vec::new(),
            reuse_detections: Vec::new(),
            issued_secrets: Vec::new(),
            by_secret: HashMap::new(),
            unsettled: Vec::new(),
            next_id: 1,
        }
    }

    /// Ids are unique across tables, which keeps seeded data easy to read in test failures.
    pub fn next_id(&mut self) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn today(&self) -> NaiveDate {
        self.clock.today()
    }

    // ---- users, groups, projects -------------------------------------------------------

    pub fn add_user(&mut self, username: &str, name: &str, admin: bool, kind: UserKind) -> Id {
        let id = self.next_id();
        let user = User { id, username: username.into(), name: name.into(), admin, kind };
        self.users.insert(id, user);
        id
    }

    pub fn user_by_username(&self, username: &str) -> Option<&User> {
        self.users.values().find(|u| u.username == username)
    }

    /// Creates the group and any missing parents of `full_path`.
    pub fn ensure_group(&mut self, full_path: &str) -> Id {
        if let Some(g) = self.group_by_path(full_path) {
            return g.id;
        }
        let (parent, name) = match full_path.rsplit_once('/') {
            Some((parent, name)) => (Some(self.ensure_group(parent)), name),
            None => (None, full_path),
        };
        let id = self.next_id();
        let group = Group { id, full_path: full_path.into(), name: name.into(), parent };
        self.groups.insert(id, group);
        id
    }

    pub fn group_by_path(&self, full_path: &str) -> Option<&Group> {
        self.groups.values().find(|g| g.full_path.eq_ignore_ascii_case(full_path))
    }

    pub fn ensure_project(&mut self, path: &str) -> Id {
        if let Some(p) = self.project_by_path(path) {
            return p.id;
        }
        let (group, name) = match path.rsplit_once('/') {
            Some((ns, name)) => (Some(self.ensure_group(ns)), name),
            None => (None, path),
        };
        let id = self.next_id();
        let refs = std::iter::once("main".to_owned()).collect();
        let project =
            Project { id, path_with_namespace: path.into(), name: name.into(), group, ci_uses: Vec::new(), refs };
        self.projects.insert(id, project);
        id
    }

    pub fn project_by_path(&self, path: &str) -> Option<&Project> {
        self.projects.values().find(|p| p.path_with_namespace.eq_ignore_ascii_case(path))
    }

    /// Resolves GitLab's `:id` path parameter: a numeric id or a (decoded) full path.
    pub fn find_project(&self, id_or_path: &str) -> Option<&Project> {
        match id_or_path.parse::<Id>() {
            Ok(id) => self.projects.get(&id),
            Err(_) => self.project_by_path(id_or_path),
        }
    }

    pub fn find_group(&self, id_or_path: &str) -> Option<&Group> {
        match id_or_path.parse::<Id>() {
            Ok(id) => self.groups.get(&id),
            Err(_) => self.group_by_path(id_or_path),
        }
    }

    /// The group and its ancestors, nearest first.
    pub fn group_chain(&self, group: Id) -> Vec<Id> {
        let mut chain = Vec::new();
        let mut next = Some(group);
        while let Some(id) = next {
            chain.push(id);
            next = self.groups.get(&id).and_then(|g| g.parent);
        }
        chain
    }

    pub fn top_level_group(&self, group: Id) -> Id {
        self.group_chain(group).last().copied().unwrap_or(group)
    }

    pub fn source_path(&self, source: Source) -> String {
        match source {
            Source::Project(id) => self.projects.get(&id).map(|p| p.path_with_namespace.clone()).unwrap_or_default(),
            Source::Group(id) => self.groups.get(&id).map(|g| g.full_path.clone()).unwrap_or_default(),
        }
    }

    // ---- memberships and roles ---------------------------------------------------------

    pub fn add_member(&mut self, user: Id, source: Source, access_level: u8) {
        self.members.retain(|m| !(m.user == user && m.source == source));
        self.members.push(Member { user, source, access_level });
    }

    pub fn direct_level(&self, user: Id, source: Source) -> u8 {
        self.members.iter().filter(|m| m.user == user && m.source == source).map(|m| m.access_level).max().unwrap_or(0)
    }

    /// The user's effective access level on a project or group: the highest of its direct
    /// membership and the memberships it inherits from ancestor groups. Admins are owners.
    pub fn access_level(&self, user: Id, source: Source) -> u8 {
        if self.users.get(&user).is_some_and(|u| u.admin) {
            return OWNER;
        }
        let (direct, group) = match source {
            Source::Project(p) => (self.direct_level(user, source), self.projects.get(&p).and_then(|p| p.group)),
            Source::Group(g) => (0, Some(g)),
        };
        let inherited = group
            .map(|g| self.group_chain(g))
            .unwrap_or_default()
            .into_iter()
            .map(|g| self.direct_level(user, Source::Group(g)))
            .max()
            .unwrap_or(0);
        direct.max(inherited)
    }

    // ---- tokens ------------------------------------------------------------------------

    pub fn token_kind(&self, token: &Token) -> TokenKind {
        match self.users.get(&token.user_id).map(|u| &u.kind) {
            Some(UserKind::ProjectBot { .. }) => TokenKind::Project,
            Some(UserKind::GroupBot { .. }) => TokenKind::Group,
            Some(UserKind::ServiceAccount { .. }) => TokenKind::ServiceAccount,
            _ => TokenKind::Personal,
        }
    }

    /// The project or group a resource token belongs to.
    pub fn token_resource(&self, token: &Token) -> Option<Source> {
        match self.users.get(&token.user_id).map(|u| &u.kind) {
            Some(UserKind::ProjectBot { project }) => Some(Source::Project(*project)),
            Some(UserKind::GroupBot { group }) => Some(Source::Group(*group)),
            _ => None,
        }
    }

    pub fn token_by_secret(&self, secret: &str) -> Option<&Token> {
        self.by_secret.get(secret).and_then(|id| self.tokens.get(id))
    }

    /// A new secret shaped like GitLab's: `glpat-` and 20 URL-safe characters (§1.1).
    pub fn new_secret(&mut self) -> String {
        let mut rng = rand::rng();
        loop {
            let body: String = (0..20)
                .map(|_| {
                    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                    CHARS[rng.random_range(0..CHARS.len())] as char
                })
                .collect();
            let secret = format!("glpat-{body}");
            if !self.by_secret.contains_key(&secret) {
                return secret;
            }
        }
    }

    /// Records a token; a `None` secret gets a fresh one.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_token(
        &mut self,
        user_id: Id,
        name: &str,
        description: Option<String>,
        scopes: Vec<String>,
        expires_at: Option<NaiveDate>,
        previous: Option<Id>,
        secret: Option<String>,
    ) -> Id {
        let id = self.next_id();
        let secret = secret.unwrap_or_else(|| self.new_secret());
        self.by_secret.insert(secret.clone(), id);
        self.issued_secrets.push(secret.clone());
        let token = Token {
            id,
            name: name.into(),
            description,
            scopes,
            user_id,
            created_at: self.clock.now(),
            expires_at,
            revoked: false,
            last_used_at: None,
            previous,
            secret,
        };
        self.tokens.insert(id, token);
        id
    }

    /// Creates the bot user of a new project or group access token (§2 "Bot user").
    pub fn add_bot(&mut self, resource: Source, access_level: u8) -> Id {
        let suffix = Alphanumeric.sample_string(&mut rand::rng(), 6).to_lowercase();
        let (username, kind) = match resource {
            Source::Project(p) => (format!("project_{p}_bot_{suffix}"), UserKind::ProjectBot { project: p }),
            Source::Group(g) => (format!("group_{g}_bot_{suffix}"), UserKind::GroupBot { group: g }),
        };
        let id = self.add_user(&username, &username, false, kind);
        self.add_member(id, resource, access_level);
        id
    }

    /// The access level a resource token acts with: its bot user's membership.
    pub fn token_access_level(&self, token: &Token) -> Option<u8> {
        self.token_resource(token).map(|s| self.direct_level(token.user_id, s))
    }

    /// Rotation (§1.4): in one step, revoke the old token and create a new one with a new id,
    /// the same name, description, scopes and user, linked to the old one.
    pub fn rotate_token(&mut self, id: Id, expires_at: Option<NaiveDate>) -> Option<Id> {
        let old = self.tokens.get_mut(&id)?;
        old.revoked = true;
        let (user, name, description, scopes) =
            (old.user_id, old.name.clone(), old.description.clone(), old.scopes.clone());
        Some(self.insert_token(user, &name, description, scopes, expires_at, Some(id), None))
    }

    /// Reuse detection (§1.5): revoke every active descendant of `id` in its token family.
    pub fn revoke_family(&mut self, id: Id, path: &str) -> Vec<Id> {
        let today = self.today();
        let mut revoked = Vec::new();
        let mut frontier = vec![id];
        while let Some(parent) = frontier.pop() {
            let children: Vec<Id> = self.tokens.values().filter(|t| t.previous == Some(parent)).map(|t| t.id).collect();
            for child in children {
                if let Some(t) = self.tokens.get_mut(&child) {
                    if t.active(today) {
                        t.revoked = true;
                        revoked.push(child);
                    }
                }
                frontier.push(child);
            }
        }
        self.reuse_detections.push(ReuseDetection { token_id: id, revoked: revoked.clone(), path: path.into() });
        revoked
    }

    /// Whether `secret` is, right now, the secret of an active token.
    pub fn secret_is_active(&self, secret: &str) -> bool {
        let today = self.today();
        self.token_by_secret(secret).is_some_and(|t| t.active(today))
    }

    /// Service accounts of a top-level group.
    pub fn group_service_accounts(&self, group: Id) -> impl Iterator<Item = &User> {
        self.users.values().filter(move |u| u.kind == UserKind::ServiceAccount { group: Some(group) })
    }

    // ---- variables and pipelines -------------------------------------------------------

    /// The value a job of `project` sees for `key` in `environment`: a project variable wins
    /// over group ones, the nearest group over its ancestors, an exact environment scope over
    /// a wildcard.
    pub fn resolve_variable(&self, project: Id, key: &str, environment: Option<&str>) -> Option<&Variable> {
        let mut owners = vec![Source::Project(project)];
        if let Some(g) = self.projects.get(&project).and_then(|p| p.group) {
            owners.extend(self.group_chain(g).into_iter().map(Source::Group));
        }
        owners.into_iter().find_map(|owner| {
            let candidates = self.variables.iter().filter(|v| v.owner == owner && v.key == key);
            let mut best: Option<&Variable> = None;
            for v in candidates {
                if !scope_matches(&v.environment_scope, environment) {
                    continue;
                }
                let exact = v.environment_scope != "*";
                if best.is_none() || exact {
                    best = Some(v);
                }
            }
            best
        })
    }

    /// Runs a pipeline as of now: it succeeds only if every variable its jobs read holds an
    /// active token.
    pub fn run_pipeline(&self, pipeline: &Pipeline) -> &'static str {
        let ok = pipeline.uses.iter().all(|key| {
            self.resolve_variable(pipeline.project, key, pipeline.environment.as_deref())
                .is_some_and(|v| self.secret_is_active(&v.value))
        });
        if ok {
            "success"
        } else {
            "failed"
        }
    }

    /// Shows the outcome of pipelines that were started or retried: GitLab answers the retry
    /// with `pending`, and the next read sees where the pipeline ended.
    /// Gives the pipeline the outcome its jobs will have; it shows once the request that started
    /// it has been answered (`settle_pipelines`).
    pub fn set_pending_outcome(&mut self, id: Id, outcome: &str) {
        if let Some(p) = self.pipelines.get_mut(&id) {
            p.pending_outcome = Some(outcome.into());
            self.unsettled.push(id);
        }
    }

    pub fn settle_pipelines(&mut self) {
        let now = self.clock.now();
        for id in std::mem::take(&mut self.unsettled) {
            let Some(p) = self.pipelines.get_mut(&id) else { continue };
            if let Some(outcome) = p.pending_outcome.take() {
                p.status = outcome;
                p.updated_at = now;
                p.finished_at = Some(now);
            }
        }
    }

    pub fn new_sha(&self) -> String {
        let mut rng = rand::rng();
        (0..40).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0')).collect()
    }
}

/// GitLab's environment-scope match: `*` matches anything, `*` inside a scope is a wildcard.
pub fn scope_matches(scope: &str, environment: Option<&str>) -> bool {
    if scope == "*" {
        return true;
    }
    let Some(env) = environment else { return false };
    match scope.split_once('*') {
        None => scope == env,
        Some((prefix, suffix)) => {
            env.len() >= prefix.len() + suffix.len() && env.starts_with(prefix) && env.ends_with(suffix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World::new(Clock::frozen_at(DateTime::<Utc>::UNIX_EPOCH))
    }

    #[test]
    fn group_membership_is_inherited_by_subgroups_and_projects() {
        let mut w = world();
        let alice = w.add_user("alice", "Alice", false, UserKind::Human);
        let project = w.ensure_project("top/sub/app");
        let top = w.ensure_group("top");
        let sub = w.ensure_group("top/sub");
        w.add_member(alice, Source::Group(top), MAINTAINER);
        assert_eq!(w.access_level(alice, Source::Project(project)), MAINTAINER);
        assert_eq!(w.access_level(alice, Source::Group(sub)), MAINTAINER);
        assert_eq!(w.top_level_group(sub), top);
    }

    #[test]
    fn family_revocation_walks_every_descendant() {
        let mut w = world();
        let u = w.add_user("u", "U", false, UserKind::Human);
        let a = w.insert_token(u, "t", None, vec!["api".into()], None, None, None);
        let b = w.rotate_token(a, None).unwrap_or_default();
        let c = w.rotate_token(b, None).unwrap_or_default();
        let revoked = w.revoke_family(a, "/x/rotate");
        assert_eq!(revoked, vec![c]);
        assert!(w.tokens.values().all(|t| t.revoked));
    }

    #[test]
    fn environment_scopes_match_like_gitlab() {
        assert!(scope_matches("*", None));
        assert!(scope_matches("review/*", Some("review/app")));
        assert!(!scope_matches("review/*", Some("production")));
        assert!(!scope_matches("production", None));
    }

    #[test]
    fn secrets_look_like_gitlab_tokens() {
        let mut w = world();
        let s = w.new_secret();
        assert!(s.starts_with("glpat-"));
        assert_eq!(s.len(), 26);
        assert!(s[6..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
