//! Issue 13, cases 4 and 5: a token's identity comes from GitLab, not from the config's words,
//! and patrol never rotates its own credential out from under itself.

use crate::engine::tail;
use crate::helpers::*;

/// One personal token entry for alice, named `name`, stored in PERSONAL_TOKEN, with `extra`
/// lines (scopes, create).
fn personal(name: &str, extra: &str) -> String {
    format!(
        "[[token]]\nid = \"personal\"\nkind = \"personal\"\nname = \"{name}\"\nuser = \"alice\"\n{extra}\n[[token.variable]]\nproject = \"sec/app\"\nkey = \"PERSONAL_TOKEN\"\n"
    )
}

fn value_of(u: &Universe, key: &str) -> Option<String> {
    u.variable(key, "*").map(|v| v.value)
}

/// Case 4: a misspelt name with `scopes` set created a brand-new token and overwrote a variable
/// that held a working token of another name; exit 0, the working token orphaned.
#[tokio::test]
async fn a_misspelt_name_creates_nothing_and_names_the_near_match() {
    let u = Universe::new(fleet(), &personal("alice-cj", "scopes = [\"api\"]")).await;
    let before = value_of(&u, "PERSONAL_TOKEN");
    let tokens_before = u.sim.with_world(|w| w.tokens.len());
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, tail(&run.stderr));
    let error = run.report["tokens"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("GitLab has no personal token named \"alice-cj\" of alice")
            && error.contains("GitLab has \"alice-ci\" of alice")
            && error.contains("create = true"),
        "{error}"
    );
    assert_eq!(u.sim.with_world(|w| w.tokens.len()), tokens_before, "no token created");
    assert_eq!(value_of(&u, "PERSONAL_TOKEN"), before, "the variable is untouched");
    // plan says so too, before anything could happen.
    let plan = u.patrol(&["plan"]).await;
    assert_eq!(plan.report["tokens"][0]["outcome"], "failed", "{}", plan.report);
}

/// Case 4: a group token declared as `kind = "project"` got a project token written into the
/// group variable.
#[tokio::test]
async fn a_group_token_declared_as_a_project_token_is_named_not_created() {
    let config = "[[token]]\nid = \"reports\"\nkind = \"project\"\nname = \"sec-reports\"\nproject = \"sec/reports\"\nscopes = [\"api\"]\n\n[[token.variable]]\ngroup = \"sec\"\nkey = \"GROUP_TOKEN\"\n";
    let u = Universe::new(fleet(), config).await;
    let before = value_of(&u, "GROUP_TOKEN");
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let error = run.report["tokens"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("a group token \"sec-reports\" of group sec (kind = \"group\""), "{error}");
    let bots = u.sim.with_world(|w| {
        w.users.values().filter(|u| matches!(u.kind, patrol::simulator::world::UserKind::ProjectBot { .. })).count()
    });
    assert_eq!(bots, 1, "only app-ci's bot: no project token was created");
    assert_eq!(value_of(&u, "GROUP_TOKEN"), before);
}

/// `create = true` is how a new token is asked for.
#[tokio::test]
async fn create_true_creates_a_token_gitlab_never_had() {
    let u = Universe::new(fleet(), &personal("alice-deploy", "scopes = [\"api\"]\ncreate = true")).await;
    let run = u.patrol(&["rotate"]).await;
    // PERSONAL_TOKEN held alice-ci: a token of another identity, so nothing is written there.
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.report["tokens"][0]["error"].as_str().unwrap_or_default().contains("holds token"), "{}", run.report);
    // Into a variable of its own it is created.
    let config =
        personal("alice-deploy", "scopes = [\"api\"]\ncreate = true").replace("PERSONAL_TOKEN", "DEPLOY_TOKEN");
    let u = Universe::new(fleet(), &config).await;
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    let created = u.active("alice-deploy");
    assert_eq!(created.len(), 1);
    assert_eq!(u.variable_holds("DEPLOY_TOKEN", "*"), Some(created[0]));
}

/// Case 4: a variable proven to hold a live token of another identity is never overwritten.
#[tokio::test]
async fn a_variable_holding_another_identitys_token_is_never_overwritten() {
    // alice-ci's entry, pointed at SA_TOKEN, which holds the service account's `inventory`.
    let config = personal("alice-ci", "")
        .replace("project = \"sec/app\"\nkey = \"PERSONAL_TOKEN\"", "project = \"sec/inventory\"\nkey = \"SA_TOKEN\"");
    let u = Universe::new(fleet(), &config).await;
    let (alice, inventory) = (u.active("alice-ci"), u.active("inventory"));
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let error = run.report["tokens"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains(&format!("SA_TOKEN [*] holds token {} (\"inventory\")", inventory[0])), "{error}");
    assert_eq!(u.active("alice-ci"), alice, "alice-ci not rotated");
    assert_eq!(u.variable_holds("SA_TOKEN", "*"), Some(inventory[0]), "SA_TOKEN untouched");
}

