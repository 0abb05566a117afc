//! What a run reports: the JSON report (schema_version 2), the JUnit file, and the text on
//! stdout. Nothing here ever holds a secret: reports are built from ids, dates and GitLab's
//! error messages only.
//!
//! Schema version 2 (issue 15) against 1: a token's `outcome` may be `created` (a token made
//! anew, by creating it, where 1 said `rotated`), and `summary.created` counts them; each token
//! has `action`, what patrol decided (`rotate`, `recreate`, `create`, `repair`, `nothing`, or
//! `null` when it failed before deciding), in `plan` as in `rotate`; a pipeline's `action` may be
//! `would-retry` or `would-start` in `plan`.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Rotated,
    /// A token made anew (recreated, or created for the first time), not rotated.
    Created,
    Repaired,
    Unchanged,
    Due,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Rotated => "rotated",
            Outcome::Created => "created",
            Outcome::Repaired => "repaired",
            Outcome::Unchanged => "unchanged",
            Outcome::Due => "due",
            Outcome::Failed => "failed",
        }
    }
}

/// What patrol decided for a token: in `plan`, what `rotate` would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Rotate the token in use (due, or `--force`).
    Rotate,
    /// Create it again: GitLab has had it, but none is active or can be rotated.
    Recreate,
    /// Create it for the first time (`create = true`).
    Create,
    /// Not due, but a variable does not hold it: renew it and store it everywhere.
    Repair,
    /// Nothing to do.
    Nothing,
}

