//! `patrol rotate --self VAR`: a token keeps itself alive from the CI job that uses it.
//!
//! The credential is the token in `$VAR`, and it is the only credential: once GitLab has rotated
//! it, the old secret is revoked and the new one exists only in this process until it is stored.
//! So, in order:
//! 1. `GET /personal_access_tokens/self`: the token, its expiry and scopes (a rejected token stops
//!    here: a dead token cannot renew itself);
//! 2. read the CI/CD variable `VAR` in the target environment scope (only the role that may update
//!    it may read it, and the token has the `api` scope: so it can be written), and prove it holds
//!    the job's token: a readable value equals `$VAR`; a hidden one carries patrol's marker naming
//!    the job's token, or is the project's only `VAR` (so the job can only have received it). If
//!    it cannot be read or proven, nothing is rotated. No marker is written before the secret: a
//!    marker claims only what is stored (issue 13, cases 3 and 6);
//! 3. rotate once through the token's own `self/rotate` endpoint. A lost answer is never replayed
//!    blindly: `GET …/self` with the old secret tells whether GitLab rotated (401: it did, and the
//!    secret is lost; a person must step in) or not (the old token still works: sending again is
//!    safe);
//! 4. write the new secret to `VAR` as the new token, with patient retries;
//! 5. verify (the new secret authenticates as the new token; a readable variable holds it), then
//!    retry the latest failed pipeline of each `--retry-ref`.

use super::{marker, pending_marker, retry_latest_failed, with_marker, Options, WritePause};
use crate::config::{Holder, VariableTarget};
use crate::gitlab::model::{ApiToken, ApiVariable, IssuedToken};
use crate::gitlab::{Client, GitlabError, SelfResource};
use crate::report::{
    After, Before, Outcome, PipelineAction, PipelineReport, TokenReport, VariableOutcome, VariableReport,
};
use chrono::Duration as Days;
use std::time::Duration;

/// What `--self` works on.
#[derive(Debug, Clone)]
pub struct SelfTarget {
    /// The environment variable holding the credential, and the CI/CD variable to write back.
    pub var: String,
    /// The project holding the CI/CD variable (id or path).
    pub project: String,
    pub environment_scope: String,
    pub rotate_before_days: i64,
    pub expires_in_days: i64,
    /// Refs whose latest failed pipeline is retried after a rotation.
    pub retry_refs: Vec<String>,
}

/// Why a self-rotation could not even start: the credential itself was refused or GitLab was
/// unreachable. Nothing was changed.
#[derive(Debug)]
pub struct Refused(pub String);

/// Runs the self-rotation. `Err` means GitLab could not be asked (exit 3); every other outcome,
/// failures included, is in the report.
pub async fn rotate_self(client: &Client, target: &SelfTarget, options: &Options) -> Result<TokenReport, Refused> {
    let me = match client.token_self(client.credential()).await {
        Ok(t) => t,
        Err(e) if matches!(e.status(), Some(401 | 403)) => {
            return Err(Refused(format!(
                "GitLab rejected the token in ${} ({e}): it is expired, revoked or not a token. A dead token cannot renew itself; a person must {}",
                target.var,
                replace_by_hand(target, None)
            )))
        }
        Err(e) => {
            return Err(Refused(format!(
                "cannot ask GitLab at {} about the token in ${}: {e}. Nothing was changed; run again.",
                client.base(),
                target.var
            )))
        }
    };
    let mut report = TokenReport {
        action: None,
        id: target.var.clone(),
        kind: "personal".into(),
        name: me.name.clone(),
        outcome: Outcome::Failed,
        reason: String::new(),
        before: Some(Before { token_id: me.id, expires_at: me.expires_at, active: me.active }),
        after: None,
        variables: vec![VariableReport {
            scope: "project".into(),
            path: target.project.clone(),
            key: target.var.clone(),
            environment_scope: target.environment_scope.clone(),
            outcome: VariableOutcome::Unchanged,
            error: None,
        }],
        pipelines: target.retry_refs.iter().map(|r| PipelineReport::skipped(&target.project, r)).collect(),
        error: None,
        stored_since: None,
    };
    if let Err(message) = work(client, &me, target, options, &mut report).await {
        tracing::debug!(error = %message, "self-rotation failed");
        report.outcome = Outcome::Failed;
        report.error = Some(message);
    }
    Ok(report)
}

