//! Seed data: the users, groups, projects, tokens, variables and pipelines a simulator starts
//! with. Written in code by tests, or read from a JSON or TOML file (`patrol simulator --seed`).
//! Dates may be given relative to the seed's `now`, so a seed stays meaningful over time.

use super::clock::Clock;
use super::world::{Id, Pipeline, Source, UserKind, Variable, World, MAINTAINER, OWNER};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read seed file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("seed file {path} is not valid {format}: {message}")]
    Parse { path: String, format: &'static str, message: String },
    #[error("seed: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// The simulated time at start; default: the real time.
    pub now: Option<DateTime<Utc>>,
    /// Keep the clock still instead of letting it run from `now`.
    #[serde(default)]
    pub frozen: bool,
    /// Maximum token lifetime in days (default 365).
    pub max_token_lifetime_days: Option<i64>,
    /// Rotating an already-revoked token by id also revokes its family: the stricter reading,
    /// off by default because GitLab's code only answers 400 (§11).
    #[serde(default)]
    pub revoked_rotate_revokes_family: bool,
    /// `POST /admin/token` answers (§14); `false` as where its feature flag is off.
    pub token_info_api: Option<bool>,
    /// Group variables may carry an environment scope (Premium and up, the default); `false`
    /// for a tier where the scope is dropped (§11).
    pub scoped_group_variables: Option<bool>,
    #[serde(default)]
    pub users: Vec<SeedUser>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub projects: Vec<SeedProject>,
    #[serde(default)]
    pub members: Vec<SeedMember>,
    #[serde(default)]
    pub tokens: Vec<SeedToken>,
    #[serde(default)]
    pub variables: Vec<SeedVariable>,
    #[serde(default)]
    pub pipelines: Vec<SeedPipeline>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    pub username: String,
    pub name: Option<String>,
    #[serde(default)]
    pub admin: bool,
    /// Makes this a service account of that top-level group.
    pub service_account_of: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProject {
    pub path: String,
    /// Branches and tags besides `main` and the seeded pipelines' refs.
    #[serde(default)]
    pub refs: Vec<String>,
    /// CI/CD variables the project's jobs read.
    #[serde(default)]
    pub ci_uses: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedMember {
    pub user: String,
    pub project: Option<String>,
    pub group: Option<String>,
    pub access_level: u8,
}

/// A token. Its owner is `user` (personal or service-account token), `project` or `group`
/// (resource token, with a bot user created for it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedToken {
    pub name: String,
    pub user: Option<String>,
    pub project: Option<String>,
    pub group: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    pub description: Option<String>,
    pub expires_at: Option<NaiveDate>,
    /// Expiry relative to `now`, in days (negative: already expired).
    pub expires_in_days: Option<i64>,
    #[serde(default)]
    pub revoked: bool,
    /// For resource tokens (default Maintainer).
    pub access_level: Option<u8>,
    /// A fixed secret (tests and the demo admin); default: a fresh random one.
    pub secret: Option<String>,
}

impl Default for SeedToken {
    /// Like a seed file's default: scope `api`, no expiry, a fresh secret.
    fn default() -> Self {
        SeedToken {
            name: String::new(),
            user: None,
            project: None,
            group: None,
            scopes: default_scopes(),
            description: None,
            expires_at: None,
            expires_in_days: None,
            revoked: false,
            access_level: None,
            secret: None,
        }
    }
}

fn default_scopes() -> Vec<String> {
    vec!["api".into()]
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedVariable {
    pub project: Option<String>,
    pub group: Option<String>,
    pub key: String,
    pub value: Option<String>,
    /// Take the value from the secret of the seeded token with this name.
    pub token: Option<String>,
    #[serde(default = "default_scope")]
    pub environment_scope: String,
    #[serde(default)]
    pub masked: bool,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub raw: bool,
    pub description: Option<String>,
}

fn default_scope() -> String {
    "*".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPipeline {
    pub project: String,
    #[serde(rename = "ref", default = "default_ref")]
    pub ref_: String,
    #[serde(default = "default_status")]
    pub status: String,
    /// Variables its jobs read; default: the project's `ci_uses`.
    pub uses: Option<Vec<String>>,
    pub environment: Option<String>,
    #[serde(default = "default_source")]
    pub source: String,
    /// `workflow:name`; GitLab shows `null` without one.
    pub name: Option<String>,
}

fn default_ref() -> String {
    "main".into()
}
fn default_status() -> String {
    "success".into()
}
fn default_source() -> String {
    "push".into()
}

impl Seed {
    pub fn load(path: &Path) -> Result<Seed, SeedError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read { path: shown.clone(), source })?;
        if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| SeedError::Parse {
                path: shown,
                format: "JSON",
                message: e.to_string(),
            })
        } else {
            toml::from_str(&text).map_err(|e| SeedError::Parse { path: shown, format: "TOML", message: e.to_string() })
        }
    }

    /// Builds the world this seed describes.
    pub fn build(&self) -> Result<World, SeedError> {
        let now = self.now.unwrap_or_else(Utc::now);
        let clock = if self.frozen { Clock::frozen_at(now) } else { Clock::running_from(now) };
        let mut w = World::new(clock);
        if let Some(days) = self.max_token_lifetime_days {
            w.settings.max_token_lifetime_days = days;
        }
        w.settings.revoked_rotate_revokes_family = self.revoked_rotate_revokes_family;
        w.settings.token_info_api = self.token_info_api.unwrap_or(true);
        w.settings.scoped_group_variables = self.scoped_group_variables.unwrap_or(true);
        for g in &self.groups {
            w.ensure_group(g);
        }
        for p in &self.projects {
            let id = w.ensure_project(&p.path);
            if let Some(project) = w.projects.get_mut(&id) {
                project.ci_uses = p.ci_uses.clone();
                project.refs.extend(p.refs.iter().cloned());
            }
        }
        for u in &self.users {
            let kind = match &u.service_account_of {
                Some(g) => UserKind::ServiceAccount { group: Some(w.ensure_group(g)) },
                None => UserKind::Human,
            };
            let name = u.name.clone().unwrap_or_else(|| u.username.clone());
            w.add_user(&u.username, &name, u.admin, kind);
        }
        for m in &self.members {
            let user = user_id(&w, &m.user)?;
            let source = source(&mut w, m.project.as_deref(), m.group.as_deref(), "member")?;
            w.add_member(user, source, m.access_level);
        }
        let mut by_name = std::collections::HashMap::new();
        for t in &self.tokens {
            let user = match (&t.user, &t.project, &t.group) {
                (Some(u), None, None) => user_id(&w, u)?,
                (None, p, g) => {
                    let source = source(&mut w, p.as_deref(), g.as_deref(), "token")?;
                    w.add_bot(source, t.access_level.unwrap_or(MAINTAINER))
                }
                _ => {
                    return Err(SeedError::Invalid(format!(
                        "token {:?} must name one of user, project or group",
                        t.name
                    )))
                }
            };
            let expires = t.expires_at.or(t.expires_in_days.map(|d| now.date_naive() + Duration::days(d)));
            let id =
                w.insert_token(user, &t.name, t.description.clone(), t.scopes.clone(), expires, None, t.secret.clone());
            if let Some(token) = w.tokens.get_mut(&id) {
                token.revoked = t.revoked;
                token.created_at = now - Duration::days(300);
            }
            by_name.insert(t.name.clone(), id);
        }
        for v in &self.variables {
            let owner = source(&mut w, v.project.as_deref(), v.group.as_deref(), "variable")?;
            let value = match (&v.value, &v.token) {
                (_, Some(name)) => by_name
                    .get(name)
                    .and_then(|id| w.tokens.get(id))
                    .map(|t| t.secret.clone())
                    .ok_or_else(|| SeedError::Invalid(format!("variable {} names unknown token {name:?}", v.key)))?,
                (Some(value), None) => value.clone(),
                (None, None) => return Err(SeedError::Invalid(format!("variable {} needs a value or a token", v.key))),
            };
            w.variables.push(Variable {
                owner,
                key: v.key.clone(),
                value,
                variable_type: "env_var".into(),
                protected: v.protected,
                masked: v.masked || v.hidden,
                hidden: v.hidden,
                raw: v.raw,
                environment_scope: v.environment_scope.clone(),
                description: v.description.clone(),
            });
        }
        for p in &self.pipelines {
            let project = w
                .project_by_path(&p.project)
                .map(|x| (x.id, x.ci_uses.clone()))
                .ok_or_else(|| SeedError::Invalid(format!("pipeline names unknown project {:?}", p.project)))?;
            let iid = w.pipelines.values().filter(|x| x.project == project.0).count() as Id + 1;
            if let Some(x) = w.projects.get_mut(&project.0) {
                x.refs.insert(p.ref_.clone());
            }
            let (id, sha) = (w.next_id(), w.new_sha());
            let at = now - Duration::hours(1);
            w.pipelines.insert(
                id,
                Pipeline {
                    id,
                    iid,
                    project: project.0,
                    status: p.status.clone(),
                    source: p.source.clone(),
                    ref_: p.ref_.clone(),
                    sha,
                    name: p.name.clone(),
                    created_at: at,
                    updated_at: at,
                    started_at: Some(at),
                    finished_at: Some(at),
                    uses: p.uses.clone().unwrap_or(project.1),
                    environment: p.environment.clone(),
                    pending_outcome: None,
                    retries: 0,
                },
            );
        }
        Ok(w)
    }

    /// The demo: the runbook's story. A service account whose token expires in a few days while
    /// its pipeline fails, a healthy project token, and a group token that already expired and
    /// broke a pipeline.
    pub fn demo() -> Seed {
        let token = |name: &str, days: i64| SeedToken {
            name: name.into(),
            scopes: vec!["api".into()],
            expires_in_days: Some(days),
            ..Default::default()
        };
        let variable = |project: Option<&str>, group: Option<&str>, key: &str, token: &str| SeedVariable {
            project: project.map(Into::into),
            group: group.map(Into::into),
            key: key.into(),
            token: Some(token.into()),
            environment_scope: "*".into(),
            masked: true,
            hidden: true,
            protected: true,
            ..Default::default()
        };
        let pipeline = |project: &str, status: &str| SeedPipeline {
            project: project.into(),
            ref_: "main".into(),
            status: status.into(),
            source: "schedule".into(),
            ..Default::default()
        };
        Seed {
            users: vec![
                SeedUser {
                    username: "root".into(),
                    name: Some("Administrator".into()),
                    admin: true,
                    ..Default::default()
                },
                SeedUser {
                    username: "svc-inventory".into(),
                    name: Some("GitLab Security Service - Inventory".into()),
                    service_account_of: Some("security".into()),
                    ..Default::default()
                },
            ],
            groups: vec!["security".into()],
            projects: vec![
                SeedProject {
                    path: "security/inventory-builder".into(),
                    ci_uses: vec!["INVENTORY_API_TOKEN".into()],
                    ..Default::default()
                },
                SeedProject {
                    path: "security/scanner".into(),
                    ci_uses: vec!["SCANNER_TOKEN".into()],
                    ..Default::default()
                },
                SeedProject {
                    path: "security/reports".into(),
                    ci_uses: vec!["SECURITY_GROUP_TOKEN".into()],
                    ..Default::default()
                },
                // For `patrol discover`: a copy of the scanner's project token, and a stale copy
                // of a revoked token.
                SeedProject {
                    path: "security/dashboard".into(),
                    ci_uses: vec!["SCANNER_TOKEN".into(), "DEPLOY_TOKEN".into()],
                    ..Default::default()
                },
            ],
            tokens: vec![
                SeedToken {
                    user: Some("root".into()),
                    secret: Some(DEMO_ADMIN_SECRET.into()),
                    ..token("patrol admin", 200)
                },
                SeedToken {
                    user: Some("svc-inventory".into()),
                    ..token("GitLab Security Service - Architecture - Inventory", 5)
                },
                SeedToken { project: Some("security/scanner".into()), ..token("scanner-ci", 200) },
                SeedToken {
                    group: Some("security".into()),
                    access_level: Some(OWNER),
                    ..token("security-reports", -2)
                },
                SeedToken { user: Some("root".into()), revoked: true, ..token("dashboard-deploy", 100) },
            ],
            variables: vec![
                variable(
                    Some("security/inventory-builder"),
                    None,
                    "INVENTORY_API_TOKEN",
                    "GitLab Security Service - Architecture - Inventory",
                ),
                SeedVariable {
                    hidden: false,
                    ..variable(Some("security/scanner"), None, "SCANNER_TOKEN", "scanner-ci")
                },
                variable(None, Some("security"), "SECURITY_GROUP_TOKEN", "security-reports"),
                SeedVariable {
                    hidden: false,
                    protected: false,
                    ..variable(Some("security/dashboard"), None, "SCANNER_TOKEN", "scanner-ci")
                },
                SeedVariable {
                    hidden: false,
                    ..variable(Some("security/dashboard"), None, "DEPLOY_TOKEN", "dashboard-deploy")
                },
            ],
            pipelines: vec![
                pipeline("security/inventory-builder", "failed"),
                pipeline("security/scanner", "success"),
                pipeline("security/reports", "failed"),
            ],
            ..Default::default()
        }
    }
}

