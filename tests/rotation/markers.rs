//! Issue 13, case 3: a marker never claims what is not stored. A hidden variable's content
//! cannot be read, so what patrol wrote in its description is all a later run knows of it.

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::seed::SeedToken;
use patrol::simulator::{Fault, FaultAction};

// A run killed right after its rotate committed leaves the pending marker too; the fault matrix
// covers that (`Killed` at every request, hidden variables included).

const ROTATE: &str = "/api/v4/projects/*/access_tokens/*/rotate";

/// Run 1 rotates the project token but cannot store it in the hidden PROJECT_TOKEN; run 2, the
/// repair, is refused its rotate; run 3 is clean. Before, run 2 stamped the current token's
/// marker on the variable before rotating, so run 3 believed the variable in sync and exited 0
/// with the variable holding a dead token. Now run 3 repairs it.
#[tokio::test]
async fn a_repair_refused_before_rotating_leaves_the_hidden_variable_known_stale() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    // The first PUT marks the variable pending; every later one (the secret) is refused.
    u.sim.inject(
        Fault::new(Some("PUT"), "/api/v4/projects/*/variables/PROJECT_TOKEN", FaultAction::Status { status: 403 })
            .skip(1),
    );
    let first = u.patrol(&["rotate", "--only", "project"]).await;
    assert_eq!(first.code, 1, "{}", first.stdout);
    assert_eq!(u.variable_holds("PROJECT_TOKEN", "*"), None, "the variable holds the revoked token");

    u.sim.clear_faults();
    u.sim.inject(Fault::new(Some("POST"), ROTATE, FaultAction::Status { status: 403 }));
    let second = u.patrol(&["rotate", "--only", "project"]).await;
    assert_eq!(second.code, 1, "{}", second.stdout);
    assert_eq!(second.report["tokens"][0]["outcome"], "failed");
    let description = u.variable("PROJECT_TOKEN", "*").and_then(|v| v.description).unwrap_or_default();
    let current = u.active("app-ci");
    assert_eq!(current.len(), 1);
    assert!(
        !description.contains(&format!("token {}]", current[0])),
        "the marker claims the current token, which the variable does not hold: {description}"
    );

    u.sim.clear_faults();
    let third = u.patrol(&["rotate", "--only", "project"]).await;
    assert_eq!(third.code, 0, "{}\n{}", third.stdout, tail(&third.stderr));
    assert_eq!(third.report["tokens"][0]["outcome"], "repaired", "{}", third.report);
    let now = u.active("app-ci");
    assert_eq!(now.len(), 1);
    assert_eq!(u.variable_holds("PROJECT_TOKEN", "*"), Some(now[0]));
    let fourth = u.patrol(&["rotate", "--only", "project"]).await;
    assert_eq!(fourth.report["tokens"][0]["outcome"], "unchanged", "converged");
}

/// Without the pre-rotate stamp, what proves write access is the role (every variable is read
/// first, and GitLab lets only the role that may update a variable read it) and the `api` scope,
/// which the preflight checks: a `read_api` credential may plan, and may not start a rotation.
#[tokio::test]
async fn a_credential_without_the_api_scope_plans_but_never_starts_a_rotation() {
    const READER: &str = "glpat-RotationTestsReader0";
    let mut seed = fleet();
    seed.tokens.push(SeedToken {
        user: Some("root".into()),
        secret: Some(READER.into()),
        scopes: vec!["read_api".into()],
        ..token("reader", 300)
    });
    let u = Universe::new(seed, FLEET_CONFIG).await;
    let plan = u.patrol_with(&["plan"], &[("PATROL_TOKEN", READER)]).await;
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, tail(&plan.stderr));
    let before = u.sim.requests().len();
    let rotate = u.patrol_with(&["rotate"], &[("PATROL_TOKEN", READER)]).await;
    assert_eq!(rotate.code, 3, "{}", rotate.stdout);
    assert!(
        rotate.stderr.contains("has the scopes read_api but not `api`")
            && rotate.stderr.contains("Nothing was changed"),
        "{}",
        tail(&rotate.stderr)
    );
    assert!(u.writes_since(before).is_empty(), "nothing written: {:?}", u.writes_since(before));
}

/// Before rotating, a hidden variable patrol never wrote gets a pending marker, never patrol's
/// marker for the current token: its content is unknown, and if the rotation is refused the
/// variable must not read as holding that token.
#[tokio::test]
async fn a_rotation_refused_before_it_starts_leaves_no_marker_claiming_the_current_token() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let current = u.active("app-ci");
    assert_eq!(current.len(), 1);
    u.sim.inject(Fault::new(Some("POST"), ROTATE, FaultAction::Status { status: 403 }));
    let run = u.patrol(&["rotate", "--only", "project"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let description = u.variable("PROJECT_TOKEN", "*").and_then(|v| v.description).unwrap_or_default();
    assert!(!description.contains("[patrol: token "), "{description}");
    assert!(description.contains(&format!("[patrol: pending {}]", current[0])), "{description}");
}

/// Issue 14: a readable variable patrol wrote carries its marker with the secret's fingerprint,
/// so the next run knows what it holds without authenticating as it. A person who pastes another
/// identity's live token into it by hand, leaving the description, does not fool it: the
/// fingerprint no longer matches the value, patrol asks GitLab whose token it is, and leaves the
/// variable alone.
#[tokio::test]
async fn a_value_replaced_by_hand_under_patrols_marker_is_identified_by_gitlab_not_the_marker() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let first = u.patrol(&["rotate", "--only", "personal"]).await;
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, tail(&first.stderr));
    let marked = u.variable("PERSONAL_TOKEN", "*").and_then(|v| v.description).unwrap_or_default();
    assert!(marked.contains(" #"), "the marker carries a fingerprint: {marked}");
    // Someone pastes the service account's live token over it, keeping the description.
    let other = u.sim.with_world(|w| w.tokens.values().find(|t| t.name == "inventory").map(|t| t.secret.clone()));
    let other = other.unwrap_or_else(|| panic!("no inventory token"));
    u.sim.with_world(|w| {
        if let Some(v) = w.variables.iter_mut().find(|v| v.key == "PERSONAL_TOKEN") {
            v.value = other.clone();
        }
    });
    let from = u.sim.requests().len();
    let second = u.patrol(&["rotate", "--only", "personal", "--force"]).await;
    assert_eq!(second.code, 1, "{}", second.stdout);
    let error = second.report["tokens"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("inventory"), "the failure names what the variable holds: {error}");
    assert!(
        u.sim.requests()[from..]
            .iter()
            .any(|r| r.path.ends_with("/personal_access_tokens/self") && r.token_name.as_deref() == Some("inventory")),
        "patrol asked GitLab whose the value is"
    );
    let still = u.variable("PERSONAL_TOKEN", "*").map(|v| v.value);
    assert_eq!(still, Some(other), "the other identity's token was not overwritten");
}