impl Action {
    /// In `plan`'s words: what `rotate` would do.
    pub fn planned(self) -> &'static str {
        match self {
            Action::Rotate => "would rotate",
            Action::Recreate => "would recreate",
            Action::Create => "would create",
            Action::Repair => "would repair",
            Action::Nothing => "nothing to do",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VariableOutcome {
    Written,
    Unchanged,
    WouldWrite,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineAction {
    Retried,
    Created,
    Skipped,
    /// `plan`: `rotate` would retry it if its latest run failed.
    WouldRetry,
    /// `plan`: `rotate` would start a pipeline on the ref.
    WouldStart,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Before {
    pub token_id: u64,
    pub expires_at: Option<NaiveDate>,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct After {
    pub token_id: u64,
    pub expires_at: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VariableReport {
    pub scope: String,
    pub path: String,
    pub key: String,
    pub environment_scope: String,
    pub outcome: VariableOutcome,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipelineReport {
    pub project: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub action: PipelineAction,
    pub pipeline_id: Option<u64>,
    pub status: Option<String>,
    pub error: Option<String>,
}

impl PipelineReport {
    /// A pipeline nothing has been done to (yet).
    pub fn skipped(project: &str, reference: &str) -> PipelineReport {
        PipelineReport {
            project: project.to_owned(),
            reference: reference.to_owned(),
            action: PipelineAction::Skipped,
            pipeline_id: None,
            status: None,
            error: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenReport {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub outcome: Outcome,
    /// What patrol decided; `None` when it failed before deciding.
    pub action: Option<Action>,
    pub reason: String,
    pub before: Option<Before>,
    pub after: Option<After>,
    pub variables: Vec<VariableReport>,
    pub pipelines: Vec<PipelineReport>,
    pub error: Option<String>,
    /// For a token left unchanged whose variables patrol itself filled (its marker names the
    /// token in use): when that token was created. A dependent pipeline that last failed before
    /// then ran with the old secret and is still owed its retry, say because the run that
    /// rotated was cut short. Not part of the report.
    #[serde(skip)]
    pub stored_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub rotated: usize,
    pub created: usize,
    pub repaired: usize,
    pub unchanged: usize,
    pub due: usize,
    pub failed: usize,
}

impl Summary {
    pub fn of(tokens: &[TokenReport]) -> Summary {
        let mut s = Summary::default();
        for t in tokens {
            match t.outcome {
                Outcome::Rotated => s.rotated += 1,
                Outcome::Created => s.created += 1,
                Outcome::Repaired => s.repaired += 1,
                Outcome::Unchanged => s.unchanged += 1,
                Outcome::Due => s.due += 1,
                Outcome::Failed => s.failed += 1,
            }
        }
        s
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub schema_version: u32,
    pub command: String,
    #[serde(serialize_with = "seconds")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "seconds")]
    pub finished_at: DateTime<Utc>,
    pub gitlab_url: String,
    pub summary: Summary,
    pub tokens: Vec<TokenReport>,
}

fn seconds<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

impl RunReport {
    /// The report of a run that started at `started_at` and ends now.
    pub fn new(command: &str, started_at: DateTime<Utc>, gitlab_url: String, tokens: Vec<TokenReport>) -> RunReport {
        RunReport {
            schema_version: 2,
            command: command.into(),
            started_at,
            finished_at: Utc::now(),
            gitlab_url,
            summary: Summary::of(&tokens),
            tokens,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// One test case per managed token; a failed token is a failure with its error.
    pub fn to_junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
        let mut report = Report::new(format!("patrol {}", self.command));
        let mut suite = TestSuite::new(format!("patrol {}", self.command));
        for t in &self.tokens {
            let status = match t.outcome {
                Outcome::Failed => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(t.error.clone().unwrap_or_else(|| t.reason.clone()));
                    s.set_description(describe(t));
                    s
                }
                _ => TestCaseStatus::success(),
            };
            let mut case = TestCase::new(format!("{} ({})", t.id, t.outcome.as_str()), status);
            case.set_classname(format!("patrol.{}", t.kind));
            case.set_system_out(describe(t));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
        report.to_string().unwrap_or_else(|e| format!("<!-- cannot render JUnit: {e} -->"))
    }
}

/// A token's details, one line each, for logs and JUnit.
pub fn describe(t: &TokenReport) -> String {
    let mut lines = vec![format!("{} {}: {}", t.id, t.outcome.as_str(), t.reason)];
    if let Some(b) = &t.before {
        lines.push(format!("  before: token {} (expires {})", b.token_id, date(b.expires_at)));
    }
    if let Some(a) = &t.after {
        lines.push(format!("  after:  token {} (expires {})", a.token_id, date(a.expires_at)));
    }
    for v in &t.variables {
        let err = v.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        lines.push(format!(
            "  variable {} {} {} [{}]: {}{err}",
            v.scope,
            v.path,
            v.key,
            v.environment_scope,
            serde_plain(&v.outcome)
        ));
    }
    for p in &t.pipelines {
        let id = p.pipeline_id.map(|i| format!(" #{i}")).unwrap_or_default();
        let status = p.status.as_deref().map(|s| format!(" → {s}")).unwrap_or_default();
        let err = p.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        lines.push(format!("  pipeline {} {}: {}{id}{status}{err}", p.project, p.reference, serde_plain(&p.action)));
    }
    if let Some(e) = &t.error {
        lines.push(format!("  error: {e}"));
    }
    lines.join("\n")
}

fn serde_plain<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn date(d: Option<NaiveDate>) -> String {
    d.map(|d| d.to_string()).unwrap_or_else(|| "never".into())
}

/// The stdout line for one token: `[2/5] inventory: rotated: expires 2026-12-03, within 30
/// days; new token 19 expires 2027-11-28`; in `plan`, what `rotate` would do
/// (`[2/5] inventory: would rotate: …`); a failure says why, once.
pub fn progress_line(done: usize, total: usize, t: &TokenReport) -> String {
    let what = match (t.outcome, t.action) {
        (Outcome::Due, Some(action)) => action.planned(),
        (outcome, _) => outcome.as_str(),
    };
    let after = t
        .after
        .as_ref()
        .map(|a| format!("; new token {} expires {}", a.token_id, date(a.expires_at)))
        .unwrap_or_default();
    let why = match (&t.outcome, &t.error) {
        (Outcome::Failed, Some(e)) if t.reason.is_empty() => e.clone(),
        (Outcome::Failed, Some(e)) => format!("{}; {e}", t.reason),
        _ => t.reason.clone(),
    };
    format!("[{done}/{total}] {}: {what}: {why}{after}", t.id)
}

/// The first line of a token's block after a `rotate`: `inventory: rotated, token 8 → 17
/// (expires 2027-12-02)`, or why it failed.
pub fn block_head(t: &TokenReport) -> String {
    let tokens = match (&t.before, &t.after) {
        (Some(b), Some(a)) => format!(", token {} → {} (expires {})", b.token_id, a.token_id, date(a.expires_at)),
        (None, Some(a)) => format!(", token {} (expires {})", a.token_id, date(a.expires_at)),
        _ => String::new(),
    };
    match (&t.outcome, &t.error) {
        (Outcome::Failed, Some(e)) => format!("{}: failed{tokens}: {e}", t.id),
        (outcome, _) => format!("{}: {}{tokens}", t.id, outcome.as_str()),
    }
}

/// What was done for one token besides the token itself, one indented line each: the variables
/// written (or, in `plan`, that would be), and the pipelines retried or started and how they
/// ended (or would be). Empty when nothing was or would be done.
pub fn block(t: &TokenReport) -> Vec<String> {
    let mut lines = Vec::new();
    for v in &t.variables {
        let done = match v.outcome {
            VariableOutcome::Written => "wrote",
            VariableOutcome::WouldWrite => "would write",
            VariableOutcome::Failed => "could not write",
            VariableOutcome::Unchanged => continue,
        };
        let err = v.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        lines.push(format!("    {done} {} {} {} [{}]{err}", v.scope, v.path, v.key, v.environment_scope));
    }
    for p in &t.pipelines {
        let done = match p.action {
            PipelineAction::Retried => "retried",
            PipelineAction::Created => "started",
            PipelineAction::WouldRetry => "would retry (if its latest run failed)",
            PipelineAction::WouldStart => "would start",
            PipelineAction::Skipped if p.error.is_some() => "could not retry or start",
            PipelineAction::Skipped => continue,
        };
        let id = p.pipeline_id.map(|i| format!(" #{i}")).unwrap_or_default();
        let status = p.status.as_deref().map(|s| format!(", {s}")).unwrap_or_default();
        let err = p.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        lines.push(format!("    {done} pipeline {} {}{id}{status}{err}", p.project, p.reference));
    }
    lines
}

pub fn totals_line(s: &Summary) -> String {
    format!(
        "patrol: {} rotated, {} created, {} repaired, {} unchanged, {} due, {} failed",
        s.rotated, s.created, s.repaired, s.unchanged, s.due, s.failed
    )
}
