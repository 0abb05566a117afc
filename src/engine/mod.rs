//! The domain: for each managed token, observe GitLab, decide (pure, `decide.rs`), act, recover,
//! verify, then retry dependent pipelines.
//!
//! Safety rules, each enforced here:
//! - A rotate (or create) request is sent once. When its answer is lost, GitLab's token list is
//!   read again and the next step follows from it (`obtain`): never a replay (gitlab-api.md §1.5).
//! - A marker (`[patrol: token N]` in a variable's description) is written only together with
//!   token N's secret, so it never claims what is not stored. Write access is proven without
//!   writing: GitLab lets only the role that may update a variable read it (`admin_cicd_variables`,
//!   §3.4), every variable is read before anything changes, and the preflight checks that the
//!   credential has the `api` scope.
//! - A new secret is written before anything else is done with it, with patient retries; if a
//!   write fails for good, the token is marked failed and the marker left behind makes the next
//!   run repair it.

pub mod audit;
pub mod decide;
pub mod lock;
pub mod notify;
pub mod self_rotation;

use crate::config::PipelineAction as PipelineActionConfig;
use crate::config::{ManagedToken, Owner, PipelineAction as Action, Strategy, VariableTarget};
use crate::gitlab::model::{ApiPipeline, ApiToken, ApiUser, ApiVariable, IssuedToken};
use crate::gitlab::{Client, GitlabError, TokenHome};
use crate::report::{
    Action as Planned, After, Before, Outcome, PipelineAction, PipelineReport, TokenReport, VariableOutcome,
    VariableReport,
};
use chrono::{DateTime, Duration as Days, NaiveDate, Utc};
use decide::{decide, Decision, Holds, Observed, Why};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read-only: say what `rotate` would do.
    Plan,
    Rotate,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub force: bool,
    /// Today in UTC: the date expiry is judged by and new expiries are computed from.
    pub today: NaiveDate,
    /// Tokens worked on at once; requests in flight are limited separately by the client.
    pub concurrency: usize,
    /// How long to keep trying to store a new secret before giving up on a variable.
    pub write_budget: Duration,
    /// First wait between polls of a pipeline (doubling up to 30 s).
    pub poll_interval: Duration,
    /// How long GitLab may still carry out a request whose answer was lost (§12): no rotate or
    /// create is sent again for a token before this has passed since the lost one was sent.
    pub request_deadline: Duration,
    /// The id of the token patrol itself authenticates with, when known.
    pub credential_token: Option<u64>,
    /// The user of that token, when known: a token of this user and name may be patrol's own
    /// credential even where a variable's marker names an older token of it.
    pub credential_user: Option<u64>,
    /// How long a lock lasts unless renewed; the holder renews it every third of that.
    pub lock_lease: Duration,
    /// Whether to take patrol's per-token lock (`lock.rs`) before changing a token. Off is safe
    /// only when nothing else can act on the same tokens at the same time: every run that can
    /// touch them (scheduled, emergency, `--self` jobs, laptops) is serialized by one GitLab
    /// `resource_group`. It saves two requests per rotated token.
    pub lock: bool,
}

impl Options {
    pub fn new(mode: Mode, today: NaiveDate) -> Options {
        Options {
            mode,
            force: false,
            today,
            concurrency: 8,
            write_budget: Duration::from_secs(300),
            poll_interval: Duration::from_millis(500),
            request_deadline: crate::config::DEFAULT_REQUEST_DEADLINE,
            credential_token: None,
            credential_user: None,
            lock_lease: lock::LEASE,
            lock: true,
        }
    }
}

/// What `run` tells its caller as it goes.
pub enum Progress<'a> {
    /// A token is finished (`done` of the total), pipelines aside.
    Token(usize, &'a TokenReport),
    /// A stored token's dependent pipeline failed afterwards, which fails the token.
    PipelineFailed(&'a TokenReport),
}

pub struct Engine {
    /// Behind a lock: when patrol rotates its own credential (last in a run), the rest of the
    /// run continues with the new secret.
    client: std::sync::RwLock<Client>,
    options: Options,
    cache: Cache,
    /// This run, as its locks name it.
    run: lock::RunId,
    /// The locks held, by config id: a rotate or create is sent only while its token's lock is
    /// still this run's, and when patrol's own credential changes, the renewals switch with it.
    locks: Mutex<HashMap<String, lock::Renewer>>,
    /// Tokens (by config id) with a rotate or create whose outcome is unknown, and until when
    /// GitLab may still carry it out: their locks are kept until then, not removed.
    in_flight: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// How long after patrol stored a token a later run still checks that its pipelines were retried
/// (`stored_by_patrol`).
const CATCH_UP: Days = Days::days(7);

type Cell<V> = Arc<tokio::sync::OnceCell<Result<V, String>>>;

/// What a run fetches once and shares between tokens: nothing is fetched twice.
#[derive(Default)]
struct Cache {
    /// Username (lowercase) → user id, or none.
    users: Mutex<HashMap<String, Cell<Option<u64>>>>,
    /// Top-level group → its service accounts.
    accounts: Mutex<HashMap<String, Cell<Vec<ApiUser>>>>,
    /// Every unrevoked token of an owner that has several managed tokens.
    listings: Mutex<HashMap<TokenHome, Cell<Vec<ApiToken>>>>,
    /// Owners with several managed tokens in this run: one listing serves them all.
    shared: Mutex<HashSet<Owner>>,
}

/// Runs `init` once per key; every caller gets its result.
async fn cached<K, V, F>(map: &Mutex<HashMap<K, Cell<V>>>, key: K, init: F) -> Result<V, String>
where
    K: std::hash::Hash + Eq,
    V: Clone,
    F: std::future::Future<Output = Result<V, String>>,
{
    let cell = map.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone();
    cell.get_or_init(|| init).await.clone()
}

/// A reason a token could not be finished, written for the person who reads the report.
#[derive(Debug)]
struct Failure(String);

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure(s)
    }
}

/// What `observe` saw of one managed token.
struct Seen {
    home: TokenHome,
    /// Every token GitLab lists under the token's owner with exactly its name, revoked ones too:
    /// the identity, as GitLab knows it.
    family: Vec<ApiToken>,
    /// The unrevoked ones.
    named: Vec<ApiToken>,
    states: Vec<VariableState>,
    observed: Observed,
    /// A token due by its marker, listed only under the lock (`Engine::due_by_marker`): until
    /// then `family`, `named` and `observed` are empty and every variable's `holds` is unknown.
    hint: Option<Stored>,
}

/// What the run as a whole decided for one token before any of them changes.
enum Step {
    Work(Seen),
    Fail(Failure),
    /// patrol's own credential: rotated last, after every other token and pipeline.
    Last(Seen),
}

/// What patrol knows about one configured variable before acting.
struct VariableState {
    target: VariableTarget,
    existing: Option<ApiVariable>,
    holds: Holds,
}

/// patrol's marker: written only together with token N's secret, so it claims what is stored.
const MARKER: &str = "[patrol: token ";
/// Written before rotating token N on a hidden variable patrol has never written (whose content
/// it cannot know): it claims only that patrol set out to replace token N there. Once N is
/// rotated, a variable still marked so was not written since, and is stale.
const PENDING: &str = "[patrol: pending ";

/// What a marker records after its prefix: `[patrol: token 42]`, or on a readable variable
/// `[patrol: token 42 user 7 expires 2027-12-02 #0123456789abcdef]`.
struct Parts {
    id: u64,
    user_id: Option<u64>,
    /// `Some(None)`: "expires never".
    expires_at: Option<Option<NaiveDate>>,
    fingerprint: Option<String>,
}

fn marked_parts(description: Option<&str>, prefix: &str) -> Option<Parts> {
    let d = description?;
    let start = d.rfind(prefix)? + prefix.len();
    let inside = d[start..].split(']').next()?;
    let mut words = inside.split_whitespace();
    let mut parts = Parts { id: words.next()?.parse().ok()?, user_id: None, expires_at: None, fingerprint: None };
    while let Some(word) = words.next() {
        match word {
            "user" => parts.user_id = words.next().and_then(|u| u.parse().ok()),
            "expires" => {
                parts.expires_at = words.next().and_then(|d| match d {
                    "never" => Some(None),
                    d => NaiveDate::parse_from_str(d, "%Y-%m-%d").ok().map(Some),
                })
            }
            w => parts.fingerprint = w.strip_prefix('#').map(str::to_owned).or(parts.fingerprint),
        }
    }
    Some(parts)
}

fn marked(description: Option<&str>, prefix: &str) -> Option<u64> {
    marked_parts(description, prefix).map(|p| p.id)
}

/// The token id recorded in a variable's description by patrol with its secret.
pub fn marker(description: Option<&str>) -> Option<u64> {
    marked(description, MARKER)
}

/// The token a pending marker says patrol set out to replace.
pub fn pending_marker(description: Option<&str>) -> Option<u64> {
    marked(description, PENDING)
}

/// What patrol's marker on a readable variable records about the token whose secret patrol
/// stored there, as GitLab described that token: its id, its user and its expiry (neither of
/// which a token ever changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub id: u64,
    pub user_id: u64,
    pub expires_at: Option<NaiveDate>,
}

