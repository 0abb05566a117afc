//! One small function per GitLab endpoint patrol uses (gitlab-api.md sections cited).

use super::model::{ApiIssue, ApiNamed, ApiPipeline, ApiToken, ApiUser, ApiVariable, IssuedToken};
use super::{encode, Client, GitlabError};
use crate::config::Holder;
use crate::secret::Secret;
use chrono::NaiveDate;
use reqwest::Method;
use serde_json::{json, Value};

/// Where a token lives in GitLab's API, once names are resolved to what the paths need.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenHome {
    /// `/personal_access_tokens?user_id=` (§1).
    Personal { user_id: u64 },
    /// `/groups/:id/service_accounts/:user_id/personal_access_tokens` (§1.8).
    ServiceAccount { group: String, user_id: u64 },
    /// `/projects/:id/access_tokens` (§2).
    Project(String),
    /// `/groups/:id/access_tokens` (§2).
    Group(String),
}

impl TokenHome {
    fn list_path(&self) -> String {
        match self {
            TokenHome::Personal { .. } => "/personal_access_tokens".into(),
            TokenHome::ServiceAccount { group, user_id } => {
                format!("/groups/{}/service_accounts/{user_id}/personal_access_tokens", encode(group))
            }
            TokenHome::Project(p) => format!("/projects/{}/access_tokens", encode(p)),
            TokenHome::Group(g) => format!("/groups/{}/access_tokens", encode(g)),
        }
    }

    fn create_path(&self) -> String {
        match self {
            TokenHome::Personal { user_id } => format!("/users/{user_id}/personal_access_tokens"),
            other => other.list_path(),
        }
    }
}

/// What a self-rotating token belongs to, which picks its `self/rotate` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelfResource {
    /// A personal or service-account token.
    User,
    /// A project access token, by project id (its bot user is `project_<id>_bot_…`, §2).
    Project(u64),
    /// A group access token, by group id.
    Group(u64),
}

impl SelfResource {
    /// From the username of the token's user (§2 "Bot user").
    pub fn of_username(username: &str) -> SelfResource {
        let id = |prefix: &str| username.strip_prefix(prefix)?.split_once("_bot")?.0.parse::<u64>().ok();
        match (id("project_"), id("group_")) {
            (Some(p), _) => SelfResource::Project(p),
            (_, Some(g)) => SelfResource::Group(g),
            _ => SelfResource::User,
        }
    }

    /// The token kind as the report names it.
    pub fn kind(&self) -> &'static str {
        match self {
            SelfResource::User => "personal",
            SelfResource::Project(_) => "project",
            SelfResource::Group(_) => "group",
        }
    }
}

fn holder_path(holder: &Holder) -> String {
    match holder {
        Holder::Project(p) => format!("/projects/{}/variables", encode(p)),
        Holder::Group(g) => format!("/groups/{}/variables", encode(g)),
    }
}

const FILTER: &str = "filter[environment_scope]";

impl Client {
    /// `GET /user`: who the credential is (and whether it is an admin).
    pub async fn current_user(&self) -> Result<ApiUser, GitlabError> {
        self.json(None, Method::GET, "/user", &[], None).await
    }

    /// `GET /users?username=`.
    pub async fn user_by_username(&self, username: &str) -> Result<Option<ApiUser>, GitlabError> {
        let users: Vec<ApiUser> = self.all("/users", &[("username", username.into())]).await?;
        Ok(users.into_iter().find(|u| u.username.eq_ignore_ascii_case(username)))
    }

    /// `GET /users/:id`.
    pub async fn user(&self, id: u64) -> Result<ApiUser, GitlabError> {
        self.json(None, Method::GET, &format!("/users/{id}"), &[], None).await
    }

    pub async fn project(&self, id_or_path: &str) -> Result<ApiNamed, GitlabError> {
        self.json(None, Method::GET, &format!("/projects/{}", encode(id_or_path)), &[], None).await
    }

    pub async fn group(&self, id_or_path: &str) -> Result<ApiNamed, GitlabError> {
        self.json(None, Method::GET, &format!("/groups/{}", encode(id_or_path)), &[], None).await
    }

    /// `GET /groups/:id/descendant_groups`.
    pub async fn descendant_groups(&self, group: &str) -> Result<Vec<ApiNamed>, GitlabError> {
        self.all(&format!("/groups/{}/descendant_groups", encode(group)), &[]).await
    }

    /// `GET /groups/:id/projects?include_subgroups=true`.
    pub async fn group_projects(&self, group: &str) -> Result<Vec<ApiNamed>, GitlabError> {
        self.all(&format!("/groups/{}/projects", encode(group)), &[("include_subgroups", "true".into())]).await
    }

