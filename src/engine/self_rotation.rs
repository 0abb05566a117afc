//! `patrol rotate --self VAR`: a token keeps itself alive from the CI job that uses it.
//!
//! The credential is the token in `$VAR`, and it is the only credential: once GitLab has rotated
//! it, the old secret is revoked and the new one exists only in this process until it is stored.
//! So, in order:
//! 1. `GET /personal_access_tokens/self`: the token, its expiry and scopes (a rejected token stops
//!    here: a dead token cannot renew itself);
//! 2. read the CI/CD variable `VAR`, then prove it can be written by stamping patrol's marker in
//!    its description. If it cannot, nothing is rotated;
//! 3. rotate once through the token's own `self/rotate` endpoint. A lost answer is never replayed
//!    blindly: `GET …/self` with the old secret tells whether GitLab rotated (401: it did, and the
//!    secret is lost; a person must step in) or not (the old token still works: sending again is
//!    safe);
//! 4. write the new secret to `VAR` as the new token, with patient retries;
//! 5. verify (the new secret authenticates as the new token; a readable variable holds it), then
//!    retry the latest failed pipeline of each `--retry-ref`.

use super::{limit_from, marker, retry_latest_failed, with_marker, Options, WritePause};
use crate::config::{Holder, VariableTarget};
use crate::gitlab::model::{ApiToken, ApiVariable, IssuedToken};
use crate::gitlab::{Client, GitlabError, SelfResource};
use crate::report::{
    After, Before, Outcome, PipelineAction, PipelineReport, TokenReport, VariableOutcome, VariableReport,
};
use chrono::Duration as Days;
use serde_json::json;
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
        tracing::warn!(error = %message, "self-rotation failed");
        report.outcome = Outcome::Failed;
        if report.reason.is_empty() {
            report.reason = "could not be finished".into();
        }
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
    let resource = match client.current_user().await {
        Ok(user) => SelfResource::of_username(&user.username),
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
        return Err(format!(
            "the CI/CD variable {label} does not exist, so a new token could not be stored. Nothing was changed. Pass --project and --environment-scope for where ${} is defined (self-rotation writes a project variable).",
            target.var
        ));
    };
    if let Some(value) = &existing.value {
        if !client.credential().same_as(value.expose()) {
            return Err(format!(
                "the CI/CD variable {label} holds a different token than this job received in ${}: it was changed after the job started (by a person or another run). Nothing was changed; run the job again so it reads the current value.",
                target.var
            ));
        }
    }

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

    // Prove the variable can be written before the only credential changes.
    if marker(existing.description.as_deref()) != Some(me.id) {
        let body = json!({ "description": with_marker(existing.description.as_deref(), me.id) });
        client.update_variable(&holder, &target.var, &target.environment_scope, &body).await.map_err(|e| {
            format!("cannot write the CI/CD variable {label} ({e}), so the token was not rotated and nothing changed. The token needs the Maintainer role on project {}.", target.project)
        })?;
    }

    // One self-rotation at a time: a second run rotating with the same, by then revoked, secret
    // would make GitLab revoke the whole family (§1.5), the first run's new token included.
    let lock_id = format!("self {}", target.var);
    let lease = options.write_budget * 2 + Duration::from_secs(600);
    let held = match super::lock::acquire(client, &super::lock::RunId::new(), &lock_id, &holder, lease).await {
        Ok(Ok(held)) => held,
        Ok(Err(busy)) => return Err(busy),
        Err(e) => {
            return Err(format!(
                "cannot take patrol's lock (the CI/CD variable {} of project {}): {e}. Nothing was changed; run again.",
                super::lock::key(&lock_id),
                target.project
            ))
        }
    };
    // The credential that can still delete the lock: the new one once the old is revoked.
    let mut acting = client.clone();
    let result =
        locked(client, &mut acting, &held, me, &resource, target, options, &variable, &existing, &label, report).await;
    if let Err(e) = super::lock::release(&acting, &held).await {
        tracing::warn!(lock = %held.key, error = %e, "could not remove the lock; it expires by itself");
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

/// Under the lock: checks the token is still this job's, rotates, stores and verifies. Returns
/// the client acting as the new token; `acting` follows the credential that works.
#[allow(clippy::too_many_arguments)]
async fn locked(
    client: &Client,
    acting: &mut Client,
    held: &super::lock::Held,
    me: &ApiToken,
    resource: &SelfResource,
    target: &SelfTarget,
    options: &Options,
    variable: &VariableTarget,
    existing: &ApiVariable,
    label: &str,
    report: &mut TokenReport,
) -> Result<Client, String> {
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
    let issued = obtain(client, me, resource, target, expires_at, report, options.request_deadline).await?;
    report.after = Some(After { token_id: issued.token.id, expires_at: issued.token.expires_at });
    tracing::info!(new_token = issued.token.id, expires_at = ?issued.token.expires_at, "new secret issued");

    // From here on the old secret is revoked: act as the new token.
    let fresh = client.with_credential(issued.secret.clone());
    *acting = fresh.clone();
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
    client: &Client,
    me: &ApiToken,
    resource: &SelfResource,
    target: &SelfTarget,
    mut expires_at: chrono::NaiveDate,
    report: &mut TokenReport,
    deadline: Duration,
) -> Result<IssuedToken, String> {
    for _ in 0..4 {
        let sent = tokio::time::Instant::now();
        let error = match client.rotate_self(resource, expires_at).await {
            Ok(issued) => return Ok(issued),
            Err(e) => e,
        };
        if error.status() == Some(400) {
            if let Some(limit) = limit_from(error.message()).filter(|l| *l < expires_at) {
                report.reason.push_str(&format!("; GitLab allows expiry up to {limit}, so the new token expires then"));
                expires_at = limit;
                continue;
            }
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
                return Err(format!(
                    "rotating token {} got no answer ({error}), and GitLab cannot be asked whether it happened. Do not re-run blindly: run `patrol rotate --self {} --dry-run`. If it says the token is rejected, a person must {}",
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
    let description = with_marker(existing.description.as_deref(), issued.token.id);
    loop {
        let body = json!({ "value": issued.secret.expose(), "description": description });
        match fresh.update_variable(&v.holder, &v.key, &v.environment_scope, &body).await {
            Ok(()) => return Ok(()),
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