/// The demo admin's credential: a fixed value so the simulator's instructions can name it.
pub const DEMO_ADMIN_SECRET: &str = "glpat-PatrolSimulatorAdmin";

fn user_id(w: &World, username: &str) -> Result<Id, SeedError> {
    w.user_by_username(username).map(|u| u.id).ok_or_else(|| SeedError::Invalid(format!("unknown user {username:?}")))
}

fn source(w: &mut World, project: Option<&str>, group: Option<&str>, what: &str) -> Result<Source, SeedError> {
    match (project, group) {
        (Some(p), None) => Ok(Source::Project(w.ensure_project(p))),
        (None, Some(g)) => Ok(Source::Group(w.ensure_group(g))),
        _ => Err(SeedError::Invalid(format!("a {what} needs exactly one of project or group"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_seed_tells_the_runbook_story() {
        let w = Seed::demo().build().unwrap_or_else(|e| panic!("{e}"));
        let today = w.today();
        let expired: Vec<_> = w.tokens.values().filter(|t| t.expired(today)).map(|t| t.name.as_str()).collect();
        assert_eq!(expired, vec!["security-reports"]);
        let failing = w.pipelines.values().filter(|p| p.status == "failed").count();
        assert_eq!(failing, 2);
        assert!(w.token_by_secret(DEMO_ADMIN_SECRET).is_some());
    }

    #[test]
    fn seed_files_reject_unknown_keys() {
        let parsed: Result<Seed, _> = toml::from_str("[[users]]\nusername = \"a\"\nadmn = true\n");
        assert!(parsed.is_err());
    }
}
