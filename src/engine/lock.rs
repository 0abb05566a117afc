//! One patrol run at a time per token, across machines, with nothing but GitLab.
//!
//! Two runs that rotate the same token are the one race that loses a secret: the second rotate
//! names a token the first already replaced, and GitLab's reuse detection revokes the whole family
//! (gitlab-api.md §1.5). GitLab CI's `resource_group` serializes the jobs of one project only, and
//! patrol may also run from a laptop or another project. So before it changes a token, patrol
//! creates a CI/CD variable `PATROL_LOCK_<ID>` beside the token's first variable. Creating a key
//! that exists is refused with 400 "has already been taken" (§3.1, a uniqueness rule of the
//! model), so of two runs exactly one gets it. The holder deletes it when done with the token.
//!
//! A lock left by a run that died is stale, and taken over, once its lease has run out, or at
//! once when it names a process on this same host that no longer exists. The value is not a
//! secret: `patrol run=<id> host=<host> pid=<pid> until=<RFC 3339>`.

use crate::config::Holder;
use crate::gitlab::{Client, GitlabError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use std::time::Duration;

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

/// A lock this run holds.
#[derive(Debug)]
pub struct Held {
    pub holder: Holder,
    pub key: String,
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

/// Whether a lock may be taken over: its lease ran out, or its holder was a process on this host
/// that is gone. A lock patrol cannot read is never stale before its lease says so.
pub fn stale(owner: &Owner, me: &RunId, now: DateTime<Utc>) -> bool {
    if owner.until.is_none_or(|u| u <= now) {
        return true;
    }
    owner.host == me.host && owner.pid.is_some_and(|pid| !process_alive(pid))
}

/// Whether the lock names a GitLab CI job on another host that GitLab says has finished: that
/// job's container is gone, so its lock is stale before its lease ends. Any doubt (no job, no
/// access, no answer) keeps the lock.
async fn job_over(client: &Client, owner: &Owner, me: &RunId) -> bool {
    let Some((project, job)) = &owner.job else { return false };
    if owner.host == me.host {
        return false;
    }
    match client.job_status(project, *job).await {
        Ok(status) => matches!(status.as_str(), "success" | "failed" | "canceled" | "skipped"),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the lock holder's job; keeping the lock");
            false
        }
    }
}

fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
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

/// Takes the lock on `key` in `holder` for `lease`; `Ok(Err(message))` when another live run
/// holds it.
pub async fn acquire(
    client: &Client,
    me: &RunId,
    token_id: &str,
    holder: &Holder,
    lease: Duration,
) -> Result<Result<Held, String>, GitlabError> {
    let key = key(token_id);
    let mut last_owner = None;
    for _ in 0..4 {
        let until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::hours(1));
        let body = json!({
            "key": key,
            "value": value(me, until),
            "description": format!("patrol: lock on token {token_id}, removed when the run is done with it"),
            "protected": false,
            "masked": false,
            "raw": true,
            "environment_scope": "*",
        });
        match client.create_variable(holder, &body).await {
            Ok(()) => return Ok(Ok(Held { holder: holder.clone(), key })),
            Err(e) if e.status() == Some(400) && e.message().contains("has already been taken") => {}
            // The answer was lost: whether the lock is ours is read below.
            Err(e) if e.outcome_unknown() => {}
            Err(e) => return Err(e),
        }
        let current = client.variable(holder, &key, "*").await?;
        let Some(current) = current else { continue };
        let owner = current.value.as_ref().and_then(|v| parse(v.expose()));
        match &owner {
            Some(o) if o.run == me.id => return Ok(Ok(Held { holder: holder.clone(), key })),
            Some(o) if stale(o, me, Utc::now()) || job_over(client, o, me).await => {
                tracing::warn!(token = token_id, lock = %key, holder_run = %o.run, "taking over a stale lock");
                release(client, &Held { holder: holder.clone(), key: key.clone() }).await?;
            }
            _ => return Ok(Err(busy(token_id, holder, &key, owner.as_ref()))),
        }
        last_owner = owner;
    }
    Ok(Err(busy(token_id, holder, &key, last_owner.as_ref())))
}

/// Deletes the lock; one already gone is fine.
pub async fn release(client: &Client, held: &Held) -> Result<(), GitlabError> {
    match client.delete_variable(&held.holder, &held.key, "*").await {
        Err(e) if e.status() == Some(404) => Ok(()),
        other => other,
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
    fn values_round_trip_and_staleness_follows_lease_and_process() {
        let now = Utc::now();
        let until = now + chrono::Duration::minutes(5);
        let owner = parse(&value(&me(), until));
        let Some(owner) = owner else { panic!("unparsable") };
        assert_eq!(owner.run, "abc");
        assert_eq!(owner.pid, Some(std::process::id()));
        assert_eq!(owner.job, Some(("12".to_string(), 345)));
        assert!(!stale(&owner, &me(), now), "alive, within its lease");
        assert!(stale(&owner, &me(), until), "lease over");
        let dead = Owner { pid: Some(u32::MAX - 1), ..owner.clone() };
        assert!(stale(&dead, &me(), now), "its process on this host is gone");
        let elsewhere = Owner { host: "h2".into(), ..dead };
        assert!(!stale(&elsewhere, &me(), now), "another host's process cannot be checked");
        assert_eq!(parse("something else"), None);
    }
}