/// A fingerprint of what patrol stored: token `stored.id`'s `secret`, with the token's user and
/// expiry. patrol writes it into its marker on a variable whose value GitLab shows; a later run
/// that reads the value and finds the fingerprint matching knows, without authenticating as the
/// value, that the variable still holds what patrol stored (no one changed the value since), and
/// for which token. It binds everything the marker says, so a marker edited to say anything
/// else does not match. 64 bits of SHA-256: it identifies, it cannot be turned back into the
/// secret (GitLab's secrets carry far more randomness than that), and it is shown only where the
/// value itself is.
pub fn fingerprint(stored: &Stored, secret: &str) -> String {
    let expires = stored.expires_at.map_or_else(|| "never".to_owned(), |d| d.to_string());
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in ["patrol marker v2", &stored.id.to_string(), &stored.user_id.to_string(), &expires, secret] {
        ctx.update(part.as_bytes());
        ctx.update(b"\0");
    }
    ctx.finish().as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What a readable variable provably holds: its marker records a token with a fingerprint that
/// matches `value` and everything the marker says.
pub fn proven_marker(description: Option<&str>, value: &str) -> Option<Stored> {
    let p = marked_parts(description, MARKER)?;
    let stored = Stored { id: p.id, user_id: p.user_id?, expires_at: p.expires_at? };
    (p.fingerprint? == fingerprint(&stored, value)).then_some(stored)
}

/// The description with patrol's marker for token `id`, keeping any human text (GitLab allows
/// 255); on a variable whose value GitLab shows, with what was stored and its fingerprint.
pub fn with_marker(description: Option<&str>, id: u64, proof: Option<(&Stored, &str)>) -> String {
    match proof {
        Some((stored, secret)) => {
            let expires = stored.expires_at.map_or_else(|| "never".to_owned(), |d| d.to_string());
            let what =
                format!("{} user {} expires {expires} #{}", stored.id, stored.user_id, fingerprint(stored, secret));
            marking(description, MARKER, &what)
        }
        None => marking(description, MARKER, &id.to_string()),
    }
}

/// What to record of a newly issued token with its secret on a readable variable, when GitLab
/// named its user.
fn stored(issued: &IssuedToken) -> Option<Stored> {
    Some(Stored { id: issued.token.id, user_id: issued.token.user_id?, expires_at: issued.token.expires_at })
}

/// The description with a pending marker for `id` (see [`PENDING`]).
pub fn with_pending(description: Option<&str>, id: u64) -> String {
    marking(description, PENDING, &id.to_string())
}

fn marking(description: Option<&str>, prefix: &str, what: &str) -> String {
    let human = description.unwrap_or("");
    let human = match human.rfind(MARKER).or_else(|| human.rfind(PENDING)) {
        Some(i) => human[..i].trim_end(),
        None => human.trim_end(),
    };
    let mark = format!("{prefix}{what}]");
    let room = 255usize.saturating_sub(mark.len() + 1);
    let human: String = human.chars().take(room).collect();
    if human.is_empty() {
        mark
    } else {
        format!("{human} {mark}")
    }
}

fn label(v: &VariableTarget) -> String {
    format!("{} {} {} [{}]", v.holder.scope(), v.holder.path(), v.key, v.environment_scope)
}

/// What to do about a GitLab error, in one sentence.
fn advice(e: &GitlabError) -> &'static str {
    match e.status() {
        Some(401) => "Check that the credential is valid and may act on this token (a non-admin manages only its own tokens).",
        Some(403) => "Give the credential the role this needs (Maintainer for project tokens and variables, Owner for group tokens, group variables and service accounts) and the `api` scope.",
        Some(404) => "Check the name in the config; the credential may also lack access to it.",
        Some(429) => "GitLab is rate-limiting patrol; run again later or lower --concurrency.",
        Some(s) if s >= 500 => "GitLab had an internal error; run again later.",
        None => "Check the network path to GitLab and run again.",
        _ => "See GitLab's message above.",
    }
}

impl Engine {
    /// With `since`: whether a pipeline was created on the ref since then (recording it in
    /// `out`), so none needs starting.
    async fn ran_since(
        &self,
        project: &str,
        reference: &str,
        since: Option<DateTime<Utc>>,
        out: &mut PipelineReport,
    ) -> Result<bool, GitlabError> {
        let Some(since) = since else { return Ok(false) };
        Ok(match self.client().latest_pipeline(project, reference).await? {
            Some(latest) if latest.created_at.is_none_or(|c| c >= since) => {
                out.pipeline_id = Some(latest.id);
                out.status = Some(latest.status);
                true
            }
            _ => false,
        })
    }

    /// Whether this engine plans or rotates.
    pub fn mode(&self) -> Mode {
        self.options.mode
    }

