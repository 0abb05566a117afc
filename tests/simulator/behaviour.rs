//! Behaviour the rest of patrol's tests rely on: auth and roles, rotation and reuse detection,
//! lost answers, variables, pipelines, pagination, rate limits, faults and the clock.

use crate::helpers::*;
use chrono::{Duration, TimeZone, Utc};
use patrol::simulator::seed::SeedVariable;
use patrol::simulator::{Fault, FaultAction, Seed};
use serde_json::json;

// ---- authentication (§5.1, §5.5) -------------------------------------------------------------

#[tokio::test]
async fn both_auth_headers_work_and_failures_use_gitlabs_bodies() {
    let api = Api::start(standard_seed()).await;
    let client = reqwest::Client::new();
    let bearer = client.get(api.url("/personal_access_tokens/self")).bearer_auth(ALICE).send().await;
    assert_eq!(bearer.map(|r| r.status().as_u16()).ok(), Some(200));
    assert_eq!(api.get("/personal_access_tokens/self", ALICE).await.status, 200);

    let unknown = api.get("/personal_access_tokens/self", "glpat-nonexistent000000000").await;
    assert_eq!((unknown.status, unknown.body.clone()), (401, json!({"message": "401 Unauthorized"})));

    let id = api.token_id("alice-main");
    api.sim.with_world(|w| w.tokens.get_mut(&id).map(|t| t.revoked = true));
    let revoked = api.get("/personal_access_tokens/self", ALICE).await;
    assert_eq!(revoked.status, 401);
    assert_eq!(
        revoked.body,
        json!({"error": "invalid_token", "error_description": "Token was revoked. You have to re-authorize from the user."})
    );
    assert!(revoked.header("www-authenticate").is_some_and(|h| h.contains("invalid_token")));
    assert!(api.sim.reuse_detections().is_empty(), "a revoked token on a read path must not touch its family");
}

#[tokio::test]
async fn a_token_expires_at_midnight_utc_on_its_expiry_date() {
    let mut seed = standard_seed();
    let Some(eve) = Utc.with_ymd_and_hms(2026, 12, 2, 23, 59, 59).single() else { panic!("date") };
    seed.now = Some(eve);
    seed.frozen = true;
    seed.tokens[1].expires_in_days = None;
    seed.tokens[1].expires_at = chrono::NaiveDate::from_ymd_opt(2026, 12, 3);
    let api = Api::start(seed).await;
    let before = api.get("/personal_access_tokens/self", ALICE).await;
    assert_eq!((before.status, before.body["active"].clone()), (200, json!(true)));

    api.sim.with_world(|w| w.clock.advance(Duration::seconds(1)));
    let after = api.get("/personal_access_tokens/self", ALICE).await;
    assert_eq!(after.status, 401);
    assert_eq!(
        after.body["error_description"],
        "Token is expired. You can either do re-authorization or token refresh."
    );
    let listed = api.get(&format!("/personal_access_tokens/{}", api.token_id("admin")), ADMIN).await;
    assert_eq!(listed.status, 200);
}

#[tokio::test]
async fn scopes_limit_what_a_token_may_do() {
    let api = Api::start(standard_seed()).await;
    // read_api reads but cannot write.
    assert_eq!(api.get(&format!("{APP}/pipelines"), READER).await.status, 200);
    let write = api.post(&format!("{APP}/pipeline"), READER, json!({"ref": "main"})).await;
    assert_eq!(write.status, 403);
    assert_eq!(write.body["error"], "insufficient_scope");
    // self_rotate rotates itself and nothing else.
    assert_eq!(api.get("/personal_access_tokens", SELF_ROTATOR).await.status, 403);
    let other = api.token_id("alice-main");
    assert_eq!(api.post(&format!("/personal_access_tokens/{other}/rotate"), SELF_ROTATOR, json!({})).await.status, 403);
    let own = api.post("/personal_access_tokens/self/rotate", SELF_ROTATOR, json!({})).await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert_eq!(own.body["scopes"], json!(["self_rotate"]));
}

