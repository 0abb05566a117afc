//! For every documented GitLab body in `tests/fixtures/`, make the same call to the simulator and
//! check that its answer has the same JSON keys with the same value types.

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Fields GitLab documents for an entity (gitlab-api.md §1.1, §2, §4) that older documentation
/// examples leave out, and those newer versions add to the token entities (§11: `expired` and
/// `granular` on personal tokens, `resource_type` and `resource_id` on resource tokens). The
/// simulator may send them beyond a fixture's keys; nothing else.
const DOCUMENTED_EXTRAS: [&str; 9] = [
    "description",
    "last_used_at",
    "source",
    "name",
    "detailed_status",
    "expired",
    "granular",
    "resource_type",
    "resource_id",
];

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Field names that GitLab's own documented bodies show as `null` somewhere, so a `null` there
/// is GitLab's behaviour (a token never used has no `last_used_at`, one without a description
/// has `description: null`, …).
fn nullable_fields() -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => m.iter().for_each(|(k, v)| {
                if v.is_null() {
                    out.insert(k.clone());
                }
                walk(v, out);
            }),
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")).flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") {
            walk(&fixture(&name), &mut out);
        }
    }
    out
}

/// Collects every difference in shape between GitLab's body and the simulator's. A `null` in
/// the fixture accepts any value type; a `null` from the simulator is accepted for fields that
/// GitLab's bodies show as nullable.
fn compare(path: &str, expected: &Value, actual: &Value, problems: &mut Vec<String>) {
    let field = path.rsplit('.').next().unwrap_or_default();
    match (expected, actual) {
        (Value::Null, _) => {}
        (_, Value::Null) if nullable_fields().contains(field) => {}
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                match a.get(k) {
                    Some(av) => compare(&format!("{path}.{k}"), ev, av, problems),
                    None => problems.push(format!("{path}.{k}: missing")),
                }
            }
            for k in a.keys().filter(|k| !e.contains_key(*k)) {
                if !DOCUMENTED_EXTRAS.contains(&k.as_str()) {
                    problems.push(format!("{path}.{k}: not in GitLab's body"));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let (Some(ef), false) = (e.first(), a.is_empty()) {
                for item in a {
                    compare(&format!("{path}[]"), ef, item, problems);
                }
            } else if !e.is_empty() {
                problems.push(format!("{path}: empty, GitLab's has items"));
            }
        }
        (e, a) if kind(e) == kind(a) => {}
        (e, a) => problems.push(format!("{path}: {} where GitLab has {}", kind(a), kind(e))),
    }
}

fn assert_conforms(name: &str, answer: &Answer, status: u16) {
    assert_eq!(answer.status, status, "{name}: status; body {}", answer.text);
    let mut problems = Vec::new();
    compare("$", &fixture(name), &answer.body, &mut problems);
    assert!(
        problems.is_empty(),
        "{name} differs from GitLab's documented body:\n{}\nsimulator sent: {}",
        problems.join("\n"),
        answer.text
    );
}

/// A validation error's answer with its one invalid attribute, which must be `attribute`, renamed
/// to `bio`, the attribute of GitLab's documented example (`error_400_validation.json`).
fn as_documented_attribute(answer: Answer, attribute: &str) -> Answer {
    let mut body = answer.body.clone();
    if let Some(message) = body.get_mut("message").and_then(Value::as_object_mut) {
        let attributes: Vec<&String> = message.keys().collect();
        assert_eq!(attributes, [attribute], "the invalid attributes; body {}", answer.text);
        if let Some(errors) = message.remove(attribute) {
            message.insert("bio".into(), errors);
        }
    }
    // No `message` object: left as it is, for assert_conforms to report.
    Answer { body, ..answer }
}

#[test]
fn the_shape_check_catches_differences() {
    let mut problems = Vec::new();
    compare("$", &json!({"id": 1, "a": "x", "n": null}), &json!({"id": "1", "n": 3, "extra": true}), &mut problems);
    problems.sort();
    assert_eq!(problems, vec!["$.a: missing", "$.extra: not in GitLab's body", "$.id: string where GitLab has number"]);
}

