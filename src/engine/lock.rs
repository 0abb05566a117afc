//! One patrol run at a time per token, across machines, with nothing but GitLab.
//!
//! Two runs that rotate the same token are the one race that loses a secret: the second rotate
//! names a token the first already replaced, and GitLab's reuse detection revokes the whole family
//! (gitlab-api.md §1.5). GitLab CI's `resource_group` serializes the jobs of one project only, and
//! patrol may also run from a laptop or another project. So before it changes a token, patrol
//! creates a CI/CD variable `PATROL_LOCK_<user>_<NAME>_<hash>`, keyed by the token's identity in
//! GitLab ([`identity`]), in a place that follows from the token (the engine's `lock_place`).
//! Creating a key that exists is refused with 400 "has already been taken" (§3.1, a uniqueness
//! rule of the model), so of two runs exactly one gets it. The holder deletes it when done with
//! the token, unless a request it sent may still be carried out ([`keep_until`]).
//!
//! The value is not a secret: `patrol run=<id> host=<host> pid=<pid> until=<RFC 3339>` (and
//! `job=<project>/<job>` in GitLab CI). Host and pid are there for the person reading it, never
//! for judging it: runners give containers colliding host names, and each container has its own
//! PID namespace, so "no such process on this host" says nothing about another run (issue 13).
//!
//! The rules:
//! - **Stale** means only: the lease (`until`) has run out. A value patrol cannot parse, or
//!   without a readable `until`, is never stale. A finished CI job does not make its lock stale:
//!   a job killed while its rotate was in flight leaves a request GitLab may still carry out
//!   until its request deadline (§12), and the lease (at least one and a half deadlines, renewed
//!   every third of it) is what covers that: a dead holder's lease ends no earlier than two
//!   thirds of a lease after its last request left.
//! - **Renewal.** The lease is short ([`LEASE`]), and the holder renews it while it works: every
//!   third of the lease a task reads the variable and, if its `run=` is still this run's, rewrites
//!   the value with a new `until` (a `PUT`, which never creates a variable). If the variable is
//!   gone or names another run, the lock is lost: the task stops for good, logs a warning and
//!   [`Held::lost`] says so. It never recreates or overwrites another run's lock. A renewal that
//!   fails (GitLab unreachable) is tried again at the next tick; one that cannot get through for a
//!   whole lease lets the lock expire, and another run may then take it over.
//! - **Takeover** of a stale lock re-reads the variable and deletes it only if its value is still
//!   exactly the one judged stale; otherwise another run got there first and patrol looks again.
//! - **Release** stops the renewal (waiting for one in flight), re-reads the variable and deletes
//!   it only if its `run=` is this run's. If not, the lock was taken over after this run's lease ran
//!   out: it is left alone, with a warning, and [`Held::lost`] turns true.
//!
//! Residual windows, because GitLab has neither a conditional `PUT` nor a conditional `DELETE`:
//! - Between the read and the `DELETE` of a takeover or a release, and between the read and the
//!   `PUT` of a renewal, another run could write the variable. That gap is one request, a few
//!   milliseconds. Another run can only write a lock that is stale, that is, whose lease has
//!   ended, and renewal keeps a working run's lease from ending. So the window matters only for a
//!   holder that could not renew for a whole lease, and a renewal or release landing in it could
//!   then overwrite or delete the newcomer's lock.
//! - Two runs that find the same stale lock at the same moment can both re-read it, both delete,
//!   and the second `DELETE` can remove the lock the first one has just created. This needs a
//!   crashed (or cut-off) run and two new runs within milliseconds of each other.

use crate::config::Holder;
use crate::gitlab::{Client, GitlabError};
use chrono::{DateTime, SecondsFormat, Utc};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The lease a lock is taken for; the holder renews it every third of that while it works, so a
/// run that dies blocks the token for at most this long.
pub const LEASE: Duration = Duration::from_secs(180);

/// Who this run is, as written in the locks it holds.
#[derive(Debug, Clone)]
pub struct RunId {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// In GitLab CI: `<CI_PROJECT_ID>/<CI_JOB_ID>`, so that a run on another host can ask GitLab
    /// whether this job is still running.
    pub job: Option<String>,
}

