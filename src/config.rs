//! The TOML config: parse, validate, and explain every problem with file, line and key.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Personal,
    Project,
    Group,
    ServiceAccount,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Personal => "personal",
            TokenKind::Project => "project",
            TokenKind::Group => "group",
            TokenKind::ServiceAccount => "service_account",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// GitLab's rotate endpoint: the old token dies at once.
    Rotate,
    /// Create a new token, store and verify it, then revoke the old one.
    Overlap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineAction {
    Retry,
    Create,
}

/// When a token is due and how long its successor lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub rotate_before_days: i64,
    pub expires_in_days: i64,
    pub strategy: Strategy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { rotate_before_days: 14, expires_in_days: 365, strategy: Strategy::Rotate }
    }
}

/// Where a variable lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    Project(String),
    Group(String),
}

impl Holder {
    pub fn scope(&self) -> &'static str {
        match self {
            Holder::Project(_) => "project",
            Holder::Group(_) => "group",
        }
    }

    pub fn path(&self) -> &str {
        match self {
            Holder::Project(p) | Holder::Group(p) => p,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableTarget {
    pub holder: Holder,
    pub key: String,
    pub environment_scope: String,
    pub protected: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineTarget {
    pub project: String,
    pub reference: String,
    pub action: PipelineAction,
    pub wait_minutes: u64,
}

/// How to find a managed token in GitLab.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A personal access token of this user.
    User(String),
    /// A token of a service account of a top-level group.
    ServiceAccount {
        group: String,
        user: String,
    },
    Project(String),
    Group(String),
}

impl Owner {
    /// The username for personal and service-account tokens, the full path otherwise.
    pub fn display(&self) -> &str {
        match self {
            Owner::User(u) | Owner::ServiceAccount { user: u, .. } => u,
            Owner::Project(p) | Owner::Group(p) => p,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedToken {
    pub id: String,
    pub kind: TokenKind,
    pub name: String,
    pub owner: Owner,
    pub scopes: Option<Vec<String>>,
    /// The role of a project or group token patrol creates (GitLab's number: 10 guest, 15
    /// planner, 20 reporter, 30 developer, 40 maintainer, 50 owner); `None`: GitLab's default,
    /// maintainer. A rotation keeps the token's role.
    pub access_level: Option<u16>,
    /// `create = true`: patrol may create this token although GitLab has never had one of this
    /// kind, owner and name. Without it patrol only recreates a token GitLab knows (a revoked or
    /// expired one is listed), so a misspelt name fails instead of creating a stray token.
    pub create: bool,
    pub policy: Policy,
    pub variables: Vec<VariableTarget>,
    pub pipelines: Vec<PipelineTarget>,
}

#[derive(Debug, Clone, Default)]
pub struct GitlabSection {
    pub url: Option<String>,
    pub token_env: String,
    pub ca_file: Option<PathBuf>,
    /// The line of `ca_file` in the config file.
    ca_file_line: usize,
    /// How long GitLab may keep working on a request after patrol stopped waiting for it
    /// (`request_deadline_seconds`; gitlab-api.md §12): a rotate whose answer was lost is sent
    /// again only after this, once GitLab's state shows it did not happen.
    pub request_deadline: Option<std::time::Duration>,
}

/// GitLab's request deadline by default (§12: rack-timeout's 60 s) with a margin.
pub const DEFAULT_REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(90);

/// `[notify]`: where patrol keeps a tracking issue for each token that fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySection {
    /// The project (path or id) the issues are opened in.
    pub project: String,
    /// Labels on every tracking issue; patrol finds its open issues by them.
    pub labels: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub gitlab: GitlabSection,
    pub notify: Option<NotifySection>,
    pub defaults: Policy,
    pub tokens: Vec<ManagedToken>,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {}{message}", key.as_ref().map(|k| format!("`{k}`: ")).unwrap_or_default())]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub key: Option<String>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}. Pass --config FILE or set PATROL_CONFIG.")]
    Read { path: String, source: std::io::Error },
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
}

// ---- the file as written -------------------------------------------------------------------
//
// Each block is parsed into TOML's own tables (syntax errors stop only that block), then read
// key by key: an unknown key, a value of the wrong type, a missing key are each a problem, and
// reading goes on, so that every problem in the file is reported at once.

#[derive(Default)]
struct RawConfig {
    gitlab: Option<RawGitlab>,
    notify: Option<RawNotify>,
    defaults: Option<RawPolicy>,
    token: Vec<Spanned<RawToken>>,
    /// How many `[[token]]` tables there are, readable or not.
    tokens_given: usize,
}

struct RawGitlab {
    url: Option<Spanned<String>>,
    token_env: Option<String>,
    ca_file: Option<Spanned<String>>,
    request_deadline_seconds: Option<u64>,
}

struct RawNotify {
    project: String,
    labels: Option<Vec<String>>,
}

#[derive(Default)]
struct RawPolicy {
    rotate_before_days: Option<Spanned<i64>>,
    expires_in_days: Option<Spanned<i64>>,
    strategy: Option<Strategy>,
}

struct RawToken {
    id: String,
    kind: TokenKind,
    name: String,
    user: Option<String>,
    project: Option<String>,
    group: Option<String>,
    scopes: Option<Vec<String>>,
    create: Option<bool>,
    access_level: Option<Spanned<u16>>,
    rotate_before_days: Option<Spanned<i64>>,
    expires_in_days: Option<Spanned<i64>>,
    strategy: Option<Strategy>,
    /// How many `[[token.variable]]` tables there are, readable or not.
    variables_given: usize,
    variable: Vec<Spanned<RawVariable>>,
    pipeline: Vec<Spanned<RawPipeline>>,
}

struct RawVariable {
    project: Option<String>,
    group: Option<String>,
    key: String,
    environment_scope: Option<String>,
    protected: Option<bool>,
}

struct RawPipeline {
    project: String,
    reference: String,
    action: Option<PipelineAction>,
    wait_minutes: Option<u64>,
}

const KINDS: &[(&str, TokenKind)] = &[
    ("personal", TokenKind::Personal),
    ("project", TokenKind::Project),
    ("group", TokenKind::Group),
    ("service_account", TokenKind::ServiceAccount),
];
const STRATEGIES: &[(&str, Strategy)] = &[("rotate", Strategy::Rotate), ("overlap", Strategy::Overlap)];
const ACTIONS: &[(&str, PipelineAction)] = &[("retry", PipelineAction::Retry), ("create", PipelineAction::Create)];

/// GitLab's roles for a project or group token (gitlab-api.md §2 "Create"), by name and number.
pub const ACCESS_LEVELS: &[(&str, u16)] =
    &[("guest", 10), ("planner", 15), ("reporter", 20), ("developer", 30), ("maintainer", 40), ("owner", 50)];

type Value<'i> = Spanned<DeValue<'i>>;

/// One table's values by key, once every key has been checked against the known ones.
struct Entries<'t, 'i> {
    /// Where the table starts: a missing key is reported there.
    at: usize,
    /// What the table is, for messages: `token "x"`, `[gitlab]`.
    label: String,
    values: HashMap<&'t str, &'t Value<'i>>,
}

fn kind_of(v: &DeValue) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a decimal number",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl<'a> Checker<'a> {
    /// The entries of `table`, each key checked against `known`.
    fn entries<'t, 'i>(
        &mut self,
        at: usize,
        table: &'t DeTable<'i>,
        known: &[&str],
        label: impl Into<String>,
    ) -> Entries<'t, 'i> {
        let mut values = HashMap::new();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if known.contains(&name) {
                values.insert(name, value);
            } else {
                let expected = known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
                self.add(key.span().start, Some(name), format!("unknown field `{name}`, expected one of {expected}"));
            }
        }
        Entries { at, label: label.into(), values }
    }

    fn wrong(&mut self, e: &Entries, key: &str, value: &Value, wanted: &str) {
        let message = format!("{}: must be {wanted}, not {}", e.label, kind_of(value.get_ref()));
        self.add(value.span().start, Some(key), message);
    }

    /// A key that must be there; its absence is a problem.
    fn required<T>(&mut self, e: &Entries, key: &str, value: Option<T>) -> Option<T> {
        if !e.values.contains_key(key) {
            self.add(e.at, Some(key), format!("missing field `{key}` in {}", e.label));
        }
        value
    }

    fn text(&mut self, e: &Entries, key: &str) -> Option<Spanned<String>> {
        let value = e.values.get(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(Spanned::new(value.span(), s.to_string())),
            _ => {
                self.wrong(e, key, value, "a string");
                None
            }
        }
    }

    fn string(&mut self, e: &Entries, key: &str) -> Option<String> {
        self.text(e, key).map(Spanned::into_inner)
    }

    fn integer(&mut self, e: &Entries, key: &str) -> Option<Spanned<i64>> {
        let value = e.values.get(key)?;
        let number = match value.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => {
                self.wrong(e, key, value, "a whole number");
                return None;
            }
        };
        if number.is_none() {
            self.add(value.span().start, Some(key), format!("{}: the number is too large", e.label));
        }
        number.map(|n| Spanned::new(value.span(), n))
    }

    fn unsigned(&mut self, e: &Entries, key: &str) -> Option<u64> {
        let n = self.integer(e, key)?;
        u64::try_from(*n.get_ref()).ok().or_else(|| {
            self.add(n.span().start, Some(key), format!("{}: must be 0 or more", e.label));
            None
        })
    }

    fn boolean(&mut self, e: &Entries, key: &str) -> Option<bool> {
        let value = e.values.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong(e, key, value, "true or false");
                None
            }
        }
    }

    fn strings(&mut self, e: &Entries, key: &str) -> Option<Vec<String>> {
        let value = e.values.get(key)?;
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong(e, key, value, "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(s.to_string()),
                other => {
                    let message =
                        format!("{}: must be an array of strings, not with {} in it", e.label, kind_of(other));
                    self.add(item.span().start, Some(key), message);
                }
            }
        }
        (out.len() == items.len()).then_some(out)
    }

    /// One of `choices`, by name.
    fn choice<T: Copy>(&mut self, e: &Entries, key: &str, choices: &[(&str, T)]) -> Option<T> {
        let value = e.values.get(key)?;
        let names = choices.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        let DeValue::String(s) = value.get_ref() else {
            self.wrong(e, key, value, &format!("one of {names}"));
            return None;
        };
        let found = choices.iter().find(|(n, _)| *n == s.as_ref()).map(|(_, v)| *v);
        if found.is_none() {
            self.add(value.span().start, Some(key), format!("{}: {:?} is not one of {names}", e.label, s.as_ref()));
        }
        found
    }

    /// A table (`[gitlab]`).
    fn table<'t, 'i>(&mut self, e: &Entries<'t, 'i>, key: &str) -> Option<(usize, &'t DeTable<'i>)> {
        let value = e.values.get(key)?;
        match value.get_ref() {
            DeValue::Table(t) => Some((value.span().start, t)),
            _ => {
                self.wrong(e, key, value, &format!("a table ([{key}])"));
                None
            }
        }
    }

    /// An array of tables (`[[token]]`).
    fn tables<'t, 'i>(&mut self, e: &Entries<'t, 'i>, key: &str) -> Vec<(usize, &'t DeTable<'i>)> {
        let Some(value) = e.values.get(key) else { return Vec::new() };
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong(e, key, value, &format!("an array of tables ([[{}]])", e.label_path(key)));
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(t) => out.push((item.span().start, t)),
                other => {
                    let message = format!("{}: [[{key}]] entries must be tables, not {}", e.label, kind_of(other));
                    self.add(item.span().start, Some(key), message);
                }
            }
        }
        out
    }

    /// `access_level`: a role's name or GitLab's number for it.
    fn access_level(&mut self, e: &Entries, key: &str) -> Option<Spanned<u16>> {
        let value = e.values.get(key)?;
        let names = ACCESS_LEVELS.iter().map(|(n, l)| format!("{n} ({l})")).collect::<Vec<_>>().join(", ");
        let level = match value.get_ref() {
            DeValue::String(s) => ACCESS_LEVELS.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)).map(|(_, l)| *l),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .and_then(|n| ACCESS_LEVELS.iter().find(|(_, l)| i64::from(*l) == n))
                .map(|(_, l)| *l),
            _ => {
                self.wrong(e, key, value, &format!("a role, one of {names}"));
                return None;
            }
        };
        if level.is_none() {
            let message = format!("{}: not a role GitLab gives a token; use one of {names}", e.label);
            self.add(value.span().start, Some(key), message);
        }
        level.map(|l| Spanned::new(value.span(), l))
    }
}

