//! `patrol discover`: where each token is stored. It walks the projects and groups the
//! credential can read, lists their CI/CD variables in every environment scope, learns whose
//! token each token-shaped value is (the token information API, else the value's own
//! `GET /personal_access_tokens/self`, gitlab-api.md §14), and joins that with the inventory of
//! active tokens `audit` lists: each token → the variables that hold it, each variable → what it
//! holds, and the findings a person acts on. `config_out` writes a patrol.toml from the map.
//!
//! Values are secrets: they stay in [`Secret`]s, are keyed by a SHA-256 digest, and only their
//! ids, names and dates reach the report.

pub mod config_out;
pub mod output;

use crate::config::{Config, Holder, TokenKind};
use crate::engine::audit::ManagedIndex;
use crate::engine::{marker, pending_marker};
use crate::gitlab::model::{ApiNamed, ApiToken, ApiUser, ApiVariable};
use crate::gitlab::{Client, GitlabError, TokenHome};
use crate::secret::{Secret, TOKEN_PREFIXES};
use chrono::NaiveDate;
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What to walk and how to judge it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only these groups (their subgroups and projects); with `projects` empty and this empty,
    /// everything the credential can read.
    pub groups: Vec<String>,
    pub projects: Vec<String>,
    /// Prefixes of access tokens besides `glpat-` (an instance's custom prefix).
    pub prefixes: Vec<String>,
    /// "Expiring soon": within this many days.
    pub within_days: u32,
    pub today: NaiveDate,
    /// Walks and identifications at once (the client bounds requests in flight).
    pub concurrency: usize,
    /// Counts on stderr every few seconds while walking.
    pub progress: bool,
}

/// A CI/CD variable, as the map and the findings name it (never its value).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct VariableRef {
    /// `project` or `group`.
    pub holder: &'static str,
    pub path: String,
    pub key: String,
    pub environment_scope: String,
    pub masked: bool,
    pub hidden: bool,
    pub protected: bool,
}

impl VariableRef {
    fn of(holder: &Holder, v: &ApiVariable) -> VariableRef {
        VariableRef {
            holder: holder.scope(),
            path: holder.path().to_owned(),
            key: v.key.clone(),
            environment_scope: v.environment_scope.clone(),
            masked: v.masked,
            hidden: v.hidden,
            protected: v.protected,
        }
    }

    /// `project security/app DEPLOY_TOKEN [*]`, as patrol's other reports name a variable.
    pub fn label(&self) -> String {
        format!("{} {} {} [{}]", self.holder, self.path, self.key, self.environment_scope)
    }
}

/// What a variable holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Holds {
    /// An active token.
    Active,
    /// A revoked or expired token, or a value that no longer authenticates: its pipelines fail
    /// or will.
    Stale,
    /// Hidden, not identified, or not an access token.
    Unknown,
}

/// How a variable's token was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// Its value, identified by GitLab.
    Value,
    /// patrol's marker in a hidden variable's description.
    Marker,
}

#[derive(Debug, Clone, Serialize)]
pub struct VariableEntry {
    #[serde(flatten)]
    pub variable: VariableRef,
    pub holds: Holds,
    pub token_id: Option<u64>,
    pub evidence: Option<Evidence>,
    /// Why, in words: "revoked", "hidden, no marker", …
    pub detail: String,
}

/// The state of a token, as GitLab gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Active,
    Expired,
    Revoked,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenEntry {
    pub token_id: u64,
    pub name: String,
    /// `None` when discover could not learn whose it is.
    pub kind: Option<TokenKind>,
    /// The username (personal, service account) or the full path (project, group).
    pub owner: Option<String>,
    /// A service account's top-level group, when found.
    pub group: Option<String>,
    pub state: State,
    pub expires_at: Option<NaiveDate>,
    pub days_left: Option<i64>,
    pub scopes: Vec<String>,
    /// The config's id for it, when `--config` manages it.
    pub managed: Option<String>,
    /// Every variable that holds it, by value or by patrol's marker.
    pub variables: Vec<VariableRef>,
    /// Why its owner is unknown, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_unknown: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A variable holds a revoked or expired token.
    StaleCopy,
    /// One token in several variables.
    SeveralPlaces,
    /// An active token expiring within the window that no variable holds: used outside CI.
    ExpiringUnheld,
    /// A project's bot token in another project's variable.
    ForeignBot,
    /// A token without an expiry date.
    NoExpiry,
}