impl RunId {
    pub fn new() -> RunId {
        let id = format!("{:016x}", rand::random::<u64>());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
            .unwrap_or_else(|| "unknown".into());
        let job = match (std::env::var("CI_PROJECT_ID"), std::env::var("CI_JOB_ID")) {
            (Ok(p), Ok(j)) if !p.is_empty() && j.parse::<u64>().is_ok() && !p.contains(char::is_whitespace) => {
                Some(format!("{p}/{j}"))
            }
            _ => None,
        };
        RunId { id, host, pid: std::process::id(), job }
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

/// A lock this run holds. While it is held, a task renews its lease; [`release`] stops that task
/// (and so does dropping the `Held`, at the task's next tick).
pub struct Held {
    pub holder: Holder,
    pub key: String,
    /// This run's id, as the lock's `run=` names it.
    run: String,
    /// This run, as [`keep_until`] writes it.
    me: RunId,
    lost: Arc<AtomicBool>,
    /// Dropping (or sending on) it stops the renewal.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The renewal's state: its client ([`Held::renew_as`]) and the lease last confirmed.
    renewer: Renewer,
    /// Whether the lock was taken other than by a first create that GitLab answered: another
    /// run's lock was there (stale, taken over) or the create's answer was lost. Another run
    /// may then have acted on the token since this run looked at it.
    pub contended: bool,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("holder", &self.holder)
            .field("key", &self.key)
            .field("run", &self.run)
            .field("lost", &self.lost())
            .finish()
    }
}

impl Held {
    /// Whether this run no longer holds the lock: a renewal or the release found the variable
    /// gone or naming another run. Work under a lost lock is no longer protected from another
    /// run.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Renews as `client` from now on: after a self-rotation the credential the lock was taken
    /// with is revoked.
    pub fn renew_as(&self, client: Client) {
        self.renewer().renew_as(client);
    }

    /// A handle that switches the renewal's credential, for whoever rotates the credential.
    pub fn renewer(&self) -> Renewer {
        self.renewer.clone()
    }

    /// Stops the renewal, waiting for one in flight so that no renewal lands after this returns.
    async fn stop_renewing(&self) {
        drop(self.stop.lock().unwrap_or_else(|e| e.into_inner()).take());
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// A view of a held lock for the code that works under it ([`Held::renewer`]): whether the lock
/// is still this run's for long enough, and a switch for the renewal's credential.
#[derive(Clone)]
pub struct Renewer {
    client: Arc<Mutex<Client>>,
    lost: Arc<AtomicBool>,
    /// When the lease last written ends: what this run can count on, renewals failing or not.
    confirmed: Arc<Mutex<DateTime<Utc>>>,
    /// This run, where the lock lives, its key, and its lease.
    lock: Arc<(RunId, Holder, String, Duration)>,
}

impl Renewer {
    pub fn renew_as(&self, client: Client) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = client;
    }

    /// See [`Held::lost`].
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// When the lease this run last wrote ends.
    fn confirmed_until(&self) -> DateTime<Utc> {
        *self.confirmed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the lock is this run's for at least `left` more: a request sent now may still be
    /// carried out by GitLab until its deadline, and no other run may take the lock before then.
    /// When the lease last confirmed ends sooner (renewals failing), renews once now.
    pub async fn holds_for(&self, left: Duration) -> bool {
        if self.lost() {
            return false;
        }
        let needed = Utc::now() + chrono::Duration::from_std(left).unwrap_or_else(|_| chrono::Duration::hours(1));
        if *self.confirmed.lock().unwrap_or_else(|e| e.into_inner()) >= needed {
            return true;
        }
        matches!(self.renew_now().await, Ok(true))
            && *self.confirmed.lock().unwrap_or_else(|e| e.into_inner()) >= needed
    }

    /// One renewal: `Ok(true)` renewed, `Ok(false)` the lock is lost (and marked so).
    async fn renew_now(&self) -> Result<bool, GitlabError> {
        let (me, holder, key, lease) = &*self.lock;
        let acting = self.client.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match renew_once(&acting, me, holder, key, *lease).await? {
            Renewed::Yes(until) => {
                *self.confirmed.lock().unwrap_or_else(|e| e.into_inner()) = until;
                Ok(true)
            }
            Renewed::Lost(why) => {
                self.lost.store(true, Ordering::SeqCst);
                tracing::warn!(lock = %key, "this run lost its lock ({why})");
                Ok(false)
            }
        }
    }
}

impl std::fmt::Debug for Renewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Renewer")
    }
}

/// What a lock variable says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub run: String,
    pub host: String,
    pub pid: Option<u32>,
    pub until: Option<DateTime<Utc>>,
    /// `<project id>/<job id>` of the GitLab CI job that holds it, if any.
    pub job: Option<(String, u64)>,
}

