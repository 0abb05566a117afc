//! The tracking issue (`[notify] project`): opened when a token fails, commented on while it keeps
//! failing, commented on and closed once the token is healthy again.

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::world::Issue;
use patrol::simulator::{Fault, FaultAction, Seed};

fn config() -> String {
    format!("[notify]\nproject = \"sec/reports\"\n{FLEET_CONFIG}")
}

fn issues(u: &Universe) -> Vec<Issue> {
    u.sim.with_world(|w| w.issues.clone())
}

/// The fleet, with the service account's variable hidden and never written by patrol: a write
/// refused there stops the rotation before it starts.
fn seed() -> Seed {
    let mut seed = fleet();
    for v in seed.variables.iter_mut().filter(|v| v.key == "SA_TOKEN") {
        v.hidden = true;
    }
    seed
}

fn break_the_service_variable(u: &Universe) {
    u.sim.inject(Fault::new(Some("PUT"), "/api/v4/projects/*/variables/SA_TOKEN", FaultAction::Status { status: 403 }));
}

#[tokio::test]
async fn a_failing_token_gets_one_issue_kept_up_to_date_and_closed_when_it_recovers() {
    let u = Universe::new(seed(), &config()).await;
    break_the_service_variable(&u);
    let first = u.patrol(&["rotate"]).await;
    assert_eq!(first.code, 1, "{}", first.stdout);
    let opened = issues(&u);
    assert_eq!(opened.len(), 1, "only the failing token gets an issue");
    let issue = &opened[0];
    assert_eq!(issue.title, "patrol: token service needs attention");
    assert_eq!((issue.state.as_str(), issue.labels.clone()), ("opened", vec!["patrol".to_string()]));
    for expected in ["token `service`", "so the token was not rotated", "Maintainer", "patrol rotate --only service"] {
        assert!(issue.description.contains(expected), "{expected:?} missing from:\n{}", issue.description);
    }
    // The link is GitLab's `web_url`, built on the instance's external URL (§11).
    let origin = u.sim.api_url().trim_end_matches("/api/v4").to_owned();
    let link = format!("service: opened tracking issue {origin}/sec/reports/-/issues/{}", issue.iid);
    assert!(
        first.stdout.contains(&link),
        "{link:?} missing from:
{}",
        first.stdout
    );

    let second = u.patrol(&["rotate"]).await;
    assert_eq!(second.code, 1);
    let still = issues(&u);
    assert_eq!(still.len(), 1, "no second issue for the same token");
    assert_eq!(still[0].notes.len(), 1, "a comment for the second failure");
    assert!(still[0].notes[0].contains("so the token was not rotated"), "{}", still[0].notes[0]);

    u.sim.clear_faults();
    let third = u.patrol(&["rotate"]).await;
    assert_eq!(third.code, 0, "{}\n{}", third.stdout, tail(&third.stderr));
    let closed = issues(&u);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].state, "closed");
    assert!(
        closed[0].notes[1].contains("Resolved") && closed[0].notes[1].contains("**rotated**"),
        "{}",
        closed[0].notes[1]
    );
    assert!(third.stdout.contains("service: closed tracking issue"), "{}", third.stdout);
    assert_eq!(u.variable_holds("SA_TOKEN", "*"), u.active("inventory").first().copied());
}

#[tokio::test]
async fn plan_opens_no_issue_and_a_failing_issue_tracker_does_not_change_the_result() {
    let u = Universe::new(seed(), &config()).await;
    break_the_service_variable(&u);
    let plan = u.patrol(&["plan"]).await;
    assert_eq!(plan.code, 0, "{}", plan.stdout);
    assert!(issues(&u).is_empty(), "plan is read-only");

    u.sim.clear_faults();
    u.sim.inject(Fault::new(Some("GET"), "/api/v4/projects/*/issues", FaultAction::Status { status: 403 }));
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    assert!(run.stderr.contains("warning: cannot list the tracking issues of sec/reports"), "{}", tail(&run.stderr));
}

#[tokio::test]
async fn the_notify_section_is_checked() {
    let u = Universe::new(fleet(), &format!("[notify]\nproject = \"\"\nlabels = []\n{FLEET_CONFIG}")).await;
    let run = u.patrol(&["validate"]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("`project`") && run.stderr.contains("`labels`"), "{}", run.stderr);
}