    /// The client, with whatever credential patrol currently holds.
    fn client(&self) -> Client {
        self.client.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// From now on, authenticate with `secret`: patrol's own credential was just rotated.
    fn use_credential(&self, secret: crate::secret::Secret) {
        let fresh = {
            let mut client = self.client.write().unwrap_or_else(|e| e.into_inner());
            *client = client.with_credential(secret);
            client.clone()
        };
        for held in self.locks.lock().unwrap_or_else(|e| e.into_inner()).values() {
            held.renew_as(fresh.clone());
        }
    }

    pub fn new(client: Client, options: Options) -> Engine {
        Engine {
            client: std::sync::RwLock::new(client),
            options,
            cache: Cache::default(),
            run: lock::RunId::new(),
            locks: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Works on every token in three steps. Observe: every token is looked at, several at once,
    /// before any changes. Plan: entries that resolve to the same GitLab token fail, and patrol's
    /// own credential is held back. Execute: the others are worked on, several at once, calling
    /// `progress` as each finishes; their dependent pipelines are retried or started once each,
    /// after every token is stored (two tokens may feed one pipeline); then patrol's own
    /// credential, alone, with its pipelines. The reports come back in config order.
    pub async fn run(&self, tokens: &[ManagedToken], mut progress: impl FnMut(Progress<'_>)) -> Vec<TokenReport> {
        let mut per_owner: HashMap<&Owner, usize> = HashMap::new();
        for t in tokens {
            *per_owner.entry(&t.owner).or_default() += 1;
        }
        *self.cache.shared.lock().unwrap_or_else(|e| e.into_inner()) =
            per_owner.into_iter().filter(|(_, n)| *n > 1).map(|(o, _)| o.clone()).collect();
        let seen: Vec<Result<Seen, Failure>> = futures::stream::iter(tokens)
            .map(|t| async move { self.observe(t, false).await })
            .buffered(self.options.concurrency.max(1))
            .collect()
            .await;
        let steps = self.plan_run(tokens, seen);
        let mut last = None;
        let mut done = 0;
        let mut reports: Vec<(usize, TokenReport)> = Vec::with_capacity(tokens.len());
        let mut stream = futures::stream::iter(tokens.iter().zip(steps).enumerate())
            .filter_map(|(i, (t, step))| {
                let now = match step {
                    Step::Last(seen) => {
                        last = Some((i, t, seen));
                        None
                    }
                    step => Some((i, t, step)),
                };
                std::future::ready(now)
            })
            .map(|(i, t, step)| async move { (i, self.process(t, step).await) })
            .buffer_unordered(self.options.concurrency.max(1));
        while let Some((i, report)) = stream.next().await {
            done += 1;
            progress(Progress::Token(done, &report));
            reports.push((i, report));
        }
        drop(stream);
        reports.sort_by_key(|(i, _)| *i);
        let order: Vec<usize> = reports.iter().map(|(i, _)| *i).collect();
        let mut reports: Vec<TokenReport> = reports.into_iter().map(|(_, r)| r).collect();
        if self.options.mode == Mode::Rotate {
            let worked: Vec<ManagedToken> = order.iter().map(|i| tokens[*i].clone()).collect();
            self.pipelines(&worked, &mut reports).await;
        }
        let mut reports: Vec<(usize, TokenReport)> = order.into_iter().zip(reports).collect();
        if let Some((i, t, seen)) = last {
            let mut report = self.process(t, Step::Work(seen)).await;
            if matches!(report.outcome, Outcome::Rotated | Outcome::Created | Outcome::Repaired) {
                report.reason.push_str(
                    "; this is patrol's own credential, so it was rotated last and the run finished with the new secret",
                );
            }
            progress(Progress::Token(done + 1, &report));
            if self.options.mode == Mode::Rotate {
                self.pipelines(std::slice::from_ref(t), std::slice::from_mut(&mut report)).await;
            }
            reports.push((i, report));
        }
        reports.sort_by_key(|(i, _)| *i);
        let reports: Vec<TokenReport> = reports.into_iter().map(|(_, r)| r).collect();
        if self.options.mode == Mode::Rotate {
            for r in reports.iter().filter(|r| {
                r.outcome == Outcome::Failed && r.after.is_some() && r.pipelines.iter().any(|p| p.error.is_some())
            }) {
                progress(Progress::PipelineFailed(r));
            }
        }
        reports
    }

    /// The run's plan, before anything changes: two entries that resolve to one GitLab token
    /// both fail (rotating it twice would meet a revoked token), and patrol's own credential is
    /// worked on last, or refused when no configured variable is known to hold it.
    fn plan_run(&self, tokens: &[ManagedToken], seen: Vec<Result<Seen, Failure>>) -> Vec<Step> {
        let identity = |s: &Seen| s.observed.current.as_ref().or(s.observed.expired.as_ref()).map(|x| x.id);
        // Entries are also one GitLab token when they name one user's token of one name (the
        // lock's key): an entry due by its marker has no family yet, only the marker's token and
        // its user, and two such entries may prove different tokens of one family.
        let who = |t: &ManagedToken, s: &Seen| match s.hint {
            Some(h) => Some((h.user_id, t.name.clone())),
            None => s
                .observed
                .current
                .as_ref()
                .or(s.observed.expired.as_ref())
                .or_else(|| s.family.iter().max_by_key(|x| x.id))
                .and_then(|x| x.user_id.map(|u| (u, x.name.clone()))),
        };
        let mut by_identity: HashMap<(u64, String), Vec<&str>> = HashMap::new();
        for (t, s) in tokens.iter().zip(&seen) {
            if let Some(key) = s.as_ref().ok().and_then(|s| who(t, s)) {
                by_identity.entry(key).or_default().push(&t.id);
            }
        }
        // Entries are one GitLab token when their families share a token: the same owner spelled
        // two ways (a project by path and by id) lists the same tokens, revoked ones included.
        let mut owners: HashMap<u64, Vec<&str>> = HashMap::new();
        for (t, s) in tokens.iter().zip(&seen) {
            for id in s.iter().flat_map(|s| s.family.iter().map(|x| x.id).chain(s.hint.map(|h| h.id))) {
                let entries = owners.entry(id).or_default();
                if !entries.contains(&t.id.as_str()) {
                    entries.push(&t.id);
                }
            }
        }
        tokens
            .iter()
            .zip(seen)
            .map(|(t, s)| {
                let s = match s {
                    Ok(s) => s,
                    Err(e) => return Step::Fail(e),
                };
                let mut others: Vec<String> = s
                    .family
                    .iter()
                    .map(|x| x.id)
                    .chain(s.hint.map(|h| h.id))
                    .flat_map(|id| owners.get(&id).into_iter().flatten())
                    .filter(|o| **o != t.id)
                    .map(|o| format!("{o:?}"))
                    .collect();
                if let Some(key) = who(t, &s) {
                    let same = by_identity.get(&key).into_iter().flatten().filter(|o| **o != t.id);
                    others.extend(same.map(|o| format!("{o:?}")));
                }
                others.sort();
                others.dedup();
                if !others.is_empty() {
                    return Step::Fail(Failure(format!(
                        "token {:?} and token {} in the config are the same GitLab token ({:?} of {}), so neither was changed: it would be rotated or created twice in one run, the second time as a revoked token. Keep one [[token]] for it and list every variable under it.",
                        t.id,
                        others.join(", "),
                        t.name,
                        t.owner.display()
                    )));
                }
                let Some(id) = identity(&s) else { return Step::Work(s) };
                if self.options.credential_token != Some(id) {
                    return Step::Work(s);
                }
                let acts = decide(&s.observed, &t.policy, self.options.today, self.options.force).acts();
                let stored = s.states.iter().any(|v| v.holds == Holds::Token(id));
                match (acts && self.options.mode == Mode::Rotate, stored) {
                    (true, false) => Step::Fail(Failure(format!(
                        "token {:?} is patrol's own credential (token {id}), and none of its configured variables is known to hold it, so patrol will not rotate it: the next run would authenticate with a revoked token. List the CI/CD variable patrol's job reads its credential from as a [[token.variable]] of this token, or rotate the credential by hand and update that variable.",
                        t.id
                    ))),
                    (true, true) => Step::Last(s),
                    (false, _) => Step::Work(s),
                }
            })
            .collect()
    }

    #[tracing::instrument(skip_all, fields(token = %t.id))]
    async fn process(&self, t: &ManagedToken, step: Step) -> TokenReport {
        let mut report = TokenReport {
            id: t.id.clone(),
            kind: t.kind.as_str().into(),
            name: t.name.clone(),
            outcome: Outcome::Failed,
            action: None,
            reason: String::new(),
            before: None,
            after: None,
            variables: Vec::new(),
            pipelines: t.pipelines.iter().map(|p| PipelineReport::skipped(&p.project, &p.reference)).collect(),
            error: None,
            stored_since: None,
        };
        let result = match step {
            Step::Work(seen) | Step::Last(seen) => self.work(t, seen, &mut report).await,
            Step::Fail(failure) => Err(failure),
        };
        if let Err(Failure(message)) = result {
            tracing::debug!(error = %message, "token failed");
            report.outcome = Outcome::Failed;
            report.error = Some(message);
        }
        report
    }

    /// Decides on what was observed; in `rotate` mode, a token that needs work is locked
    /// (`lock.rs`), listed again under the lock (another run may have just finished it), then
    /// worked on. A token due by its marker (`due_by_marker`) is locked first and listed once,
    /// under the lock.
    async fn work(&self, t: &ManagedToken, first: Seen, report: &mut TokenReport) -> Result<(), Failure> {
        let hint = first.hint;
        if hint.is_none() {
            let decision = decide(&first.observed, &t.policy, self.options.today, self.options.force);
            if self.options.mode == Mode::Plan || !decision.acts() || !self.options.lock {
                return self.work_on(t, first, report).await;
            }
        }
        let Some(holder) = lock_place(t) else {
            return Err(Failure(format!("token {:?} has no variable to store a secret in", t.id)));
        };
        // Keyed by the identity GitLab knows, so that another config or a `--self` job working
        // on the same token meets the same lock. (A hint's user is proven by its fingerprint.)
        let identity = match (hint, first.observed.current.as_ref().or(first.observed.expired.as_ref())) {
            (Some(h), _) => Some(lock::identity(h.user_id, &t.name)),
            (None, Some(x)) => x.user_id.map(|u| lock::identity(u, &x.name)),
            (None, None) => {
                first.family.iter().max_by_key(|x| x.id).and_then(|x| x.user_id.map(|u| lock::identity(u, &x.name)))
            }
        }
        .unwrap_or_else(|| format!("{} {}", t.owner.display(), t.name));
        let held =
            match lock::acquire(&self.client(), &self.run, &t.id, &identity, &holder, self.options.lock_lease).await {
                Ok(Ok(held)) => held,
                Ok(Err(busy)) => {
                    report.reason = "left alone: another patrol run holds its lock".into();
                    return Err(Failure(busy));
                }
                Err(e) => {
                    return Err(Failure(format!(
                    "cannot take patrol's lock on token {:?} (a variable {} in {} {}): {e}, so nothing was changed. {}",
                    t.id,
                    lock::key(&identity),
                    holder.scope(),
                    holder.path(),
                    advice(&e)
                )))
                }
            };
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).insert(t.id.clone(), held.renewer());
        // Another run that acted on this token changed its list (rotate, create and revoke all
        // do); an unchanged list means what was observed still stands.
        let result = match hint {
            Some(hint) => match self.look_under_lock(t, first, hint).await {
                Ok(seen) => self.work_on(t, seen, report).await,
                Err(e) => Err(e),
            },
            None => match self.list_family(&first.home, &t.name).await {
                Ok(now) if same_tokens(&now, &first.family) => self.work_on(t, first, report).await,
                Ok(_) => match self.observe(t, true).await {
                    Ok(again) => self.work_on(t, again, report).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
        };
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).remove(&t.id);
        let held = Some(held);
        let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&t.id);
        let mut result = result;
        if let Some(held) = held {
            let kept = match in_flight.filter(|until| *until > Utc::now()) {
                // A rotate or create may still be carried out: no other run may act before then.
                Some(until) => {
                    let kept = lock::keep_until(&self.client(), &held, until).await;
                    if let (Err(Failure(message)), Ok(())) = (&mut result, &kept) {
                        message.push_str(&format!(
                            " A request whose outcome is unknown may still be carried out by GitLab until {}; patrol's lock {} stays until then, so that no run sends another.",
                            until.format("%H:%M:%S UTC"),
                            held.key
                        ));
                    }
                    kept
                }
                None => lock::release(&self.client(), &held).await,
            };
            if let Err(e) = kept {
                tracing::warn!(token = %t.id, lock = %held.key, error = %e, "could not remove or keep the lock; it expires by itself");
            }
        }
        result
    }

    /// Where the token lives, the tokens with its name, what each variable holds, and the token
    /// in use. `fresh` skips the run's shared listing, for a second look under the lock.
    async fn observe(&self, t: &ManagedToken, fresh: bool) -> Result<Seen, Failure> {
        let home = self.home(t).await?;
        let mut read = Vec::with_capacity(t.variables.len());
        for v in &t.variables {
            read.push(
                self.read_variable(v)
                    .await
                    .map_err(|e| format!("cannot read variable {}: {e}. {}", label(v), advice(&e)))?,
            );
        }
        if !fresh {
            if let Some(hint) = self.due_by_marker(t, &home, &read) {
                // Listed under the lock instead (`work`): listing it now as well would cost a
                // request and prove nothing that the listing under the lock does not.
                let states = t
                    .variables
                    .iter()
                    .zip(read)
                    .map(|(v, existing)| VariableState { target: v.clone(), existing, holds: Holds::Unknown })
                    .collect();
                let observed = Observed { current: None, expired: None, variables: Vec::new(), may_create: false };
                return Ok(Seen { home, family: Vec::new(), named: Vec::new(), states, observed, hint: Some(hint) });
            }
        }
        let family = self.family(t, &home, fresh).await?;
        self.seen(t, home, family, read).await
    }

    /// The token as seen from its family (listed) and its variables (read).
    async fn seen(
        &self,
        t: &ManagedToken,
        home: TokenHome,
        family: Vec<ApiToken>,
        read: Vec<Option<ApiVariable>>,
    ) -> Result<Seen, Failure> {
        let mut states = Vec::with_capacity(read.len());
        for (v, existing) in t.variables.iter().zip(read) {
            states.push(
                self.variable_state(v, existing, &family)
                    .await
                    .map_err(|e| format!("cannot read variable {}: {e}. {}", label(v), advice(&e)))?,
            );
        }
        let named: Vec<ApiToken> = family.iter().filter(|x| !x.revoked).cloned().collect();
        let mut observed = self.choose(t, &named, &states)?;
        observed.may_create = t.create || !family.is_empty();
        Ok(Seen { home, family, named, states, observed, hint: None })
    }

    /// In `rotate` with the lock: the token patrol stored in every one of its variables (each
    /// readable, each proving it by its marker's fingerprint), when that token's recorded expiry
    /// makes it due (or `--force`). Such a token is listed only once, under the lock. A hint
    /// only: what is done follows from that listing. patrol's own credential is not deferred.
    fn due_by_marker(&self, t: &ManagedToken, home: &TokenHome, read: &[Option<ApiVariable>]) -> Option<Stored> {
        if self.options.mode != Mode::Rotate || !self.options.lock || read.is_empty() {
            return None;
        }
        let mut proven = read.iter().map(|v| {
            let v = v.as_ref()?;
            proven_marker(v.description.as_deref(), v.value.as_ref()?.expose())
        });
        let first = proven.next()??;
        if !proven.all(|p| p == Some(first)) || Some(first.id) == self.options.credential_token {
            return None;
        }
        // A token of the credential's own user may be the credential itself under a newer id
        // (rotated by hand since the marker was written): the run plan must see its family to
        // renew it last, or refuse to (`plan_run`).
        if self.options.credential_user == Some(first.user_id) {
            return None;
        }
        // A personal token's or service account's user is known from the lookup: it must match.
        let owner = match home {
            TokenHome::Personal { user_id } | TokenHome::ServiceAccount { user_id, .. } => Some(*user_id),
            _ => None,
        };
        if owner.is_some_and(|u| u != first.user_id) {
            return None;
        }
        let due = self.options.force
            || first.expires_at.is_some_and(|d| (d - self.options.today).num_days() <= t.policy.rotate_before_days);
        due.then_some(first)
    }

    /// Under the lock, the token a hint deferred: its family listed now, its variables as read
    /// before. When the listing shows another active token than the hint's (another run or a
    /// person changed it since), everything is observed afresh.
    async fn look_under_lock(&self, t: &ManagedToken, first: Seen, hint: Stored) -> Result<Seen, Failure> {
        let family = self.list_family(&first.home, &t.name).await?;
        let active: Vec<u64> = family.iter().filter(|x| x.active).map(|x| x.id).collect();
        if active != [hint.id] {
            return self.observe(t, true).await;
        }
        let read = first.states.into_iter().map(|s| s.existing).collect();
        self.seen(t, first.home, family, read).await
    }

    async fn work_on(&self, t: &ManagedToken, seen: Seen, report: &mut TokenReport) -> Result<(), Failure> {
        let Seen { home, family, named, mut states, observed, .. } = seen;
        report.before = observed.current.as_ref().or(observed.expired.as_ref()).map(|c| Before {
            token_id: c.id,
            expires_at: c.expires_at,
            active: c.active,
        });
        let decision = decide(&observed, &t.policy, self.options.today, self.options.force);
        report.action = match &decision {
            Decision::Unchanged { .. } => Some(Planned::Nothing),
            Decision::Rotate { why: Why::Due, .. } => Some(Planned::Rotate),
            Decision::Rotate { why: Why::OutOfSync, .. } => Some(Planned::Repair),
            Decision::Create { .. } if family.is_empty() => Some(Planned::Create),
            Decision::Create { .. } => Some(Planned::Recreate),
            Decision::Refuse { .. } | Decision::Unknown => None,
        };
        // Once per token (stdout says it too, so only at -v).
        if let Some(action) = report.action {
            tracing::info!(action = action.planned(), "decided");
        }
        report.variables = states.iter().map(|s| variable_report(&s.target)).collect();
        let (why, reason) = match &decision {
            Decision::Unchanged { reason } => {
                report.outcome = Outcome::Unchanged;
                report.reason = reason.clone();
                if self.options.mode == Mode::Rotate {
                    self.revoke_leftovers(t, &home, &named, &observed, report).await?;
                    report.stored_since = stored_by_patrol(&observed, &states, Utc::now());
                }
                return Ok(());
            }
            Decision::Refuse { reason } => return Err(Failure(format!("token {:?}: {reason}", t.id))),
            Decision::Unknown => return Err(self.no_such_token(t, &home).await),
            Decision::Rotate { why, reason, .. } => (*why, reason.clone()),
            Decision::Create { reason } => (Why::Due, reason.clone()),
        };
        report.reason = reason;
        if self.options.mode == Mode::Plan {
            report.outcome = Outcome::Due;
            for v in &mut report.variables {
                v.outcome = VariableOutcome::WouldWrite;
            }
            for (p, out) in t.pipelines.iter().zip(report.pipelines.iter_mut()) {
                out.action = match p.action {
                    PipelineActionConfig::Retry => PipelineAction::WouldRetry,
                    PipelineActionConfig::Create => PipelineAction::WouldStart,
                };
            }
            return Ok(());
        }
        self.act(t, &home, &named, &decision, &mut states, report).await?;
        report.outcome = match (&decision, why) {
            (Decision::Create { .. }, _) => Outcome::Created,
            (_, Why::Due) => Outcome::Rotated,
            (_, Why::OutOfSync) => Outcome::Repaired,
        };
        Ok(())
    }

    /// GitLab has never had a token of this kind, owner and name: patrol creates one only when
    /// the config says `create = true`. The failure names what GitLab does have nearby, since a
    /// misspelt name or a wrong kind is the likely cause.
    async fn no_such_token(&self, t: &ManagedToken, home: &TokenHome) -> Failure {
        let mut near: Vec<String> = match self.client().list_tokens(home, &[]).await {
            Ok(all) => {
                let mut names: Vec<String> =
                    all.into_iter().map(|x| x.name).filter(|n| near_name(n, &t.name)).collect();
                names.sort();
                names.dedup();
                names.into_iter().map(|n| format!("{n:?} of {}", t.owner.display())).collect()
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the owner's tokens for near matches");
                Vec::new()
            }
        };
        // A group token declared as a project's: the project's group has it.
        if let Owner::Project(p) = &t.owner {
            if let Some((group, _)) = p.rsplit_once('/') {
                let home = TokenHome::Group(group.to_owned());
                if let Ok(tokens) = self.client().list_tokens(&home, &[("search", t.name.clone())]).await {
                    if tokens.iter().any(|x| x.name == t.name) {
                        near.push(format!(
                            "a group token {:?} of group {group} (kind = \"group\", group = {group:?})",
                            t.name
                        ));
                    }
                }
            }
        }
        let hint = if near.is_empty() { String::new() } else { format!(" GitLab has {}.", near.join(", ")) };
        Failure(format!(
            "GitLab has no {} token named {:?} of {} (none active, expired or revoked), so patrol did not create one: with a misspelt name or a wrong kind it would create a stray token and overwrite a variable that may hold a working one.{hint} Fix `name`, `kind` or the owner in the config, or set `create = true` (with `scopes`) for token {:?} if a new token is wanted.",
            t.kind.as_str(),
            t.name,
            t.owner.display(),
            t.id
        ))
    }

    /// Finds where the token lives. Lookups are shared between the tokens of a run.
    async fn home(&self, t: &ManagedToken) -> Result<TokenHome, Failure> {
        let home =
            match &t.owner {
                Owner::User(username) => {
                    let id = cached(&self.cache.users, username.to_lowercase(), async {
                        let user = self.client().user_by_username(username).await;
                        user.map(|u| u.map(|u| u.id))
                            .map_err(|e| format!("cannot look up user {username:?}: {e}. {}", advice(&e)))
                    })
                    .await?;
                    let user_id =
                        id.ok_or_else(|| format!("GitLab has no user named {username:?}; check `user` in the config"))?;
                    TokenHome::Personal { user_id }
                }
                Owner::ServiceAccount { group, user } => {
                    let accounts = cached(&self.cache.accounts, group.clone(), async {
                        self.client().service_accounts(group).await.map_err(|e| {
                            format!("cannot list the service accounts of group {group:?}: {e}. {}", advice(&e))
                        })
                    })
                    .await?;
                    let account = accounts.into_iter().find(|a| a.username.eq_ignore_ascii_case(user)).ok_or_else(|| {
                    format!("group {group:?} has no service account {user:?}; check `group` and `user` in the config")
                })?;
                    TokenHome::ServiceAccount { group: group.clone(), user_id: account.id }
                }
                Owner::Project(p) => TokenHome::Project(p.clone()),
                Owner::Group(g) => TokenHome::Group(g.clone()),
            };
        Ok(home)
    }

    /// Every token of `home` with exactly `t`'s name, revoked ones too: from the owner's one
    /// listing shared by its tokens in this run, unless `fresh`.
    async fn family(&self, t: &ManagedToken, home: &TokenHome, fresh: bool) -> Result<Vec<ApiToken>, Failure> {
        let home = home.clone();
        let shared = !fresh && self.cache.shared.lock().unwrap_or_else(|e| e.into_inner()).contains(&t.owner);
        let family = if shared {
            let all = cached(&self.cache.listings, home.clone(), async {
                self.client()
                    .list_tokens(&home, &[])
                    .await
                    .map_err(|e| format!("cannot list the tokens of {}: {e}. {}", t.owner.display(), advice(&e)))
            })
            .await?;
            all.into_iter().filter(|x| x.name == t.name).collect()
        } else {
            self.list_family(&home, &t.name).await?
        };
        Ok(family)
    }

    /// Every token of `home` with exactly this name, revoked ones too.
    async fn list_family(&self, home: &TokenHome, name: &str) -> Result<Vec<ApiToken>, Failure> {
        let listed = self
            .client()
            .list_tokens(home, &[("search", name.to_owned())])
            .await
            .map_err(|e| format!("cannot list the tokens named {name:?}: {e}. {}", advice(&e)))?;
        Ok(listed.into_iter().filter(|t| t.name == name).collect())
    }

    /// The unrevoked tokens of `home` with exactly this name.
    async fn list_named(&self, home: &TokenHome, name: &str) -> Result<Vec<ApiToken>, Failure> {
        Ok(self.list_family(home, name).await?.into_iter().filter(|t| !t.revoked).collect())
    }

    /// One configured variable as GitLab has it, in its scope; `None` when it does not exist.
    async fn read_variable(&self, v: &VariableTarget) -> Result<Option<ApiVariable>, GitlabError> {
        let existing = self.client().variable(&v.holder, &v.key, &v.environment_scope).await?;
        if let Some(found) = existing.as_ref().filter(|x| x.environment_scope != v.environment_scope) {
            // A GitLab without `filter` for group variables (before 16.9, §3.2) answers another
            // scope's variable: reading it as this one would lead to writing it.
            return Err(GitlabError::Unexpected {
                method: "GET".into(),
                path: format!("{} {}", v.holder.path(), v.key),
                detail: format!(
                    "asked for {} in environment scope {:?}, GitLab answered the one in scope {:?}; this GitLab cannot address a variable by scope, so give {} environment_scope = {:?} in the config",
                    v.key, v.environment_scope, found.environment_scope, v.key, found.environment_scope
                ),
            });
        }
        Ok(existing)
    }

    /// What a variable read by [`Engine::read_variable`] holds, against `family` (this entry's
    /// tokens as GitLab lists them). A readable value is identified by patrol's marker when its
    /// fingerprint proves the value is what patrol stored for a token of `family` (whose state
    /// the listing gives), else by authenticating as it; a hidden one by patrol's marker. A live
    /// token outside `family` belongs to another identity.
    async fn variable_state(
        &self,
        v: &VariableTarget,
        existing: Option<ApiVariable>,
        family: &[ApiToken],
    ) -> Result<VariableState, GitlabError> {
        let foreign = |id: u64, name: Option<String>| Holds::Foreign { id, name };
        let holds = match &existing {
            None => Holds::Missing,
            Some(var) => match &var.value {
                Some(value)
                    if let Some(known) = proven_marker(var.description.as_deref(), value.expose()).and_then(|p| {
                        family.iter().find(|x| x.id == p.id && x.user_id.is_none_or(|u| u == p.user_id))
                    }) =>
                {
                    if known.active {
                        Holds::Token(known.id)
                    } else {
                        Holds::Dead
                    }
                }
                Some(value) => match self.client().token_self(value).await {
                    Ok(t) if t.active && !family.iter().any(|x| x.id == t.id) => foreign(t.id, Some(t.name)),
                    Ok(t) if t.active => Holds::Token(t.id),
                    Ok(_) => Holds::Dead,
                    Err(e) if e.status() == Some(401) => Holds::Dead,
                    Err(e) if e.unsendable_credential() => Holds::Dead,
                    Err(e) => return Err(e),
                },
                None => {
                    let description = var.description.as_deref();
                    // A marker is patrol's own writing, no proof of another identity: one naming a
                    // token this entry's family no longer lists (GitLab drops revoked resource
                    // tokens after 30 days, §2) is simply stale.
                    match (marker(description), pending_marker(description)) {
                        (Some(id), _) => Holds::Token(id),
                        (None, Some(id)) => Holds::Pending(id),
                        (None, None) => Holds::Unknown,
                    }
                }
            },
        };
        Ok(VariableState { target: v.clone(), existing, holds })
    }

    /// Picks the token in use among those with the name.
    fn choose(&self, t: &ManagedToken, named: &[ApiToken], states: &[VariableState]) -> Result<Observed, Failure> {
        let active: Vec<&ApiToken> = named.iter().filter(|x| x.active).collect();
        let current = match active.as_slice() {
            [] => None,
            [one] => Some((*one).clone()),
            several => {
                let held: Vec<u64> = states
                    .iter()
                    .filter_map(|s| match s.holds {
                        // A pending marker names the token that was in use when an interrupted
                        // run set out to replace it; the newer active one is what that run made.
                        Holds::Token(id) | Holds::Pending(id) if several.iter().any(|x| x.id == id) => Some(id),
                        _ => None,
                    })
                    .collect();
                // Under `overlap` (and for patrol's own credential, renewed that way) the newer
                // active tokens are patrol's own successors, from a run that stopped between
                // creating and revoking: the newest any variable holds is in use (the others are
                // repaired to it), and when none holds any, the oldest was in use before that run
                // and the newer ones are orphans to take over (see `act`).
                let overlap = t.policy.strategy == Strategy::Overlap
                    || several.iter().any(|x| Some(x.id) == self.options.credential_token);
                let pick = |id: u64| several.iter().find(|x| x.id == id).map(|x| (*x).clone());
                match held.first() {
                    Some(id) if held.iter().all(|h| h == id) => pick(*id),
                    Some(_) if overlap => held.iter().max().and_then(|id| pick(*id)),
                    None if overlap => several.iter().min_by_key(|x| x.id).map(|x| (*x).clone()),
                    _ => {
                        let ids: Vec<String> = several.iter().map(|x| x.id.to_string()).collect();
                        return Err(Failure(format!(
                            "{} active tokens are named {:?} (ids {}), and the variables do not tell which one is in use, so patrol changed nothing. Revoke the ones not in use in GitLab, then run patrol again.",
                            several.len(),
                            t.name,
                            ids.join(", ")
                        )));
                    }
                }
            }
        };
        let expired = if current.is_none() {
            named.iter().filter(|x| !x.revoked && !x.active).max_by_key(|x| x.id).cloned()
        } else {
            None
        };
        let variables = states.iter().map(|s| (label(&s.target), s.holds.clone())).collect();
        Ok(Observed { current, expired, variables, may_create: false })
    }

    async fn act(
        &self,
        t: &ManagedToken,
        home: &TokenHome,
        named: &[ApiToken],
        decision: &Decision,
        states: &mut [VariableState],
        report: &mut TokenReport,
    ) -> Result<(), Failure> {
        let expires_at = self.options.today + Days::days(t.policy.expires_in_days);
        let target = match decision {
            Decision::Rotate { target, .. } => Some(target.clone()),
            _ => None,
        };
        // A hidden variable patrol never wrote cannot show later whether this run reached it:
        // record, truthfully, that patrol sets out to replace the token. Writing it also proves
        // the variable can be written before any secret changes.
        if let Some(old) = &target {
            self.mark_pending(states, old.id).await?;
        }
        // patrol's own credential is always renewed by creating its successor first (`overlap`):
        // if that answer is lost, the old credential still works, so GitLab can be asked and the
        // successor recovered. A lost rotate answer would leave patrol with nothing that works.
        let own = target.as_ref().is_some_and(|x| Some(x.id) == self.options.credential_token);
        let overlap = (t.policy.strategy == Strategy::Overlap || own) && target.as_ref().is_some_and(|x| x.active);
        // A token an interrupted overlap run created (newer than the one in use, held by no
        // variable, its secret never stored) is taken over by rotating it, not left beside a
        // second new one.
        let orphan = target.as_ref().filter(|_| overlap).and_then(|old| {
            named
                .iter()
                .filter(|x| x.active && x.id > old.id)
                .filter(|x| !states.iter().any(|s| s.holds == Holds::Token(x.id)))
                .max_by_key(|x| x.id)
        });
        let (issued, notes) = match (&target, overlap, orphan) {
            (Some(old), false, _) => self.obtain_by_rotation(t, home, old.clone(), expires_at).await?,
            (Some(_), true, Some(orphan)) => {
                let (issued, mut notes) = self.obtain_by_rotation(t, home, orphan.clone(), expires_at).await?;
                notes.insert(
                    0,
                    format!("took over token {}, which an interrupted run had created, by rotating it", orphan.id),
                );
                (issued, notes)
            }
            _ => {
                let scopes = t
                    .scopes
                    .clone()
                    .or_else(|| named.iter().max_by_key(|x| x.id).map(|x| x.scopes.clone()))
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        format!(
                            "no token named {:?} exists to copy scopes from; set `scopes` for token {:?} in the config",
                            t.name, t.id
                        )
                    })?;
                let description = named.iter().max_by_key(|x| x.id).and_then(|x| x.description.clone());
                // The role too: a successor keeps the role of the token it replaces unless the
                // config names one (GitLab's default for a new project or group token is
                // Maintainer, more than the token may have had).
                let role = t
                    .access_level
                    .or_else(|| named.iter().max_by_key(|x| x.id).and_then(|x| x.access_level).map(u16::from));
                match self.obtain_by_creation(t, home, &scopes, role, expires_at, description.as_deref()).await {
                    Err(Failure(why)) if own => {
                        return Err(Failure(format!(
                            "token {:?} is patrol's own credential, which patrol renews by creating its successor before revoking it, so that a lost answer never leaves it without a working credential; that failed: {why} Creating needs an administrator's credential for a personal token (a group Owner's for a service account or group token, a Maintainer's for a project token). Otherwise renew the credential by hand.",
                            t.id
                        )))
                    }
                    other => other?,
                }
            }
        };
        for note in notes {
            report.reason.push_str("; ");
            report.reason.push_str(&note);
        }
        report.after = Some(After { token_id: issued.token.id, expires_at: issued.token.expires_at });
        tracing::info!(
            new_token = issued.token.id,
            expires_at = %issued.token.expires_at.map_or_else(|| "never".to_owned(), |d| d.to_string()),
            "new secret issued"
        );
        // patrol's own credential (worked on last in a run): the old secret stops working now, so
        // storing, verifying and cleaning up continue with the new one.
        if target.as_ref().is_some_and(|x| Some(x.id) == self.options.credential_token) {
            self.use_credential(issued.secret.clone());
        }

        // Store it everywhere before doing anything else with it.
        let mut write_failures = Vec::new();
        for (state, out) in states.iter_mut().zip(report.variables.iter_mut()) {
            match self.write(t, state, &issued).await {
                Ok(()) => out.outcome = VariableOutcome::Written,
                Err(e) => {
                    out.outcome = VariableOutcome::Failed;
                    out.error = Some(e.to_string());
                    write_failures.push(format!("{}: {e}", label(&state.target)));
                }
            }
        }
        if !write_failures.is_empty() {
            let old = target.as_ref().map(|x| x.id.to_string()).unwrap_or_else(|| "(none)".into());
            let what = if overlap {
                format!("token {} was created to replace token {old}, which stays active until the new one is stored everywhere", issued.token.id)
            } else {
                format!("token {old} was replaced by token {}", issued.token.id)
            };
            return Err(Failure(format!(
                "{what} (expires {}), but the new secret could not be stored in {}. Nothing is lost: the next `patrol rotate` sees the stale variable and renews token {} again to recover. Fix the cause (see GitLab's message), then run `patrol rotate --only {}`.",
                issued.token.expires_at.map(|d| d.to_string()).unwrap_or_else(|| "never".into()),
                write_failures.join("; "),
                issued.token.id,
                t.id
            )));
        }
        self.verify(&issued).await?;
        if overlap {
            if let Some(old) = &target {
                self.client().revoke(home, old.id).await.map_err(|e| {
                    format!("the new token {} is stored and verified, but the old token {} could not be revoked: {e}. Revoke it in GitLab, or the next run will.", issued.token.id, old.id)
                })?;
            }
        }
        Ok(())
    }

    /// An `overlap` rotation interrupted between creating the new token and revoking the old one
    /// leaves two active tokens with the name. Once every variable holds the newest, the older
    /// ones are revoked, so each managed name ends with one active token.
    async fn revoke_leftovers(
        &self,
        t: &ManagedToken,
        home: &TokenHome,
        named: &[ApiToken],
        observed: &Observed,
        report: &mut TokenReport,
    ) -> Result<(), Failure> {
        let Some(current) = &observed.current else { return Ok(()) };
        let all_hold =
            !observed.variables.is_empty() && observed.variables.iter().all(|(_, h)| *h == Holds::Token(current.id));
        // patrol's own credential is renewed by overlap whatever its strategy (see `act`).
        let overlap = t.policy.strategy == Strategy::Overlap || Some(current.id) == self.options.credential_token;
        if !overlap || !all_hold {
            return Ok(());
        }
        let leftovers: Vec<u64> = named.iter().filter(|x| x.active && x.id < current.id).map(|x| x.id).collect();
        for id in &leftovers {
            self.client().revoke(home, *id).await.map_err(|e| {
                format!(
                    "token {id} is left over from an interrupted overlap rotation and could not be revoked: {e}. {}",
                    advice(&e)
                )
            })?;
        }
        if !leftovers.is_empty() {
            let ids: Vec<String> = leftovers.iter().map(u64::to_string).collect();
            report.outcome = Outcome::Repaired;
            report.reason.push_str(&format!(
                "; revoked token {} left over from an interrupted overlap rotation",
                ids.join(", ")
            ));
        }
        Ok(())
    }

    /// Writes a pending marker for `id` on each hidden variable that carries no marker at all.
    /// An older pending marker stays: once its token is gone it proves the variable stale, and
    /// replacing it would forget that.
    async fn mark_pending(&self, states: &mut [VariableState], id: u64) -> Result<(), Failure> {
        for s in states.iter_mut() {
            let Some(existing) = &mut s.existing else { continue };
            let description = existing.description.as_deref();
            if !existing.hidden || marker(description).is_some() || pending_marker(description).is_some() {
                continue;
            }
            let description = with_pending(description, id);
            self.client()
                .describe_variable(&s.target.holder, &s.target.key, &s.target.environment_scope, &description)
                .await
                .map_err(|e| {
                    format!(
                        "cannot write variable {} ({e}), so the token was not rotated and nothing changed. {}",
                        label(&s.target),
                        advice(&e)
                    )
                })?;
            existing.description = Some(description);
        }
        Ok(())
    }

    /// Rotates `old`, following GitLab's state when an answer is lost: never a replay. After an
    /// unknown outcome no rotate is sent for the token until GitLab's list shows the old token
    /// revoked (then its successor is rotated to get a secret patrol holds) or the request
    /// deadline has passed since the lost request was sent with the old token still active
    /// (then GitLab can no longer carry it out, and sending again is safe).
    async fn obtain_by_rotation(
        &self,
        t: &ManagedToken,
        home: &TokenHome,
        mut old: ApiToken,
        mut expires_at: NaiveDate,
    ) -> Result<(IssuedToken, Vec<String>), Failure> {
        let mut notes = Vec::new();
        for _ in 0..4 {
            self.still_locked(t).await?;
            let error = match self.client().rotate(home, old.id, expires_at).await {
                Ok(issued) => return Ok((issued, notes)),
                Err(e) => e,
            };
            // Measured when the failed call returned, not when it started: the client may have
            // waited for a request slot, for pacing or after a 429 before the attempt that was
            // lost left, and GitLab's deadline runs from that attempt (§12). The return is never
            // earlier, so the deadline is never cut short.
            let sent = tokio::time::Instant::now();
            if shortened(&error, &mut expires_at, &mut notes) {
                continue;
            }
            if !error.outcome_unknown() {
                return Err(Failure(format!("GitLab refused to rotate token {}: {error}. {}", old.id, advice(&error))));
            }
            tracing::warn!(token_id = old.id, %error, "rotate answer lost; reading GitLab's state");
            self.in_flight(t, sent);
            let old_id = old.id;
            let settled = self
                .await_outcome(t, home, sent, |now| {
                    // Still listed unrevoked: not rotated (yet). Gone from the unrevoked list:
                    // rotated, and its successor is the newest active token with the name.
                    (!now.iter().any(|x| x.id == old_id))
                        .then(|| now.iter().filter(|x| x.active && x.id > old_id).max_by_key(|x| x.id).cloned())
                })
                .await;
            let settled = match settled {
                Err(failure) if Some(old_id) == self.options.credential_token => {
                    return Err(self.own_credential_lost(t, old_id, &error, failure).await)
                }
                other => other?,
            };
            match settled {
                None => {
                    notes.push(format!(
                        "rotating token {old_id} got no answer ({error}); GitLab still showed it active {}s after it was sent, so it was sent again",
                        self.options.request_deadline.as_secs()
                    ));
                }
                Some(Some(successor)) => {
                    notes.push(format!(
                        "the answer to rotating token {} was lost; GitLab had issued token {}, whose secret was rotated again to recover it",
                        old.id, successor.id
                    ));
                    old = successor;
                }
                Some(None) => {
                    return Err(Failure(format!(
                        "rotating token {} got no answer ({error}), and GitLab now shows it revoked with no active successor. Create a token named {:?} in GitLab, or set `scopes` and run `patrol rotate --only {}` to let patrol create it.",
                        old.id, t.name, t.id
                    )))
                }
            }
        }
        Err(Failure(format!("rotating token {} did not succeed after 4 attempts; run again later", old.id)))
    }

    /// Refuses to send a rotate or create for `t` unless its lock is this run's for at least
    /// GitLab's request deadline more: the request may be carried out until then, and no other
    /// run may take the lock over before. A lock lost, or whose renewals fail so that its lease
    /// would end sooner, stops the token here.
    async fn still_locked(&self, t: &ManagedToken) -> Result<(), Failure> {
        let held = self.locks.lock().unwrap_or_else(|e| e.into_inner()).get(&t.id).cloned();
        let Some(held) = held else { return Ok(()) };
        // A margin beyond the deadline for clocks that disagree (a sixth of the lease, 30 s by
        // default): another run judges this lock's lease by its own clock.
        let margin = (self.options.lock_lease / 6).max(Duration::from_secs(1));
        if held.holds_for(self.options.request_deadline + margin).await {
            return Ok(());
        }
        Err(Failure(format!(
            "patrol's lock on token {:?} was lost, or could not be renewed to outlast GitLab's request deadline (another run may hold it now), so this run sent nothing more for it; the next run finishes it",
            t.id
        )))
    }

    /// Records that a request for `t` sent (at the latest) at `sent` may still be carried out
    /// until GitLab's request deadline has passed: the token's lock stays until then.
    fn in_flight(&self, t: &ManagedToken, sent: tokio::time::Instant) {
        let left = self.options.request_deadline.saturating_sub(sent.elapsed());
        let until = Utc::now() + Days::from_std(left).unwrap_or_else(|_| Days::hours(1));
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(t.id.clone()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// patrol's own credential was being rotated, the answer was lost, and GitLab's state could not
    /// be read afterwards: when the credential itself is now refused, GitLab did rotate it and the
    /// new secret, which existed only in the lost answer, is gone. Says so, with what a person
    /// must do; otherwise passes the failure on.
    async fn own_credential_lost(
        &self,
        t: &ManagedToken,
        old_id: u64,
        error: &GitlabError,
        failure: Failure,
    ) -> Failure {
        let client = self.client();
        match client.token_self(client.credential()).await {
            Err(e) if e.status() == Some(401) => Failure(format!(
                "token {:?} is patrol's own credential: GitLab rotated token {old_id}, but its answer, the only copy of the new secret, was lost ({error}), and the old secret is now refused. patrol cannot recover it. A person must create a token named {:?} for {} in GitLab, store it in the configured variables of token {:?} and in the variable patrol's job reads its credential from, then run patrol again.",
                t.id,
                t.name,
                t.owner.display(),
                t.id
            )),
            _ => failure,
        }
    }

    /// After a rotate or create whose answer was lost: lists the tokens with the name until
    /// `settled` finds that GitLab carried the request out (`Some`), or until a listing taken
    /// once the request deadline had passed since `sent` still finds it did not (`None`: GitLab
    /// can no longer carry it out). GitLab keeps working on a request after its client gave up,
    /// until that deadline (§12), so a listing taken earlier proves nothing.
    async fn await_outcome<T>(
        &self,
        t: &ManagedToken,
        home: &TokenHome,
        sent: tokio::time::Instant,
        settled: impl Fn(&[ApiToken]) -> Option<T>,
    ) -> Result<Option<T>, Failure> {
        let deadline = sent + self.options.request_deadline;
        loop {
            let past = tokio::time::Instant::now() >= deadline;
            let now = self.list_named(home, &t.name).await?;
            // Either way the lost request can no longer be carried out a second time: it was,
            // or GitLab's deadline for it has passed. (A listing that fails leaves it in flight.)
            if let Some(done) = settled(&now) {
                self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&t.id);
                return Ok(Some(done));
            }
            if past {
                self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&t.id);
                return Ok(None);
            }
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now()).min(Duration::from_secs(5));
            tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
        }
    }