/// `PATROL_LOCK_` and the token id in the characters a key allows (§3.1), with a hash of the
/// exact id so that ids differing only in punctuation or case get different locks.
pub fn key(token_id: &str) -> String {
    let readable: String = token_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .take(200)
        .collect();
    // FNV-1a: stable across versions and platforms, unlike std's hasher.
    let hash = token_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("PATROL_LOCK_{readable}_{:08X}", hash as u32)
}

/// What a lock is keyed by: the token's identity as GitLab knows it, the same whichever config,
/// `[[token]]` id or `--self` job works on it. A token keeps its user across rotations (a
/// project or group token its bot), so the user and the name name it.
pub fn identity(user_id: u64, name: &str) -> String {
    format!("{user_id} {name}")
}

pub fn value(run: &RunId, until: DateTime<Utc>) -> String {
    let job = run.job.as_ref().map(|j| format!(" job={j}")).unwrap_or_default();
    format!(
        "patrol run={} host={} pid={} until={}{job}",
        run.id,
        run.host,
        run.pid,
        until.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

pub fn parse(value: &str) -> Option<Owner> {
    let rest = value.strip_prefix("patrol ")?;
    let field = |name: &str| {
        rest.split_whitespace().find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('='))).map(str::to_owned)
    };
    Some(Owner {
        run: field("run")?,
        host: field("host").unwrap_or_default(),
        pid: field("pid").and_then(|p| p.parse().ok()),
        until: field("until").and_then(|u| DateTime::parse_from_rfc3339(&u).ok()).map(|d| d.with_timezone(&Utc)),
        job: field("job").and_then(|j| {
            let (project, job) = j.rsplit_once('/')?;
            Some((project.to_owned(), job.parse().ok()?))
        }),
    })
}

/// Whether a lock may be taken over because its lease ran out (a lock with no `until` has none).
/// Who holds it, and whether a process of that number exists here, does not matter: host names
/// collide between containers and PID namespaces differ (issue 13). `_me` is kept for callers.
pub fn stale(owner: &Owner, _me: &RunId, now: DateTime<Utc>) -> bool {
    // A lease end patrol cannot read is never over: the message says which variable to delete.
    owner.until.is_some_and(|u| u <= now)
}

/// Why a token was left alone because another run holds its lock, for the report.
pub fn busy(token_id: &str, holder: &Holder, key: &str, owner: Option<&Owner>) -> String {
    let who = match owner {
        Some(o) => format!(
            "patrol run {} on {} (pid {}), whose lock lasts until {}",
            o.run,
            o.host,
            o.pid.map_or_else(|| "?".into(), |p| p.to_string()),
            o.until.map_or_else(|| "?".into(), |u| u.to_rfc3339_opts(SecondsFormat::Secs, true))
        ),
        None => "another patrol run".into(),
    };
    format!(
        "another run is working on token {token_id:?}: {who}. This run left the token alone; the next run finishes whatever that one could not. If no other run is going, delete the variable {key} of {} {} in GitLab.",
        holder.scope(),
        holder.path()
    )
}

/// Takes the lock keyed by `identity` in `holder` for `lease` (`token_id` names the token in
/// messages), and keeps renewing it (every third of
/// `lease`) until [`release`]; `Ok(Err(message))` when another live run holds it.
pub async fn acquire(
    client: &Client,
    me: &RunId,
    token_id: &str,
    identity: &str,
    holder: &Holder,
    lease: Duration,
) -> Result<Result<Held, String>, GitlabError> {
    let key = key(identity);
    let mut last_owner = None;
    for attempt in 0..4 {
        let description = format!("patrol: lock on token {token_id}, removed when the run is done with it");
        let until = lease_end(lease);
        match client.create_plain_variable(holder, &key, &value(me, until), &description).await {
            Ok(()) => return Ok(Ok(hold(client, me, holder, &key, lease, until, attempt > 0))),
            Err(e) if e.already_taken() => {}
            // The answer was lost: whether the lock is ours is read below.
            Err(e) if e.outcome_unknown() => {}
            Err(e) => return Err(e),
        }
        let current = client.variable(holder, &key, "*").await?;
        let Some(current) = current else { continue };
        let seen = current.value.as_ref().map(|v| v.expose().to_owned());
        let owner = seen.as_deref().and_then(parse);
        match (&owner, &seen) {
            (Some(o), _) if o.run == me.id => {
                let until = o.until.unwrap_or_else(Utc::now);
                return Ok(Ok(hold(client, me, holder, &key, lease, until, true)));
            }
            (Some(o), Some(seen)) if stale(o, me, Utc::now()) => {
                if delete_if(client, holder, &key, |now| now == seen).await? {
                    tracing::warn!(token = token_id, lock = %key, holder_run = %o.run, "took over a stale lock");
                } else {
                    tracing::debug!(token = token_id, lock = %key, "the stale lock changed before patrol could take it over; looking again");
                }
            }
            _ => return Ok(Err(busy(token_id, holder, &key, owner.as_ref()))),
        }
        last_owner = owner;
    }
    Ok(Err(busy(token_id, holder, &key, last_owner.as_ref())))
}

