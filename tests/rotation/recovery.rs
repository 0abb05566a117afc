//! The hard cases: a lost rotate answer, variable writes that fail for a while or for good.

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::{Fault, FaultAction};

#[tokio::test]
async fn a_lost_rotate_answer_is_recovered_without_reuse_detection() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let old = u.active("inventory");
    u.sim.inject(
        Fault::new(
            Some("POST"),
            "/api/v4/groups/*/service_accounts/*/personal_access_tokens/*/rotate",
            FaultAction::DropAfterCommit,
        )
        .times(1),
    );
    let run = u.patrol(&["rotate", "--only", "service"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    assert_eq!(outcomes(&run), vec![("service".to_string(), "rotated".to_string())]);
    let reason = run.report["tokens"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("was lost") && reason.contains("rotated again to recover it"), "{reason}");
    assert!(u.sim.reuse_detections().is_empty(), "never a replay");
    let now = u.active("inventory");
    assert_eq!(now.len(), 1);
    assert_ne!(now, old);
    assert_eq!(u.variable_holds("SA_TOKEN", "*"), Some(now[0]));
    // Every rotate targeted a token that was active when it was sent.
    let rotates: Vec<String> =
        u.sim.requests().iter().filter(|r| r.path.ends_with("/rotate")).map(|r| r.path.clone()).collect();
    assert_eq!(rotates.len(), 2, "{rotates:?}");
    assert_ne!(rotates[0], rotates[1]);
}

#[tokio::test]
async fn a_transient_variable_write_failure_is_retried() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    u.sim.inject(
        Fault::new(Some("PUT"), "/api/v4/projects/*/variables/SA_TOKEN", FaultAction::Status { status: 503 })
            .skip(1)
            .times(2),
    );
    let run = u.patrol(&["rotate", "--only", "service"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    assert_eq!(u.variable_holds("SA_TOKEN", "*"), u.active("inventory").first().copied());
    let faults = u.sim.requests().iter().filter(|r| r.fault.is_some()).count();
    assert_eq!(faults, 2);
}

#[tokio::test]
async fn a_variable_that_cannot_be_written_stops_the_rotation_before_it_starts() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let old = u.active("inventory");
    u.sim.inject(Fault::new(Some("PUT"), "/api/v4/projects/*/variables/SA_TOKEN", FaultAction::Status { status: 403 }));
    let run = u.patrol(&["rotate", "--only", "service"]).await;
    assert_eq!(run.code, 1);
    let error = run.report["tokens"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("so the token was not rotated and nothing changed") && error.contains("Maintainer"),
        "{error}"
    );
    assert_eq!(u.active("inventory"), old, "nothing rotated");
    assert!(run.junit.contains("<failure"), "{}", run.junit);
}

#[tokio::test]
async fn a_write_failing_for_good_after_rotation_exits_1_and_the_next_run_repairs_it() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    // The hidden PROJECT_TOKEN: its marker is stamped, then every write of the value fails.
    u.sim.inject(
        Fault::new(Some("PUT"), "/api/v4/projects/*/variables/PROJECT_TOKEN", FaultAction::Status { status: 403 })
            .skip(1),
    );
    let run = u.patrol(&["rotate", "--only", "project"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let t = &run.report["tokens"][0];
    assert_eq!(t["outcome"], "failed");
    assert_eq!(t["variables"][0]["outcome"], "failed");
    let error = t["error"].as_str().unwrap_or_default();
    assert!(error.contains("Nothing is lost") && error.contains("patrol rotate --only project"), "{error}");
    let new = u.active("app-ci");
    assert_eq!(t["after"]["token_id"], new[0]);
    assert_eq!(u.variable_holds("PROJECT_TOKEN", "*"), None, "still the dead secret");
    assert_eq!(u.pipeline_status("sec/app").as_deref(), Some("failed"), "no pipeline retried with a stale variable");

    u.sim.clear_faults();
    let next = u.patrol(&["rotate"]).await;
    assert_eq!(next.code, 0, "{}\n{}", next.stdout, tail(&next.stderr));
    let project = next.report["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["id"] == "project")
        .cloned()
        .unwrap_or_default();
    assert_eq!(project["outcome"], "repaired", "{project}");
    assert_eq!(u.variable_holds("PROJECT_TOKEN", "*"), u.active("app-ci").first().copied());
    assert!(u.sim.reuse_detections().is_empty());
}
