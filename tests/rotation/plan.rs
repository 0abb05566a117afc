//! Issue 15: `plan` says what `rotate` would do, per token (rotate, recreate, create, repair,
//! nothing), with the variables it would write and the pipelines it would retry or start, in the
//! JSON report as on stdout; `rotate` then reports a token made anew as `created`, apart from
//! the rotated ones.

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::seed::SeedToken;

/// The fleet with one token in each state: alice-ci due (rotate), app-ci healthy (nothing),
/// sec-reports revoked (recreate), inventory healthy but its variable holds a dead secret
/// (repair), and fresh-ci never made (create, `create = true`).
async fn every_action() -> Universe {
    let mut seed = fleet();
    for t in seed.tokens.iter_mut() {
        match t.name.as_str() {
            "app-ci" | "inventory" => t.expires_in_days = Some(200),
            "sec-reports" => t.revoked = true,
            _ => {}
        }
    }
    seed.tokens.push(SeedToken { project: Some("sec/app".into()), ..token("unrelated", 200) });
    let config = FLEET_CONFIG.replace(
        "name = \"sec-reports\"\ngroup = \"sec\"\n",
        "name = \"sec-reports\"\ngroup = \"sec\"\nscopes = [\"read_api\"]\n",
    ) + r#"
[[token]]
id = "fresh"
kind = "project"
name = "fresh-ci"
project = "sec/app"
create = true
scopes = ["read_api"]

[[token.variable]]
project = "sec/app"
key = "FRESH_TOKEN"
"#;
    let u = Universe::new(seed, &config).await;
    u.sim.with_world(|w| {
        if let Some(v) = w.variables.iter_mut().find(|v| v.key == "SA_TOKEN") {
            v.value = "glpat-NoSuchTokenAnywhere000".into();
        }
    });
    u
}

fn field(run: &Run, id: &str, key: &str) -> serde_json::Value {
    run.report["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["id"] == id)
        .map(|t| t[key].clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn plan_says_what_rotate_would_do_and_rotate_then_does_it() {
    let u = every_action().await;
    let plan = u.patrol(&["plan"]).await;
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, tail(&plan.stderr));
    assert_eq!(plan.report["schema_version"], 2);
    let expected = [
        ("personal", "rotate"),
        ("project", "nothing"),
        ("group", "recreate"),
        ("service", "repair"),
        ("fresh", "create"),
    ];
    for (id, action) in expected {
        assert_eq!(field(&plan, id, "action"), action, "{id}: {}", plan.report);
    }
    // The variables it would write, the pipelines it would retry or start.
    assert_eq!(field(&plan, "group", "variables")[0]["outcome"], "would-write");
    assert_eq!(field(&plan, "group", "pipelines")[0]["action"], "would-retry");
    assert_eq!(field(&plan, "service", "pipelines")[0]["action"], "would-start");
    assert_eq!(field(&plan, "project", "variables")[0]["outcome"], "unchanged");
    assert_eq!(field(&plan, "project", "pipelines")[0]["action"], "skipped");
    for line in [
        "personal: would rotate: ",
        "project: unchanged: ",
        "group: would recreate: ",
        "service: would repair: ",
        "fresh: would create: ",
        "would write group sec GROUP_TOKEN [*]",
        "would retry (if its latest run failed) pipeline sec/reports main",
        "would start pipeline sec/inventory main",
    ] {
        assert!(plan.stdout.contains(line), "missing {line:?} in:\n{}", plan.stdout);
    }
    assert!(!plan.stdout.contains(": due"), "plan says what it would do, not \"due\":\n{}", plan.stdout);
    // The same config order every time.
    let order: Vec<&str> = plan.stdout.lines().filter_map(|l| l.split("] ").nth(1)?.split(':').next()).collect();
    assert_eq!(order, ["personal", "project", "group", "service", "fresh"], "{}", plan.stdout);

    let rotate = u.patrol(&["rotate"]).await;
    assert_eq!(rotate.code, 0, "{}\n{}", rotate.stdout, tail(&rotate.stderr));
    let expected = [
        ("personal", "rotated"),
        ("project", "unchanged"),
        ("group", "created"),
        ("service", "repaired"),
        ("fresh", "created"),
    ];
    for (id, outcome) in expected {
        assert_eq!(field(&rotate, id, "outcome"), outcome, "{id}: {}", rotate.report);
    }
    let summary = &rotate.report["summary"];
    assert_eq!((summary["rotated"].as_u64(), summary["created"].as_u64()), (Some(1), Some(2)), "{summary}");
    assert!(rotate.stdout.contains("1 rotated, 2 created, 1 repaired, 1 unchanged"), "{}", rotate.stdout);
    // What rotate did, per token: the variables written, the pipelines and how they ended.
    for line in [
        "wrote group sec GROUP_TOKEN [*]",
        "retried pipeline sec/reports main #",
        "started pipeline sec/inventory main #",
    ] {
        assert!(rotate.stdout.contains(line), "missing {line:?} in:\n{}", rotate.stdout);
    }
}
