//! The simulator answers as GitLab's code does (gitlab-api.md §11, §12, §14): one test per item,
//! each citing what it was read in. Where GitLab's answer depends on the instance, the seed
//! setting that selects it is tested on both sides.

use crate::helpers::*;
use chrono::Duration;
use patrol::simulator::seed::SeedVariable;
use patrol::simulator::world::Source;
use patrol::simulator::{Fault, FaultAction, Seed};
use serde_json::{json, Value};

fn today(api: &Api) -> chrono::NaiveDate {
    api.sim.with_world(|w| w.today())
}

fn too_late(api: &Api) -> String {
    (today(api) + Duration::days(400)).to_string()
}

fn limit_message(api: &Api) -> String {
    format!("Expiration date must be before {}", today(api) + Duration::days(365))
}

// ---- creating and rotating past the lifetime limit (lib/api/users.rb, resource_access_tokens.rb,
// ---- ee/lib/api/group_service_accounts.rb) ------------------------------------------------------

#[tokio::test]
async fn an_expiry_past_the_limit_is_422_for_user_tokens_and_400_for_resource_tokens_and_rotation() {
    let api = Api::start(standard_seed()).await;
    let late = too_late(&api);
    let alice = api.user_id("alice");
    let user_pat = api
        .post(
            &format!("/users/{alice}/personal_access_tokens"),
            ADMIN,
            json!({"name": "x", "scopes": ["api"], "expires_at": late}),
        )
        .await;
    assert_eq!((user_pat.status, user_pat.body.clone()), (422, json!({ "message": limit_message(&api) })));

    let svc = api.user_id("svc-bot");
    let sa = api
        .post(
            &format!("/groups/sec/service_accounts/{svc}/personal_access_tokens"),
            ADMIN,
            json!({"name": "x", "scopes": ["api"], "expires_at": late}),
        )
        .await;
    assert_eq!((sa.status, sa.body.clone()), (422, json!({ "message": limit_message(&api) })));

    let bad_request = json!({ "message": format!("400 Bad request - {}", limit_message(&api)) });
    let project = api
        .post(&format!("{APP}/access_tokens"), ADMIN, json!({"name": "x", "scopes": ["api"], "expires_at": late}))
        .await;
    assert_eq!((project.status, project.body.clone()), (400, bad_request.clone()));
    let old = api.token_id("alice-main");
    let rotate = api.post(&format!("/personal_access_tokens/{old}/rotate"), ADMIN, json!({"expires_at": late})).await;
    assert_eq!((rotate.status, rotate.body), (400, bad_request));
    assert_eq!(api.token_id("alice-main"), old, "a refused rotation changes nothing");
}

// ---- scopes (lib/gitlab/auth.rb `resource_bot_scopes`, the endpoints' `values:`) -------------------

#[tokio::test]
async fn scopes_are_validated_per_token_type() {
    let api = Api::start(standard_seed()).await;
    let invalid = json!({"error": "scopes does not have a valid value"});
    let alice = api.user_id("alice");
    let root = api.user_id("root");
    let create_pat = |user: u64, scopes: Value| {
        let api = &api;
        async move {
            api.post(&format!("/users/{user}/personal_access_tokens"), ADMIN, json!({"name": "s", "scopes": scopes}))
                .await
        }
    };
    let unknown = create_pat(alice, json!(["api", "delete_everything"])).await;
    assert_eq!((unknown.status, unknown.body), (400, invalid.clone()));
    assert_eq!(create_pat(alice, json!(["sudo"])).await.status, 400, "admin scopes only for an admin's tokens");
    assert_eq!(create_pat(root, json!(["sudo", "admin_mode"])).await.status, 201);
    assert_eq!(create_pat(alice, json!(["read_user", "self_rotate"])).await.status, 201);

    for scopes in [json!(["sudo"]), json!(["read_user"]), json!(["bogus"])] {
        let r = api.post(&format!("{APP}/access_tokens"), ADMIN, json!({"name": "p", "scopes": scopes})).await;
        assert_eq!((r.status, r.body), (400, invalid.clone()), "project token with {scopes}");
    }
    let ok = api.post("/groups/sec/access_tokens", ADMIN, json!({"name": "g", "scopes": ["read_api", "self_rotate"]}));
    assert_eq!(ok.await.status, 201);
}

// ---- resource tokens (lib/api/resource_access_tokens.rb) ------------------------------------------

