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
    seed.tokens[1].revoked = true; // alice-ci was revoked by someone: patrol recreates it
    let config = FLEET_CONFIG.replace("name = \"alice-ci\"\n", "name = \"alice-ci\"\nscopes = [\"api\"]\n");
    let u = Universe::new(seed, &config).await;
    let today = patrol::app::today();
    let run = u.patrol(&["rotate", "--only", "personal"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    let limit = (today + chrono::Duration::days(200)).to_string();
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