async fn work(
    client: &Client,
    me: &ApiToken,
    target: &SelfTarget,
    options: &Options,
    report: &mut TokenReport,
) -> Result<(), String> {
    if !me.scopes.iter().any(|s| s == "api") {
        return Err(format!(
            "token {} ({:?}) has the scopes [{}]; self-rotation also writes the CI/CD variable {} and retries pipelines, which needs the `api` scope (`self_rotate` alone can only rotate). Nothing was changed. Give the token the `api` scope.",
            me.id,
            me.name,
            me.scopes.join(", "),
            target.var
        ));
    }
    let (resource, account_group) = match client.current_user().await {
        Ok(user) => (SelfResource::of_username(&user.username), service_account_group(&user.username)),
        Err(e) => {
            return Err(format!("cannot read the token's user (GET /user): {e}. Nothing was changed; run again."))
        }
    };
    report.kind = resource.kind().into();

    let holder = Holder::Project(target.project.clone());
    let variable = VariableTarget {
        holder: holder.clone(),
        key: target.var.clone(),
        environment_scope: target.environment_scope.clone(),
        protected: false,
    };
    let label = format!("project {} {} [{}]", target.project, target.var, target.environment_scope);
    let existing = client.variable(&holder, &target.var, &target.environment_scope).await.map_err(|e| {
        format!("cannot read the CI/CD variable {label}: {e}. Nothing was changed. The token needs the Maintainer role on the project.")
    })?;
    let Some(existing) = existing else {
        let elsewhere = match scopes_of(client, target).await {
            Ok(scopes) if !scopes.is_empty() => {
                format!(" {} exists in the environment scopes {}.", target.var, scopes.join(", "))
            }
            _ => String::new(),
        };
        return Err(format!(
            "the CI/CD variable {label} does not exist, so a new token could not be stored. Nothing was changed.{elsewhere} Pass --project and --environment-scope for where ${} is defined (self-rotation writes a project variable).",
            target.var
        ));
    };
    holds_the_jobs_token(client, me, target, &existing, &label).await?;

    let today = options.today;
    let days_left = me.expires_at.map(|d| (d, (d - today).num_days()));
    let reason = match days_left {
        _ if options.force => "forced (--force)".to_owned(),
        Some((d, left)) if left <= 0 => format!("expired on {d}"),
        Some((d, left)) if left < target.rotate_before_days => {
            format!("expires {d}, within {} days", target.rotate_before_days)
        }
        Some((d, left)) => {
            report.outcome = Outcome::Unchanged;
            report.reason = format!("expires {d}, in {left} days");
            return Ok(());
        }
        None => {
            report.outcome = Outcome::Unchanged;
            report.reason = "does not expire".into();
            return Ok(());
        }
    };
    report.reason = reason;
    if options.mode == super::Mode::Plan {
        report.outcome = Outcome::Due;
        report.variables[0].outcome = VariableOutcome::WouldWrite;
        return Ok(());
    }

    // One rotation at a time: a second run rotating with the same, by then revoked, secret would
    // make GitLab revoke the whole family (§1.5), the first run's new token included. The lock is
    // keyed and placed as a fleet run's is (the token's identity; a project or group token's own
    // resource), so a config that also manages this token meets it.
    let lock_id = me.user_id.map_or_else(|| format!("self {}", target.var), |u| super::lock::identity(u, &me.name));
    let place = match (&resource, account_group) {
        (SelfResource::Project(id), _) => Holder::Project(id.to_string()),
        (SelfResource::Group(id), _) => Holder::Group(id.to_string()),
        (SelfResource::User, Some(id)) => Holder::Group(id.to_string()),
        (SelfResource::User, None) => holder.clone(),
    };
    let held = match super::lock::acquire(
        client,
        &super::lock::RunId::new(),
        &target.var,
        &lock_id,
        &place,
        options.lock_lease,
    )
    .await
    {
        Ok(Ok(held)) => held,
        Ok(Err(busy)) => return Err(busy),
        Err(e) => {
            return Err(format!(
                "cannot take patrol's lock (the CI/CD variable {} of {} {}): {e}. Nothing was changed; run again.",
                super::lock::key(&lock_id),
                place.scope(),
                place.path()
            ))
        }
    };
    // The credential that can still delete the lock: the new one once the old is revoked.
    let mut acting = client.clone();
    let run = SelfRun {
        client,
        me,
        resource: &resource,
        target,
        options,
        variable: &variable,
        existing: &existing,
        label: &label,
        in_flight: std::sync::Mutex::new(None),
        lock: held.renewer(),
    };
    let result = locked(&run, &mut acting, &held, report).await;
    let in_flight = run.in_flight.lock().unwrap_or_else(|e| e.into_inner()).take();
    let kept = match in_flight {
        Some(until) => super::lock::keep_until(&acting, &held, until).await,
        None => super::lock::release(&acting, &held).await,
    };
    if let Err(e) = kept {
        tracing::warn!(lock = %held.key, error = %e, "could not remove or keep the lock; it expires by itself");
    }
    let fresh = result?;
    report.outcome = Outcome::Rotated;

    let mut failures = Vec::new();
    for out in &mut report.pipelines {
        retry_latest(&fresh, out).await;
        if let Some(e) = &out.error {
            failures.push(e.clone());
        }
    }
    if !failures.is_empty() {
        return Err(format!("{}. The token itself was stored and verified.", failures.join("; ")));
    }
    Ok(())
}