#[tokio::test]
async fn roles_decide_who_may_act_on_what() {
    let api = Api::start(standard_seed()).await;
    // A user's token manages only that user's tokens: others' are 401, not 404.
    let admin_token = api.token_id("admin");
    assert_eq!(api.get(&format!("/personal_access_tokens/{admin_token}"), ALICE).await.status, 401);
    assert_eq!(api.get(&format!("/personal_access_tokens?user_id={}", api.user_id("root")), ALICE).await.status, 401);
    assert_eq!(api.get("/personal_access_tokens/999999", ADMIN).await.status, 404);
    let own: Vec<_> = api.get("/personal_access_tokens", ALICE).await.body.as_array().cloned().unwrap_or_default();
    let alice = api.user_id("alice");
    assert!(!own.is_empty() && own.iter().all(|t| t["user_id"] == alice));

    // A developer may retry pipelines but not touch variables or tokens.
    assert_eq!(api.get(&format!("{APP}/variables"), DEV).await.status, 403);
    assert_eq!(api.get(&format!("{APP}/access_tokens"), DEV).await.status, 401);
    assert_eq!(api.post(&format!("{APP}/pipeline"), DEV, json!({"ref": "main"})).await.status, 201);
    // A project a user cannot see is 404.
    assert_eq!(api.get("/projects/other%2Fthing/variables", ALICE).await.status, 404);

    // A project access token acts on its own project with its own level (Developer here).
    let app_secret = api.secret_of("app-ci");
    assert_eq!(api.get(&format!("{APP}/pipelines"), &app_secret).await.status, 200);
    assert_eq!(api.get(&format!("{APP}/variables"), &app_secret).await.status, 403);
    assert_eq!(api.get("/projects/other%2Fthing/pipelines", &app_secret).await.status, 404);
    let owner_token = api
        .post(&format!("{APP}/access_tokens"), ADMIN, json!({"name": "owner", "scopes": ["api"], "access_level": 50}))
        .await;
    let other =
        api.post(&format!("{APP}/access_tokens/{}/rotate", owner_token.body["id"]), &app_secret, json!({})).await;
    assert_eq!(other.status, 401, "a resource token may not rotate another token");
    let group_token = api.token_id("sec-group");
    let unseen = api.post(&format!("/groups/sec/access_tokens/{group_token}/rotate"), &app_secret, json!({})).await;
    assert_eq!(unseen.status, 404, "nor see a group it is not a member of");

    // Rotating a token with more rights than the caller has is refused.
    let refused = api.post(&format!("{APP}/access_tokens/{}/rotate", owner_token.body["id"]), ALICE, json!({})).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.body["message"],
        "400 Bad request - Not eligible to rotate token with access level higher than the user"
    );
}

// ---- rotation (§1.4) and reuse detection (§1.5) ------------------------------------------------