/// Case 4: the same GitLab token under two ids (a project by path and by id) was rotated twice in
/// one run; the second rotate met a revoked token.
#[tokio::test]
async fn two_entries_for_one_gitlab_token_both_fail_before_anything_changes() {
    let u = Universe::new(fleet(), "").await;
    by_path_and_by_id(&u, "scopes = [\"api\"]\n");
    let old = u.active("app-ci");
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    for t in run.report["tokens"].as_array().into_iter().flatten() {
        assert_eq!(t["outcome"], "failed", "{t}");
        assert!(t["error"].as_str().unwrap_or_default().contains("are the same GitLab token"), "{t}");
    }
    assert_eq!(run.report["tokens"].as_array().map(Vec::len), Some(2));
    assert_eq!(u.active("app-ci"), old, "not rotated");
    assert!(u.sim.reuse_detections().is_empty());
}

/// The fleet plus patrol's own credential (`admin`, due) as a managed token stored in
/// ADMIN_TOKEN: the variable patrol's job would read its credential from.
fn with_own_credential(stored: bool) -> (patrol::simulator::Seed, String) {
    let mut seed = fleet();
    seed.tokens[0].expires_in_days = Some(3);
    if stored {
        seed.variables.push(variable(Some("sec/app"), None, "ADMIN_TOKEN", "admin", true));
        // patrol wrote it before: its marker names the admin token.
    }
    let config = format!(
        "{FLEET_CONFIG}\n[[token]]\nid = \"patrol\"\nkind = \"personal\"\nname = \"admin\"\nuser = \"root\"\n\n[[token.variable]]\nproject = \"sec/app\"\nkey = \"ADMIN_TOKEN\"\n"
    );
    (seed, config)
}

/// The hidden ADMIN_TOKEN holds the admin token, marked by patrol (as if patrol had stored it).
/// Returns the admin token's id, as a one-element list like `active`.
fn mark_admin_variable(u: &Universe) -> Vec<u64> {
    let admin = u.active("admin");
    u.sim.with_world(|w| {
        if let Some(v) = w.variables.iter_mut().find(|v| v.key == "ADMIN_TOKEN") {
            v.description = Some(format!("[patrol: token {}]", admin[0]));
        }
    });
    admin
}

/// Case 5: patrol rotated its own credential in the middle of a run; every later request got
/// 401, and the next run was locked out.
#[tokio::test]
async fn patrols_own_credential_is_rotated_last_and_the_run_finishes_with_the_new_one() {
    let (seed, config) = with_own_credential(true);
    let u = Universe::new(seed, &config).await;
    let admin = mark_admin_variable(&u);
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    let tokens = run.report["tokens"].as_array().cloned().unwrap_or_default();
    assert_eq!(tokens.len(), 5);
    assert!(tokens.iter().all(|t| t["outcome"] == "rotated"), "{tokens:#?}");
    let own = &tokens[4];
    assert!(own["reason"].as_str().unwrap_or_default().contains("patrol's own credential"), "{own}");
    // Last: its successor was created after every other rotate and every pipeline retry, and
    // the old credential revoked once the new one was stored and verified (never rotated: a lost
    // rotate answer would leave patrol nothing that works).
    let requests = u.sim.requests();
    let rotates: Vec<&str> = requests.iter().filter(|r| r.path.ends_with("/rotate")).map(|r| r.path.as_str()).collect();
    assert_eq!(rotates.len(), 4, "the four other tokens: {rotates:?}");
    let created = requests.iter().position(|r| r.method == "POST" && r.path.ends_with("/personal_access_tokens"));
    let revoked = requests.iter().position(|r| r.method == "DELETE" && r.path.ends_with(&format!("/{}", admin[0])));
    let last_retry = requests.iter().rposition(|r| r.path.ends_with("/retry"));
    assert!(last_retry.is_some() && created > last_retry && revoked > created, "after the pipelines, then revoked");
    assert!(requests.iter().all(|r| r.status != 401), "never locked out");
    let now = u.active("admin");
    assert_eq!(now.len(), 1);
    assert_ne!(now, admin);
    assert_eq!(u.variable_holds("ADMIN_TOKEN", "*"), Some(now[0]));
    // The next run authenticates with what the variable holds, and finds nothing to do.
    let new_secret = value_of(&u, "ADMIN_TOKEN").unwrap_or_default();
    let next = u.patrol_with(&["rotate"], &[("PATROL_TOKEN", &new_secret)]).await;
    assert_eq!(next.code, 0, "{}\n{}", next.stdout, tail(&next.stderr));
}