impl FindingKind {
    pub fn title(self) -> &'static str {
        match self {
            FindingKind::StaleCopy => "stale copy",
            FindingKind::SeveralPlaces => "stored in several places",
            FindingKind::ExpiringUnheld => "expiring, held by no variable",
            FindingKind::ForeignBot => "another project's bot token",
            FindingKind::NoExpiry => "no expiry",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub token_id: Option<u64>,
    pub variables: Vec<VariableRef>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    pub holder: &'static str,
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Walked {
    pub projects: usize,
    pub groups: usize,
    pub variables: usize,
    /// Distinct token-shaped values (each identified with at most one request, §14).
    pub distinct_values: usize,
    pub unreadable: Vec<Unreadable>,
}

/// How values were identified.
#[derive(Debug, Clone, Serialize)]
pub struct Identification {
    /// Whether the token information API (`POST /admin/token`) answered.
    pub token_info_api: bool,
    /// Why not, when it did not.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub gitlab_url: String,
    pub today: NaiveDate,
    pub within_days: u32,
    pub walked: Walked,
    pub identification: Identification,
    pub tokens: Vec<TokenEntry>,
    pub variables: Vec<VariableEntry>,
    pub findings: Vec<Finding>,
}

/// The report and what writing a config needs besides it.
pub struct Discovery {
    pub report: Report,
    /// Each walked project's default branch (`None`: an empty repository).
    pub default_branches: HashMap<String, Option<String>>,
}

/// What a token-shaped value is, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A personal, project, group or service-account token: identifiable.
    Access,
    /// Another kind of GitLab secret, named.
    Other(&'static str),
}

/// What each documented prefix is (GitLab's "Token prefixes", as in `secret::TOKEN_PREFIXES`).
fn prefix_kind(prefix: &str) -> &'static str {
    match prefix {
        "gloas-" => "an OAuth application secret",
        "gldt-" => "a deploy token",
        "glrt-" | "glrtr-" => "a runner authentication token",
        "glcbt-" => "a CI/CD job token",
        "glptt-" => "a pipeline trigger token",
        "glft-" => "a feed token",
        "glimt-" => "an incoming email token",
        "glagent-" => "an agent for Kubernetes token",
        "glsoat-" => "a SCIM token",
        "glffct-" => "a feature flags client token",
        "glwt-" => "a workspace token",
        "gltst-" => "a GitLab test token",
        "GR1348941" => "a runner registration token",
        "_gitlab_session=" => "a session cookie",
        _ => "a GitLab secret",
    }
}

/// Whether a value looks like a GitLab token: one word starting with a documented prefix (after
/// an instance-wide prefix ending in `-`, as GitLab 18 allows), or with a custom one, and at
/// least 8 token characters after it.
fn shape(value: &str, custom: &[String]) -> Option<Shape> {
    let v = value.trim();
    if v.is_empty() || v.chars().any(char::is_whitespace) {
        return None;
    }
    let long_after = |p: &str, at: usize| v.len() >= at + p.len() + 8;
    if custom.iter().any(|p| !p.is_empty() && v.starts_with(p.as_str()) && long_after(p, 0)) {
        return Some(Shape::Access);
    }
    for p in TOKEN_PREFIXES {
        let at = if v.starts_with(p) { Some(0) } else { v.find(&format!("-{p}")).map(|i| i + 1) };
        if at.is_some_and(|at| long_after(p, at)) {
            return Some(if *p == "glpat-" { Shape::Access } else { Shape::Other(prefix_kind(p)) });
        }
    }
    None
}

/// The token a value holds: the whole value when it is token-shaped, else the first
/// token-shaped word inside it (`Bearer glpat-…`, `https://oauth2:glpat-…@host/…`), marked as
/// inside a longer value.
fn token_of(value: &str, custom: &[String]) -> Option<(String, Shape, bool)> {
    let v = value.trim();
    if let Some(s) = shape(v, custom) {
        return Some((v.to_owned(), s, false));
    }
    v.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .find_map(|w| shape(w, custom).map(|s| (w.to_owned(), s, true)))
}

/// A value's key in maps: a digest, so that no map holds secrets as plain strings.
type Digest = [u8; 32];

fn digest(value: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, value.trim().as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// What identifying one value found.
#[derive(Debug, Clone)]
enum Ident {
    Token(ApiToken),
    /// It does not authenticate (revoked, expired, or not a token of this instance): only the
    /// value's own `self` was asked.
    Dead,
    /// The token information API does not know it.
    Unknown,
    /// The request failed; why.
    Failed(String),
}

/// The counts the progress line shows.
#[derive(Default)]
struct Counts {
    holders: AtomicUsize,
    holders_total: AtomicUsize,
    variables: AtomicUsize,
    identified: AtomicUsize,
    values: AtomicUsize,
}

/// Prints the counts on stderr every 2 s until dropped.
struct Ticker(Option<tokio::task::JoinHandle<()>>);

impl Ticker {
    fn start(on: bool, counts: Arc<Counts>) -> Ticker {
        if !on {
            return Ticker(None);
        }
        Ticker(Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            tick.tick().await;
            loop {
                tick.tick().await;
                let c = |a: &AtomicUsize| a.load(Ordering::Relaxed);
                eprintln!(
                    "patrol discover: {}/{} projects and groups walked, {} variables; {}/{} values identified",
                    c(&counts.holders),
                    c(&counts.holders_total),
                    c(&counts.variables),
                    c(&counts.identified),
                    c(&counts.values)
                );
            }
        })))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// Who patrol's credential is, as the preflight learned it.
pub struct Credential {
    pub token: ApiToken,
    pub admin: bool,
}

/// A failure that stops the walk.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct DiscoverError {
    pub what: String,
    #[source]
    pub source: GitlabError,
}