#[tokio::test]
async fn resource_tokens_answer_404_400_and_405_where_gitlab_does() {
    let api = Api::start(standard_seed()).await;
    // A token the project does not have: 404 for anyone allowed to read the project's tokens.
    let missing = api.get(&format!("{APP}/access_tokens/999999"), ALICE).await;
    assert_eq!((missing.status, missing.body), (404, json!({"message": "404 project Access Token Not Found"})));
    let gone = api.call("DELETE", "/groups/sec/access_tokens/999999", ADMIN, None).await;
    assert_eq!((gone.status, gone.body), (404, json!({"message": "404 group Access Token Not Found"})));
    // Without the role to read them: 401.
    let app_ci = api.token_id("app-ci");
    assert_eq!(api.get(&format!("{APP}/access_tokens/{app_ci}"), DEV).await.status, 401);
    // Without the role to delete: 400 naming both users; nothing changes.
    let bot =
        api.sim.with_world(|w| w.tokens.get(&app_ci).and_then(|t| w.users.get(&t.user_id)).map(|u| u.name.clone()));
    let refused = api.call("DELETE", &format!("{APP}/access_tokens/{app_ci}"), DEV, None).await;
    assert_eq!(
        (refused.status, refused.body),
        (400, json!({ "message": format!("400 Bad request - dave cannot delete {}", bot.unwrap_or_default()) }))
    );
    assert_eq!(api.token_id("app-ci"), app_ci);
    // Only a bot may self-rotate through the resource endpoint; a person's token gets 405.
    let human = api.post(&format!("{APP}/access_tokens/self/rotate"), ALICE, json!({})).await;
    assert_eq!((human.status, human.body), (405, json!({"message": "405 Method Not Allowed"})));
    let own = api.post(&format!("{APP}/access_tokens/self/rotate"), &api.secret_of("app-ci"), json!({})).await;
    assert_eq!(own.status, 200, "{}", own.text);
    // Creating without the role: 400 from the create service.
    let dev = api.post(&format!("{APP}/access_tokens"), DEV, json!({"name": "d", "scopes": ["api"]})).await;
    assert_eq!(
        (dev.status, dev.body),
        (400, json!({"message": "400 Bad request - User does not have permission to create project access token"}))
    );
}

// ---- personal tokens' revoke (lib/api/personal_access_tokens.rb) ----------------------------------

#[tokio::test]
async fn revoking_a_personal_token_by_id_is_404_when_missing_and_400_when_not_yours() {
    let api = Api::start(standard_seed()).await;
    let missing = api.call("DELETE", "/personal_access_tokens/999999", ALICE, None).await;
    assert_eq!(missing.status, 404);
    let daves = api.token_id("dave-main");
    let theirs = api.call("DELETE", &format!("/personal_access_tokens/{daves}"), ALICE, None).await;
    assert_eq!((theirs.status, theirs.body), (400, json!({"message": "400 Bad request - Not permitted to revoke"})));
    assert_eq!(api.token_id("dave-main"), daves, "still active");
    assert_eq!(api.call("DELETE", &format!("/personal_access_tokens/{daves}"), ADMIN, None).await.status, 204);
}

// ---- entities (lib/api/entities/personal_access_token.rb, resource_access_token.rb) -------------

#[tokio::test]
async fn each_endpoint_presents_its_own_token_entity() {
    let api = Api::start(standard_seed()).await;
    // An admin's listing of personal tokens includes the bots' tokens, in the PAT entity.
    let all = api.get("/personal_access_tokens?per_page=100", ADMIN).await;
    let items = all.body.as_array().cloned().unwrap_or_default();
    let app_ci = api.token_id("app-ci");
    let bot_token = items.iter().find(|t| t["id"] == json!(app_ci)).cloned().unwrap_or(Value::Null);
    assert_eq!(bot_token["name"], "app-ci", "{}", all.text);
    assert!(bot_token.get("access_level").is_none(), "the PAT entity never has access_level: {bot_token}");
    assert_eq!((bot_token["expired"].clone(), bot_token["granular"].clone()), (json!(false), json!(false)));

    let project = api.get(&format!("{APP}/access_tokens"), ALICE).await;
    let first = project.body.get(0).cloned().unwrap_or(Value::Null);
    let app_id = api.sim.with_world(|w| w.project_by_path("sec/app").map(|p| p.id));
    assert_eq!(
        (first["access_level"].clone(), first["resource_type"].clone(), first["resource_id"].clone()),
        (json!(30), json!("project"), json!(app_id)),
        "{first}"
    );
}