/// Proves that the variable in the target scope holds the job's token: only then may its
/// successor replace it. A job receives the value of one environment scope (the one its
/// `environment:` matches, `*` without one), and a hidden value cannot be compared, so writing
/// another scope on trust would overwrite a different token (issue 13, case 6). Proven when:
/// - the value is readable and equals the secret in `$VAR`;
/// - it is hidden and carries patrol's marker naming the job's token (a pending marker does not
///   count), or it is the project's only `VAR` in any scope (the first adoption).
async fn holds_the_jobs_token(
    client: &Client,
    me: &ApiToken,
    target: &SelfTarget,
    existing: &ApiVariable,
    label: &str,
) -> Result<(), String> {
    let marked = marker(existing.description.as_deref());
    let why = match &existing.value {
        Some(value) if client.credential().same_as(value.expose()) => return Ok(()),
        None if marked == Some(me.id) => return Ok(()),
        Some(_) => {
            format!("the CI/CD variable {label} holds a different token than this job received in ${}", target.var)
        }
        None => format!(
            "the CI/CD variable {label} is hidden, so its value cannot be compared with ${}, and {}",
            target.var,
            match (marked, pending_marker(existing.description.as_deref())) {
                (Some(other), _) => format!("its marker names token {other}, not this job's token {}", me.id),
                (None, Some(_)) => format!(
                    "its description has only a pending marker (which does not say what it holds), none naming this job's token {}",
                    me.id
                ),
                (None, None) => format!("its description has no patrol marker naming this job's token {}", me.id),
            }
        ),
    };
    let scopes = scopes_of(client, target).await.map_err(|e| {
        format!("{why}; and the CI/CD variables of project {} cannot be listed to see where else {} exists: {e}. Nothing was changed; run again.", target.project, target.var)
    })?;
    let only = scopes.len() == 1 && scopes[0] == target.environment_scope;
    if existing.value.is_none() && only && marked.is_none() {
        // The project's only one, and nothing says it holds another token: the job can only have
        // received this value. (A marker naming another token says otherwise: the job's value
        // came from elsewhere, a pipeline variable or another project.)
        return Ok(());
    }
    if existing.value.is_some() && only {
        return Err(format!(
            "{why}: it was changed after the job started (by a person or another run), or the job received ${} from somewhere else than this variable. Nothing was changed; run the job again so it reads the current value.",
            target.var
        ));
    }
    let hint = if existing.value.is_none() {
        format!(
            " If you know that scope holds this job's token, end the variable's description with `[patrol: token {}]` and run again.",
            me.id
        )
    } else {
        String::new()
    };
    Err(format!(
        "{why}. patrol was asked to write environment scope {scope} and cannot prove that this job received that scope's value; {var} exists in the environment scopes {all}. Nothing was changed. Run this job in an environment that scope {scope} matches (GitLab gives a job the value of the scope that matches its `environment:`, or of `*` when it has none; the component sets `environment:` from its `environment_scope` input), or pass the --environment-scope whose value the job receives.{hint}",
        scope = target.environment_scope,
        var = target.var,
        all = if scopes.is_empty() { "(none)".to_owned() } else { scopes.join(", ") },
    ))
}