fn failed(what: impl Into<String>) -> impl FnOnce(GitlabError) -> DiscoverError {
    let what = what.into();
    move |source| DiscoverError { what, source }
}

/// Whether an error only means "not for this credential" (no role, or not there).
fn not_for_us(e: &GitlabError) -> bool {
    matches!(e.status(), Some(401 | 403 | 404))
}

pub async fn discover(
    client: &Client,
    me: &Credential,
    config: Option<&Config>,
    options: &Options,
) -> Result<Discovery, DiscoverError> {
    let counts = Arc::new(Counts::default());
    let _ticker = Ticker::start(options.progress, counts.clone());
    let scoped = !options.groups.is_empty() || !options.projects.is_empty();

    // 1. What to walk.
    let (projects, groups) = what_to_walk(client, me, options).await?;
    let default_branches: HashMap<String, Option<String>> =
        projects.iter().map(|p| (p.full_path.clone(), p.default_branch.clone())).collect();
    let project_paths: HashMap<u64, String> = projects.iter().map(|p| (p.id, p.full_path.clone())).collect();
    let group_paths: HashMap<u64, String> = groups.iter().map(|g| (g.id, g.full_path.clone())).collect();
    let holders: Vec<Holder> = groups
        .iter()
        .map(|g| Holder::Group(g.full_path.clone()))
        .chain(projects.iter().map(|p| Holder::Project(p.full_path.clone())))
        .collect();
    counts.holders_total.store(holders.len(), Ordering::Relaxed);

    // 2. Every variable, and the active tokens of each walked project and group, at once.
    let mut walked = Walked { projects: projects.len(), groups: groups.len(), ..Walked::default() };
    let mut found: Vec<(Holder, ApiVariable)> = Vec::new();
    let mut inventory: BTreeMap<u64, (ApiToken, Option<(TokenKind, String)>)> = BTreeMap::new();
    let mut listings = futures::stream::iter(holders.iter().cloned())
        .map(|holder| {
            let counts = counts.clone();
            async move {
                let home = match &holder {
                    Holder::Project(p) => TokenHome::Project(p.clone()),
                    Holder::Group(g) => TokenHome::Group(g.clone()),
                };
                let active = [("state", "active".to_owned())];
                let (vars, tokens) = tokio::join!(client.variables(&holder), client.list_tokens(&home, &active));
                counts.holders.fetch_add(1, Ordering::Relaxed);
                if let Ok(v) = &vars {
                    counts.variables.fetch_add(v.len(), Ordering::Relaxed);
                }
                (holder, vars, tokens)
            }
        })
        .buffer_unordered(options.concurrency.max(1));
    while let Some((holder, vars, tokens)) = listings.next().await {
        match vars {
            Ok(vars) => found.extend(vars.into_iter().map(|v| (holder.clone(), v))),
            Err(e) if not_for_us(&e) => walked.unreadable.push(Unreadable {
                holder: holder.scope(),
                path: holder.path().to_owned(),
                reason: format!(
                    "GitLab answered {} to listing its variables: reading them needs {} and the `api` or `read_api` scope",
                    e.status().unwrap_or_default(),
                    if holder.scope() == "group" { "the Owner role" } else { "the Maintainer role" }
                ),
            }),
            Err(e) => return Err(failed(format!("listing the CI/CD variables of {} {}", holder.scope(), holder.path()))(e)),
        }
        match tokens {
            Ok(tokens) => {
                let kind = if holder.scope() == "group" { TokenKind::Group } else { TokenKind::Project };
                for t in tokens {
                    inventory.insert(t.id, (t, Some((kind, holder.path().to_owned()))));
                }
            }
            Err(e) if not_for_us(&e) => {
                tracing::debug!(holder = holder.path(), error = %e, "cannot list its access tokens")
            }
            Err(e) => {
                return Err(failed(format!("listing the access tokens of {} {}", holder.scope(), holder.path()))(e))
            }
        }
    }
    drop(listings);
    walked.variables = found.len();

    // Personal tokens (an administrator sees everyone's, service accounts' and bots' too), as
    // `audit` lists them; in a scoped walk, the service accounts of the top-level groups named.
    let mut resolver = Resolver::new(client, project_paths, group_paths);
    if !scoped {
        let mut personal = Vec::new();
        client
            .each_personal_token_page(&[("state", "active".into())], |page| {
                personal.extend(page);
                true
            })
            .await
            .map_err(failed("listing personal access tokens"))?;
        for t in personal {
            inventory.entry(t.id).or_insert((t, None));
        }
    } else {
        for group in options.groups.iter().filter(|g| !g.contains('/')) {
            let accounts = match client.service_accounts(group).await {
                Ok(a) => a,
                Err(e) if not_for_us(&e) => {
                    walked.unreadable.push(Unreadable {
                        holder: "group",
                        path: group.clone(),
                        reason: format!(
                            "GitLab answered {} to listing its service accounts: that needs the group's Owner role",
                            e.status().unwrap_or_default()
                        ),
                    });
                    continue;
                }
                Err(e) => return Err(failed(format!("listing the service accounts of group {group}"))(e)),
            };
            for account in accounts {
                resolver.service_accounts.insert(account.id, (account.username.clone(), group.clone()));
                let home = TokenHome::ServiceAccount { group: group.clone(), user_id: account.id };
                match client.list_tokens(&home, &[("state", "active".into())]).await {
                    Ok(tokens) => {
                        for t in tokens {
                            let owner = Some((TokenKind::ServiceAccount, account.username.clone()));
                            inventory.entry(t.id).or_insert((t, owner));
                        }
                    }
                    Err(e) if not_for_us(&e) => {}
                    Err(e) => {
                        return Err(failed(format!("listing the tokens of service account {}", account.username))(e))
                    }
                }
            }
        }
    }

    // 3. Identify each distinct token-shaped value once.
    let mut values: HashMap<Digest, (Secret, Shape)> = HashMap::new();
    for (_, v) in &found {
        if let Some(value) = &v.value {
            if let Some((token, s, _)) = token_of(value.expose(), &options.prefixes) {
                // Any error text, whichever request it answers, is redacted against every value.
                crate::secret::watch(&token);
                values.entry(digest(&token)).or_insert_with(|| (Secret::new(&token), s));
            }
        }
    }
    walked.distinct_values = values.len();
    counts.values.store(values.len(), Ordering::Relaxed);
    let access: Vec<(Digest, Secret)> =
        values.iter().filter(|(_, (_, s))| *s == Shape::Access).map(|(d, (v, _))| (*d, v.clone())).collect();
    let others = access.iter().any(|(_, v)| !v.same_as(client.credential().expose()));
    let identification = if others { token_info_api(client, me).await } else { not_needed() };
    let use_api = identification.token_info_api;
    let mut idents: HashMap<Digest, Ident> = HashMap::new();
    let mut identifying = futures::stream::iter(access)
        .map(|(d, value)| {
            let counts = counts.clone();
            async move {
                let ident = identify(client, me, &value, use_api).await;
                counts.identified.fetch_add(1, Ordering::Relaxed);
                (d, ident)
            }
        })
        .buffer_unordered(options.concurrency.max(1));
    while let Some((d, ident)) = identifying.next().await {
        idents.insert(d, ident);
    }
    drop(identifying);

    // 4. Whose each identified token is.
    let mut identified: BTreeMap<u64, ApiToken> = BTreeMap::new();
    for ident in idents.values() {
        if let Ident::Token(t) = ident {
            identified.entry(t.id).or_insert_with(|| t.clone());
        }
    }
    for (id, (_, owner)) in &inventory {
        if let (Some(owner), Some(t)) = (owner, identified.get(id)) {
            if let Some(user) = t.user_id {
                resolver.known.insert(user, Ok(owner.clone()));
            }
        }
    }
    for (t, owner) in inventory.values() {
        if let (Some(owner), Some(user)) = (owner, t.user_id) {
            resolver.known.entry(user).or_insert_with(|| Ok(owner.clone()));
        }
    }
    let mut entries: BTreeMap<u64, TokenEntry> = BTreeMap::new();
    let index = ManagedIndex::new(config);
    let all: Vec<ApiToken> =
        identified.values().cloned().chain(inventory.values().map(|(t, _)| t.clone())).collect::<Vec<_>>();
    // The owners' users, read several at once rather than one after another below.
    resolver.prefetch(all.iter().filter_map(|t| t.user_id).collect(), options.concurrency).await;
    for t in all {
        if entries.contains_key(&t.id) {
            continue;
        }
        let owner = match t.user_id {
            Some(user) => resolver.owner(user).await,
            None => Err("GitLab did not name its user".to_owned()),
        };
        let entry = token_entry(&t, owner, &resolver, &index, options.today);
        entries.insert(t.id, entry);
    }
    walked.unreadable.append(&mut resolver.unreadable);

    // 5. Each variable → what it holds; each token → its variables.
    let mut variables = Vec::new();
    for (holder, v) in &found {
        let r = VariableRef::of(holder, v);
        let entry = match &v.value {
            None => hidden_entry(r, v.description.as_deref(), &entries),
            Some(value) => {
                let Some((token, _, inside)) = token_of(value.expose(), &options.prefixes) else { continue };
                let token = Secret::new(&token);
                let mut entry = match values.get(&digest(token.expose())) {
                    None => continue,
                    Some((_, Shape::Other(what))) => VariableEntry {
                        variable: r,
                        holds: Holds::Unknown,
                        token_id: None,
                        evidence: None,
                        detail: format!("{what}, not an access token: not identified"),
                    },
                    Some((_, Shape::Access)) => {
                        let ident = idents
                            .get(&digest(token.expose()))
                            .cloned()
                            .unwrap_or(Ident::Failed("not identified".into()));
                        value_entry(r, &ident, options.today)
                    }
                };
                if inside {
                    entry.detail = format!("{} (the token is inside a longer value)", entry.detail);
                }
                entry
            }
        };
        if let Some(id) = entry.token_id {
            if let Some(t) = entries.get_mut(&id) {
                t.variables.push(entry.variable.clone());
            }
        }
        variables.push(entry);
    }
    variables.sort_by(|a, b| a.variable.cmp(&b.variable));
    for t in entries.values_mut() {
        t.variables.sort();
        t.variables.dedup();
    }

    // 6. The findings, and the map: held tokens, then the rest of the inventory that matters.
    let findings = findings(&entries, &variables, options);
    let mut tokens: Vec<TokenEntry> = entries
        .into_values()
        .filter(|t| {
            !t.variables.is_empty()
                || findings.iter().any(|f| f.token_id == Some(t.token_id) && f.kind != FindingKind::StaleCopy)
        })
        .collect();
    tokens.sort_by(|a, b| {
        (b.variables.len().min(1), a.state, a.kind.map(TokenKind::as_str), &a.owner, &a.name, a.token_id).cmp(&(
            a.variables.len().min(1),
            b.state,
            b.kind.map(TokenKind::as_str),
            &b.owner,
            &b.name,
            b.token_id,
        ))
    });
    let report = Report {
        schema_version: 1,
        gitlab_url: client.base().to_owned(),
        today: options.today,
        within_days: options.within_days,
        walked,
        identification,
        tokens,
        variables,
        findings,
    };
    Ok(Discovery { report, default_branches })
}