// ---- group variables (lib/api/group_variables.rb, app/services/ci/change_variable_service.rb) ----

fn group_var(key: &str, scope: &str, value: &str) -> SeedVariable {
    SeedVariable {
        group: Some("sec".into()),
        key: key.into(),
        value: Some(value.into()),
        environment_scope: scope.into(),
        ..Default::default()
    }
}

fn two_scopes() -> Seed {
    let mut seed = standard_seed();
    seed.variables.push(group_var("SHARED", "production", "prod-value-1"));
    seed.variables.push(group_var("SHARED", "staging", "staging-value-1"));
    seed
}

fn group_value(api: &Api, scope: &str) -> Option<String> {
    api.sim.with_world(|w| {
        w.variables
            .iter()
            .find(|v| v.key == "SHARED" && v.environment_scope == scope && matches!(v.owner, Source::Group(_)))
            .map(|v| v.value.clone())
    })
}

#[tokio::test]
async fn a_group_variables_put_never_answers_409_and_falls_back_to_the_key_alone() {
    let api = Api::start(two_scopes()).await;
    // GET and DELETE go through the finder: two scopes without a filter are a 409.
    assert_eq!(api.get("/groups/sec/variables/SHARED", ADMIN).await.status, 409);
    let missing = api.get("/groups/sec/variables/NOPE", ADMIN).await;
    assert_eq!((missing.status, missing.body), (404, json!({"message": "404 GroupVariable Not Found"})));
    // PUT without a filter takes the oldest, answering 200.
    let unfiltered = api.put("/groups/sec/variables/SHARED", ADMIN, json!({"value": "unfiltered-1"})).await;
    assert_eq!((unfiltered.status, unfiltered.body["environment_scope"].clone()), (200, json!("production")));
    // PUT filtered on a scope that does not exist updates another scope's variable.
    let wrong = api
        .put(
            "/groups/sec/variables/SHARED?filter%5Benvironment_scope%5D=review",
            ADMIN,
            json!({"value": "misplaced-1"}),
        )
        .await;
    assert_eq!((wrong.status, wrong.body["environment_scope"].clone()), (200, json!("production")));
    assert_eq!(group_value(&api, "production").as_deref(), Some("misplaced-1"));
    assert_eq!(group_value(&api, "staging").as_deref(), Some("staging-value-1"));
    // Filtered on a scope that exists, it updates that one.
    let right = api
        .put("/groups/sec/variables/SHARED?filter%5Benvironment_scope%5D=staging", ADMIN, json!({"value": "staging-2"}))
        .await;
    assert_eq!(right.body["environment_scope"], "staging");
    assert_eq!(group_value(&api, "staging").as_deref(), Some("staging-2"));
    // A project variable's PUT keeps its 409 (lib/api/ci/variables.rb).
    let path = format!("{APP}/variables/APP_TOKEN?filter%5Benvironment_scope%5D=review");
    assert_eq!(api.put(&path, ADMIN, json!({})).await.status, 404);
}

#[tokio::test]
async fn a_tier_without_scoped_group_variables_drops_the_scope() {
    let api = Api::start(Seed { scoped_group_variables: Some(false), ..standard_seed() }).await;
    let created = api
        .post(
            "/groups/sec/variables",
            ADMIN,
            json!({"key": "SCOPED", "value": "value-12345", "environment_scope": "production"}),
        )
        .await;
    assert_eq!((created.status, created.body["environment_scope"].clone()), (201, json!("*")));
    let moved = api.put("/groups/sec/variables/SCOPED", ADMIN, json!({"environment_scope": "staging"})).await;
    assert_eq!(moved.body["environment_scope"], "*");
    // Projects keep their scopes on every tier.
    let project = api
        .post(
            &format!("{APP}/variables"),
            ADMIN,
            json!({"key": "SCOPED", "value": "v-12345678", "environment_scope": "production"}),
        )
        .await;
    assert_eq!(project.body["environment_scope"], "production");
}

// ---- parameters (Grape's coercion, lib/api/helpers/pagination*) -----------------------------------