    /// `GET /projects` (§16): every project the credential sees, or with `min_access_level`
    /// those where its membership has at least that role.
    pub async fn all_projects(&self, min_access_level: Option<u8>) -> Result<Vec<ApiNamed>, GitlabError> {
        let query: Vec<(&str, String)> =
            min_access_level.map(|l| ("min_access_level", l.to_string())).into_iter().collect();
        self.all("/projects", &query).await
    }

    /// `GET /groups` (§16), as [`Client::all_projects`].
    pub async fn all_groups(&self, min_access_level: Option<u8>) -> Result<Vec<ApiNamed>, GitlabError> {
        let query: Vec<(&str, String)> =
            min_access_level.map(|l| ("min_access_level", l.to_string())).into_iter().collect();
        self.all("/groups", &query).await
    }

    /// `GET /projects/:id/variables` or `GET /groups/:id/variables` (§3.1, §3.2): every variable
    /// in every environment scope, every page (100 a page).
    pub async fn variables(&self, holder: &Holder) -> Result<Vec<ApiVariable>, GitlabError> {
        self.all(&holder_path(holder), &[]).await
    }

    /// The token information API, `POST /admin/token` (§14): whose token `value` is, revoked and
    /// expired ones included, without authenticating as it. Administrators only; 404 where the
    /// feature is off or for an unknown value, 422 for a value it does not take.
    pub async fn token_info(&self, value: &Secret) -> Result<ApiToken, GitlabError> {
        let body = json!({ "token": value.expose() });
        self.json(None, Method::POST, "/admin/token", &[], Some(&body)).await
    }

    /// `GET /groups/:id/service_accounts` (§1.8).
    pub async fn service_accounts(&self, group: &str) -> Result<Vec<ApiUser>, GitlabError> {
        self.all(&format!("/groups/{}/service_accounts", encode(group)), &[]).await
    }

    /// `GET /personal_access_tokens/self`, authenticated with `secret` (§1.3): what that secret is.
    pub async fn token_self(&self, secret: &Secret) -> Result<ApiToken, GitlabError> {
        self.json(Some(secret), Method::GET, "/personal_access_tokens/self", &[], None).await
    }

    /// Lists tokens of a home with GitLab's filters (§1.2, §10), every page.
    pub async fn list_tokens(
        &self,
        home: &TokenHome,
        filters: &[(&str, String)],
    ) -> Result<Vec<ApiToken>, GitlabError> {
        let mut query = filters.to_vec();
        if let TokenHome::Personal { user_id } = home {
            query.push(("user_id", user_id.to_string()));
        }
        self.all(&home.list_path(), &query).await
    }

    /// Every personal access token the credential can see (all of them for an admin).
    /// `GET /personal_access_tokens` with `filters`, every page handed to `sink` as it arrives.
    pub async fn each_personal_token_page(
        &self,
        filters: &[(&str, String)],
        sink: impl FnMut(Vec<ApiToken>) -> bool,
    ) -> Result<(), GitlabError> {
        self.each_page("/personal_access_tokens", filters, sink).await
    }

    /// Rotates a token (§1.4, §2, §1.8). Sent once: never retried, whatever happens.
    pub async fn rotate(&self, home: &TokenHome, id: u64, expires_at: NaiveDate) -> Result<IssuedToken, GitlabError> {
        let path = match home {
            TokenHome::Personal { .. } => format!("/personal_access_tokens/{id}/rotate"),
            other => format!("{}/{id}/rotate", other.list_path()),
        };
        let body = json!({ "expires_at": expires_at.to_string() });
        self.json(None, Method::POST, &path, &[], Some(&body)).await
    }

    /// Rotates the credential itself (§1.4 `self/rotate`, §2 `token_id=self`): a personal or
    /// service-account token through `/personal_access_tokens/self/rotate`, a project or group
    /// token through its resource. Sent once: never retried, whatever happens.
    pub async fn rotate_self(
        &self,
        resource: &SelfResource,
        expires_at: NaiveDate,
    ) -> Result<IssuedToken, GitlabError> {
        let path = match resource {
            SelfResource::User => "/personal_access_tokens/self/rotate".to_owned(),
            SelfResource::Project(id) => format!("/projects/{id}/access_tokens/self/rotate"),
            SelfResource::Group(id) => format!("/groups/{id}/access_tokens/self/rotate"),
        };
        let body = json!({ "expires_at": expires_at.to_string() });
        self.json(None, Method::POST, &path, &[], Some(&body)).await
    }

    /// Revokes the credential itself (§1.6 `DELETE /personal_access_tokens/self`).
    pub async fn revoke_self(&self) -> Result<(), GitlabError> {
        self.request(None, Method::DELETE, "/personal_access_tokens/self", &[], None).await.map(|_| ())
    }