    /// Creates a token with the name; a lost answer is recovered by rotating what was created,
    /// and the create is sent again only once GitLab can no longer carry out the lost one.
    async fn obtain_by_creation(
        &self,
        t: &ManagedToken,
        home: &TokenHome,
        scopes: &[String],
        access_level: Option<u16>,
        expires_at: NaiveDate,
        description: Option<&str>,
    ) -> Result<(IssuedToken, Vec<String>), Failure> {
        let before = self.list_named(home, &t.name).await?.iter().map(|x| x.id).max().unwrap_or(0);
        let mut expires_at = expires_at;
        let mut notes = vec!["created a new token".to_owned()];
        for _ in 0..3 {
            self.still_locked(t).await?;
            let error =
                match self.client().create_token(home, &t.name, scopes, access_level, expires_at, description).await {
                    Ok(issued) => return Ok((issued, notes)),
                    Err(e) => e,
                };
            // When the failed call returned, as in `obtain_by_rotation`.
            let sent = tokio::time::Instant::now();
            if shortened(&error, &mut expires_at, &mut notes) {
                continue;
            }
            if !error.outcome_unknown() {
                return Err(Failure(format!(
                    "no active token named {:?} exists and creating one failed: {error}. {} Creating needs an admin for personal tokens, a group Owner for service accounts and group tokens, a Maintainer for project tokens.",
                    t.name,
                    advice(&error)
                )));
            }
            tracing::warn!(%error, "create answer lost; reading GitLab's state");
            self.in_flight(t, sent);
            let created = self
                .await_outcome(t, home, sent, |now| {
                    now.iter().filter(|x| x.active && x.id > before).max_by_key(|x| x.id).cloned()
                })
                .await?;
            if let Some(created) = created {
                let (issued, mut notes) = self.obtain_by_rotation(t, home, created.clone(), expires_at).await?;
                notes.insert(
                    0,
                    format!(
                        "the answer to creating a token was lost; rotated the created token {} to recover its secret",
                        created.id
                    ),
                );
                return Ok((issued, notes));
            }
        }
        Err(Failure(format!("creating a token named {:?} did not succeed after 3 attempts; run again later", t.name)))
    }