#[tokio::test]
async fn booleans_take_every_spelling_grape_accepts() {
    let api = Api::start(standard_seed()).await;
    for (i, (spelling, expected)) in [
        ("t", true),
        ("TRUE", true),
        ("on", true),
        ("Y", true),
        ("1", true),
        ("f", false),
        ("No", false),
        ("OFF", false),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("BOOL_{i}");
        let r = api
            .post(&format!("{APP}/variables"), ADMIN, json!({"key": key, "value": "value-123", "protected": spelling}))
            .await;
        assert_eq!((r.status, r.body["protected"].clone()), (201, json!(expected)), "protected={spelling}");
    }
    let vars = format!("{APP}/variables");
    let bad = api.post(&vars, ADMIN, json!({"key": "B", "value": "v-1234567", "protected": "maybe"})).await;
    assert_eq!(bad.status, 400);
    let listed = api.get("/personal_access_tokens?revoked=F", ALICE).await;
    assert_eq!(listed.status, 200);
}

#[tokio::test]
async fn an_unknown_sort_is_ignored_and_page_sizes_below_one_are_refused() {
    let api = Api::start(standard_seed()).await;
    let sorted = api.get("/personal_access_tokens?sort=sideways", ALICE).await;
    let ids: Vec<u64> = sorted.body.as_array().into_iter().flatten().filter_map(|t| t["id"].as_u64()).collect();
    assert!(ids.len() > 1 && ids.windows(2).all(|w| w[0] < w[1]), "id order: {ids:?}");
    let zero = api.get("/personal_access_tokens?per_page=0", ALICE).await;
    assert_eq!((zero.status, zero.body), (400, json!({"error": "per_page has a value not allowed"})));
    assert_eq!(api.get("/personal_access_tokens?page=0", ALICE).await.status, 400);
    let capped = api.get("/personal_access_tokens?per_page=500", ALICE).await;
    assert_eq!(capped.header("x-per-page"), Some("100"));
}

// ---- pipelines (lib/api/ci/pipelines.rb) ---------------------------------------------------------

#[tokio::test]
async fn a_pipeline_on_a_missing_ref_is_refused_and_the_list_validates_its_filters() {
    let api = Api::start(standard_seed()).await;
    // The seed has one pipeline: failed, on main, named "Build pipeline".
    let bad_source = api.get(&format!("{APP}/pipelines?source=carrier_pigeon"), ADMIN).await;
    assert_eq!((bad_source.status, bad_source.body), (400, json!({"error": "source does not have a valid value"})));
    let count = |query: &str| {
        let (api, path) = (&api, format!("{APP}/pipelines?{query}"));
        async move { api.get(&path, ADMIN).await.body.as_array().map_or(usize::MAX, Vec::len) }
    };
    assert_eq!(count("scope=finished").await, 1);
    assert_eq!(count("scope=running").await, 0);
    assert_eq!(count("scope=tags").await, 0);
    assert_eq!(count("source=schedule").await, 1);
    assert_eq!(count("source=push").await, 0);
    assert_eq!(count("name=Build%20pipeline").await, 1);
    assert_eq!(count("name=Deploy").await, 0);
    assert_eq!(count("username=nobody").await, 0);
    assert_eq!(count("yaml_errors=true").await, 0);
    let seeded_sha = api.sim.with_world(|w| w.pipelines.values().next().map(|p| p.sha.clone())).unwrap_or_default();
    assert_eq!(count(&format!("sha={seeded_sha}")).await, 1);
    assert_eq!(count("sha=0000000000000000000000000000000000000000").await, 0);

    let missing = api.post(&format!("{APP}/pipeline"), ADMIN, json!({"ref": "no-such-branch"})).await;
    assert_eq!((missing.status, missing.body), (400, json!({"message": {"base": ["Reference not found"]}})));
    assert_eq!(api.sim.with_world(|w| w.pipelines.len()), 1, "nothing was created");
    let main = api.post(&format!("{APP}/pipeline"), ADMIN, json!({"ref": "main"})).await;
    assert_eq!(main.status, 201);
    assert_eq!(api.sim.with_world(|w| w.pipelines.len()), 2);
}

