//! Dependent pipelines: `action = "retry"` (the default) retries the latest pipeline on the ref
//! only if that latest run failed.

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::seed::SeedPipeline;

#[tokio::test]
async fn a_pipeline_whose_latest_run_passed_is_not_retried_while_its_token_is_rotated() {
    let mut seed = fleet();
    // sec/app's pipeline on main failed once, then passed: its latest run is a success.
    seed.pipelines =
        vec![failed_pipeline("sec/app"), SeedPipeline { status: "success".into(), ..failed_pipeline("sec/app") }];
    let u = Universe::new(seed, FLEET_CONFIG).await;
    let old = u.active("app-ci");
    assert_eq!(old.len(), 1, "one app-ci token before the run");
    let (failed_id, latest_id) = u.sim.with_world(|w| {
        let mut ids: Vec<(u64, String)> = w.pipelines.values().map(|p| (p.id, p.status.clone())).collect();
        ids.sort();
        match ids.as_slice() {
            [(failed, a), (latest, b)] if a == "failed" && b == "success" => (*failed, *latest),
            other => panic!("the seed's two pipelines, failed then passed: {other:?}"),
        }
    });

    let run = u.patrol(&["rotate", "--only", "project"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    // The token is due, and rotated and stored.
    assert_eq!(outcomes(&run), vec![("project".to_string(), "rotated".to_string())]);
    let new = u.active("app-ci");
    assert_eq!(new.len(), 1, "exactly one active app-ci token");
    assert_ne!(new, old, "a new token");
    assert_eq!(u.variable_holds("PROJECT_TOKEN", "*"), Some(new[0]));

    // Its pipeline was looked at and left alone.
    let pipelines = run.report["tokens"][0]
        .get("pipelines")
        .and_then(|p| p.as_array())
        .unwrap_or_else(|| panic!("the report lists the token's pipelines: {}", run.report));
    assert_eq!(pipelines.len(), 1, "{}", run.report);
    let entry = &pipelines[0];
    assert_eq!(entry["action"], "skipped", "{entry}");
    assert_eq!((entry["project"].as_str(), entry["ref"].as_str()), (Some("sec/app"), Some("main")), "{entry}");
    assert_eq!(entry["pipeline_id"].as_u64(), Some(latest_id), "the latest run is the one reported: {entry}");
    assert_eq!(entry["status"], "success", "{entry}");
    assert_eq!(entry.get("error"), Some(&serde_json::Value::Null), "no error: {entry}");
    u.sim.with_world(|w| {
        let retries: Vec<(u64, u32)> = w.pipelines.values().map(|p| (p.id, p.retries)).collect();
        assert_eq!(retries.len(), 2, "no pipeline was started: {retries:?}");
        assert!(
            retries.iter().all(|(_, n)| *n == 0),
            "neither the latest nor the older failed run retried: {retries:?}"
        );
        let older = w.pipelines.get(&failed_id).map(|p| p.status.clone());
        assert_eq!(older.as_deref(), Some("failed"), "the older failed run is left as it was");
    });
    let retried: Vec<String> = u.writes_since(0).into_iter().filter(|w| w.contains("/pipelines")).collect();
    assert_eq!(retried, Vec::<String>::new(), "no pipeline request but reads");
    assert_eq!(u.pipeline_status("sec/app").as_deref(), Some("success"));
    assert!(u.sim.reuse_detections().is_empty());
}
