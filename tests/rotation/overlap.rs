//! `overlap` runs that stop between creating the successor and revoking the old token: the next
//! clean run converges whatever the variables hold (found in review).

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::{Fault, FaultAction};

fn personal_overlap(vars: &[&str]) -> String {
    let mut c = "[[token]]\nid = \"personal\"\nkind = \"personal\"\nname = \"alice-ci\"\nuser = \"alice\"\nstrategy = \"overlap\"\n".to_owned();
    for v in vars {
        c.push_str(&format!("\n[[token.variable]]\nproject = \"sec/app\"\nkey = \"{v}\"\n"));
    }
    c
}

/// Two variables, one write refused: one variable holds the successor, the other the old token.
/// Before, every later run failed ("the variables do not tell which one is in use"), `--force`
/// too. Now the newest one a variable holds is in use and the other is repaired to it.
#[tokio::test]
async fn a_successor_stored_in_some_variables_is_taken_as_in_use() {
    let mut seed = fleet();
    seed.variables.push(variable(Some("sec/app"), None, "COPY", "alice-ci", false));
    let u = Universe::new(seed, &personal_overlap(&["PERSONAL_TOKEN", "COPY"])).await;
    u.sim.inject(Fault::new(Some("PUT"), "/api/v4/projects/*/variables/COPY", FaultAction::Status { status: 403 }));
    let first = u.patrol(&["rotate"]).await;
    assert_eq!(first.code, 1, "{}", first.stdout);
    let error = first.report["tokens"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("was created to replace token") && error.contains("stays active"), "{error}");
    u.sim.clear_faults();
    let second = u.patrol(&["rotate"]).await;
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, tail(&second.stderr));
    let third = u.patrol(&["rotate"]).await;
    assert_eq!(third.code, 0, "{}", third.stdout);
    let now = u.active("alice-ci");
    assert_eq!(now.len(), 1, "one active token: {now:?}");
    assert_eq!(u.variable_holds("PERSONAL_TOKEN", "*"), Some(now[0]));
    assert_eq!(u.variable_holds("COPY", "*"), Some(now[0]));
    assert!(u.sim.reuse_detections().is_empty());
}

/// A variable that could not be created: no variable holds either token. The oldest was in use
/// before the interrupted run; the successor nobody holds is taken over.
#[tokio::test]
async fn a_successor_no_variable_holds_is_taken_over() {
    let u = Universe::new(fleet(), &personal_overlap(&["NEWVAR"])).await;
    u.sim.inject(
        Fault::new(Some("POST"), "/api/v4/projects/*/variables", FaultAction::Status { status: 403 })
            .with_key(Some("NEWVAR")),
    );
    let first = u.patrol(&["rotate"]).await;
    assert_eq!(first.code, 1, "{}", first.stdout);
    assert_eq!(u.active("alice-ci").len(), 2, "the successor and the old token");
    u.sim.clear_faults();
    let second = u.patrol(&["rotate"]).await;
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, tail(&second.stderr));
    let now = u.active("alice-ci");
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(u.variable_holds("NEWVAR", "*"), Some(now[0]));
    assert!(u.sim.reuse_detections().is_empty());
}