/// The environment scopes in which the project has the variable `target.var`, sorted (`*` first).
/// GitLab has no filter by key on the listing, so every page is read; values are not kept.
async fn scopes_of(client: &Client, target: &SelfTarget) -> Result<Vec<String>, GitlabError> {
    #[derive(serde::Deserialize)]
    struct Listed {
        key: String,
        #[serde(default)]
        environment_scope: Option<String>,
    }
    let path = format!("/projects/{}/variables", crate::gitlab::encode(&target.project));
    let mut scopes = Vec::new();
    client
        .each_page(&path, &[], |page: Vec<Listed>| {
            scopes.extend(
                page.into_iter()
                    .filter(|v| v.key == target.var)
                    .map(|v| v.environment_scope.unwrap_or_else(|| "*".into())),
            );
            true
        })
        .await?;
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// The group of a group service account named as GitLab names them by default
/// (`service_account_group_<group id>_<suffix>`, §1.8): where a fleet run keeps its lock too.
fn service_account_group(username: &str) -> Option<u64> {
    username.strip_prefix("service_account_group_")?.split('_').next()?.parse().ok()
}

/// What a self-rotation knows once it has looked: who the job's token is, where it lives and
/// the variable it is stored in.
struct SelfRun<'a> {
    client: &'a Client,
    me: &'a ApiToken,
    resource: &'a SelfResource,
    target: &'a SelfTarget,
    options: &'a Options,
    variable: &'a VariableTarget,
    existing: &'a ApiVariable,
    label: &'a str,
    /// Until when a self-rotate whose outcome is unknown may still be carried out.
    in_flight: std::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    /// The lock held: nothing is sent once it is lost.
    lock: super::lock::Renewer,
}