/// The projects and groups to walk: everything the credential can read, or the paths given
/// (a group with its subgroups and their projects).
async fn what_to_walk(
    client: &Client,
    me: &Credential,
    options: &Options,
) -> Result<(Vec<ApiNamed>, Vec<ApiNamed>), DiscoverError> {
    let mut projects: BTreeMap<String, ApiNamed> = BTreeMap::new();
    let mut groups: BTreeMap<String, ApiNamed> = BTreeMap::new();
    if options.groups.is_empty() && options.projects.is_empty() {
        // What a walk can read (§16): Maintainer for a project's variables, Owner for a
        // group's; an administrator reads everything, and the filter would hide it.
        let (p, g) = if me.admin { (None, None) } else { (Some(40), Some(50)) };
        let (ps, gs) = tokio::join!(client.all_projects(p), client.all_groups(g));
        for x in ps.map_err(failed("listing the projects the credential can see (GET /projects)"))? {
            projects.insert(x.full_path.to_ascii_lowercase(), x);
        }
        for x in gs.map_err(failed("listing the groups the credential can see (GET /groups)"))? {
            groups.insert(x.full_path.to_ascii_lowercase(), x);
        }
    }
    for path in &options.groups {
        let what = |w: &str| format!("--group {path}: {w}; check the path and that the credential is a member");
        let g = client.group(path).await.map_err(failed(what("cannot read the group")))?;
        let (subs, ps) = tokio::join!(client.descendant_groups(path), client.group_projects(path));
        for x in std::iter::once(g).chain(subs.map_err(failed(what("cannot list its subgroups")))?) {
            groups.insert(x.full_path.to_ascii_lowercase(), x);
        }
        for x in ps.map_err(failed(what("cannot list its projects")))? {
            projects.insert(x.full_path.to_ascii_lowercase(), x);
        }
    }
    for path in &options.projects {
        let x = client.project(path).await.map_err(failed(format!(
            "--project {path}: cannot read the project; check the path and that the credential is a member"
        )))?;
        projects.insert(x.full_path.to_ascii_lowercase(), x);
    }
    Ok((projects.into_values().collect(), groups.into_values().collect()))
}

