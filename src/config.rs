//! The TOML config: parse, validate, and explain every problem with file, line and key.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gitlab: Option<RawGitlab>,
    notify: Option<RawNotify>,
    defaults: Option<RawPolicy>,
    #[serde(default)]
    token: Vec<Spanned<RawToken>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGitlab {
    url: Option<String>,
    token_env: Option<String>,
    ca_file: Option<PathBuf>,
    request_deadline_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    project: String,
    labels: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    rotate_before_days: Option<Spanned<i64>>,
    expires_in_days: Option<Spanned<i64>>,
    strategy: Option<Strategy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    id: String,
    kind: TokenKind,
    name: String,
    user: Option<String>,
    project: Option<String>,
    group: Option<String>,
    scopes: Option<Vec<String>>,
    create: Option<bool>,
    rotate_before_days: Option<Spanned<i64>>,
    expires_in_days: Option<Spanned<i64>>,
    strategy: Option<Strategy>,
    #[serde(default)]
    variable: Vec<Spanned<RawVariable>>,
    #[serde(default)]
    pipeline: Vec<Spanned<RawPipeline>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    project: Option<String>,
    group: Option<String>,
    key: String,
    environment_scope: Option<String>,
    protected: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    project: String,
    #[serde(rename = "ref")]
    reference: String,
    action: Option<PipelineAction>,
    wait_minutes: Option<u64>,
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
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::parse(path, &text)
    }

    /// Parses and validates; every problem found is reported, not only the first.
    ///
    /// The file is parsed one `[[token]]` block at a time, so only one block's TOML document is
    /// in memory at once: a 10,000-token file parsed whole peaks at ~75 MB (BENCHMARKS.md).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut c = Checker { file: path.display().to_string(), text, base: 0, problems: Vec::new() };
        let mut raw = RawConfig { gitlab: None, notify: None, defaults: None, token: Vec::new() };
        let mut notify_at = 0;
        let mut defaults_at = 0;
        let mut token_at = Vec::new();
        for (offset, block) in blocks(text) {
            c.base = offset;
            let part: RawConfig = match toml::from_str(block) {
                Ok(part) => part,
                Err(e) => {
                    let message = e.message().trim().to_owned();
                    // serde names the offending key between backticks: "unknown field `x`, …";
                    // other messages quote punctuation the same way, which is no key.
                    let names_key = ["field", "variant", "duplicate key"].iter().any(|w| message.contains(w));
                    let key = message.split('`').nth(1).filter(|_| names_key).map(str::to_owned);
                    c.add(e.span().map(|s| s.start).unwrap_or(0), key.as_deref(), message);
                    continue;
                }
            };
            if part.gitlab.is_some() {
                if raw.gitlab.is_some() {
                    c.add(0, Some("gitlab"), "[gitlab] is defined twice");
                }
                raw.gitlab = part.gitlab;
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
        }
        if !c.problems.is_empty() {
            return Err(ConfigError::Invalid { problems: c.problems });
        }
        let gitlab = raw.gitlab.map_or_else(
            || GitlabSection { token_env: "PATROL_TOKEN".into(), ..Default::default() },
            |g| GitlabSection {
                url: g.url,
                token_env: g.token_env.unwrap_or_else(|| "PATROL_TOKEN".into()),
                ca_file: g.ca_file,
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
        if raw.token.is_empty() {
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
            if t.variable.is_empty() {
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
            if let Some(owner) = owner {
                tokens.push(ManagedToken {
                    id: t.id.clone(),
                    kind: t.kind,
                    name: t.name.clone(),
                    owner,
                    scopes: t.scopes.clone(),
                    create: t.create.unwrap_or(false),
                    policy,
                    variables,
                    pipelines,
                });
            }
        }
        if c.problems.is_empty() {
            Ok(Config { path: path.to_owned(), gitlab, notify, defaults, tokens })
        } else {
            Err(ConfigError::Invalid { problems: c.problems })
        }
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
        assert!(p[0].starts_with("patrol.toml:10: `personl`: unknown variant"), "{p:?}");
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
