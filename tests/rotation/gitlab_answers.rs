//! What patrol does with answers real GitLab gives and a lenient simulator did not (§11): a 422
//! on a token create, a group variable's `PUT` that falls back to another scope, a pipeline on a
//! ref that does not exist, and a success whose body was cut short.

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::{FaultAction, Seed};

/// The group token alone, its variable in `scope`, no pipeline.
fn group_config(scope: &str) -> String {
    format!(
        r#"
[[token]]
id = "group"
kind = "group"
name = "sec-reports"
group = "sec"

[[token.variable]]
group = "sec"
key = "GROUP_TOKEN"
environment_scope = "{scope}"
"#
    )
}

#[tokio::test]
async fn a_user_token_recreated_past_the_lifetime_limit_is_shortened_on_gitlabs_422() {
    let mut seed = fleet();
    seed.max_token_lifetime_days = Some(200);
    // GitLab's limit counts from its own date: the simulator's clock stands still, so the limit is
    // known before the run even if the run crosses midnight UTC.
    seed.frozen = true;
    seed.tokens[1].revoked = true; // alice-ci was revoked by someone: patrol recreates it
    let config = FLEET_CONFIG.replace("name = \"alice-ci\"\n", "name = \"alice-ci\"\nscopes = [\"api\"]\n");
    let u = Universe::new(seed, &config).await;
    let limit = u.sim.with_world(|w| w.today() + chrono::Duration::days(200)).to_string();
    let run = u.patrol(&["rotate", "--only", "personal"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    assert_eq!(run.report["tokens"][0]["after"]["expires_at"], limit.as_str(), "{}", run.report);
    let refused: Vec<u16> = u
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/personal_access_tokens"))
        .map(|r| r.status)
        .collect();
    assert_eq!(refused, vec![422, 201], "GitLab's 422, then the create with the shorter expiry");
    assert_eq!(u.variable_holds("PERSONAL_TOKEN", "*"), u.active("alice-ci").first().copied());
}

#[tokio::test]
async fn a_group_variable_in_a_scope_not_yet_seen_is_created_never_put() {
    // The group holds GROUP_TOKEN in `*` only; the config wants it in `production`.
    let u = Universe::new(fleet(), &group_config("production")).await;
    let star_before = u.variable("GROUP_TOKEN", "*").map(|v| v.value);
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    let puts = u.sim.requests().iter().filter(|r| r.method == "PUT" && r.path.contains("/groups/")).count();
    assert_eq!(puts, 0, "a PUT filtered on `production` would have overwritten the `*` variable");
    assert_eq!(u.variable("GROUP_TOKEN", "*").map(|v| v.value), star_before, "the `*` variable is untouched");
    let created = u.variable("GROUP_TOKEN", "production");
    assert!(created.as_ref().is_some_and(|v| v.hidden && v.masked), "{created:?}");
    assert_eq!(u.variable_holds("GROUP_TOKEN", "production"), u.active("sec-reports").first().copied());
}

#[tokio::test]
async fn a_group_without_scoped_variables_is_reported_not_silently_written_elsewhere() {
    let mut seed = Seed { scoped_group_variables: Some(false), ..fleet() };
    seed.variables.retain(|v| v.key != "GROUP_TOKEN");
    let u = Universe::new(seed, &group_config("production")).await;
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, tail(&run.stderr));
    let error = run.report["tokens"][0]["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("stored it in scope \"*\"") && error.contains("environment_scope = \"*\""),
        "the failure says where the value went and what to change: {error}"
    );
    // The secret is not lost: it is in the `*` variable GitLab chose.
    assert_eq!(u.variable_holds("GROUP_TOKEN", "*"), u.active("sec-reports").first().copied());
}