fn not_needed() -> Identification {
    Identification { token_info_api: false, reason: Some("no value to identify".into()) }
}

/// Whether the token information API answers (§14): it does for an administrator where the
/// feature is on. Asked once, about patrol's own credential, which it must know.
async fn token_info_api(client: &Client, me: &Credential) -> Identification {
    if !me.admin {
        let reason = "patrol's credential is not an administrator's; each value is identified by its own GET /personal_access_tokens/self".into();
        return Identification { token_info_api: false, reason: Some(reason) };
    }
    match client.token_info(client.credential()).await {
        Ok(_) => Identification { token_info_api: true, reason: None },
        // A custom-prefixed credential is refused by type: the API itself answers.
        Err(e) if e.status() == Some(422) => Identification { token_info_api: true, reason: None },
        Err(e) => {
            let why = match e.status() {
                Some(404) => "the instance does not answer POST /admin/token (GitLab before 17.6, or its feature flag admin_agnostic_token_finder is off)".to_owned(),
                _ => format!("POST /admin/token failed: {e}"),
            };
            Identification {
                token_info_api: false,
                reason: Some(format!(
                    "{why}; each value is identified by its own GET /personal_access_tokens/self, which cannot tell revoked from expired and counts as a use of the token"
                )),
            }
        }
    }
}