#[tokio::test]
async fn rotation_revokes_the_old_token_and_issues_a_linked_new_one() {
    let api = Api::start(standard_seed()).await;
    let old = api.token_id("alice-main");
    let today = api.sim.with_world(|w| w.today());
    let expires = (today + Duration::days(365)).to_string();
    let r = api.post(&format!("/personal_access_tokens/{old}/rotate"), ADMIN, json!({"expires_at": expires})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new = r.body["id"].as_u64().unwrap_or_default();
    assert_ne!(new, old);
    assert_eq!((r.body["name"].clone(), r.body["expires_at"].clone()), (json!("alice-main"), json!(expires)));
    let secret = r.body["token"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("glpat-") && secret.len() == 26, "secret shape");
    assert_eq!(api.get("/personal_access_tokens/self", ALICE).await.status, 401, "the old secret dies at once");
    let me = api.get("/personal_access_tokens/self", &secret).await;
    assert_eq!((me.status, me.body["id"].as_u64()), (200, Some(new)));
    assert!(api.sim.issued_secrets().contains(&secret));
    api.sim.with_world(|w| assert_eq!(w.tokens.get(&new).and_then(|t| t.previous), Some(old)));

    // Omitted expiry: one week. Too far: GitLab's message names the limit.
    let week = api.post(&format!("/personal_access_tokens/{new}/rotate"), ADMIN, json!({})).await;
    assert_eq!(week.body["expires_at"], json!((today + Duration::days(7)).to_string()));
    let newest = week.body["id"].as_u64().unwrap_or_default();
    let far = api
        .post(
            &format!("/personal_access_tokens/{newest}/rotate"),
            ADMIN,
            json!({"expires_at": (today + Duration::days(366)).to_string()}),
        )
        .await;
    assert_eq!(far.status, 400);
    assert_eq!(
        far.body["message"],
        format!("400 Bad request - Expiration date must be before {}", today + Duration::days(365))
    );
}

#[tokio::test]
async fn reusing_a_rotated_token_on_a_rotate_path_revokes_the_family() {
    let api = Api::start(standard_seed()).await;
    let first = api.post("/personal_access_tokens/self/rotate", ALICE, json!({})).await;
    let new_secret = first.body["token"].as_str().unwrap_or_default().to_owned();
    let new_id = first.body["id"].as_u64().unwrap_or_default();
    // The old secret on a read path: 401, the family is untouched.
    assert_eq!(api.get("/personal_access_tokens/self", ALICE).await.status, 401);
    assert_eq!(api.get("/personal_access_tokens/self", &new_secret).await.status, 200);
    // The old secret on a rotate path: 401, and the new token is revoked too.
    let again = api.post("/personal_access_tokens/self/rotate", ALICE, json!({})).await;
    assert_eq!(again.status, 401);
    assert_eq!(api.get("/personal_access_tokens/self", &new_secret).await.status, 401);
    let detections = api.sim.reuse_detections();
    assert_eq!(detections.len(), 1);
    assert_eq!(detections[0].revoked, vec![new_id]);
}

/// §11: by id, with another valid credential, GitLab answers 400 and changes nothing else; the
/// successor stays active (and whoever lost its answer holds no secret for it).
#[tokio::test]
async fn rotating_a_revoked_token_by_id_is_refused_and_changes_nothing_else() {
    let api = Api::start(standard_seed()).await;
    let old = api.token_id("alice-main");
    let r = api.post(&format!("/personal_access_tokens/{old}/rotate"), ADMIN, json!({})).await;
    let new_id = r.body["id"].as_u64().unwrap_or_default();
    assert!(new_id > old, "{}", r.text);
    let replay = api.post(&format!("/personal_access_tokens/{old}/rotate"), ADMIN, json!({})).await;
    assert_eq!(
        (replay.status, replay.body.clone()),
        (400, json!({"message": "400 Bad request - Token already revoked"}))
    );
    assert!(api.sim.reuse_detections().is_empty());
    api.sim.with_world(|w| assert!(w.tokens.get(&new_id).is_some_and(|t| !t.revoked)));
}

/// The stricter reading, kept as the seed setting `revoked_rotate_revokes_family`: the replay
/// also revokes the family, so a test can insist that a client never sends it.
#[tokio::test]
async fn the_strict_setting_treats_a_replayed_rotate_by_id_as_reuse() {
    let api = Api::start(Seed { revoked_rotate_revokes_family: true, ..standard_seed() }).await;
    let old = api.token_id("alice-main");
    let r = api.post(&format!("/personal_access_tokens/{old}/rotate"), ADMIN, json!({})).await;
    let new_id = r.body["id"].as_u64().unwrap_or_default();
    let replay = api.post(&format!("/personal_access_tokens/{old}/rotate"), ADMIN, json!({})).await;
    assert_eq!(replay.status, 400);
    assert_eq!(api.sim.reuse_detections().len(), 1);
    api.sim.with_world(|w| assert!(w.tokens.get(&new_id).is_some_and(|t| t.revoked)));
}

#[tokio::test]
async fn drop_after_commit_performs_the_rotation_but_loses_the_answer() {
    let api = Api::start(standard_seed()).await;
    let old = api.token_id("alice-main");
    api.sim.inject(
        Fault::new(Some("POST"), "/api/v4/personal_access_tokens/*/rotate", FaultAction::DropAfterCommit).times(1),
    );
    let lost = api.try_call("POST", &format!("/personal_access_tokens/{old}/rotate"), ADMIN, Some(json!({}))).await;
    assert!(lost.is_err(), "the client must not get an answer: {lost:?}");
    api.sim.with_world(|w| {
        let today = w.today();
        assert!(w.tokens.get(&old).is_some_and(|t| t.revoked), "the write happened");
        assert_eq!(w.tokens.values().filter(|t| t.name == "alice-main" && t.active(today)).count(), 1);
    });
    let log = api.sim.requests();
    assert_eq!(log.last().map(|r| (r.status, r.fault.is_some())), Some((0, true)));
}

// ---- resource tokens and service accounts (§1.8, §2) -----------------------------------------

#[tokio::test]
async fn resource_tokens_and_service_accounts_have_their_whole_lifecycle() {
    let api = Api::start(standard_seed()).await;
    let created =
        api.post("/groups/sec/access_tokens", ADMIN, json!({"name": "g", "scopes": ["api"], "access_level": 40})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secret = created.body["token"].as_str().unwrap_or_default().to_owned();
    let me = api.get("/groups/sec/access_tokens/self", &secret).await;
    assert_eq!((me.status, me.body["access_level"].clone()), (200, json!(40)));
    let rotated = api.post("/groups/sec/access_tokens/self/rotate", &secret, json!({})).await;
    assert_eq!(rotated.status, 200);
    assert_eq!(rotated.body["user_id"], created.body["user_id"], "rotation keeps the bot user");
    let listed = api.get("/groups/sec/access_tokens?state=active", ADMIN).await;
    assert!(listed.body.as_array().is_some_and(|a| a.iter().any(|t| t["id"] == rotated.body["id"])));
    let gone = api.call("DELETE", &format!("/groups/sec/access_tokens/{}", rotated.body["id"]), ADMIN, None).await;
    assert_eq!(gone.status, 204);

    let account = api.post("/groups/sec/service_accounts", ADMIN, json!({"name": "Bot", "username": "svc-new"})).await;
    assert_eq!(account.status, 201);
    let user = account.body["id"].as_u64().unwrap_or_default();
    let accounts = api.get("/groups/sec/service_accounts", ADMIN).await;
    assert_eq!(accounts.body.as_array().map(Vec::len), Some(2));
    let base = format!("/groups/sec/service_accounts/{user}/personal_access_tokens");
    let token = api.post(&base, ADMIN, json!({"name": "svc", "scopes": ["api"], "expires_at": "2027-01-01"})).await;
    assert_eq!(token.status, 201, "{}", token.text);
    let rotated = api.post(&format!("{base}/{}/rotate", token.body["id"]), ADMIN, json!({})).await;
    assert_eq!(rotated.status, 200);
    assert_eq!(api.get(&format!("{base}?state=active"), ADMIN).await.body.as_array().map(Vec::len), Some(1));
    assert_eq!(api.call("DELETE", &format!("{base}/{}", rotated.body["id"]), ADMIN, None).await.status, 204);
    // Only Owners of a top-level group manage its service accounts.
    assert_eq!(api.get("/groups/sec/service_accounts", ALICE).await.status, 403);
}

#[tokio::test]
async fn token_lists_filter_like_gitlab() {
    let api = Api::start(standard_seed()).await;
    let today = api.sim.with_world(|w| w.today());
    let in_ten = (today + Duration::days(10)).to_string();
    let soon = api.get(&format!("/personal_access_tokens?state=active&expires_before={in_ten}"), ADMIN).await;
    let names: Vec<_> = soon.body.as_array().into_iter().flatten().map(|t| t["name"].clone()).collect();
    assert_eq!(names, vec![json!("svc-token")]);
    let searched = api.get("/personal_access_tokens?search=alice&sort=name_desc", ADMIN).await;
    let names: Vec<_> = searched.body.as_array().into_iter().flatten().map(|t| t["name"].clone()).collect();
    assert_eq!(names, vec![json!("alice-self"), json!("alice-reader"), json!("alice-main")]);
    let exact_day = (today + Duration::days(5)).to_string();
    let after =
        api.get(&format!("/personal_access_tokens?expires_after={exact_day}&expires_before={in_ten}"), ADMIN).await;
    assert_eq!(after.body.as_array().map(Vec::len), Some(1), "expires_after is inclusive");
    let bad = api.get("/personal_access_tokens?state=sleepy", ADMIN).await;
    assert_eq!(bad.status, 400);
}

// ---- CI/CD variables (§3) ----------------------------------------------------------------------

#[tokio::test]
async fn variables_in_several_scopes_need_a_filter() {
    let api = Api::start(standard_seed()).await;
    let vars = format!("{APP}/variables");
    let prod = api
        .post(&vars, ADMIN, json!({"key": "APP_TOKEN", "value": "production-value", "environment_scope": "production"}))
        .await;
    assert_eq!(prod.status, 201);
    let conflict = api.put(&format!("{vars}/APP_TOKEN"), ADMIN, json!({"value": "x"})).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(
        conflict.body,
        json!({"message": "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'"})
    );
    let filtered = api
        .put(
            &format!("{vars}/APP_TOKEN?filter%5Benvironment_scope%5D=production"),
            ADMIN,
            json!({"value": "new-production"}),
        )
        .await;
    assert_eq!((filtered.status, filtered.body["environment_scope"].clone()), (200, json!("production")));
    let star = api.get(&format!("{vars}/APP_TOKEN?filter[environment_scope]=*"), ADMIN).await;
    assert_ne!(star.body["value"], "new-production");
    let dup =
        api.post(&vars, ADMIN, json!({"key": "APP_TOKEN", "value": "again", "environment_scope": "production"})).await;
    assert_eq!(
        (dup.status, dup.body.clone()),
        (400, json!({"message": {"key": ["(APP_TOKEN) has already been taken"]}}))
    );
    assert_eq!(api.get(&format!("{vars}/NOPE"), ADMIN).await.body, json!({"message": "404 Variable Not Found"}));
}

#[tokio::test]
async fn put_changes_only_what_is_sent() {
    let api = Api::start(standard_seed()).await;
    let var = format!("{APP}/variables/APP_TOKEN");
    api.put(&var, ADMIN, json!({"protected": true, "description": "keep me"})).await;
    let after = api.put(&var, ADMIN, json!({"value": "glpat-0123456789abcdefghij"})).await;
    assert_eq!(after.status, 200);
    assert_eq!(
        (after.body["masked"].clone(), after.body["protected"].clone(), after.body["description"].clone()),
        (json!(true), json!(true), json!("keep me"))
    );
    let key = api.post(&format!("{APP}/variables"), ADMIN, json!({"key": "BAD-KEY", "value": "x"})).await;
    assert_eq!(key.body, json!({"message": {"key": ["can contain only letters, digits and '_'."]}}));
    let missing = api.post(&format!("{APP}/variables"), ADMIN, json!({"key": "K"})).await;
    assert_eq!(missing.body, json!({"error": "value is missing"}));
}

#[tokio::test]
async fn masked_values_must_pass_gitlabs_rules_raw_or_not() {
    let api = Api::start(standard_seed()).await;
    let vars = format!("{APP}/variables");
    let invalid = json!({"message": {"value": ["is invalid"]}});
    for (value, raw, ok) in [
        ("short", false, false),
        ("has$dollar", false, false),
        ("has$dollar", true, true),
        ("with space!", true, false),
        ("glpat-abc_DEF-123456789", false, true),
    ] {
        let key = format!("K{}", value.len() + usize::from(raw) * 100);
        let r = api.post(&vars, ADMIN, json!({"key": key, "value": value, "masked": true, "raw": raw})).await;
        if ok {
            assert_eq!(r.status, 201, "{value:?} raw={raw}: {}", r.text);
        } else {
            assert_eq!((r.status, r.body.clone()), (400, invalid.clone()), "{value:?} raw={raw}");
        }
    }
    // Unmasking is allowed, and a masked update is checked too.
    let bad = api.put(&format!("{vars}/APP_TOKEN"), ADMIN, json!({"value": "no"})).await;
    assert_eq!(bad.body, invalid);
}

#[tokio::test]
async fn hidden_variables_read_back_null_and_keep_their_settings() {
    let api = Api::start(standard_seed()).await;
    let vars = format!("{APP}/variables");
    let created = api
        .post(&vars, ADMIN, json!({"key": "HIDDEN", "value": "glpat-0123456789abcdefghij", "masked_and_hidden": true}))
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        (created.body["hidden"].clone(), created.body["masked"].clone(), created.body["value"].clone()),
        (json!(true), json!(true), json!(null))
    );
    let read = api.get(&format!("{vars}/HIDDEN"), ADMIN).await;
    assert_eq!(read.body["value"], json!(null));
    let unmask = api.put(&format!("{vars}/HIDDEN"), ADMIN, json!({"masked": false})).await;
    assert_eq!(
        unmask.body,
        json!({"message": {"base": ["The visibility setting cannot be changed for masked and hidden variables."]}})
    );
    let unhide = api
        .put(&format!("{vars}/HIDDEN"), ADMIN, json!({"hidden": false, "value": "glpat-zyxwvutsrqponmlkjihg"}))
        .await;
    assert_eq!(
        (unhide.status, unhide.body["hidden"].clone()),
        (200, json!(true)),
        "hidden is dropped silently on update"
    );
    let null = api.put(&format!("{vars}/HIDDEN"), ADMIN, json!({"value": null})).await;
    assert_eq!(null.body, json!({"message": {"value": ["is invalid"]}}));
    api.sim.with_world(|w| {
        let v = w.variables.iter().find(|v| v.key == "HIDDEN").map(|v| v.value.clone());
        assert_eq!(v.as_deref(), Some("glpat-zyxwvutsrqponmlkjihg"));
    });
}

#[tokio::test]
async fn group_variables_work_like_project_ones() {
    let api = Api::start(standard_seed()).await;
    let r =
        api.post("/groups/sec/variables", ADMIN, json!({"key": "G", "value": "group-value", "protected": true})).await;
    assert_eq!(r.status, 201);
    assert_eq!(api.get("/groups/sec/variables/G", ADMIN).await.body["value"], "group-value");
    assert_eq!(api.get("/groups/sec/variables", ALICE).await.status, 403, "group variables need Owner");
    assert_eq!(api.call("DELETE", "/groups/sec/variables/G", ADMIN, None).await.status, 204);
}

// ---- pipelines (§4) ---------------------------------------------------------------------------

#[tokio::test]
async fn a_pipeline_passes_only_when_its_variables_hold_active_tokens() {
    let mut seed = standard_seed();
    seed.tokens[6].expires_in_days = Some(-1); // app-ci expired yesterday
    let api = Api::start(seed).await;
    let id = api.sim.with_world(|w| w.pipelines.keys().next().copied()).unwrap_or_default();
    let retried = api.post(&format!("{APP}/pipelines/{id}/retry"), ADMIN, json!({})).await;
    assert_eq!((retried.status, retried.body["status"].clone()), (201, json!("pending")));
    assert_eq!(api.get(&format!("{APP}/pipelines/{id}"), ADMIN).await.body["status"], "failed");

    let app_ci =
        api.sim.with_world(|w| w.tokens.values().find(|t| t.name == "app-ci").map(|t| t.id)).unwrap_or_default();
    let rotated = api.post(&format!("{APP}/access_tokens/{app_ci}/rotate"), ADMIN, json!({})).await;
    assert_eq!(rotated.status, 200, "an expired, unrevoked token can be rotated by another credential");
    let secret = rotated.body["token"].as_str().unwrap_or_default();
    api.put(&format!("{APP}/variables/APP_TOKEN"), ADMIN, json!({"value": secret})).await;
    api.post(&format!("{APP}/pipelines/{id}/retry"), ADMIN, json!({})).await;
    assert_eq!(api.get(&format!("{APP}/pipelines/{id}"), ADMIN).await.body["status"], "success");
    // Retrying a pipeline with nothing failed changes nothing.
    let noop = api.post(&format!("{APP}/pipelines/{id}/retry"), ADMIN, json!({})).await;
    assert_eq!(noop.body["status"], "success");
    api.sim.with_world(|w| assert_eq!(w.pipelines.get(&id).map(|p| p.retries), Some(2)));

    let created = api.post(&format!("{APP}/pipeline"), ADMIN, json!({"ref": "main"})).await;
    assert_eq!(created.status, 201);
    let list = api.get(&format!("{APP}/pipelines?ref=main&status=success&order_by=id&sort=asc"), ADMIN).await;
    let ids: Vec<_> = list.body.as_array().into_iter().flatten().map(|p| p["id"].clone()).collect();
    assert_eq!(ids, vec![json!(id), created.body["id"].clone()]);
    assert_eq!(api.post(&format!("{APP}/pipeline"), ADMIN, json!({})).await.body, json!({"error": "ref is missing"}));
}

#[tokio::test]
async fn group_variables_and_environment_scopes_reach_pipelines() {
    let mut seed = standard_seed();
    seed.variables = vec![SeedVariable {
        group: Some("sec".into()),
        key: "APP_TOKEN".into(),
        token: Some("sec-group".into()),
        environment_scope: "*".into(),
        ..Default::default()
    }];
    let api = Api::start(seed).await;
    let id = api.sim.with_world(|w| w.pipelines.keys().next().copied()).unwrap_or_default();
    api.post(&format!("{APP}/pipelines/{id}/retry"), ADMIN, json!({})).await;
    assert_eq!(api.get(&format!("{APP}/pipelines/{id}"), ADMIN).await.body["status"], "success");
    // A project variable in another environment does not shadow it; one for all does.
    api.post(
        &format!("{APP}/variables"),
        ADMIN,
        json!({"key": "APP_TOKEN", "value": "stale-value", "environment_scope": "production"}),
    )
    .await;
    api.sim.with_world(|w| w.pipelines.get_mut(&id).map(|p| p.status = "failed".into()));
    api.post(&format!("{APP}/pipelines/{id}/retry"), ADMIN, json!({})).await;
    assert_eq!(api.get(&format!("{APP}/pipelines/{id}"), ADMIN).await.body["status"], "success");
    api.post(&format!("{APP}/variables"), ADMIN, json!({"key": "APP_TOKEN", "value": "stale-value"})).await;
    api.sim.with_world(|w| w.pipelines.get_mut(&id).map(|p| p.status = "failed".into()));
    api.post(&format!("{APP}/pipelines/{id}/retry"), ADMIN, json!({})).await;
    assert_eq!(api.get(&format!("{APP}/pipelines/{id}"), ADMIN).await.body["status"], "failed");
}

// ---- pagination (§5.2) and rate limits (§5.3) ---------------------------------------------------

#[tokio::test]
async fn pagination_walks_several_pages_by_link() {
    let mut seed = standard_seed();
    for i in 0..45 {
        seed.tokens.push(token(&format!("bulk-{i:02}"), "dave", 50, None));
    }
    let api = Api::start(seed).await;
    let first = api.get("/personal_access_tokens?search=bulk&per_page=20", ADMIN).await;
    assert_eq!(first.header("x-total"), Some("45"));
    assert_eq!(first.header("x-total-pages"), Some("3"));
    assert_eq!(
        (first.header("x-page"), first.header("x-next-page"), first.header("x-prev-page")),
        (Some("1"), Some("2"), Some(""))
    );
    let mut names = Vec::new();
    let mut next = Some(api.url("/personal_access_tokens?search=bulk&per_page=20"));
    let client = reqwest::Client::new();
    while let Some(url) = next.take() {
        let resp = client.get(&url).header("PRIVATE-TOKEN", ADMIN).send().await.unwrap_or_else(|e| panic!("{e}"));
        let link = resp.headers().get("link").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        next = link
            .split(", ")
            .find(|l| l.ends_with("rel=\"next\""))
            .map(|l| l.trim_start_matches('<').split('>').next().unwrap_or_default().to_owned());
        let page: Vec<serde_json::Value> = resp.json().await.unwrap_or_default();
        names.extend(page.into_iter().map(|t| t["name"].as_str().unwrap_or_default().to_owned()));
    }
    let expected: Vec<String> = (0..45).map(|i| format!("bulk-{i:02}")).collect();
    assert_eq!(names, expected);
    let capped = api.get("/personal_access_tokens?per_page=500", ADMIN).await;
    assert_eq!(capped.header("x-per-page"), Some("100"));
    let last = api.get("/personal_access_tokens?search=bulk&page=3&per_page=20", ADMIN).await;
    assert_eq!((last.body.as_array().map(Vec::len), last.header("x-next-page")), (Some(5), Some("")));
}

#[tokio::test]
async fn the_rate_limit_sends_headers_then_429_with_retry_after() {
    let mut seed = standard_seed();
    seed.now = Utc.with_ymd_and_hms(2026, 11, 28, 6, 0, 10).single();
    seed.frozen = true;
    let api = Api::start(seed).await;
    assert!(api.get("/user", ADMIN).await.header("ratelimit-limit").is_none(), "no throttle, no headers");
    api.sim.set_rate_limit(Some(2));
    let first = api.get("/user", ADMIN).await;
    assert_eq!((first.header("ratelimit-limit"), first.header("ratelimit-remaining")), (Some("2"), Some("1")));
    assert_eq!(
        first.header("ratelimit-reset"),
        Some(
            Utc.with_ymd_and_hms(2026, 11, 28, 6, 1, 0)
                .single()
                .map(|t| t.timestamp().to_string())
                .unwrap_or_default()
                .as_str()
        )
    );
    api.get("/user", ADMIN).await;
    let refused = api.get("/user", ADMIN).await;
    assert_eq!((refused.status, refused.text.trim()), (429, "Retry later"));
    assert_eq!(refused.header("retry-after"), Some("50"));
    assert_eq!(api.sim.throttled(), 1);
    api.sim.with_world(|w| w.clock.advance(Duration::seconds(50)));
    assert_eq!(api.get("/user", ADMIN).await.status, 200, "a new window opens");
}

// ---- faults and inspection ---------------------------------------------------------------------

#[tokio::test]
async fn injected_faults_fire_as_configured() {
    let api = Api::start(standard_seed()).await;
    api.sim
        .inject(Fault::new(Some("GET"), "/api/v4/projects/*/variables", FaultAction::Status { status: 503 }).times(1));
    let failed = api.get(&format!("{APP}/variables"), ADMIN).await;
    assert_eq!((failed.status, failed.body.clone()), (503, json!({"message": "503 Service Unavailable"})));
    assert_eq!(api.get(&format!("{APP}/variables"), ADMIN).await.status, 200, "fires once");

    api.sim.inject(Fault::new(None, "/api/v4/user", FaultAction::RateLimited { retry_after_secs: 7 }).times(1));
    let limited = api.get("/user", ADMIN).await;
    assert_eq!((limited.status, limited.header("retry-after")), (429, Some("7")));

    // A hang outlasts the client's timeout, and changes nothing.
    api.sim.inject(Fault::new(Some("PUT"), "/api/v4/projects/*/variables/*", FaultAction::Hang).times(1));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(200))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let hung = client
        .put(api.url(&format!("{APP}/variables/APP_TOKEN")))
        .header("PRIVATE-TOKEN", ADMIN)
        .json(&json!({"value": "glpat-hanghanghanghanghang"}))
        .send()
        .await;
    assert!(hung.is_err_and(|e| e.is_timeout()));
    api.sim.with_world(|w| {
        assert!(!w.variables.is_empty(), "the seed's variables are there to look at");
        assert!(w.variables.iter().all(|v| v.value != "glpat-hanghanghanghanghang"))
    });

    // Probabilistic faults are seeded: the same seed fires the same way.
    let pattern = |seed: u64| {
        let api = &api;
        async move {
            api.sim.clear_faults();
            api.sim.seed_faults(seed);
            api.sim.inject(Fault::new(None, "/api/v4/user", FaultAction::Status { status: 502 }).probability(0.5));
            let mut fired = Vec::new();
            for _ in 0..16 {
                fired.push(api.get("/user", ADMIN).await.status == 502);
            }
            fired
        }
    };
    let (a, b) = (pattern(7).await, pattern(7).await);
    assert_eq!(a, b);
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
}