/// Under the lock: checks the token is still this job's, rotates, stores and verifies. Returns
/// the client acting as the new token; `acting` follows the credential that works.
async fn locked(
    run: &SelfRun<'_>,
    acting: &mut Client,
    held: &super::lock::Held,
    report: &mut TokenReport,
) -> Result<Client, String> {
    let SelfRun { client, me, target, options, variable, existing, label, .. } = *run;
    // Another run may have rotated it between this job's first look and the lock. Asking with
    // the old secret on a non-rotation endpoint is safe: a revoked token just gets 401 (§1.5).
    match client.token_self(client.credential()).await {
        Ok(t) if t.active && t.id == me.id => {}
        Ok(_) | Err(_) => {
            return Err(format!(
                "token {} stopped working after this job read it: another run has probably just rotated it. Nothing was changed by this run; the variable {label} holds whatever that run stored.",
                me.id
            ))
        }
    }
    let today = options.today;
    let expires_at = today + Days::days(target.expires_in_days);
    let issued = obtain(run, expires_at, report).await?;
    report.after = Some(After { token_id: issued.token.id, expires_at: issued.token.expires_at });
    tracing::info!(new_token = issued.token.id, expires_at = %issued.token.expires_at.map_or_else(|| "never".to_owned(), |d| d.to_string()), "new secret issued");

    // From here on the old secret is revoked: act as the new token.
    let fresh = client.with_credential(issued.secret.clone());
    *acting = fresh.clone();
    held.renew_as(fresh.clone());
    if let Err(e) = store(&fresh, variable, existing, &issued, options.write_budget).await {
        report.variables[0].outcome = VariableOutcome::Failed;
        report.variables[0].error = Some(e.to_string());
        // Remove the lock while a credential that may do so still exists.
        let _ = super::lock::release(&fresh, held).await;
        let revoked = fresh.revoke_self().await.is_ok();
        return Err(format!(
            "token {} was rotated into token {}, but the new secret could not be stored in {label} after retrying for {} s: {e}. The old token is revoked and the new secret existed only in this job, so {}. A person must {}",
            me.id,
            issued.token.id,
            options.write_budget.as_secs(),
            if revoked { format!("patrol revoked token {} too", issued.token.id) } else { format!("token {} is orphaned: revoke it in GitLab", issued.token.id) },
            replace_by_hand(target, Some(me))
        ));
    }
    report.variables[0].outcome = VariableOutcome::Written;

    let seen = fresh.token_self(&issued.secret).await.map_err(|e| {
        format!(
            "the new token {} is stored in {label}, but authenticating with it failed: {e}. Check it in GitLab.",
            issued.token.id
        )
    })?;
    if seen.id != issued.token.id || !seen.active {
        return Err(format!(
            "the new secret authenticates as token {} (active: {}), not as the new token {}; check the token in GitLab",
            seen.id, seen.active, issued.token.id
        ));
    }
    if !existing.hidden {
        let now = fresh
            .variable(&variable.holder, &target.var, &target.environment_scope)
            .await
            .map_err(|e| format!("cannot read back {label} to verify it: {e}"))?;
        if !now.and_then(|v| v.value).is_some_and(|v| issued.secret.same_as(v.expose())) {
            return Err(format!(
                "{label} does not hold the new secret after writing it; another writer may have changed it. Check the variable."
            ));
        }
    }
    Ok(fresh)
}

/// Rotates once; on a lost answer, asks GitLab (as the old token) whether the rotation happened.
async fn obtain(
    run: &SelfRun<'_>,
    mut expires_at: chrono::NaiveDate,
    report: &mut TokenReport,
) -> Result<IssuedToken, String> {
    let SelfRun { client, me, resource, target, options, .. } = *run;
    let deadline = options.request_deadline;
    for _ in 0..4 {
        if !run.lock.holds_for(deadline + Duration::from_secs(1)).await {
            return Err(format!(
                "patrol's lock on token {} was lost, or could not be renewed to outlast GitLab's request deadline (another run may hold it now), so this job sent nothing more",
                me.id
            ));
        }
        let error = match client.rotate_self(resource, expires_at).await {
            Ok(issued) => return Ok(issued),
            Err(e) => e,
        };
        // When the failed call returned: the lost attempt left no later (see `obtain_by_rotation`).
        let sent = tokio::time::Instant::now();
        if let Some(limit) = error.expiry_limit().filter(|l| *l < expires_at) {
            report.reason.push_str(&format!("; GitLab allows expiry up to {limit}, so the new token expires then"));
            expires_at = limit;
            continue;
        }
        if !error.outcome_unknown() {
            return Err(format!(
                "GitLab refused to rotate token {}: {error}. Nothing was changed; the token still works.",
                me.id
            ));
        }
        tracing::warn!(token_id = me.id, %error, "self-rotate answer lost; asking GitLab whether it rotated");
        match rotated_after(client, sent, deadline).await {
            Some(false) => {
                // GitLab can no longer carry out the lost request, and the token still works.
                report.reason.push_str(&format!(
                    "; rotating got no answer ({error}), and the token still worked {}s after, so it was sent again",
                    deadline.as_secs()
                ));
                continue;
            }
            Some(true) => {
                return Err(format!(
                    "GitLab rotated token {} but its answer, the only copy of the new secret, was lost ({error}); the old token is revoked. Nothing patrol can do recovers it. A person must {}",
                    me.id,
                    replace_by_hand(target, Some(me))
                ))
            }
            None => {
                // GitLab may still carry it out: the lock stays until it no longer can.
                let left = chrono::Duration::from_std(deadline.saturating_sub(sent.elapsed()))
                    .unwrap_or_else(|_| chrono::Duration::hours(1));
                *run.in_flight.lock().unwrap_or_else(|e| e.into_inner()) = Some(chrono::Utc::now() + left);
                return Err(format!(
                    "rotating token {} got no answer ({error}), and GitLab cannot be asked whether it happened. patrol's lock stays until GitLab can no longer carry it out. Do not re-run blindly: run `patrol rotate --self {} --dry-run`. If it says the token is rejected, a person must {}",
                    me.id,
                    target.var,
                    replace_by_hand(target, Some(me))
                ))
            }
        }
    }
    Err(format!("rotating token {} did not succeed after 4 attempts; nothing was changed, run again later", me.id))
}