/// One value, with one request: the token information API where it answers, else the value's
/// own `self`; a value the API refuses by type (422) or could not answer gets the second.
async fn identify(client: &Client, me: &Credential, value: &Secret, use_api: bool) -> Ident {
    if value.same_as(client.credential().expose()) {
        return Ident::Token(me.token.clone());
    }
    if use_api {
        match client.token_info(value).await {
            Ok(t) => return Ident::Token(t),
            Err(e) if e.status() == Some(404) => return Ident::Unknown,
            Err(e) => {
                tracing::debug!(error = %e, "the token information API did not identify a value; asking its self")
            }
        }
    }
    match client.token_self(value).await {
        Ok(t) => Ident::Token(t),
        Err(e) if e.status() == Some(401) => Ident::Dead,
        Err(e) => Ident::Failed(e.to_string()),
    }
}

/// Owners of users, looked up once each.
struct Resolver<'c> {
    client: &'c Client,
    projects: HashMap<u64, String>,
    groups: HashMap<u64, String>,
    known: HashMap<u64, Result<(TokenKind, String), String>>,
    /// Service accounts: user id → (username, top-level group).
    service_accounts: HashMap<u64, (String, String)>,
    /// Users read ahead, several at once ([`Resolver::prefetch`]).
    users: HashMap<u64, Result<ApiUser, String>>,
    accounts_listed: bool,
    /// Groups whose service accounts could not be listed, and why: reported, not skipped.
    unreadable: Vec<Unreadable>,
}

impl<'c> Resolver<'c> {
    fn new(client: &'c Client, projects: HashMap<u64, String>, groups: HashMap<u64, String>) -> Self {
        Resolver {
            client,
            projects,
            groups,
            known: HashMap::new(),
            service_accounts: HashMap::new(),
            users: HashMap::new(),
            unreadable: Vec::new(),
            accounts_listed: false,
        }
    }

    /// A user's token kind and owner: bot users of project and group tokens are named
    /// `project_<id>_bot_…` and `group_<id>_bot_…` (§2); other bots are service accounts.
    async fn owner(&mut self, user_id: u64) -> Result<(TokenKind, String), String> {
        if let Some(known) = self.known.get(&user_id) {
            return known.clone();
        }
        let result = self.look_up(user_id).await;
        self.known.insert(user_id, result.clone());
        result
    }

    /// Reads the users of `ids` not known yet, `concurrency` at once, for `look_up` to use.
    async fn prefetch(&mut self, ids: BTreeSet<u64>, concurrency: usize) {
        let client = self.client;
        let wanted: Vec<u64> = ids.into_iter().filter(|id| !self.known.contains_key(id)).collect();
        let users: Vec<(u64, Result<ApiUser, String>)> = futures::stream::iter(wanted)
            .map(|id| async move { (id, client.user(id).await.map_err(|e| format!("cannot read user {id}: {e}"))) })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        self.users.extend(users);
    }

    async fn look_up(&mut self, user_id: u64) -> Result<(TokenKind, String), String> {
        let user = match self.users.remove(&user_id) {
            Some(read) => read?,
            None => self.client.user(user_id).await.map_err(|e| format!("cannot read user {user_id}: {e}"))?,
        };
        let resource = |prefix: &str| user.username.strip_prefix(prefix)?.split_once("_bot")?.0.parse::<u64>().ok();
        if let Some(id) = resource("project_") {
            if let Some(path) = self.projects.get(&id) {
                return Ok((TokenKind::Project, path.clone()));
            }
            let p = self.client.project(&id.to_string()).await.map_err(|e| format!("cannot read project {id}: {e}"))?;
            return Ok((TokenKind::Project, p.full_path));
        }
        if let Some(id) = resource("group_") {
            if let Some(path) = self.groups.get(&id) {
                return Ok((TokenKind::Group, path.clone()));
            }
            let g = self.client.group(&id.to_string()).await.map_err(|e| format!("cannot read group {id}: {e}"))?;
            return Ok((TokenKind::Group, g.full_path));
        }
        if user.bot {
            self.list_service_accounts().await;
            return Ok((TokenKind::ServiceAccount, user.username));
        }
        Ok((TokenKind::Personal, user.username))
    }