fn lease_end(lease: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::hours(1))
}

/// The lock just taken, with its lease written to end at `until`, and its renewal started.
fn hold(
    client: &Client,
    me: &RunId,
    holder: &Holder,
    key: &str,
    lease: Duration,
    until: DateTime<Utc>,
    contended: bool,
) -> Held {
    let renewer = Renewer {
        client: Arc::new(Mutex::new(client.clone())),
        lost: Arc::new(AtomicBool::new(false)),
        confirmed: Arc::new(Mutex::new(until)),
        lock: Arc::new((me.clone(), holder.clone(), key.to_owned(), lease)),
    };
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(renew(renewer.clone(), stopped));
    Held {
        holder: holder.clone(),
        key: key.to_owned(),
        run: me.id.clone(),
        me: RunId { job: None, ..me.clone() },
        lost: Arc::clone(&renewer.lost),
        renewer,
        stop: Mutex::new(Some(stop)),
        task: Mutex::new(Some(task)),
        contended,
    }
}

/// What one renewal found.
enum Renewed {
    /// Renewed: the lease now ends then.
    Yes(DateTime<Utc>),
    /// The lock is not this run's any more, and why.
    Lost(String),
}

/// Renews the lease every third of it until `stopped` fires or its sender is dropped, or the
/// lock turns out lost.
async fn renew(renewer: Renewer, mut stopped: oneshot::Receiver<()>) {
    let (_, _, key, lease) = &*renewer.lock;
    let every = (*lease / 3).max(Duration::from_millis(100));
    let mut next = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep_until(next) => {}
        }
        // Ticks stay on their schedule, so one slow renewal does not push the next towards the
        // end of the lease.
        next = (next + every).max(tokio::time::Instant::now());
        match tokio::time::timeout(every, renewer.renew_now()).await {
            Ok(Ok(true)) => tracing::trace!(lock = %key, "lock renewed"),
            Ok(Ok(false)) => {
                tracing::warn!(lock = %key, "this run lost its lock; it stops renewing it and leaves it alone");
                return;
            }
            Ok(Err(e)) => tracing::warn!(lock = %key, error = %e, "could not renew the lock; trying again"),
            Err(_) => tracing::warn!(lock = %key, "renewing the lock took too long; trying again"),
        }
    }
}

/// One renewal: read the lock, and rewrite its `until` only if it still names this run.
async fn renew_once(
    client: &Client,
    me: &RunId,
    holder: &Holder,
    key: &str,
    lease: Duration,
) -> Result<Renewed, GitlabError> {
    let Some(current) = client.variable(holder, key, "*").await? else {
        return Ok(Renewed::Lost("the lock variable is gone".into()));
    };
    let owner = current.value.as_ref().and_then(|v| parse(v.expose()));
    match owner {
        Some(o) if o.run == me.id => {}
        Some(o) => return Ok(Renewed::Lost(format!("patrol run {} on {} holds it now", o.run, o.host))),
        None => return Ok(Renewed::Lost("the lock variable no longer holds a patrol lock".into())),
    }
    // A `PUT` never creates: a lock deleted since the read stays deleted.
    let until = lease_end(lease);
    match client.set_plain_variable(holder, key, &value(me, until)).await {
        Ok(()) => Ok(Renewed::Yes(until)),
        Err(e) if e.status() == Some(404) => Ok(Renewed::Lost("the lock variable is gone".into())),
        Err(e) => Err(e),
    }
}