#[tokio::test]
async fn a_pipeline_on_a_ref_that_does_not_exist_fails_naming_the_ref() {
    let config = FLEET_CONFIG
        .replace("project = \"sec/inventory\"\nref = \"main\"", "project = \"sec/inventory\"\nref = \"release-2027\"");
    assert!(config.contains("release-2027"));
    let u = Universe::new(fleet(), &config).await;
    let run = u.patrol(&["rotate", "--only", "service"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let t = &run.report["tokens"][0];
    let error = t["pipelines"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("\"release-2027\" does not exist in sec/inventory") && error.contains("Fix `ref`"), "{t}");
    // The token itself was rotated and stored.
    assert_eq!(u.variable_holds("SA_TOKEN", "*"), u.active("inventory").first().copied());
}

#[tokio::test]
async fn a_rotate_answer_cut_short_is_recovered_like_a_lost_one() {
    // GitLab committed; the 200's body cannot be read: as good as no answer (§11).
    crate::recovery::lost_rotate_answer_is_recovered(FaultAction::TruncatedAnswer).await;
}

/// Issue 13, case 1: GitLab carries a rotate out after patrol stopped waiting (§12). A listing
/// right after the timeout still shows the old token active; sending the rotate again then would
/// meet a token the late commit revokes (reuse detection, in the strict reading). patrol waits
/// for the request deadline, sees the late commit, and recovers through the successor.
#[tokio::test]
async fn a_rotate_that_commits_after_patrol_gave_up_is_never_sent_again() {
    let seed = Seed { revoked_rotate_revokes_family: true, ..fleet() };
    let config = format!("[gitlab]\nrequest_deadline_seconds = 4\n{FLEET_CONFIG}");
    let u = Universe::new(seed, &config).await;
    u.sim.inject(
        patrol::simulator::Fault::new(
            Some("POST"),
            "/api/v4/groups/*/service_accounts/*/personal_access_tokens/*/rotate",
            FaultAction::CommitsLate { after_millis: 2500 },
        )
        .times(1),
    );
    // The config's deadline: the environment's (flag > env > config) would win over it.
    let env = [("PATROL_TIMEOUT", "0.5"), ("PATROL_REQUEST_DEADLINE_SECONDS", UNSET)];
    let run = u.patrol_with(&["rotate", "--only", "service"], &env).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    assert!(u.sim.reuse_detections().is_empty(), "the old token was never rotated twice");
    let reason = run.report["tokens"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("was lost") && reason.contains("rotated again to recover it"), "{reason}");
    let now = u.active("inventory");
    assert_eq!(now.len(), 1, "one active token");
    assert_eq!(u.variable_holds("SA_TOKEN", "*"), Some(now[0]));
    let rotates: Vec<String> =
        u.sim.requests().iter().filter(|r| r.path.ends_with("/rotate")).map(|r| r.path.clone()).collect();
    assert_eq!(rotates.len(), 2, "the lost one, then the successor's: {rotates:?}");
    assert_ne!(rotates[0], rotates[1]);
}

/// The other side of the deadline: a rotate GitLab never carried out (it hung, then the
/// deadline passed with the old token still active) is sent again, and succeeds.
#[tokio::test]
async fn a_rotate_that_never_happened_is_sent_again_after_the_deadline() {
    let config = format!("[gitlab]\nrequest_deadline_seconds = 1\n{FLEET_CONFIG}");
    let u = Universe::new(Seed { revoked_rotate_revokes_family: true, ..fleet() }, &config).await;
    let old = u.active("inventory");
    u.sim.inject(
        patrol::simulator::Fault::new(
            Some("POST"),
            "/api/v4/groups/*/service_accounts/*/personal_access_tokens/*/rotate",
            FaultAction::Hang,
        )
        .times(1),
    );
    // The config's deadline: the environment's (flag > env > config) would win over it.
    let env = [("PATROL_TIMEOUT", "0.5"), ("PATROL_REQUEST_DEADLINE_SECONDS", UNSET)];
    let run = u.patrol_with(&["rotate", "--only", "service"], &env).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    let reason = run.report["tokens"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("so it was sent again"), "{reason}");
    let now = u.active("inventory");
    assert_eq!(now.len(), 1);
    assert_ne!(now, old);
    assert!(u.sim.reuse_detections().is_empty());
}

const SA_ROTATE: &str = "/api/v4/groups/*/service_accounts/*/personal_access_tokens/*/rotate";

/// Found in review: the deadline was measured from before the client waited out a 429, so the
/// attempt that was lost left 2 s after the clock started, and the rotate was sent again while
/// that attempt could still commit.
#[tokio::test]
async fn the_deadline_runs_from_the_attempt_that_was_lost_not_from_before_a_429() {
    let u = Universe::new(Seed { revoked_rotate_revokes_family: true, ..fleet() }, FLEET_CONFIG).await;
    let fault = |action| patrol::simulator::Fault::new(Some("POST"), SA_ROTATE, action);
    u.sim.inject(fault(FaultAction::RateLimited { retry_after_secs: 2 }).times(1));
    u.sim.inject(fault(FaultAction::CommitsLate { after_millis: 3500 }).skip(1).times(1));
    let env = [("PATROL_TIMEOUT", "0.5"), ("PATROL_REQUEST_DEADLINE_SECONDS", "4")];
    let run = u.patrol_with(&["rotate", "--only", "service"], &env).await;
    u.sim.wait_late_commits(1).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    assert!(u.sim.reuse_detections().is_empty(), "the lost rotate was sent again inside its deadline");
    assert_eq!(u.variable_holds("SA_TOKEN", "*"), u.active("inventory").first().copied());
}

/// Found in review: a run that could not learn what became of its lost rotate gave up and
/// removed its lock, and the next run rotated the old token again while the first rotate could
/// still commit. The lock now stays until GitLab's deadline for that rotate has passed.
#[tokio::test]
async fn a_run_that_cannot_learn_the_outcome_keeps_its_lock_until_the_deadline() {
    let u = Universe::new(Seed { revoked_rotate_revokes_family: true, ..fleet() }, FLEET_CONFIG).await;
    u.sim.inject(
        patrol::simulator::Fault::new(Some("POST"), SA_ROTATE, FaultAction::CommitsLate { after_millis: 2500 })
            .times(1),
    );
    // Every listing after the rotate fails: the first run cannot learn what happened.
    u.sim.inject(
        patrol::simulator::Fault::new(
            Some("GET"),
            "/api/v4/groups/*/service_accounts/*/personal_access_tokens",
            FaultAction::Status { status: 500 },
        )
        .skip(2),
    );
    let env = [("PATROL_TIMEOUT", "0.5"), ("PATROL_REQUEST_DEADLINE_SECONDS", "4"), ("PATROL_RETRY_SECONDS", "1")];
    let first = u.patrol_with(&["rotate", "--only", "service"], &env).await;
    assert_eq!(first.code, 1, "{}", first.stdout);
    let error = first.report["tokens"][0]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("may still be carried out by GitLab until"), "{error}");
    u.sim.clear_faults();
    let second = u.patrol_with(&["rotate", "--only", "service"], &env).await;
    assert_eq!(second.code, 1, "left alone while the first rotate may commit: {}", second.stdout);
    assert!(
        second.report["tokens"][0]["error"].as_str().unwrap_or_default().contains("another run is working on token"),
        "{}",
        second.report
    );
    u.sim.wait_late_commits(1).await;
    assert!(u.sim.reuse_detections().is_empty());
    // Once the lock's lease has run out, a run recovers through the successor GitLab issued.
    let mut settled = None;
    for _ in 0..60 {
        let run = u.patrol_with(&["rotate", "--only", "service"], &env).await;
        if run.code == 0 {
            settled = Some(run);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let settled = settled.unwrap_or_else(|| panic!("no run converged once the lock ran out"));
    assert!(u.sim.reuse_detections().is_empty());
    let now = u.active("inventory");
    assert_eq!(now.len(), 1);
    assert_eq!(u.variable_holds("SA_TOKEN", "*"), Some(now[0]), "{}", settled.stdout);
}