    /// The service accounts of the walked top-level groups, once: where a service account's
    /// token lives in the config (`group`).
    async fn list_service_accounts(&mut self) {
        if self.accounts_listed {
            return;
        }
        self.accounts_listed = true;
        let tops: BTreeSet<String> = self.groups.values().filter(|g| !g.contains('/')).cloned().collect();
        for group in tops {
            match self.client.service_accounts(&group).await {
                Ok(accounts) => {
                    for a in accounts {
                        self.service_accounts.entry(a.id).or_insert((a.username, group.clone()));
                    }
                }
                Err(e) => self.unreadable.push(Unreadable {
                    holder: "group",
                    path: group.clone(),
                    reason: format!(
                        "listing its service accounts failed ({}): its service accounts' tokens are shown without their group, and --write-config leaves them commented out",
                        crate::secret::redact(&e.to_string())
                    ),
                }),
            }
        }
    }

    fn service_account_group(&self, user_id: Option<u64>) -> Option<String> {
        user_id.and_then(|u| self.service_accounts.get(&u)).map(|(_, g)| g.clone())
    }
}

fn state(t: &ApiToken, today: NaiveDate) -> State {
    if t.revoked {
        State::Revoked
    } else if t.expires_at.is_some_and(|d| d <= today) || !t.active {
        State::Expired
    } else {
        State::Active
    }
}

fn token_entry(
    t: &ApiToken,
    owner: Result<(TokenKind, String), String>,
    resolver: &Resolver,
    index: &ManagedIndex,
    today: NaiveDate,
) -> TokenEntry {
    let (kind, owner, owner_unknown) = match owner {
        Ok((k, o)) => (Some(k), Some(o), None),
        Err(why) => (None, None, Some(why)),
    };
    let group = (kind == Some(TokenKind::ServiceAccount)).then(|| resolver.service_account_group(t.user_id)).flatten();
    let managed = match (kind, &owner) {
        (Some(k), Some(o)) => index.get(k, o, &t.name),
        _ => None,
    };
    TokenEntry {
        token_id: t.id,
        name: t.name.clone(),
        kind,
        owner,
        group,
        state: state(t, today),
        expires_at: t.expires_at,
        days_left: t.expires_at.map(|d| (d - today).num_days()),
        scopes: t.scopes.clone(),
        managed,
        variables: Vec::new(),
        owner_unknown,
    }
}

fn value_entry(r: VariableRef, ident: &Ident, today: NaiveDate) -> VariableEntry {
    let (holds, token_id, detail) = match ident {
        Ident::Token(t) => match state(t, today) {
            State::Active => (Holds::Active, Some(t.id), "active".to_owned()),
            State::Revoked => (Holds::Stale, Some(t.id), "revoked".to_owned()),
            State::Expired => (
                Holds::Stale,
                Some(t.id),
                t.expires_at.map_or_else(|| "expired".to_owned(), |d| format!("expired on {d}")),
            ),
        },
        Ident::Dead => (
            Holds::Stale,
            None,
            "does not authenticate here: revoked or expired (or a token of another GitLab instance, which only the token information API could tell)".into(),
        ),
        Ident::Unknown => {
            (Holds::Unknown, None, "GitLab does not know this value: not a token of this instance, or deleted".into())
        }
        Ident::Failed(why) => (Holds::Unknown, None, format!("could not be identified: {why}")),
    };
    let evidence = token_id.map(|_| Evidence::Value);
    VariableEntry { variable: r, holds, token_id, evidence, detail }
}

fn hidden_entry(r: VariableRef, description: Option<&str>, entries: &BTreeMap<u64, TokenEntry>) -> VariableEntry {
    if let Some(id) = marker(description) {
        let (holds, detail) = match entries.get(&id).map(|t| t.state) {
            Some(State::Active) => (Holds::Active, format!("hidden; patrol's marker says token {id}, which is active")),
            Some(_) => (Holds::Stale, format!("hidden; patrol's marker says token {id}, which is no longer active")),
            None => (Holds::Unknown, format!("hidden; patrol's marker says token {id}, which this walk did not see")),
        };
        return VariableEntry { variable: r, holds, token_id: Some(id), evidence: Some(Evidence::Marker), detail };
    }
    let detail = match pending_marker(description) {
        Some(id) => format!("hidden; patrol set out to replace token {id} here and has not written it since"),
        None => "hidden, without patrol's marker: its value cannot be read".to_owned(),
    };
    VariableEntry { variable: r, holds: Holds::Unknown, token_id: None, evidence: None, detail }
}