#[tokio::test]
async fn web_urls_carry_the_address_the_simulator_listens_on() {
    let api = Api::start(standard_seed()).await;
    let origin = api.sim.api_url().trim_end_matches("/api/v4").to_owned();
    let list = api.get(&format!("{APP}/pipelines"), ADMIN).await;
    let url = list.body[0]["web_url"].as_str().unwrap_or_default().to_owned();
    assert!(url.starts_with(&format!("{origin}/sec/app/-/pipelines/")), "{url}");
    let project = api.get(APP, ADMIN).await;
    assert_eq!(project.body["web_url"], json!(format!("{origin}/sec/app")));
}

// ---- the token information API (§14) ---------------------------------------------------------------

#[tokio::test]
async fn the_token_information_api_names_even_revoked_tokens_for_administrators() {
    let api = Api::start(standard_seed()).await;
    let old = api.token_id("alice-main");
    assert_eq!(api.post(&format!("/personal_access_tokens/{old}/rotate"), ADMIN, json!({})).await.status, 200);
    let known = api.post("/admin/token", ADMIN, json!({ "token": ALICE })).await;
    assert_eq!(
        (known.status, known.body["id"].clone(), known.body["revoked"].clone(), known.body["name"].clone()),
        (200, json!(old), json!(true), json!("alice-main"))
    );
    assert!(known.body.get("token").is_none(), "never the secret: {}", known.text);
    assert_eq!(api.post("/admin/token", DEV, json!({ "token": ALICE })).await.status, 403);
    assert_eq!(api.post("/admin/token", ADMIN, json!({"token": "glpat-unknownunknown00000"})).await.status, 404);
    assert_eq!(api.post("/admin/token", ADMIN, json!({"token": "glrt-a-runner-token"})).await.status, 422);

    let off = Api::start(Seed { token_info_api: Some(false), ..standard_seed() }).await;
    assert_eq!(off.post("/admin/token", ADMIN, json!({ "token": DEV })).await.status, 404, "feature flag off");
}

// ---- faults that reality has (§12) ----------------------------------------------------------------

#[tokio::test]
async fn a_late_commit_lands_after_the_client_gave_up() {
    let api = Api::start(standard_seed()).await;
    let old = api.token_id("alice-main");
    api.sim.inject(
        Fault::new(
            Some("POST"),
            "/api/v4/personal_access_tokens/*/rotate",
            FaultAction::CommitsLate { after_millis: 300 },
        )
        .times(1),
    );
    let impatient = reqwest::Client::builder().timeout(std::time::Duration::from_millis(100)).build();
    let sent = match impatient {
        Ok(c) => {
            c.post(api.url(&format!("/personal_access_tokens/{old}/rotate")))
                .header("PRIVATE-TOKEN", ADMIN)
                .send()
                .await
        }
        Err(e) => panic!("client: {e}"),
    };
    assert!(sent.is_err(), "the client gave up first");
    let still = api.sim.with_world(|w| w.tokens.get(&old).map(|t| t.revoked));
    assert_eq!(still, Some(false), "right after the timeout GitLab has not committed yet");
    api.sim.wait_late_commits(1).await;
    api.sim.with_world(|w| {
        assert!(w.tokens.get(&old).is_some_and(|t| t.revoked), "then it commits");
        assert!(w.tokens.values().any(|t| t.previous == Some(old) && !t.revoked), "and a successor exists");
    });
}

#[tokio::test]
async fn a_truncated_answer_is_committed_but_cannot_be_read() {
    let api = Api::start(standard_seed()).await;
    let old = api.token_id("alice-main");
    api.sim.inject(
        Fault::new(Some("POST"), "/api/v4/personal_access_tokens/*/rotate", FaultAction::TruncatedAnswer).times(1),
    );
    let cut = api.post(&format!("/personal_access_tokens/{old}/rotate"), ADMIN, json!({})).await;
    assert_eq!(cut.status, 200);
    assert!(serde_json::from_str::<Value>(&cut.text).is_err(), "not JSON any more: {}", cut.text.len());
    assert!(!cut.text.is_empty());
    api.sim.with_world(|w| assert!(w.tokens.get(&old).is_some_and(|t| t.revoked), "committed"));
    // A refusal is answered whole.
    api.sim.inject(Fault::new(Some("POST"), "/api/v4/personal_access_tokens/*/rotate", FaultAction::TruncatedAnswer));
    let refused = api.post(&format!("/personal_access_tokens/{old}/rotate"), ADMIN, json!({})).await;
    assert_eq!((refused.status, refused.body), (400, json!({"message": "400 Bad request - Token already revoked"})));
}