impl Entries<'_, '_> {
    /// `token.variable` for the `variable` key of a token's table.
    fn label_path(&self, key: &str) -> String {
        if self.label.starts_with("token") {
            format!("token.{key}")
        } else {
            key.to_owned()
        }
    }
}

/// Reads one block of the file; `None` when its TOML cannot be parsed (the problem is noted).
fn read_block(c: &mut Checker, block: &str) -> Option<RawConfig> {
    let doc = match DeTable::parse(block) {
        Ok(doc) => doc,
        Err(e) => {
            let message = e.message().trim().to_owned();
            // toml names a duplicated key between backticks; other messages quote punctuation
            // the same way, which is no key.
            let key = message.split('`').nth(1).filter(|_| message.contains("duplicate key")).map(str::to_owned);
            c.add(e.span().map(|s| s.start).unwrap_or(0), key.as_deref(), message);
            return None;
        }
    };
    let top = c.entries(0, doc.get_ref(), &["gitlab", "notify", "defaults", "token"], "the file");
    let mut raw = RawConfig::default();
    if let Some((at, table)) = c.table(&top, "gitlab") {
        let e = c.entries(at, table, &["url", "token_env", "ca_file", "request_deadline_seconds"], "[gitlab]");
        raw.gitlab = Some(RawGitlab {
            url: c.text(&e, "url"),
            token_env: c.string(&e, "token_env"),
            ca_file: c.text(&e, "ca_file"),
            request_deadline_seconds: c.unsigned(&e, "request_deadline_seconds"),
        });
    }
    if let Some((at, table)) = c.table(&top, "notify") {
        let e = c.entries(at, table, &["project", "labels"], "[notify]");
        let project = c.string(&e, "project");
        let labels = c.strings(&e, "labels");
        raw.notify = c.required(&e, "project", project).map(|project| RawNotify { project, labels });
    }
    if let Some((at, table)) = c.table(&top, "defaults") {
        let e = c.entries(at, table, &["rotate_before_days", "expires_in_days", "strategy"], "defaults");
        raw.defaults = Some(RawPolicy {
            rotate_before_days: c.integer(&e, "rotate_before_days"),
            expires_in_days: c.integer(&e, "expires_in_days"),
            strategy: c.choice(&e, "strategy", STRATEGIES),
        });
    }
    let tables = c.tables(&top, "token");
    raw.tokens_given = tables.len();
    for (at, table) in tables {
        if let Some(token) = read_token(c, at, table) {
            raw.token.push(Spanned::new(at..at, token));
        }
    }
    Some(raw)
}