    /// Stores the secret in one variable, changing only its value (and patrol's marker), or
    /// creating it masked, hidden and raw. Transient failures are retried within the budget.
    async fn write(&self, t: &ManagedToken, s: &mut VariableState, issued: &IssuedToken) -> Result<(), GitlabError> {
        let v = &s.target;
        let id = issued.token.id;
        let mut pause = WritePause::new(self.options.write_budget);
        let mut exists = s.existing.is_some();
        loop {
            let result = if exists {
                let existing = s.existing.as_ref();
                // A readable value gets the secret's fingerprint in the marker: the next run then
                // knows what it holds without authenticating as it.
                let proof = stored(issued).filter(|_| existing.is_some_and(|e| !e.hidden));
                let proof = proof.as_ref().map(|p| (p, issued.secret.expose()));
                let description = with_marker(existing.and_then(|e| e.description.as_deref()), id, proof);
                self.client()
                    .store_in_variable(&v.holder, &v.key, &v.environment_scope, &issued.secret, &description)
                    .await
                    .map(Some)
            } else {
                self.client()
                    .create_secret_variable(v, &issued.secret, &with_marker(None, id, None))
                    .await
                    .map(|()| None)
            };
            match result {
                Ok(stored) => {
                    // The `PUT`'s answer is the variable as stored: no read-back needed. A value
                    // it shows must be the new secret (hidden ones show none).
                    if let Some(value) = stored.as_ref().and_then(|x| x.value.as_ref()) {
                        if !issued.secret.same_as(value.expose()) {
                            return Err(GitlabError::Unexpected {
                                method: "PUT".into(),
                                path: format!("{} {}", v.holder.path(), v.key),
                                detail: "GitLab answered the write with another value than the new secret; another writer may have changed it at the same moment. Run `patrol rotate` again".into(),
                            });
                        }
                    }
                    match stored {
                        Some(stored) => s.existing = Some(stored),
                        None => {
                            s.existing = Some(ApiVariable {
                                key: v.key.clone(),
                                value: None,
                                protected: v.protected,
                                masked: true,
                                hidden: true,
                                raw: true,
                                environment_scope: v.environment_scope.clone(),
                                description: Some(with_marker(None, id, None)),
                            })
                        }
                    }
                    return Ok(());
                }
                Err(e) if exists && e.status() == Some(404) => exists = false,
                Err(e) if !exists && e.already_taken() => {
                    // Someone created it meanwhile. Update it only once it is seen in this scope:
                    // a group variable's PUT on an unseen scope lands in another one (§11).
                    match self.client().variable(&v.holder, &v.key, &v.environment_scope).await {
                        Ok(Some(found)) => {
                            s.existing = Some(found);
                            exists = true;
                        }
                        Ok(None) => return Err(e),
                        Err(read) => {
                            if !pause.before_retry(&read, &label(v)).await {
                                return Err(read);
                            }
                        }
                    }
                }
                Err(e) => {
                    // A write whose answer was lost may still land until GitLab's deadline (§12):
                    // the lock stays until then, so that no other run rotates and writes a newer
                    // secret that this late write would overwrite.
                    if e.outcome_unknown() {
                        self.in_flight(t, tokio::time::Instant::now());
                    }
                    if !pause.before_retry(&e, &label(v)).await {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// The new secret authenticates as the new token, with the expected expiry. (That each
    /// variable holds it, `write` read from GitLab's answers to the writes.)
    async fn verify(&self, issued: &IssuedToken) -> Result<(), Failure> {
        let seen = self.client().token_self(&issued.secret).await.map_err(|e| {
            format!("the new token {} is stored, but authenticating with it failed: {e}. Check it in GitLab; the next run re-checks it.", issued.token.id)
        })?;
        if seen.id != issued.token.id || !seen.active || seen.expires_at != issued.token.expires_at {
            return Err(Failure(format!(
                "the new secret authenticates as token {} (active: {}, expires {:?}), not as the new token {}; check the token in GitLab",
                seen.id, seen.active, seen.expires_at, issued.token.id
            )));
        }
        Ok(())
    }

    /// Retries or starts each pipeline that a rotated or repaired token feeds, once however many
    /// tokens feed it, and waits for it as long as the longest `wait_minutes` asks. A pipeline
    /// that another token failed to feed in this run is left alone: it would fail again. A
    /// token left unchanged still owes its pipelines the retry they missed when the run that
    /// stored it was cut short (`stored_since`).
    async fn pipelines(&self, tokens: &[ManagedToken], reports: &mut [TokenReport]) {
        let acts = |r: &TokenReport| {
            matches!(r.outcome, Outcome::Rotated | Outcome::Created | Outcome::Repaired) || r.stored_since.is_some()
        };
        let mut blocked: HashSet<(&str, &str)> = HashSet::new();
        for (t, r) in tokens.iter().zip(reports.iter()) {
            if r.outcome == Outcome::Failed {
                blocked.extend(t.pipelines.iter().map(|p| (p.project.as_str(), p.reference.as_str())));
            }
        }
        let mut unique: Vec<Wanted> = Vec::new();
        for (t, r) in tokens.iter().zip(reports.iter()) {
            if !acts(r) {
                continue;
            }
            // `None`: a token was stored in this run, so act whatever the pipeline's age.
            let since = if r.outcome == Outcome::Unchanged { r.stored_since } else { None };
            for p in t.pipelines.iter().filter(|p| !blocked.contains(&(p.project.as_str(), p.reference.as_str()))) {
                match unique
                    .iter_mut()
                    .find(|u| u.project == p.project && u.reference == p.reference && u.action == p.action)
                {
                    Some(u) => {
                        u.wait = u.wait.max(p.wait_minutes);
                        u.since = match (u.since, since) {
                            (Some(a), Some(b)) => Some(a.max(b)),
                            _ => None,
                        };
                    }
                    None => unique.push(Wanted {
                        project: p.project.clone(),
                        reference: p.reference.clone(),
                        action: p.action,
                        wait: p.wait_minutes,
                        since,
                    }),
                }
            }
        }
        let results: Vec<((String, String, Action), PipelineReport)> = futures::stream::iter(unique)
            .map(|w| async move {
                let key = (w.project.clone(), w.reference.clone(), w.action);
                (key, self.pipeline(w).await)
            })
            .buffered(self.options.concurrency.max(1))
            .collect()
            .await;
        for (t, r) in tokens.iter().zip(reports.iter_mut()) {
            if !acts(r) {
                continue;
            }
            let mut failures = Vec::new();
            for (p, out) in t.pipelines.iter().zip(r.pipelines.iter_mut()) {
                let key = (p.project.clone(), p.reference.clone(), p.action);
                if let Some((_, result)) = results.iter().find(|(k, _)| *k == key) {
                    *out = result.clone();
                    if let Some(e) = &result.error {
                        failures.push(e.clone());
                    }
                }
            }
            if r.outcome == Outcome::Unchanged {
                let caught_up: Vec<String> = r
                    .pipelines
                    .iter()
                    .filter(|p| p.action != PipelineAction::Skipped)
                    .map(|p| format!("{} {}", p.project, p.reference))
                    .collect();
                if !caught_up.is_empty() {
                    r.reason.push_str(&format!(
                        "; the pipeline on {} had not run since this token was stored, so patrol {} it now",
                        caught_up.join(", "),
                        if t.pipelines.iter().all(|p| p.action == Action::Create) { "started" } else { "retried" }
                    ));
                }
            }
            if !failures.is_empty() {
                r.outcome = Outcome::Failed;
                r.error = Some(format!(
                    "{}. The token itself was stored and verified; look at the pipeline's jobs.",
                    failures.join("; ")
                ));
            }
        }
    }

    /// Retries the latest pipeline on the ref if it failed, or starts one; polls it with backoff
    /// while `wait_minutes` allows. With `since`, only a pipeline that has not run since then.
    async fn pipeline(&self, wanted: Wanted) -> PipelineReport {
        let Wanted { project, reference, action, wait: wait_minutes, since } = wanted;
        let mut out = PipelineReport::skipped(&project, &reference);
        let started = match action {
            Action::Retry => retry_latest_failed(&self.client(), &mut out, since)
                .await
                .map(|x| x.map(|p| (PipelineAction::Retried, p))),
            Action::Create => match self.ran_since(&project, &reference, since, &mut out).await {
                Ok(true) => Ok(None),
                Ok(false) => self
                    .client()
                    .create_pipeline(&project, &reference)
                    .await
                    .map(|x| Some((PipelineAction::Created, x))),
                Err(e) => Err(e),
            },
        };
        let pipeline = match started {
            Ok(Some((action, pipeline))) => {
                out.action = action;
                pipeline
            }
            Ok(None) => return out,
            Err(e) if e.ref_not_found() => {
                out.error = Some(format!(
                    "no pipeline was started: the ref {reference:?} does not exist in {project} (GitLab: {e}). Fix `ref` of this pipeline in the config, or create the branch."
                ));
                return out;
            }
            Err(e) => {
                out.error = Some(format!("the pipeline on {project} {reference} could not be started: {e}"));
                return out;
            }
        };
        out.pipeline_id = Some(pipeline.id);
        out.status = Some(pipeline.status.clone());
        if wait_minutes == 0 {
            return out;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_minutes * 60);
        let mut wait = self.options.poll_interval;
        let mut last = pipeline;
        while !last.finished() && tokio::time::Instant::now() + wait < deadline {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
            match self.client().pipeline(&project, last.id).await {
                Ok(x) => last = x,
                Err(e) => {
                    // The client has already retried for its budget: stop waiting rather than
                    // spend the rest of `wait_minutes` on a pipeline patrol cannot see.
                    out.status = Some(last.status.clone());
                    out.error = Some(format!(
                        "pipeline {} on {project} {reference} was started, but patrol lost sight of it ({e}); look at it in GitLab",
                        last.id
                    ));
                    return out;
                }
            }
        }
        out.status = Some(last.status.clone());
        if last.status == "failed" || last.status == "canceled" {
            let url = last.web_url.clone().unwrap_or_else(|| format!("{project} pipeline {}", last.id));
            out.error = Some(format!("the pipeline {url} {} after rotation", last.status));
        } else if !last.finished() {
            out.error = Some(format!("still {} after {wait_minutes} minutes", last.status));
        }
        out
    }
}

/// When GitLab refused `expires_at` as past its lifetime limit (400 on a rotation or a project
/// or group token's create, 422 on a user's or service account's token create, §11): moves it
/// to the limit GitLab named, notes why, and says to try again.
fn shortened(error: &GitlabError, expires_at: &mut NaiveDate, notes: &mut Vec<String>) -> bool {
    match error.expiry_limit().filter(|l| l < expires_at) {
        Some(limit) => {
            notes.push(format!("GitLab allows expiry up to {limit}, so the new token expires then"));
            *expires_at = limit;
            true
        }
        None => false,
    }
}

/// Whether two listings show the same tokens in the same state.
fn same_tokens(a: &[ApiToken], b: &[ApiToken]) -> bool {
    let key = |list: &[ApiToken]| {
        let mut k: Vec<(u64, bool, bool, Option<NaiveDate>)> =
            list.iter().map(|t| (t.id, t.active, t.revoked, t.expires_at)).collect();
        k.sort_unstable();
        k
    };
    key(a) == key(b)
}

/// A pipeline to retry or start, once for all the tokens that feed it.
struct Wanted {
    project: String,
    reference: String,
    action: Action,
    wait: u64,
    /// Act only if the pipeline has not run since then; `None` to act regardless.
    since: Option<DateTime<Utc>>,
}

/// Where a token's lock lives, whatever the order of its variables: a project or group token's
/// own project or group, a service account's group (the role that rotates the token may write
/// variables there); a personal token's lock, in the first of its variables' places in a fixed
/// order. Two configs that keep one personal token in different places take their locks in
/// different places: the residual RELIABILITY.md names.
fn lock_place(t: &ManagedToken) -> Option<crate::config::Holder> {
    use crate::config::Holder;
    match &t.owner {
        Owner::Project(p) => Some(Holder::Project(p.clone())),
        // A service account's group: its Owner manages the account's tokens and may write there.
        Owner::Group(g) | Owner::ServiceAccount { group: g, .. } => Some(Holder::Group(g.clone())),
        Owner::User(_) => t
            .variables
            .iter()
            .map(|v| v.holder.clone())
            .min_by(|a, b| (a.scope(), a.path()).cmp(&(b.scope(), b.path()))),
    }
}

/// Whether `name` is close to `wanted`: the same but for case, or one or two edits away.
fn near_name(name: &str, wanted: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) =
        (name.to_lowercase().chars().collect(), wanted.to_lowercase().chars().collect());
    if a == b {
        return name != wanted;
    }
    if a.len().abs_diff(b.len()) > 2 {
        return false;
    }
    // Levenshtein distance, one row at a time.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()] <= 2
}

/// When the token in use was created, if every existing variable carries patrol's marker for
/// it: patrol stored it, so its pipelines may be owed a retry (`TokenReport::stored_since`).
/// Only for a token made within [`CATCH_UP`] of `now`: a run cut short between storing a token
/// and retrying its pipelines is caught up by the next runs in that time; checking every token
/// patrol ever stored would cost every run a pipeline listing per token, for good.
fn stored_by_patrol(observed: &Observed, states: &[VariableState], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let current = observed.current.as_ref()?;
    if current.created_at.is_none_or(|made| now - made > CATCH_UP) {
        return None;
    }
    let mut existing = states.iter().filter_map(|s| s.existing.as_ref()).peekable();
    existing.peek()?;
    existing.all(|v| marker(v.description.as_deref()) == Some(current.id)).then_some(current.created_at).flatten()
}

/// Backoff between attempts to store a new secret: 200 ms doubling to 30 s, within a budget.
struct WritePause {
    started: tokio::time::Instant,
    wait: Duration,
    budget: Duration,
}

impl WritePause {
    fn new(budget: Duration) -> WritePause {
        WritePause { started: tokio::time::Instant::now(), wait: Duration::from_millis(200), budget }
    }

    /// Waits and returns true when `e` is worth another attempt and the budget allows one.
    async fn before_retry(&mut self, e: &GitlabError, variable: &str) -> bool {
        if !(e.is_transient() || e.outcome_unknown()) || self.started.elapsed() + self.wait >= self.budget {
            return false;
        }
        tracing::warn!(%variable, error = %e, "storing the new secret failed; retrying");
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Duration::from_secs(30));
        true
    }
}

/// Retries the latest pipeline on `out`'s ref if it failed or was canceled (with `since`: and
/// last ran before then) and returns it; otherwise records the latest one as it is.
async fn retry_latest_failed(
    client: &Client,
    out: &mut PipelineReport,
    since: Option<DateTime<Utc>>,
) -> Result<Option<ApiPipeline>, GitlabError> {
    match client.latest_pipeline(&out.project, &out.reference).await? {
        Some(latest)
            if (latest.status == "failed" || latest.status == "canceled")
                && since.is_none_or(|s| latest.updated_at.is_some_and(|u| u < s)) =>
        {
            client.retry_pipeline(&out.project, latest.id).await.map(Some)
        }
        Some(latest) => {
            out.pipeline_id = Some(latest.id);
            out.status = Some(latest.status);
            Ok(None)
        }
        None => Ok(None),
    }
}

/// A variable's report entry before anything is done to it.
fn variable_report(v: &VariableTarget) -> VariableReport {
    VariableReport {
        scope: v.holder.scope().into(),
        path: v.holder.path().into(),
        key: v.key.clone(),
        environment_scope: v.environment_scope.clone(),
        outcome: VariableOutcome::Unchanged,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_keep_human_text_and_fit_gitlabs_limit() {
        assert_eq!(with_marker(None, 5, None), "[patrol: token 5]");
        assert_eq!(with_marker(Some("CI token for deploys"), 5, None), "CI token for deploys [patrol: token 5]");
        assert_eq!(with_marker(Some("CI token [patrol: token 4]"), 5, None), "CI token [patrol: token 5]");
        let long = "x".repeat(300);
        assert_eq!(with_marker(Some(&long), 123, None).chars().count(), 255);
        let stored = Stored { id: 123, user_id: 4567, expires_at: NaiveDate::from_ymd_opt(2027, 12, 2) };
        assert_eq!(with_marker(Some(&long), 123, Some((&stored, "glpat-secret"))).chars().count(), 255);
        assert_eq!(marker(Some("CI token [patrol: token 42]")), Some(42));
        assert_eq!(marker(Some("no marker")), None);
        // A pending marker is not patrol's marker, and writing the secret replaces it.
        assert_eq!(with_pending(Some("deploys"), 7), "deploys [patrol: pending 7]");
        assert_eq!(pending_marker(Some("deploys [patrol: pending 7]")), Some(7));
        assert_eq!(marker(Some("deploys [patrol: pending 7]")), None);
        assert_eq!(with_marker(Some("deploys [patrol: pending 7]"), 8, None), "deploys [patrol: token 8]");
        assert_eq!(pending_marker(Some("deploys [patrol: token 8]")), None);
    }

    /// The fingerprint is part of what one patrol version writes and another reads: its text is
    /// fixed. Expected value worked out outside this code (Python: `h = hashlib.sha256(); for p in
    /// [b"patrol marker v2", b"42", b"7", b"2027-12-02", b"glpat-abc"]: h.update(p + b"\x00")`,
    /// then the first 16 hex digits).
    #[test]
    fn a_fingerprinted_marker_proves_only_what_it_was_made_for() {
        let day = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
        let stored = Stored { id: 42, user_id: 7, expires_at: day("2027-12-02") };
        assert_eq!(fingerprint(&stored, "glpat-abc"), "2fe7d65ae3bfd013");
        let written = with_marker(Some("deploys"), 42, Some((&stored, "glpat-abc")));
        assert_eq!(
            written,
            format!("deploys [patrol: token 42 user 7 expires 2027-12-02 #{}]", fingerprint(&stored, "glpat-abc"))
        );
        assert_eq!(marker(Some(&written)), Some(42), "the id reads as before");
        assert_eq!(proven_marker(Some(&written), "glpat-abc"), Some(stored));
        assert_eq!(proven_marker(Some(&written), "glpat-abd"), None, "another value");
        for (from, to) in [("token 42 ", "token 43 "), ("user 7 ", "user 8 "), ("2027-12-02", "2026-12-03")] {
            let edited = written.replace(from, to);
            assert_eq!(proven_marker(Some(&edited), "glpat-abc"), None, "a marker edited to say {to}");
        }
        assert_eq!(proven_marker(Some("[patrol: token 42]"), "glpat-abc"), None, "no fingerprint, no proof");
        let never = Stored { expires_at: None, ..stored };
        let written = with_marker(None, 42, Some((&never, "glpat-abc")));
        assert!(written.contains(" expires never #"), "{written}");
        assert_eq!(proven_marker(Some(&written), "glpat-abc"), Some(never));
        assert!(!written.contains("glpat-abc"));
    }

    #[test]
    fn near_names_are_the_same_but_for_case_or_two_edits() {
        assert!(near_name("alice-ci", "alice-cj"));
        assert!(near_name("Alice-CI", "alice-ci"));
        assert!(near_name("inventory", "inventroy"));
        assert!(near_name("deploy", "deploy-2"));
        assert!(!near_name("alice-ci", "alice-ci"), "the name itself is no near match");
        assert!(!near_name("deploy", "deploy-123"));
        assert!(!near_name("bob", "alice"));
    }
}