#[tokio::test]
async fn the_request_log_never_holds_a_secret() {
    let api = Api::start(standard_seed()).await;
    let resp = reqwest::get(api.url(&format!("/personal_access_tokens/self?private_token={ALICE}"))).await;
    assert_eq!(resp.map(|r| r.status().as_u16()).ok(), Some(200), "the query credential works too (§5.1)");
    let rotated = api.post("/personal_access_tokens/self/rotate", ALICE, json!({})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let log = format!("{:?}", api.sim.requests());
    let world = api.sim.with_world(|w| format!("{w:?}"));
    let secrets = api.sim.issued_secrets();
    assert!(secrets.len() > 1, "the seeded secrets and the rotated one: {}", secrets.len());
    for secret in secrets {
        assert!(!log.contains(&secret), "request log leaks a secret");
        assert!(!world.contains(&secret), "Debug of the world leaks a secret");
    }
    assert!(log.contains("private_token=%5BREDACTED%5D"));
}

#[tokio::test]
async fn seeds_load_from_toml_and_json_files() {
    let dir = std::env::temp_dir().join(format!("patrol-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let toml_path = dir.join("seed.toml");
    std::fs::write(&toml_path, "[[users]]\nusername = \"root\"\nadmin = true\n\n[[tokens]]\nname = \"t\"\nuser = \"root\"\nexpires_in_days = 3\nsecret = \"glpat-FromTomlFromTomlFrom\"\n").unwrap_or_else(|e| panic!("{e}"));
    let json_path = dir.join("seed.json");
    let seed = Seed::load(&toml_path).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&json_path, serde_json::to_string(&seed).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
    let api = Api::start(Seed::load(&json_path).unwrap_or_else(|e| panic!("{e}"))).await;
    let me = api.get("/personal_access_tokens/self", "glpat-FromTomlFromTomlFrom").await;
    assert_eq!((me.status, me.body["name"].clone()), (200, json!("t")));
    std::fs::write(&toml_path, "[[users]]\nusername = \"root\"\nadmn = true\n").unwrap_or_else(|e| panic!("{e}"));
    let err = Seed::load(&toml_path).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("seed.toml") && err.contains("admn"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