const TOKEN_KEYS: &[&str] = &[
    "id",
    "kind",
    "name",
    "user",
    "project",
    "group",
    "scopes",
    "create",
    "access_level",
    "rotate_before_days",
    "expires_in_days",
    "strategy",
    "variable",
    "pipeline",
];

fn read_token(c: &mut Checker, at: usize, table: &DeTable) -> Option<RawToken> {
    let id = table.get("id").and_then(|v| v.get_ref().as_str()).map(|s| format!("token {s:?}"));
    let e = c.entries(at, table, TOKEN_KEYS, id.unwrap_or_else(|| "[[token]]".into()));
    let id = c.string(&e, "id");
    let kind = c.choice(&e, "kind", KINDS);
    let name = c.string(&e, "name");
    let (id, kind, name) = (c.required(&e, "id", id), c.required(&e, "kind", kind), c.required(&e, "name", name));
    let mut variable = Vec::new();
    let tables = c.tables(&e, "variable");
    let variables_given = tables.len();
    for (at, table) in tables {
        let v = c.entries(at, table, &["project", "group", "key", "environment_scope", "protected"], e.label.clone());
        let key = c.string(&v, "key");
        let (project, group) = (c.string(&v, "project"), c.string(&v, "group"));
        let (environment_scope, protected) = (c.string(&v, "environment_scope"), c.boolean(&v, "protected"));
        if let Some(key) = c.required(&v, "key", key) {
            let read = RawVariable { project, group, key, environment_scope, protected };
            variable.push(Spanned::new(at..at, read));
        }
    }
    let mut pipeline = Vec::new();
    for (at, table) in c.tables(&e, "pipeline") {
        let p = c.entries(at, table, &["project", "ref", "action", "wait_minutes"], e.label.clone());
        let (project, reference) = (c.string(&p, "project"), c.string(&p, "ref"));
        let (project, reference) = (c.required(&p, "project", project), c.required(&p, "ref", reference));
        let (action, wait_minutes) = (c.choice(&p, "action", ACTIONS), c.unsigned(&p, "wait_minutes"));
        if let (Some(project), Some(reference)) = (project, reference) {
            pipeline.push(Spanned::new(at..at, RawPipeline { project, reference, action, wait_minutes }));
        }
    }
    let (user, project, group) = (c.string(&e, "user"), c.string(&e, "project"), c.string(&e, "group"));
    let (scopes, create, access_level) =
        (c.strings(&e, "scopes"), c.boolean(&e, "create"), c.access_level(&e, "access_level"));
    let (rotate_before_days, expires_in_days) = (c.integer(&e, "rotate_before_days"), c.integer(&e, "expires_in_days"));
    let strategy = c.choice(&e, "strategy", STRATEGIES);
    let token = RawToken {
        id: id?,
        kind: kind?,
        name: name?,
        user,
        project,
        group,
        scopes,
        create,
        access_level,
        rotate_before_days,
        expires_in_days,
        strategy,
        variables_given,
        variable,
        pipeline,
    };
    Some(token)
}

// ---- parsing and validation ------------------------------------------------------------------