fn findings(entries: &BTreeMap<u64, TokenEntry>, variables: &[VariableEntry], options: &Options) -> Vec<Finding> {
    let mut out = Vec::new();
    let hidden_unknown = variables.iter().filter(|v| v.variable.hidden && v.token_id.is_none()).count();
    let maybe_hidden = match hidden_unknown {
        0 => String::new(),
        n => format!(" ({n} hidden variable(s) without patrol's marker might; see the map)"),
    };
    for v in variables.iter().filter(|v| v.holds == Holds::Stale) {
        let what = match v.token_id.and_then(|id| entries.get(&id)) {
            Some(t) => format!("token {} {:?} ({})", t.token_id, t.name, v.detail),
            None => format!("a value that {}", v.detail),
        };
        out.push(Finding {
            kind: FindingKind::StaleCopy,
            token_id: v.token_id,
            variables: vec![v.variable.clone()],
            message: format!(
                "{} holds {what}: the pipelines that read it fail or will. Store the current token there, or delete the variable",
                v.variable.label()
            ),
        });
    }
    for t in entries.values() {
        if t.variables.len() > 1 && t.state == State::Active {
            out.push(Finding {
                kind: FindingKind::SeveralPlaces,
                token_id: Some(t.token_id),
                variables: t.variables.clone(),
                message: format!(
                    "token {} {:?} is stored in {} variables: a rotation must update every one (list them all under one [[token]])",
                    t.token_id,
                    t.name,
                    t.variables.len()
                ),
            });
        }
        let soon = t.days_left.is_some_and(|d| d >= 0 && d <= i64::from(options.within_days));
        if t.state == State::Active && soon && t.variables.is_empty() {
            out.push(Finding {
                kind: FindingKind::ExpiringUnheld,
                token_id: Some(t.token_id),
                variables: Vec::new(),
                message: format!(
                    "token {} {:?} ({} {}) expires {} and no CI/CD variable walked is known to hold it{maybe_hidden}: it is used outside CI, or not at all. Find its user before it expires, or let it expire",
                    t.token_id,
                    t.name,
                    t.kind.map_or("unknown kind", TokenKind::as_str),
                    t.owner.as_deref().unwrap_or("?"),
                    t.expires_at.map(|d| d.to_string()).unwrap_or_default()
                ),
            });
        }
        if let (Some(TokenKind::Project), Some(home)) = (t.kind, &t.owner) {
            let elsewhere: Vec<VariableRef> = t
                .variables
                .iter()
                .filter(|v| !(v.holder == "project" && v.path.eq_ignore_ascii_case(home)))
                .cloned()
                .collect();
            if !elsewhere.is_empty() {
                let labels: Vec<String> = elsewhere.iter().map(VariableRef::label).collect();
                out.push(Finding {
                    kind: FindingKind::ForeignBot,
                    token_id: Some(t.token_id),
                    variables: elsewhere,
                    message: format!(
                        "token {} {:?} is a project token of {home} (its bot user's access), stored in {}: give that project a token of its own",
                        t.token_id,
                        t.name,
                        labels.join(", ")
                    ),
                });
            }
        }
        if t.state == State::Active && t.expires_at.is_none() {
            out.push(Finding {
                kind: FindingKind::NoExpiry,
                token_id: Some(t.token_id),
                variables: t.variables.clone(),
                message: format!(
                    "token {} {:?} never expires: rotate it with an expiry (patrol rotate sets one)",
                    t.token_id, t.name
                ),
            });
        }
    }
    out.sort_by(|a, b| (a.kind, a.token_id, &a.variables).cmp(&(b.kind, b.token_id, &b.variables)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shaped_values_are_told_by_their_prefix() {
        let custom = vec!["acme_".to_owned()];
        assert_eq!(shape("glpat-abcdefghij0123456789", &[]), Some(Shape::Access));
        assert_eq!(shape(" glpat-abcdefghij0123456789\n", &[]), Some(Shape::Access));
        assert_eq!(shape("corp-glpat-abcdefghij0123456789", &[]), Some(Shape::Access), "an instance-wide prefix");
        assert_eq!(shape("acme_abcdefghij0123456789", &custom), Some(Shape::Access));
        assert_eq!(shape("acme_abcdefghij0123456789", &[]), None);
        assert_eq!(shape("gldt-abcdefghij0123456789", &[]), Some(Shape::Other("a deploy token")));
        for not in ["glpat-short", "hello", "", "glpat-abc def ghi jkl", "https://example.com", "xglpat-abcdefghij01"] {
            assert_eq!(shape(not, &[]), None, "{not:?}");
        }
    }

    #[test]
    fn a_digest_never_holds_the_value() {
        let d = digest("glpat-abcdefghij0123456789");
        assert_eq!(d, digest(" glpat-abcdefghij0123456789 "));
        assert!(!format!("{d:?}").contains("abcdefghij"));
    }
}