/// Whether GitLab carried out a self-rotate sent at `sent` whose answer was lost: `Some(true)`
/// once the old secret is refused (401), `Some(false)` when it still works in a check made after
/// the request deadline (§12: GitLab can no longer carry it out), `None` when GitLab cannot be
/// asked. A check made before the deadline proves nothing, so it waits and asks again.
async fn rotated_after(client: &Client, sent: tokio::time::Instant, deadline: Duration) -> Option<bool> {
    let deadline = sent + deadline;
    loop {
        let past = tokio::time::Instant::now() >= deadline;
        match still_valid(client).await? {
            false => return Some(true),
            true if past => return Some(false),
            true => {
                let wait = deadline.saturating_duration_since(tokio::time::Instant::now()).min(Duration::from_secs(5));
                tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
            }
        }
    }
}

/// Whether the client's (old) secret still authenticates (`Some(false)` once GitLab has revoked
/// it); `None` when GitLab does not answer. Asked a few times.
async fn still_valid(client: &Client) -> Option<bool> {
    let mut wait = Duration::from_millis(500);
    for _ in 0..5 {
        match client.token_self(client.credential()).await {
            Ok(t) => return Some(t.active && !t.revoked),
            Err(e) if e.status() == Some(401) => return Some(false),
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
    None
}

/// Writes the new value (and marker) with patient retries: this is the only copy of the secret.
async fn store(
    fresh: &Client,
    v: &VariableTarget,
    existing: &ApiVariable,
    issued: &IssuedToken,
    budget: Duration,
) -> Result<(), GitlabError> {
    let mut pause = WritePause::new(budget);
    let proof = super::stored(issued).filter(|_| existing.value.is_some());
    let proof = proof.as_ref().map(|p| (p, issued.secret.expose()));
    let description = with_marker(existing.description.as_deref(), issued.token.id, proof);
    loop {
        match fresh.store_in_variable(&v.holder, &v.key, &v.environment_scope, &issued.secret, &description).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                if !pause.before_retry(&e, &v.key).await {
                    return Err(e);
                }
            }
        }
    }
}

async fn retry_latest(client: &Client, out: &mut PipelineReport) {
    match retry_latest_failed(client, out, None).await {
        Ok(Some(p)) => {
            out.action = PipelineAction::Retried;
            out.pipeline_id = Some(p.id);
            out.status = Some(p.status);
        }
        Ok(None) => {}
        Err(e) => {
            out.error = Some(format!("the pipeline on {} {} could not be retried: {e}", out.project, out.reference))
        }
    }
}

/// The manual runbook, for when the token cannot renew itself.
fn replace_by_hand(target: &SelfTarget, me: Option<&ApiToken>) -> String {
    let what = match me {
        Some(t) => format!("a token named {:?} with the scopes [{}]", t.name, t.scopes.join(", ")),
        None => "a token with the `api` scope".into(),
    };
    format!(
        "create {what} and an explicit expiry (Settings > Access tokens of its owner), put it in the CI/CD variable {} of project {} (environment scope {}), then run the pipeline again.",
        target.var, target.project, target.environment_scope
    )
}