struct Checker<'a> {
    file: String,
    text: &'a str,
    /// Where the block being checked starts in `text`: spans are relative to it.
    base: usize,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn add(&mut self, offset: usize, key: Option<&str>, message: impl Into<String>) {
        let problem = Problem {
            file: self.file.clone(),
            line: self.line(self.base + offset),
            key: key.map(Into::into),
            message: message.into(),
        };
        self.problems.push(problem);
    }
}

impl Config {
    /// Reads and checks the file; every problem found is reported, not only the first.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (config, problems) = Config::load_all(path)?;
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    /// Reads and checks the file, and reads the CA file it names: what could be read of it (the
    /// tokens without problems), and every problem. An error only when the file cannot be read.
    pub fn load_all(path: &Path) -> Result<(Config, Vec<Problem>), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let (config, mut problems) = Config::check(path, &text);
        if let Some(ca) = &config.gitlab.ca_file {
            if let Err(message) = crate::gitlab::read_ca_file(ca) {
                let file = path.display().to_string();
                problems.push(Problem { file, line: config.gitlab.ca_file_line, key: Some("ca_file".into()), message });
                problems.sort_by_key(|p| p.line);
            }
        }
        Ok((config, problems))
    }

    /// Parses and validates `text` (no file is read); every problem found is reported.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let (config, problems) = Config::check(path, text);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    /// What could be read of `text`, and every problem in it, in the order of the file.
    ///
    /// The file is parsed one `[[token]]` block at a time, so only one block's TOML document is
    /// in memory at once: a 10,000-token file parsed whole peaks at ~75 MB (BENCHMARKS.md).
    fn check(path: &Path, text: &str) -> (Config, Vec<Problem>) {
        let mut c = Checker { file: path.display().to_string(), text, base: 0, problems: Vec::new() };
        let mut raw = RawConfig::default();
        let (mut gitlab_at, mut notify_at, mut defaults_at) = (0, 0, 0);
        let mut token_at = Vec::new();
        let mut unreadable = 0;
        for (offset, block) in blocks(text) {
            c.base = offset;
            let Some(part) = read_block(&mut c, block) else {
                unreadable += 1;
                continue;
            };
            if part.gitlab.is_some() {
                if raw.gitlab.is_some() {
                    c.add(0, Some("gitlab"), "[gitlab] is defined twice");
                }
                raw.gitlab = part.gitlab;
                gitlab_at = offset;
            }
            if part.notify.is_some() {
                if raw.notify.is_some() {
                    c.add(0, Some("notify"), "[notify] is defined twice");
                }
                raw.notify = part.notify;
                notify_at = offset;
            }
            if part.defaults.is_some() {
                if raw.defaults.is_some() {
                    c.add(0, Some("defaults"), "[defaults] is defined twice");
                }
                raw.defaults = part.defaults;
                defaults_at = offset;
            }
            token_at.extend(std::iter::repeat_n(offset, part.token.len()));
            raw.token.extend(part.token);
            raw.tokens_given += part.tokens_given;
        }
        c.base = gitlab_at;
        if let Some(url) = raw.gitlab.as_ref().and_then(|g| g.url.as_ref()) {
            if let Err(message) = check_gitlab_url(url.get_ref()) {
                c.add(url.span().start, Some("url"), format!("[gitlab]: {message}"));
            }
        }
        let ca_file_line =
            raw.gitlab.as_ref().and_then(|g| g.ca_file.as_ref()).map_or(0, |f| c.line(gitlab_at + f.span().start));
        let gitlab = raw.gitlab.map_or_else(
            || GitlabSection { token_env: "PATROL_TOKEN".into(), ..Default::default() },
            |g| GitlabSection {
                url: g.url.map(|u| u.into_inner().trim_end_matches('/').to_owned()),
                token_env: g.token_env.unwrap_or_else(|| "PATROL_TOKEN".into()),
                ca_file: g.ca_file.map(|f| PathBuf::from(f.into_inner())),
                ca_file_line,
                request_deadline: g.request_deadline_seconds.map(std::time::Duration::from_secs),
            },
        );
        c.base = notify_at;
        let notify = raw
            .notify
            .map(|n| NotifySection { project: n.project, labels: n.labels.unwrap_or_else(|| vec!["patrol".into()]) });
        if let Some(n) = &notify {
            if n.project.trim().is_empty() {
                c.add(0, Some("project"), "[notify] project must name the project for tracking issues");
            }
            if n.labels.is_empty() || n.labels.iter().any(|l| l.trim().is_empty() || l.contains(',')) {
                c.add(
                    0,
                    Some("labels"),
                    "[notify] labels must be non-empty label names (without commas): patrol finds its issues by them",
                );
            }
        }
        c.base = defaults_at;
        let defaults = policy(&mut c, &raw.defaults.unwrap_or_default(), Policy::default(), "defaults");
        let mut ids = HashSet::new();
        // Kind, owner and name (owners compared as GitLab does: case-insensitively) → token id.
        let mut identities: HashMap<(TokenKind, String, String), String> = HashMap::new();
        let mut tokens = Vec::new();
        if raw.tokens_given == 0 && unreadable == 0 {
            c.base = 0;
            c.add(0, Some("token"), "no [[token]] is configured: patrol has nothing to manage");
        }
        for (spanned, offset) in raw.token.iter().zip(token_at) {
            c.base = offset;
            let at = spanned.span().start;
            let t = spanned.get_ref();
            let label = format!("token {:?}", t.id);
            if t.id.trim().is_empty() {
                c.add(at, Some("id"), "must not be empty");
            } else if !ids.insert(t.id.clone()) {
                c.add(at, Some("id"), format!("{label} is defined twice; ids must be unique"));
            }
            let owner = owner(&mut c, at, t, &label);
            let raw_policy = RawPolicy {
                rotate_before_days: t.rotate_before_days.clone(),
                expires_in_days: t.expires_in_days.clone(),
                strategy: t.strategy,
            };
            let policy = policy(&mut c, &raw_policy, defaults, &label);
            if t.variables_given == 0 {
                c.add(
                    at,
                    Some("variable"),
                    format!("{label} has no [[token.variable]]: a rotated secret would be stored nowhere"),
                );
            }
            let variables = t.variable.iter().filter_map(|v| variable(&mut c, v, &label)).collect();
            let pipelines = t
                .pipeline
                .iter()
                .map(|p| {
                    let p = p.get_ref();
                    PipelineTarget {
                        project: p.project.clone(),
                        reference: p.reference.clone(),
                        action: p.action.unwrap_or(PipelineAction::Retry),
                        wait_minutes: p.wait_minutes.unwrap_or(0),
                    }
                })
                .collect();
            if let Some(scopes) = &t.scopes {
                if scopes.is_empty() {
                    c.add(at, Some("scopes"), format!("{label}: must list at least one scope"));
                }
            }
            if t.create == Some(true) && t.scopes.is_none() {
                c.add(
                    at,
                    Some("create"),
                    format!("{label}: `create = true` needs `scopes`, the scopes of the token to create"),
                );
            }
            if let Some(owner) = &owner {
                let identity = (t.kind, owner_key(owner), t.name.clone());
                if let Some(first) = identities.get(&identity) {
                    c.add(
                        at,
                        Some("name"),
                        format!(
                            "{label} names the same GitLab token as token {first:?} ({} {:?} of {}): it would be rotated twice in one run, the second time as a revoked token. Keep one [[token]] and list every variable under it",
                            t.kind.as_str(),
                            t.name,
                            owner.display()
                        ),
                    );
                } else {
                    identities.insert(identity, t.id.clone());
                }
            }
            if let (Some(level), TokenKind::Personal | TokenKind::ServiceAccount) = (&t.access_level, t.kind) {
                c.add(
                    level.span().start,
                    Some("access_level"),
                    format!(
                        "{label}: a {} token has its user's role, not one of its own; access_level is for project and group tokens. Remove it",
                        t.kind.as_str()
                    ),
                );
            }
            if let Some(owner) = owner {
                tokens.push(ManagedToken {
                    id: t.id.clone(),
                    kind: t.kind,
                    name: t.name.clone(),
                    owner,
                    scopes: t.scopes.clone(),
                    access_level: t.access_level.as_ref().map(|l| *l.get_ref()),
                    create: t.create.unwrap_or(false),
                    policy,
                    variables,
                    pipelines,
                });
            }
        }
        let mut problems = c.problems;
        problems.sort_by_key(|p| p.line);
        (Config { path: path.to_owned(), gitlab, notify, defaults, tokens }, problems)
    }
}