/// Reads the lock and deletes it only if `ours` accepts its value (GitLab has no conditional
/// `DELETE`: see the module doc for the window between the two). `Ok(true)` when it is gone now.
async fn delete_if(
    client: &Client,
    holder: &Holder,
    key: &str,
    ours: impl FnOnce(&str) -> bool,
) -> Result<bool, GitlabError> {
    let Some(current) = client.variable(holder, key, "*").await? else { return Ok(true) };
    if !current.value.as_ref().is_some_and(|v| ours(v.expose())) {
        return Ok(false);
    }
    // Sent once: a second `DELETE` after a lost answer would let the first land later, on the
    // lock this run is about to create. A lost answer fails the takeover (the caller's error).
    match client.delete_variable_once(holder, key, "*").await {
        Ok(()) => Ok(true),
        Err(e) if e.status() == Some(404) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Stops renewing the lock and deletes it if it is still this run's; one already gone is fine.
/// One that names another run (taken over after this run's lease ran out) is left alone, with a
/// warning, and [`Held::lost`] turns true. Calling it twice is fine.
/// Leaves the lock in place until `until` instead of removing it, and stops renewing it: a
/// request this run sent may still be carried out by GitLab until then (§12), and no other run
/// may act on the token before. The value keeps naming this run, without its CI job.
pub async fn keep_until(client: &Client, held: &Held, until: DateTime<Utc>) -> Result<(), GitlabError> {
    held.stop_renewing().await;
    let current = client.variable(&held.holder, &held.key, "*").await?;
    let ours = current.and_then(|v| v.value).is_some_and(|v| parse(v.expose()).is_some_and(|o| o.run == held.run));
    if ours {
        client.set_plain_variable(&held.holder, &held.key, &value(&held.me, until)).await?;
    } else {
        held.lost.store(true, Ordering::SeqCst);
    }
    Ok(())
}

pub async fn release(client: &Client, held: &Held) -> Result<(), GitlabError> {
    held.stop_renewing().await;
    // The `DELETE` is sent once, and only while the lease this run last wrote has two thirds of a
    // lease to run, which is at least GitLab's request deadline (the lease is never shorter than
    // one and a half deadlines): if its answer is lost, it can land no later than the deadline,
    // when the lock is still this run's, so it can never delete a lock another run took since.
    // Later (renewals failing), the lock is left to run out.
    let (_, _, _, lease) = &*held.renewer.lock;
    let margin = chrono::Duration::from_std(*lease * 2 / 3).unwrap_or_else(|_| chrono::Duration::minutes(2));
    if held.lost() || held.renewer.confirmed_until() <= Utc::now() + margin {
        tracing::warn!(lock = %held.key, "the lock's lease is too close to its end to remove it safely; it runs out by itself");
        return Ok(());
    }
    // A lock taken over from another run is read first: the takeover's `DELETE` of the stale
    // lock may have landed late and removed this run's, letting a third run in.
    if held.contended {
        let Some(current) = client.variable(&held.holder, &held.key, "*").await? else { return Ok(()) };
        let mine = current.value.as_ref().and_then(|v| parse(v.expose())).is_some_and(|o| o.run == held.run);
        if !mine {
            held.lost.store(true, Ordering::SeqCst);
            tracing::warn!(lock = %held.key, "the lock is no longer this run's: another run took it over; leaving it");
            return Ok(());
        }
    }
    match client.delete_variable_once(&held.holder, &held.key, "*").await {
        Ok(()) => Ok(()),
        Err(e) if e.status() == Some(404) => Ok(()),
        Err(e) if e.outcome_unknown() => {
            tracing::warn!(lock = %held.key, error = %e, "removing the lock got no answer; if it is still there, it runs out by itself");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> RunId {
        RunId { id: "abc".into(), host: "h1".into(), pid: std::process::id(), job: Some("12/345".into()) }
    }

    #[test]
    fn keys_are_valid_variable_keys_and_distinct() {
        let a = key("app-ci");
        assert!(a.starts_with("PATROL_LOCK_APP_CI_"), "{a}");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert_ne!(key("app-ci"), key("app_ci"));
        assert_ne!(key("App"), key("app"));
        assert!(key(&"x".repeat(1000)).len() <= 255);
    }

    /// The key is part of the protocol between patrol versions and machines: two runs must name
    /// the same lock for the same token. The expected keys are the low 32 bits of FNV-1a 64 of
    /// the id, worked out outside this code (Python: `h = 0xcbf29ce484222325; for b in id:
    /// h = ((h ^ b) * 0x100000001b3) % 2**64`), e.g. "a" gives 0xaf63dc4c8601ec8c, the published
    /// FNV-1a test vector.
    #[test]
    fn keys_are_fixed_for_a_given_id() {
        assert_eq!(key("app-ci"), "PATROL_LOCK_APP_CI_9813095B");
        assert_eq!(key("app_ci"), "PATROL_LOCK_APP_CI_8D6F11B5");
        assert_eq!(key("App"), "PATROL_LOCK_APP_A04066EC");
        assert_eq!(key("app"), "PATROL_LOCK_APP_056A838C");
        assert_eq!(key("a"), "PATROL_LOCK_A_8601EC8C");
        assert_eq!(key(""), "PATROL_LOCK__84222325");
        // Only 200 characters of the id are kept readable; the hash is still over all 1000.
        assert_eq!(key(&"x".repeat(1000)), format!("PATROL_LOCK_{}_3134D2C5", "X".repeat(200)));
    }

    /// The value is read by other patrol versions on other machines: its text is fixed.
    #[test]
    fn value_text_is_fixed_and_a_written_one_parses() {
        let run =
            RunId { id: "0123456789abcdef".into(), host: "runner-7".into(), pid: 4242, job: Some("12/345".into()) };
        let until = DateTime::parse_from_rfc3339("2026-11-28T12:30:00Z").map(|d| d.with_timezone(&Utc));
        let Ok(until) = until else { panic!("literal date") };
        assert_eq!(
            value(&run, until),
            "patrol run=0123456789abcdef host=runner-7 pid=4242 until=2026-11-28T12:30:00Z job=12/345"
        );
        assert_eq!(
            value(&RunId { job: None, ..run }, until),
            "patrol run=0123456789abcdef host=runner-7 pid=4242 until=2026-11-28T12:30:00Z"
        );
        assert_eq!(
            parse("patrol run=r1 host=h9 pid=77 until=2026-11-28T12:30:00Z job=group/sub/12/345"),
            Some(Owner {
                run: "r1".into(),
                host: "h9".into(),
                pid: Some(77),
                until: Some(until),
                job: Some(("group/sub/12".into(), 345)),
            })
        );
    }

    #[test]
    fn values_round_trip_and_staleness_follows_the_lease() {
        let now = Utc::now();
        let until = now + chrono::Duration::minutes(5);
        let owner = parse(&value(&me(), until));
        let Some(owner) = owner else { panic!("unparsable") };
        assert_eq!(owner.run, "abc");
        assert_eq!(owner.pid, Some(std::process::id()));
        assert_eq!(owner.job, Some(("12".to_string(), 345)));
        assert!(!stale(&owner, &me(), now), "alive, within its lease");
        assert!(stale(&owner, &me(), until), "lease over");
        let elsewhere = Owner { host: "h2".into(), ..owner.clone() };
        assert!(!stale(&elsewhere, &me(), now), "another host's lock, within its lease");
        assert_eq!(parse("something else"), None);
    }

    /// Issue 13: containers on one runner share host names and have their own PID namespaces, so
    /// a missing process with this host's name proves nothing: only the lease (or GitLab's word
    /// on a CI job) makes a lock stale.
    #[test]
    fn a_lock_naming_this_host_and_a_missing_process_is_stale_only_once_its_lease_ends() {
        let now = Utc::now();
        let until = now + chrono::Duration::minutes(3);
        let other = RunId { id: "other".into(), host: me().host, pid: u32::MAX - 1, job: None };
        let Some(owner) = parse(&value(&other, until)) else { panic!("unparsable") };
        assert_eq!((owner.host.as_str(), owner.pid), ("h1", Some(u32::MAX - 1)));
        assert!(!stale(&owner, &me(), now), "same host name, no such pid here: not stale before its lease");
        assert!(!stale(&owner, &me(), until - chrono::Duration::seconds(1)));
        assert!(stale(&owner, &me(), until), "lease over");
        assert!(stale(&owner, &me(), until + chrono::Duration::minutes(1)));
        let unreadable = Owner { until: None, ..owner };
        assert!(!stale(&unreadable, &me(), now), "a lease end patrol cannot read is never over");
    }
}