#[tokio::test]
async fn every_fixture_is_matched_by_the_simulator() {
    let api = Api::start(standard_seed()).await;
    let svc = api.user_id("svc-bot");
    let svc_token = api.token_id("svc-token");
    let alice_main = api.token_id("alice-main");
    let app_ci = api.token_id("app-ci");
    let sec_group = api.token_id("sec-group");
    let pipeline = api.sim.with_world(|w| w.pipelines.keys().next().copied()).unwrap_or_default();
    let mut covered = BTreeSet::new();
    let mut check = |name: &'static str, answer: Answer, status: u16| {
        assert_conforms(name, &answer, status);
        covered.insert(name);
    };

    // Personal access tokens (§1).
    check("list_personal_access_tokens.json", api.get("/personal_access_tokens", ALICE).await, 200);
    let alice = api.user_id("alice");
    check(
        "list_personal_access_tokens_user_filter.json",
        api.get(&format!("/personal_access_tokens?user_id={alice}"), ADMIN).await,
        200,
    );
    check("get_personal_access_token_self.json", api.get("/personal_access_tokens/self", ALICE).await, 200);
    let rotated = api.post(&format!("/personal_access_tokens/{alice_main}/rotate"), ADMIN, json!({})).await;
    check("rotate_personal_access_token.json", rotated, 200);
    let created = api
        .post(&format!("/users/{alice}/personal_access_tokens"), ADMIN, json!({"name": "n", "scopes": ["api"]}))
        .await;
    check("create_user_personal_access_token.json", created, 201);

    // Project and group access tokens (§2).
    check("list_project_access_tokens.json", api.get(&format!("{APP}/access_tokens"), ADMIN).await, 200);
    let body = json!({"name": "test", "scopes": ["api", "read_repository"], "access_level": 30, "expires_at": "2027-01-31", "description": "d"});
    check("create_project_access_token.json", api.post(&format!("{APP}/access_tokens"), ADMIN, body).await, 201);
    check(
        "rotate_project_access_token.json",
        api.post(&format!("{APP}/access_tokens/{app_ci}/rotate"), ADMIN, json!({})).await,
        200,
    );
    check(
        "rotate_group_access_token.json",
        api.post(&format!("/groups/sec/access_tokens/{sec_group}/rotate"), ADMIN, json!({})).await,
        200,
    );

    // Group service accounts (§1.8).
    let sa = format!("/groups/sec/service_accounts/{svc}/personal_access_tokens");
    check("list_group_service_account_personal_access_tokens.json", api.get(&sa, ADMIN).await, 200);
    check(
        "rotate_group_service_account_personal_access_token.json",
        api.post(&format!("{sa}/{svc_token}/rotate"), ADMIN, json!({})).await,
        200,
    );

    // CI/CD variables (§3).
    check("list_project_variables.json", api.get(&format!("{APP}/variables"), ADMIN).await, 200);
    let body = json!({"key": "NEW_VARIABLE", "value": "new value"});
    check("create_project_variable.json", api.post(&format!("{APP}/variables"), ADMIN, body).await, 201);

    // Pipelines (§4). GitLab documents the full pipeline entity with a trigger example; the
    // simulator serves it from `POST /projects/:id/pipeline`, which answers with the same entity.
    check("list_project_pipelines.json", api.get(&format!("{APP}/pipelines"), ADMIN).await, 200);
    check("retry_pipeline.json", api.post(&format!("{APP}/pipelines/{pipeline}/retry"), ADMIN, json!({})).await, 201);
    check("trigger_pipeline.json", api.post(&format!("{APP}/pipeline"), ADMIN, json!({"ref": "main"})).await, 201);

    // Errors (§5.4).
    check("error_403_insufficient_scope.json", api.post(&format!("{APP}/variables"), READER, json!({})).await, 403);
    // A model validation error (render_validation_error!): `message` maps each invalid attribute
    // of the model to its errors. GitLab's documented example is a user's `bio`; the simulator
    // has no users' bios, so each answer below is checked with its one attribute in the place of
    // `bio`: everything else (status, keys, value types) must be GitLab's.
    let too_long = json!({"key": "LONG_DESCRIPTION", "value": "x", "description": "d".repeat(256)});
    let too_long = as_documented_attribute(api.post(&format!("{APP}/variables"), ADMIN, too_long).await, "description");
    // The same Rails length rule as GitLab's example, so the same words.
    assert_eq!(
        too_long.body["message"]["bio"],
        fixture("error_400_validation.json")["message"]["bio"],
        "{}",
        too_long.text
    );
    check("error_400_validation.json", too_long, 400);
    let bad_key = json!({"key": "BAD KEY", "value": "x"});
    let bad_key = as_documented_attribute(api.post(&format!("{APP}/variables"), ADMIN, bad_key).await, "key");
    check("error_400_validation.json", bad_key, 400);
    // What patrol's lock relies on (src/engine/lock.rs): creating a key that exists is this 400.
    let again = json!({"key": "NEW_VARIABLE", "value": "other value"});
    let again = as_documented_attribute(api.post(&format!("{APP}/variables"), ADMIN, again).await, "key");
    assert_eq!(again.body["message"]["bio"], json!(["(NEW_VARIABLE) has already been taken"]), "{}", again.text);
    check("error_400_validation.json", again, 400);

    // Every API fixture is covered; the webhook payloads are not API answers.
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut all: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && !n.starts_with("webhook_"))
        .collect();
    for name in &covered {
        all.remove(*name);
    }
    assert!(all.is_empty(), "fixtures with no conformance check: {all:?}");
}