/// A GitLab API root patrol may send its credential to: a URL ending in `/api/v4`, over https,
/// or plain http to loopback only. The URL without a trailing `/`, or what is wrong with it.
pub fn check_gitlab_url(url: &str) -> Result<String, String> {
    // A URL is shown in messages and reports: one carrying a secret is never shown as it is.
    let url = crate::secret::redact(url.trim_end_matches('/'));
    let parsed = url::Url::parse(&url).map_err(|e| format!("GitLab URL {url:?} is not a URL: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "the GitLab URL carries a user name or password (not shown): patrol takes its credential from PATROL_TOKEN (or `[gitlab] token_env`) only, and would print the URL in its reports. Remove the `user:password@` part".into(),
        );
    }
    if !url.ends_with("/api/v4") {
        return Err(format!("GitLab URL {url:?} must be the API root, ending in /api/v4"));
    }
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(format!(
            "refusing plain http to {url}: the credential would cross the network unencrypted. Use https (plain http is allowed only for loopback: localhost, 127.0.0.0/8 and ::1)."
        )),
        other => Err(format!("GitLab URL {url:?} has scheme {other:?}; use https")),
    }
}

/// Splits the file before each top-level `[[token]]` header, with each part's byte offset. A
/// file with multi-line strings, where such a line could sit inside a string, stays whole.
fn blocks(text: &str) -> Vec<(usize, &str)> {
    if text.contains("\"\"\"") || text.contains("\'\'\'") {
        return vec![(0, text)];
    }
    let mut starts = vec![0];
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let header = line.trim();
        let rest = header.strip_prefix("[[token]]");
        if offset > 0 && rest.is_some_and(|r| r.trim().is_empty() || r.trim_start().starts_with('#')) {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts.push(text.len());
    starts.windows(2).map(|w| (w[0], &text[w[0]..w[1]])).collect()
}

/// An owner as GitLab matches it: usernames and paths case-insensitively.
fn owner_key(owner: &Owner) -> String {
    match owner {
        Owner::User(u) => format!("user {}", u.to_lowercase()),
        Owner::ServiceAccount { group, user } => format!("account {} {}", group.to_lowercase(), user.to_lowercase()),
        Owner::Project(p) => format!("project {}", p.to_lowercase()),
        Owner::Group(g) => format!("group {}", g.to_lowercase()),
    }
}

fn owner(c: &mut Checker, at: usize, t: &RawToken, label: &str) -> Option<Owner> {
    let kind = t.kind.as_str();
    let mut needs = |key: &str, value: &Option<String>| -> Option<String> {
        match value {
            Some(v) if !v.trim().is_empty() => Some(v.clone()),
            _ => {
                c.add(at, Some(key), format!("{label}: required for kind = {kind:?}"));
                None
            }
        }
    };
    let owner = match t.kind {
        TokenKind::Personal => needs("user", &t.user).map(Owner::User),
        TokenKind::ServiceAccount => {
            let (group, user) = (needs("group", &t.group), needs("user", &t.user));
            Some(Owner::ServiceAccount { group: group?, user: user? })
        }
        TokenKind::Project => needs("project", &t.project).map(Owner::Project),
        TokenKind::Group => needs("group", &t.group).map(Owner::Group),
    };
    let extra: &[(&str, &Option<String>)] = match t.kind {
        TokenKind::Personal => &[("project", &t.project), ("group", &t.group)],
        TokenKind::ServiceAccount => &[("project", &t.project)],
        TokenKind::Project => &[("user", &t.user), ("group", &t.group)],
        TokenKind::Group => &[("user", &t.user), ("project", &t.project)],
    };
    for (key, value) in extra {
        if value.is_some() {
            c.add(at, Some(key), format!("{label}: not used with kind = {kind:?}; remove it"));
        }
    }
    owner
}

fn policy(c: &mut Checker, raw: &RawPolicy, base: Policy, label: &str) -> Policy {
    let mut p = base;
    if let Some(v) = &raw.rotate_before_days {
        if *v.get_ref() < 0 {
            c.add(v.span().start, Some("rotate_before_days"), format!("{label}: must be 0 or more"));
        }
        p.rotate_before_days = *v.get_ref();
    }
    if let Some(v) = &raw.expires_in_days {
        if !(1..=400).contains(v.get_ref()) {
            c.add(
                v.span().start,
                Some("expires_in_days"),
                format!("{label}: must be between 1 and 400 (GitLab's limit)"),
            );
        }
        p.expires_in_days = *v.get_ref();
    }
    if let Some(s) = raw.strategy {
        p.strategy = s;
    }
    if p.expires_in_days <= p.rotate_before_days {
        let at = raw.expires_in_days.as_ref().or(raw.rotate_before_days.as_ref()).map(|v| v.span().start).unwrap_or(0);
        c.add(
            at,
            Some("expires_in_days"),
            format!(
                "{label}: a new token would live {} days and be due again at once (rotate_before_days = {}); make expires_in_days larger",
                p.expires_in_days, p.rotate_before_days
            ),
        );
    }
    p
}

fn variable(c: &mut Checker, spanned: &Spanned<RawVariable>, label: &str) -> Option<VariableTarget> {
    let at = spanned.span().start;
    let v = spanned.get_ref();
    if v.key.is_empty() || v.key.len() > 255 || !v.key.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
        c.add(
            at,
            Some("key"),
            format!("{label}: {:?} is not a valid CI/CD variable key (letters, digits and _ only, at most 255)", v.key),
        );
    }
    let holder = match (&v.project, &v.group) {
        (Some(p), None) => Holder::Project(p.clone()),
        (None, Some(g)) => Holder::Group(g.clone()),
        _ => {
            c.add(at, Some("project"), format!("{label}: variable {} needs exactly one of project or group", v.key));
            return None;
        }
    };
    Some(VariableTarget {
        holder,
        key: v.key.clone(),
        environment_scope: v.environment_scope.clone().unwrap_or_else(|| "*".into()),
        protected: v.protected.unwrap_or(true),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const GOOD: &str = r#"
[gitlab]
url = "https://gitlab.example.com/api/v4"

[defaults]
rotate_before_days = 14

[[token]]
id = "inventory"
kind = "personal"
name = "Inventory"
user = "svc-inventory"
rotate_before_days = 30

[[token.variable]]
project = "security/inventory-builder"
key = "INVENTORY_API_TOKEN"

[[token.pipeline]]
project = "security/inventory-builder"
ref = "main"
"#;

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(Path::new("patrol.toml"), text) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems }) => problems.iter().map(ToString::to_string).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn two_blocks_naming_one_gitlab_token_are_refused_and_create_needs_scopes() {
        let second = GOOD
            .split("[[token]]")
            .nth(1)
            .unwrap_or_default()
            .replace("id = \"inventory\"", "id = \"inventory-again\"")
            .replace("user = \"svc-inventory\"", "user = \"SVC-Inventory\"");
        let text = format!("{GOOD}\n[[token]]{second}");
        assert_eq!(
            problems(&text),
            vec!["patrol.toml:23: `name`: token \"inventory-again\" names the same GitLab token as token \"inventory\" (personal \"Inventory\" of SVC-Inventory): it would be rotated twice in one run, the second time as a revoked token. Keep one [[token]] and list every variable under it"]
        );
        let other_name = text.replacen("name = \"Inventory\"", "name = \"Inventory (backup)\"", 2);
        assert!(problems(&other_name.replacen("name = \"Inventory (backup)\"", "name = \"Inventory\"", 1)).is_empty());
        let create = GOOD.replace("rotate_before_days = 30", "create = true");
        assert_eq!(
            problems(&create),
            vec!["patrol.toml:8: `create`: token \"inventory\": `create = true` needs `scopes`, the scopes of the token to create"]
        );
        let cfg = Config::parse(
            Path::new("patrol.toml"),
            &create.replace("create = true", "create = true\nscopes = [\"api\"]"),
        );
        assert!(cfg.is_ok_and(|c| c.tokens[0].create));
    }

    #[test]
    fn a_good_config_parses_with_defaults_applied() {
        let cfg = Config::parse(Path::new("patrol.toml"), GOOD).unwrap_or_else(|e| panic!("{e}"));
        let t = &cfg.tokens[0];
        assert_eq!(t.policy, Policy { rotate_before_days: 30, expires_in_days: 365, strategy: Strategy::Rotate });
        assert_eq!(t.owner, Owner::User("svc-inventory".into()));
        assert_eq!(t.variables[0].environment_scope, "*");
        assert!(t.variables[0].protected);
        assert_eq!(t.pipelines[0].action, PipelineAction::Retry);
        assert_eq!(cfg.gitlab.token_env, "PATROL_TOKEN");
    }

    #[test]
    fn unknown_keys_name_file_line_and_key() {
        let text = GOOD.replace("rotate_before_days = 30", "rotate_befor_days = 30");
        let p = problems(&text);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("patrol.toml:13: `rotate_befor_days`: unknown field"), "{p:?}");
    }

    #[test]
    fn syntax_errors_and_wrong_kinds_point_at_the_line() {
        assert!(problems("[gitlab\n")[0].starts_with("patrol.toml:1:"), "{:?}", problems("[gitlab\n"));
        let p = problems(&GOOD.replace("\"personal\"", "\"personl\""));
        assert_eq!(
            p,
            ["patrol.toml:10: `kind`: token \"inventory\": \"personl\" is not one of personal, project, group, service_account"]
        );
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let text = GOOD.replace("user = \"svc-inventory\"\n", "project = \"x/y\"\n").replace("INVENTORY_API_TOKEN", "BAD-KEY")
            + "\n[[token]]\nid = \"inventory\"\nkind = \"group\"\nname = \"g\"\ngroup = \"sec\"\nexpires_in_days = 10\n";
        let p = problems(&text);
        let joined = p.join("\n");
        assert!(joined.contains(":8: `user`: token \"inventory\": required for kind = \"personal\""), "{joined}");
        assert!(joined.contains("`project`: token \"inventory\": not used with kind = \"personal\""), "{joined}");
        assert!(joined.contains("`key`: token \"inventory\": \"BAD-KEY\" is not a valid"), "{joined}");
        assert!(joined.contains("is defined twice"), "{joined}");
        assert!(joined.contains("has no [[token.variable]]"), "{joined}");
        assert!(joined.contains("due again at once"), "{joined}");
    }

    #[test]
    fn blocks_split_at_token_headers_only() {
        let text = "[gitlab]\nurl = \"x\"\n[[token]]\nid = \"a\"\n[[token.variable]]\nkey = \"K\"\n  [[token]] # b\nid = \"b\"\n";
        let parts: Vec<&str> = blocks(text).into_iter().map(|(_, b)| b).collect();
        assert_eq!(
            parts,
            vec![
                "[gitlab]\nurl = \"x\"\n",
                "[[token]]\nid = \"a\"\n[[token.variable]]\nkey = \"K\"\n",
                "  [[token]] # b\nid = \"b\"\n"
            ]
        );
        assert_eq!(blocks("x = \"\"\"\n[[token]]\n\"\"\"\n").len(), 1, "multi-line strings keep the file whole");
    }

    #[test]
    fn tables_after_tokens_and_twice_defined_tables() {
        let later = GOOD.replace("[gitlab]\nurl = \"https://gitlab.example.com/api/v4\"\n", "")
            + "\n[gitlab]\nurl = \"https://later.example.com/api/v4\"\n";
        let cfg = Config::parse(Path::new("patrol.toml"), &later).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.gitlab.url.as_deref(), Some("https://later.example.com/api/v4"));
        let twice = GOOD.to_owned() + "\n[gitlab]\nurl = \"y\"\n";
        assert!(problems(&twice).iter().any(|p| p.contains("[gitlab] is defined twice")), "{:?}", problems(&twice));
    }

    /// One bad value used to stop the reading of its block and hide every other problem.
    #[test]
    fn every_problem_is_reported_at_once_with_its_line_and_key() {
        let text = GOOD
            .replace(
                "url = \"https://gitlab.example.com/api/v4\"",
                "url = \"http://gitlab.example.com/api/v4\"\nrequest_deadline_seconds = -4",
            )
            .replace("kind = \"personal\"", "kind = \"personl\"\nstrategy = \"ovelap\"\nscopes = [\"api\", 3]")
            .replace("rotate_before_days = 30", "rotate_before_days = \"30\"\nwait = 1")
            .replace("ref = \"main\"", "ref = \"main\"\naction = \"rerun\"")
            + "\n[[token]]\nid = \"second\"\nkind = \"group\"\nname = \"g\"\ngroup = \"sec\"\n";
        let p = problems(&text);
        assert_eq!(
            p,
            [
                "patrol.toml:3: `url`: [gitlab]: refusing plain http to http://gitlab.example.com/api/v4: the credential would cross the network unencrypted. Use https (plain http is allowed only for loopback: localhost, 127.0.0.0/8 and ::1).",
                "patrol.toml:4: `request_deadline_seconds`: [gitlab]: must be 0 or more",
                "patrol.toml:11: `kind`: token \"inventory\": \"personl\" is not one of personal, project, group, service_account",
                "patrol.toml:12: `strategy`: token \"inventory\": \"ovelap\" is not one of rotate, overlap",
                "patrol.toml:13: `scopes`: token \"inventory\": must be an array of strings, not with an integer in it",
                "patrol.toml:16: `rotate_before_days`: token \"inventory\": must be a whole number, not a string",
                "patrol.toml:17: `wait`: unknown field `wait`, expected one of `id`, `kind`, `name`, `user`, `project`, `group`, `scopes`, `create`, `access_level`, `rotate_before_days`, `expires_in_days`, `strategy`, `variable`, `pipeline`",
                "patrol.toml:26: `action`: token \"inventory\": \"rerun\" is not one of retry, create",
                "patrol.toml:28: `variable`: token \"second\" has no [[token.variable]]: a rotated secret would be stored nowhere",
            ]
        );
    }

    #[test]
    fn access_level_is_a_role_by_name_or_number_for_project_and_group_tokens() {
        let project = GOOD
            .replace("kind = \"personal\"", "kind = \"project\"")
            .replace("user = \"svc-inventory\"", "project = \"sec/app\"");
        for (written, level) in [("\"developer\"", 30), ("\"Reporter\"", 20), ("10", 10), ("15", 15), ("\"owner\"", 50)]
        {
            let text = project.replace("rotate_before_days = 30", &format!("access_level = {written}"));
            let cfg = Config::parse(Path::new("patrol.toml"), &text).unwrap_or_else(|e| panic!("{written}: {e}"));
            assert_eq!(cfg.tokens[0].access_level, Some(level), "{written}");
        }
        let cfg = Config::parse(Path::new("patrol.toml"), &project).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.tokens[0].access_level, None, "GitLab's default");
        for bad in ["\"admin\"", "60", "0", "-10"] {
            let text = project.replace("rotate_before_days = 30", &format!("access_level = {bad}"));
            let p = problems(&text);
            assert!(
                p.len() == 1 && p[0].starts_with("patrol.toml:13: `access_level`: token \"inventory\": not a role"),
                "{bad}: {p:?}"
            );
        }
        let personal = GOOD.replace("rotate_before_days = 30", "access_level = \"guest\"");
        assert_eq!(
            problems(&personal),
            ["patrol.toml:13: `access_level`: token \"inventory\": a personal token has its user's role, not one of its own; access_level is for project and group tokens. Remove it"]
        );
    }

    #[test]
    fn a_plain_http_url_is_refused_unless_it_is_loopback() {
        for (url, ok) in [
            ("https://gitlab.example.com/api/v4/", true),
            ("http://localhost:8080/api/v4", true),
            ("http://127.0.0.2/api/v4", true),
            ("http://[::1]/api/v4", true),
            ("http://gitlab.example.com/api/v4", false),
            ("https://gitlab.example.com", false),
            ("ftp://gitlab.example.com/api/v4", false),
            ("gitlab.example.com/api/v4", false),
        ] {
            assert_eq!(check_gitlab_url(url).is_ok(), ok, "{url}: {:?}", check_gitlab_url(url));
        }
    }

    #[test]
    fn a_ca_file_that_cannot_be_read_is_a_problem_on_its_line() {
        let dir = std::env::temp_dir().join(format!("patrol-config-ca-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("patrol.toml");
        let missing = dir.join("missing.pem");
        let _ = std::fs::write(
            &path,
            GOOD.replace("[gitlab]\n", &format!("[gitlab]\nca_file = {:?}\n", missing.display().to_string())),
        );
        let (config, problems) = Config::load_all(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.tokens.len(), 1, "the rest of the file is read");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!((problems[0].line, problems[0].key.as_deref()), (3, Some("ca_file")));
        assert!(problems[0].message.starts_with("cannot read CA file"), "{}", problems[0]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_required_fields_are_named() {
        let p = problems(&GOOD.replace("name = \"Inventory\"\n", ""));
        assert!(p[0].contains("missing field `name`"), "{p:?}");
        assert!(p[0].starts_with("patrol.toml:"), "{p:?}");
    }
}

/// Property: no input makes the config parser panic. Mutations of a full config (byte flips,
/// cuts, inserted punctuation, duplicated lines) must each give a config or a located error.
#[cfg(test)]
pub(crate) mod fuzz {
    use super::*;

    /// xorshift64*: deterministic, so a failure names a reproducible case.
    pub struct Rng(u64);
    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed.max(1))
        }
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// One random edit of `text`.
    pub fn mutate(rng: &mut Rng, text: &[u8]) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"[",
            b"]",
            b"[[",
            b"\"",
            b"=",
            b"\n",
            b"#",
            b"'''",
            b"\"\"\"",
            b"{",
            b"}",
            b",",
            b"\\",
            b"\xff",
            b"0",
            b"-1",
            b"1e309",
            b"true",
            b"[[token]]\n",
        ];
        let mut out = text.to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(out.len() + 1);
            match rng.below(5) {
                0 => out.truncate(at),
                1 if at < out.len() => out[at] = (rng.next() & 0xff) as u8,
                2 => {
                    let piece = PIECES[rng.below(PIECES.len())];
                    out.splice(at..at, piece.iter().copied());
                }
                3 => {
                    let end = (at + rng.below(40)).min(out.len());
                    let copy = out[at..end].to_vec();
                    out.splice(at..at, copy);
                }
                _ => {
                    let end = (at + rng.below(20)).min(out.len());
                    out.drain(at..end);
                }
            }
        }
        out
    }

    #[test]
    fn no_config_text_panics_the_parser() {
        let base = tests::GOOD.as_bytes().to_vec();
        let example = include_str!("../ci-templates/example.toml").as_bytes().to_vec();
        let mut rng = Rng::new(0x0c0f_f1e5);
        let (mut ok, mut err, mut about_keys) = (0, 0, 0);
        for i in 0..4000 {
            let seed = if i % 2 == 0 { &base } else { &example };
            let text = mutate(&mut rng, seed);
            let text = String::from_utf8_lossy(&text);
            match Config::parse(Path::new("patrol.toml"), &text) {
                Ok(_) => ok += 1,
                Err(e) => {
                    let keyed = assert_located(&e, &text, &format!("case {i}"));
                    err += 1;
                    about_keys += keyed;
                }
            }
        }
        println!(
            "config parser: 4000 mutated configs, {ok} accepted, {err} refused with a located error ({about_keys} problems about a key, each naming it)"
        );
        assert!(ok > 0 && err > 0, "the mutations reached both outcomes ({ok} ok, {err} errors)");
        assert!(about_keys > 0, "some mutations gave errors about a key, so the key check ran");
    }

    /// The key a problem's message is about, as serde and toml name it (the first one named):
    /// ``unknown field `k` ``, ``missing field `k` ``, ``duplicate field `k` ``,
    /// ``duplicate key `k` ``, and ``unknown variant `v` ``, which the config errors name the same way.
    pub fn key_named_in(message: &str) -> Option<&str> {
        ["unknown field `", "missing field `", "duplicate field `", "duplicate key `", "unknown variant `"]
            .iter()
            .filter_map(|phrase| message.find(phrase).map(|at| &message[at + phrase.len()..]))
            .max_by_key(|rest| rest.len())
            .and_then(|rest| rest.split('`').next())
    }

    /// Checks that `e`, from parsing `text` as `patrol.toml`, lists problems each printed as
    /// `patrol.toml:LINE: ` with LINE a line of `text`, followed by `` `KEY`: `` when it names a
    /// key, and naming the key whenever its message is about one. Returns how many were about a key.
    pub fn assert_located(e: &ConfigError, text: &str, case: &str) -> usize {
        let ConfigError::Invalid { problems } = e else {
            panic!("{case}: parsing text gave an error that is no config problem: {e}");
        };
        assert!(!problems.is_empty(), "{case}: an error with no problem in it: {e:?}");
        let shown = e.to_string();
        let lines = text.matches('\n').count() + 1;
        let mut keyed = 0;
        for p in problems {
            let printed = p.to_string();
            assert!(shown.contains(&printed), "{case}: each problem is printed: {printed:?} in {shown:?}");
            let location = format!("patrol.toml:{}: ", p.line);
            assert!(
                p.file == "patrol.toml" && (1..=lines).contains(&p.line) && printed.starts_with(&location),
                "{case}: names the file and one of its {lines} lines: {printed}"
            );
            if let Some(key) = key_named_in(&p.message) {
                keyed += 1;
                assert_eq!(p.key.as_deref(), Some(key), "{case}: the problem is about `{key}`: {printed}");
                // A key (or value) that is written in the file is on the line named; a missing
                // one is not written anywhere.
                let named_line = text.split('\n').nth(p.line - 1).unwrap_or_default();
                assert!(
                    p.message.starts_with("missing field") || named_line.contains(key),
                    "{case}: line {} holds `{key}`: {printed}\nline {}: {named_line:?}",
                    p.line,
                    p.line
                );
            }
            if let Some(key) = &p.key {
                assert!(
                    printed.starts_with(&format!("{location}`{key}`: ")),
                    "{case}: the key after the line: {printed}"
                );
            }
        }
        keyed
    }
}