/// Case 5: a credential no configured variable is known to hold is never rotated: the next run
/// would have nothing that works. The other tokens are done.
#[tokio::test]
async fn patrols_own_credential_stored_nowhere_known_is_refused() {
    let (seed, config) = with_own_credential(false);
    let u = Universe::new(seed, &config).await;
    let admin = u.active("admin");
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let tokens = run.report["tokens"].as_array().cloned().unwrap_or_default();
    assert_eq!(tokens.len(), 5);
    assert!(tokens[..4].iter().all(|t| t["outcome"] == "rotated"), "{tokens:#?}");
    assert!(tokens[4]["error"].as_str().unwrap_or_default().contains("is patrol's own credential"), "{}", tokens[4]);
    assert_eq!(u.active("admin"), admin, "the credential still works");
}

/// Found in review: when the answer to the credential's own rotate was lost after GitLab carried
/// it out, the credential was revoked and the new secret was nowhere. patrol now creates the
/// successor first: a lost create answer leaves the old credential working, GitLab can be asked,
/// and the successor is recovered.
#[tokio::test]
async fn a_lost_answer_while_renewing_patrols_own_credential_loses_nothing() {
    let (seed, config) = with_own_credential(true);
    let u = Universe::new(patrol::simulator::Seed { revoked_rotate_revokes_family: true, ..seed }, &config).await;
    let admin = mark_admin_variable(&u);
    u.sim.inject(
        patrol::simulator::Fault::new(
            Some("POST"),
            "/api/v4/users/*/personal_access_tokens",
            patrol::simulator::FaultAction::DropAfterCommit,
        )
        .times(1),
    );
    let run = u.patrol_with(&["rotate"], &[("PATROL_TIMEOUT", "0.5")]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    assert!(u.sim.reuse_detections().is_empty());
    let requests = u.sim.requests();
    assert!(
        requests.iter().any(|r| r.fault.is_some() && r.path.ends_with("/personal_access_tokens")),
        "the successor's create was sent, and its answer lost"
    );
    let own_rotate = format!("/personal_access_tokens/{}/rotate", admin[0]);
    assert!(!requests.iter().any(|r| r.path.ends_with(&own_rotate)), "the credential itself is never rotated");
    let now = u.active("admin");
    assert_eq!(now.len(), 1);
    assert_eq!(u.variable_holds("ADMIN_TOKEN", "*"), Some(now[0]));
    let stored = value_of(&u, "ADMIN_TOKEN").unwrap_or_default();
    let next = u.patrol_with(&["rotate"], &[("PATROL_TOKEN", &stored)]).await;
    assert_eq!(next.code, 0, "the next run works with what the variable holds: {}", next.stdout);
}

/// Found in review: when the old credential could not be revoked after its successor was
/// stored, the report said the next run would revoke it, and none did (the credential's strategy
/// is `rotate`, so leftovers were never looked for). Now the next run does.
#[tokio::test]
async fn the_old_credential_left_active_is_revoked_by_the_next_run() {
    let (seed, config) = with_own_credential(true);
    let u = Universe::new(seed, &config).await;
    let admin = mark_admin_variable(&u);
    u.sim.inject(patrol::simulator::Fault::new(
        Some("DELETE"),
        &format!("/api/v4/personal_access_tokens/{}", admin[0]),
        patrol::simulator::FaultAction::Status { status: 403 },
    ));
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.report["tokens"][4]["error"].as_str().unwrap_or_default().contains("or the next run will"));
    u.sim.clear_faults();
    let stored = value_of(&u, "ADMIN_TOKEN").unwrap_or_default();
    let next = u.patrol_with(&["rotate"], &[("PATROL_TOKEN", &stored)]).await;
    assert_eq!(next.code, 0, "{}\n{}", next.stdout, tail(&next.stderr));
    let now = u.active("admin");
    assert_eq!(now.len(), 1, "the old credential is revoked: {now:?}");
    assert_eq!(u.variable_holds("ADMIN_TOKEN", "*"), Some(now[0]));
}

/// Found in review: one project token by path and by id, its only token revoked: both entries
/// created a token, and later runs found each entry's variable in sync with its own. Entries
/// whose families share a token are one GitLab token, whatever state it is in.
#[tokio::test]
async fn two_entries_for_one_revoked_token_both_fail_before_creating() {
    let mut seed = fleet();
    seed.tokens[2].revoked = true; // app-ci exists only revoked
    let u = Universe::new(seed, "").await;
    by_path_and_by_id(&u, "scopes = [\"api\"]\n");
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    for t in run.report["tokens"].as_array().into_iter().flatten() {
        assert!(t["error"].as_str().unwrap_or_default().contains("are the same GitLab token"), "{t}");
    }
    assert!(u.active("app-ci").is_empty(), "nothing created");
}