    /// Creates a token (§1.7, §1.8, §2). Sent once: never retried.
    pub async fn create_token(
        &self,
        home: &TokenHome,
        name: &str,
        scopes: &[String],
        access_level: Option<u16>,
        expires_at: NaiveDate,
        description: Option<&str>,
    ) -> Result<IssuedToken, GitlabError> {
        let mut body = json!({ "name": name, "scopes": scopes, "expires_at": expires_at.to_string() });
        if let Some(d) = description {
            body["description"] = json!(d);
        }
        if let Some(level) = access_level {
            body["access_level"] = json!(level);
        }
        self.json(None, Method::POST, &home.create_path(), &[], Some(&body)).await
    }

    /// Revokes a token; an already revoked one also answers 204 (§10).
    pub async fn revoke(&self, home: &TokenHome, id: u64) -> Result<(), GitlabError> {
        let path = match home {
            TokenHome::Personal { .. } => format!("/personal_access_tokens/{id}"),
            other => format!("{}/{id}", other.list_path()),
        };
        self.request(None, Method::DELETE, &path, &[], None).await.map(|_| ())
    }

    /// `GET …/variables/:key?filter[environment_scope]=` (§3.1); `None` when it does not exist.
    pub async fn variable(&self, holder: &Holder, key: &str, scope: &str) -> Result<Option<ApiVariable>, GitlabError> {
        let path = format!("{}/{}", holder_path(holder), encode(key));
        match self.json(None, Method::GET, &path, &[(FILTER, scope.into())], None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Partial `PUT` of a variable in one environment scope (§3.1): only what `body` names changes.
    ///
    /// Call it only for a variable seen in that scope: a group variable's `PUT` whose filter names
    /// a scope that does not exist updates the key in another scope (§11). The answer is the
    /// stored variable, so a `PUT` that landed elsewhere all the same is an `Unexpected` error.
    async fn update_variable(
        &self,
        holder: &Holder,
        key: &str,
        scope: &str,
        body: &Value,
    ) -> Result<ApiVariable, GitlabError> {
        let path = format!("{}/{}", holder_path(holder), encode(key));
        let stored: ApiVariable = self.json(None, Method::PUT, &path, &[(FILTER, scope.into())], Some(body)).await?;
        if stored.key != key || stored.environment_scope != scope {
            return Err(GitlabError::Unexpected {
                method: "PUT".into(),
                path,
                detail: format!(
                    "asked to update {key} in environment scope {scope:?}, GitLab updated {} in scope {:?}; check that variable's value in GitLab",
                    stored.key, stored.environment_scope
                ),
            });
        }
        Ok(stored)
    }

    /// Stores `value` in an existing variable in one scope, with `description`: a partial `PUT`
    /// that leaves masked, hidden, protected, raw and the scope as they are (§3.1). The answer is
    /// the variable as stored (its value too, unless hidden): it is what a read-back would show.
    pub async fn store_in_variable(
        &self,
        holder: &Holder,
        key: &str,
        scope: &str,
        value: &Secret,
        description: &str,
    ) -> Result<ApiVariable, GitlabError> {
        let body = json!({ "value": value.expose(), "description": description });
        self.update_variable(holder, key, scope, &body).await
    }

    /// Changes only a variable's description (§3.1).
    pub async fn describe_variable(
        &self,
        holder: &Holder,
        key: &str,
        scope: &str,
        description: &str,
    ) -> Result<(), GitlabError> {
        self.update_variable(holder, key, scope, &json!({ "description": description })).await.map(|_| ())
    }

    /// Creates a variable holding a secret: masked and hidden (`masked_and_hidden`, only on
    /// create, §3.1) and raw, so the value is never expanded.
    pub async fn create_secret_variable(
        &self,
        target: &crate::config::VariableTarget,
        value: &Secret,
        description: &str,
    ) -> Result<(), GitlabError> {
        let body = json!({
            "key": target.key,
            "value": value.expose(),
            "masked_and_hidden": true,
            "protected": target.protected,
            "raw": true,
            "environment_scope": target.environment_scope,
            "description": description,
        });
        self.create_variable(&target.holder, &body).await
    }

    /// Creates a variable whose value is no secret (patrol's locks): in every environment scope,
    /// not masked, not protected, raw. A key that exists already is refused (`already_taken`).
    pub async fn create_plain_variable(
        &self,
        holder: &Holder,
        key: &str,
        value: &str,
        description: &str,
    ) -> Result<(), GitlabError> {
        let body = json!({
            "key": key,
            "value": value,
            "description": description,
            "protected": false,
            "masked": false,
            "raw": true,
            "environment_scope": "*",
        });
        self.create_variable(holder, &body).await
    }

    /// Replaces the value of such a variable (`PUT` never creates: a deleted one stays deleted).
    pub async fn set_plain_variable(&self, holder: &Holder, key: &str, value: &str) -> Result<(), GitlabError> {
        self.update_variable(holder, key, "*", &json!({ "value": value })).await.map(|_| ())
    }

    /// `POST …/variables` (§3.1). Not retried here: the caller re-checks on a lost answer. A
    /// variable GitLab stored in another environment scope than asked (a group's on a tier
    /// without scoped group variables drops the scope, §11) is an `Unexpected` error.
    async fn create_variable(&self, holder: &Holder, body: &Value) -> Result<(), GitlabError> {
        let path = holder_path(holder);
        let stored: ApiVariable = self.json(None, Method::POST, &path, &[], Some(body)).await?;
        let asked = body.get("environment_scope").and_then(Value::as_str).unwrap_or("*");
        if stored.environment_scope != asked {
            return Err(GitlabError::Unexpected {
                method: "POST".into(),
                path,
                detail: format!(
                    "asked to create {} in environment scope {asked:?}, GitLab stored it in scope {:?} (a group without scoped variables, as on GitLab Free, drops the scope); use environment_scope = \"*\" for it in the config",
                    stored.key, stored.environment_scope
                ),
            });
        }
        Ok(())
    }

    /// `DELETE …/variables/:key?filter[environment_scope]=` → 204 (§3.1), sent once: a lost answer
    /// is not followed by a second `DELETE`, whose first could land later and delete a variable
    /// created in between (patrol's locks, the only variables patrol deletes).
    pub async fn delete_variable_once(&self, holder: &Holder, key: &str, scope: &str) -> Result<(), GitlabError> {
        let path = format!("{}/{}", holder_path(holder), encode(key));
        self.request_with(None, Method::DELETE, &path, &[(FILTER, scope.into())], None, false).await.map(|_| ())
    }

    /// The most recent pipeline on `reference` (§4: default order is by id, descending).
    pub async fn latest_pipeline(&self, project: &str, reference: &str) -> Result<Option<ApiPipeline>, GitlabError> {
        let path = format!("/projects/{}/pipelines", encode(project));
        let query = [
            ("ref", reference.to_owned()),
            ("per_page", "1".into()),
            ("order_by", "id".into()),
            ("sort", "desc".into()),
        ];
        let list: Vec<ApiPipeline> = self.json(None, Method::GET, &path, &query, None).await?;
        Ok(list.into_iter().next())
    }

    pub async fn pipeline(&self, project: &str, id: u64) -> Result<ApiPipeline, GitlabError> {
        self.json(None, Method::GET, &format!("/projects/{}/pipelines/{id}", encode(project)), &[], None).await
    }

    /// `POST …/pipelines/:id/retry` → 201 (§4).
    pub async fn retry_pipeline(&self, project: &str, id: u64) -> Result<ApiPipeline, GitlabError> {
        let path = format!("/projects/{}/pipelines/{id}/retry", encode(project));
        self.json(None, Method::POST, &path, &[], None).await
    }

    /// The open issues of a project carrying every one of `labels` (§15).
    pub async fn open_issues(&self, project: &str, labels: &[String]) -> Result<Vec<ApiIssue>, GitlabError> {
        let path = format!("/projects/{}/issues", encode(project));
        self.all(&path, &[("state", "opened".into()), ("labels", labels.join(","))]).await
    }

    /// `POST /projects/:id/issues` → 201 (§15). Not retried: a lost answer is found by title on
    /// the next run, so at worst one duplicate issue.
    pub async fn create_issue(
        &self,
        project: &str,
        title: &str,
        description: &str,
        labels: &[String],
    ) -> Result<ApiIssue, GitlabError> {
        let path = format!("/projects/{}/issues", encode(project));
        let body = json!({ "title": title, "description": description, "labels": labels.join(",") });
        self.json(None, Method::POST, &path, &[], Some(&body)).await
    }

    /// `POST /projects/:id/issues/:iid/notes` → 201 (§15).
    pub async fn comment_issue(&self, project: &str, iid: u64, body: &str) -> Result<(), GitlabError> {
        let path = format!("/projects/{}/issues/{iid}/notes", encode(project));
        self.request(None, Method::POST, &path, &[], Some(&json!({ "body": body }))).await.map(|_| ())
    }

    /// `PUT /projects/:id/issues/:iid` with `state_event=close` → 200 (§15).
    pub async fn close_issue(&self, project: &str, iid: u64) -> Result<(), GitlabError> {
        let path = format!("/projects/{}/issues/{iid}", encode(project));
        self.request(None, Method::PUT, &path, &[], Some(&json!({ "state_event": "close" }))).await.map(|_| ())
    }

    /// `POST /projects/:id/pipeline` → 201 (§4).
    pub async fn create_pipeline(&self, project: &str, reference: &str) -> Result<ApiPipeline, GitlabError> {
        let path = format!("/projects/{}/pipeline", encode(project));
        self.json(None, Method::POST, &path, &[], Some(&json!({ "ref": reference }))).await
    }
}
