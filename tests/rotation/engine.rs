//! Rotation of every kind end to end, idempotence, plan, force, overlap, configuration and
//! connection errors.

use crate::helpers::*;
use patrol::simulator::seed::{SeedToken, SeedVariable};

#[tokio::test]
async fn every_kind_is_rotated_stored_verified_and_its_pipeline_passes() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let before: Vec<u64> =
        ["alice-ci", "app-ci", "sec-reports", "inventory"].iter().flat_map(|n| u.active(n)).collect();
    assert_eq!(before.len(), 4, "one active token of each name before the run");
    let started = patrol::app::today();
    let run = u.patrol(&["rotate"]).await;
    let ended = patrol::app::today();
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr tail:\n{}", run.stdout, tail(&run.stderr));
    let expected: Vec<(String, String)> =
        ["personal", "project", "group", "service"].iter().map(|id| (id.to_string(), "rotated".to_string())).collect();
    assert_eq!(outcomes(&run), expected);

    for (name, key, scope) in [
        ("alice-ci", "PERSONAL_TOKEN", "*"),
        ("app-ci", "PROJECT_TOKEN", "*"),
        ("sec-reports", "GROUP_TOKEN", "*"),
        ("inventory", "SA_TOKEN", "*"),
    ] {
        let active = u.active(name);
        assert_eq!(active.len(), 1, "{name}: exactly one active token");
        assert!(!before.contains(&active[0]), "{name}: a new token");
        assert_eq!(u.variable_holds(key, scope), Some(active[0]), "{key} holds the new token");
    }
    u.sim.with_world(|w| {
        assert!(before.iter().all(|id| w.tokens.get(id).is_some_and(|t| t.revoked)), "old tokens revoked")
    });
    // The hidden variables keep their settings; patrol's marker records the token they hold.
    let hidden = u.variable("PROJECT_TOKEN", "*").unwrap_or_else(|| panic!("variable"));
    assert!(hidden.hidden && hidden.masked && !hidden.protected);
    assert!(hidden
        .description
        .as_deref()
        .is_some_and(|d| d.contains(&format!("[patrol: token {}]", u.active("app-ci")[0]))));
    for project in ["sec/app", "sec/inventory", "sec/reports"] {
        assert_eq!(u.pipeline_status(project).as_deref(), Some("success"), "{project}");
    }
    // sec/app's pipeline reads two rotated tokens and was retried once, after both were stored.
    u.sim.with_world(|w| {
        let app = w.project_by_path("sec/app").map(|p| p.id);
        let retries: u32 = w.pipelines.values().filter(|p| Some(p.project) == app).map(|p| p.retries).sum();
        assert_eq!(retries, 1);
    });
    let new_expiry = run.report["tokens"][1]["after"]["expires_at"].as_str();
    let expected = expiry_after(started, ended, 365);
    assert!(
        new_expiry.is_some_and(|e| expected.iter().any(|x| x == e)),
        "{new_expiry:?}, expected one of {expected:?}"
    );
    assert_eq!(run.report["tokens"][1]["pipelines"][0]["status"], "success");
    assert_eq!(run.report["summary"]["rotated"], 4);
    assert!(run.junit.contains("<testcase") && run.junit.matches("<testcase").count() == 4, "{}", run.junit);
    assert!(
        run.stdout.contains("patrol: 4 rotated, 0 created, 0 repaired, 0 unchanged, 0 due, 0 failed"),
        "{}",
        run.stdout
    );
    assert!(u.sim.reuse_detections().is_empty());

    // A second run right after changes nothing and writes nothing.
    let from = u.sim.requests().len();
    let again = u.patrol(&["rotate"]).await;
    assert_eq!(again.code, 0);
    assert_eq!(outcomes(&again).len(), 4, "every token is in the report: {:?}", outcomes(&again));
    assert!(outcomes(&again).iter().all(|(_, o)| o == "unchanged"), "{:?}", outcomes(&again));
    assert_eq!(u.writes_since(from), Vec::<String>::new());
}

#[tokio::test]
async fn plan_is_read_only_and_says_what_is_due() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    // The seeded expiry (3 days from when the simulator started), read before the run.
    let expires = u.sim.with_world(|w| w.tokens.values().find(|t| t.name == "alice-ci").and_then(|t| t.expires_at));
    let expires = expires.unwrap_or_else(|| panic!("the seed's alice-ci token has an expiry"));
    let run = u.patrol(&["plan", "--exit-code"]).await;
    assert_eq!(run.code, 4, "{}", run.stdout);
    assert_eq!(outcomes(&run).len(), 4, "every token is in the plan: {:?}", outcomes(&run));
    assert!(outcomes(&run).iter().all(|(_, o)| o == "due"), "{:?}", outcomes(&run));
    assert_eq!(run.report["tokens"][0]["variables"][0]["outcome"], "would-write");
    assert_eq!(run.report["tokens"][0]["reason"], format!("expires {expires}, within 14 days"));
    assert_eq!(u.writes_since(0), Vec::<String>::new());
    assert_eq!(u.patrol(&["plan"]).await.code, 0, "without --exit-code, due is success");
    // Under GitLab CI as in a terminal: each token's line, then what rotate would write and run.
    let in_ci = u.patrol_with(&["plan"], &[("GITLAB_CI", "true")]).await;
    assert!(in_ci.stdout.contains("would write project sec/app PERSONAL_TOKEN [*]"), "{}", in_ci.stdout);
    let dry = u.patrol(&["rotate", "--dry-run"]).await;
    assert_eq!((dry.code, dry.report["command"].as_str()), (0, Some("plan")));
    assert_eq!(u.writes_since(0), Vec::<String>::new());
}

#[tokio::test]
async fn force_rotates_a_healthy_token_and_only_it() {
    let mut seed = fleet();
    for t in &mut seed.tokens[1..] {
        t.expires_in_days = Some(200);
    }
    let u = Universe::new(seed, FLEET_CONFIG).await;
    let refused = u.patrol(&["rotate", "--force"]).await;
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("--force needs --only"), "{}", refused.stderr);
    let old = u.active("inventory");
    let run = u.patrol(&["rotate", "--force", "--only", "service"]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(outcomes(&run), vec![("service".to_string(), "rotated".to_string())]);
    assert_eq!(run.report["tokens"][0]["reason"], "forced (--force)");
    assert_ne!(u.active("inventory"), old);
    assert_eq!(u.pipeline_status("sec/inventory").as_deref(), Some("success"), "a created pipeline passes");
    let unknown = u.patrol(&["rotate", "--force", "--only", "nope"]).await;
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("--only \"nope\": no such token"), "{}", unknown.stderr);
}

#[tokio::test]
async fn an_expired_token_is_rotated_and_a_revoked_one_is_recreated() {
    let mut seed = fleet();
    seed.tokens[3].expires_in_days = Some(-2); // sec-reports expired two days ago
    seed.tokens[1].revoked = true; // alice-ci was revoked by someone
    let config = FLEET_CONFIG.replace("name = \"alice-ci\"\n", "name = \"alice-ci\"\nscopes = [\"api\"]\n");
    let u = Universe::new(seed, &config).await;
    let run = u.patrol(&["rotate", "--only", "group", "--only", "personal"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    let reasons: Vec<&str> =
        run.report["tokens"].as_array().into_iter().flatten().filter_map(|t| t["reason"].as_str()).collect();
    assert_eq!(reasons.len(), 2, "a reason for each of the two tokens: {}", run.report);
    assert!(
        reasons[0].starts_with("no active or rotatable token") && reasons[0].contains("created a new token"),
        "{reasons:?}"
    );
    assert!(reasons[1].starts_with("expired on "), "{reasons:?}");
    assert_eq!(u.variable_holds("PERSONAL_TOKEN", "*"), u.active("alice-ci").first().copied());
    assert_eq!(u.variable_holds("GROUP_TOKEN", "*"), u.active("sec-reports").first().copied());
    assert_eq!(u.pipeline_status("sec/reports").as_deref(), Some("success"));
    assert!(u.sim.reuse_detections().is_empty());
}

#[tokio::test]
async fn overlap_stores_and_verifies_the_new_token_before_revoking_the_old() {
    let config = FLEET_CONFIG.replace("name = \"inventory\"\n", "name = \"inventory\"\nstrategy = \"overlap\"\n");
    let u = Universe::new(fleet(), &config).await;
    let old = u.active("inventory");
    let run = u.patrol(&["rotate", "--only", "service"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    let now = u.active("inventory");
    assert_eq!(now.len(), 1, "the old token is revoked once the new one is verified");
    assert_ne!(now, old);
    assert_eq!(u.variable_holds("SA_TOKEN", "*"), Some(now[0]));
    u.sim.with_world(|w| {
        assert!(w.tokens.get(&now[0]).is_some_and(|t| t.previous.is_none()), "a created token, not a rotation")
    });
    let order: Vec<String> = u.writes_since(0);
    // Each request must be there: a missing one is a failure, not an `Option` that sorts first.
    let at = |what: &str, found: Option<usize>| found.unwrap_or_else(|| panic!("no {what} request: {order:?}"));
    let created =
        at("create", order.iter().position(|r| r.starts_with("POST") && r.ends_with("/personal_access_tokens")));
    let revoked = at("revoke", order.iter().position(|r| r.starts_with("DELETE")));
    let written = at("SA_TOKEN write", order.iter().rposition(|r| r.starts_with("PUT") && r.contains("SA_TOKEN")));
    assert!(created < written && written < revoked, "{order:?}");
}

#[tokio::test]
async fn a_hidden_variable_in_one_of_several_environment_scopes_is_written_in_place() {
    let mut seed = fleet();
    seed.variables = vec![
        SeedVariable {
            environment_scope: "production".into(),
            protected: true,
            ..variable(Some("sec/inventory"), None, "SA_TOKEN", "inventory", true)
        },
        SeedVariable {
            value: Some("unrelated-value-for-review".into()),
            token: None,
            environment_scope: "review/*".into(),
            ..variable(Some("sec/inventory"), None, "SA_TOKEN", "inventory", false)
        },
    ];
    seed.pipelines.clear();
    let config = r#"
[[token]]
id = "service"
kind = "service_account"
name = "inventory"
group = "sec"
user = "svc-inv"

[[token.variable]]
project = "sec/inventory"
key = "SA_TOKEN"
environment_scope = "production"
"#;
    let u = Universe::new(seed, config).await;
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    assert_eq!(u.variable_holds("SA_TOKEN", "production"), u.active("inventory").first().copied());
    let prod = u.variable("SA_TOKEN", "production").unwrap_or_else(|| panic!("production variable"));
    assert!(prod.hidden && prod.masked && prod.protected, "settings kept: {prod:?}");
    let review = u.variable("SA_TOKEN", "review/*").unwrap_or_else(|| panic!("review variable"));
    assert_eq!(review.value, "unrelated-value-for-review", "the other scope is untouched");
}

#[tokio::test]
async fn a_missing_variable_is_created_masked_hidden_and_raw() {
    let mut seed = fleet();
    seed.variables.retain(|v| v.key != "SA_TOKEN");
    let u = Universe::new(seed, FLEET_CONFIG).await;
    let run = u.patrol(&["rotate", "--only", "service"]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    let v = u.variable("SA_TOKEN", "*").unwrap_or_else(|| panic!("created"));
    assert!(v.masked && v.hidden && v.raw && v.protected, "{v:?}");
    assert_eq!(u.variable_holds("SA_TOKEN", "*"), u.active("inventory").first().copied());
}

#[tokio::test]
async fn a_token_on_the_third_page_is_found() {
    let mut seed = fleet();
    let mut noise: Vec<SeedToken> = (0..230)
        .map(|i| SeedToken { user: Some("svc-inv".into()), ..token(&format!("inventory-{i:03}"), 200) })
        .collect();
    let target = seed.tokens.remove(4);
    seed.tokens.append(&mut noise);
    seed.tokens.push(target);
    let u = Universe::new(seed, FLEET_CONFIG).await;
    let run = u.patrol(&["rotate", "--only", "service"]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(outcomes(&run), vec![("service".to_string(), "rotated".to_string())]);
    let pages: Vec<String> = u
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/personal_access_tokens") && r.method == "GET")
        .map(|r| r.query.clone())
        .collect();
    assert!(pages.iter().any(|q| q.contains("page=3")), "{pages:?}");
    assert!(pages.iter().all(|q| q.contains("per_page=100")), "{pages:?}");
}

#[tokio::test]
async fn bad_config_exits_2_naming_file_line_and_key() {
    let u =
        Universe::new(fleet(), &FLEET_CONFIG.replace("key = \"SA_TOKEN\"", "key = \"SA_TOKEN\"\nscop = \"x\"")).await;
    for command in [["validate"].as_slice(), ["plan"].as_slice(), ["rotate"].as_slice()] {
        let run = u.patrol(command).await;
        assert_eq!(run.code, 2, "{command:?}");
        assert!(run.stderr.contains("patrol.toml:52: `scop`: unknown field"), "{command:?}: {}", run.stderr);
    }
    assert!(u.sim.requests().is_empty(), "nothing was contacted");
    let cases = [
        (
            FLEET_CONFIG.replace("[[token]]\nid = \"project\"", "[[token]\nid = \"project\""),
            "patrol.toml:12: unclosed array table",
        ),
        (
            FLEET_CONFIG.replace("kind = \"group\"", "kind = \"grup\""),
            "`kind`: token \"group\": \"grup\" is not one of",
        ),
        (FLEET_CONFIG.replace("name = \"sec-reports\"\n", ""), "missing field `name`"),
        (
            FLEET_CONFIG.replace("user = \"alice\"\n", ""),
            "`user`: token \"personal\": required for kind = \"personal\"",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(u.dir.join("patrol.toml"), text).unwrap_or_else(|e| panic!("{e}"));
        let run = u.patrol(&["validate"]).await;
        assert_eq!(run.code, 2);
        assert!(run.stderr.contains(expected) && run.stderr.contains("patrol.toml:"), "{expected}: {}", run.stderr);
    }
    std::fs::write(u.dir.join("patrol.toml"), FLEET_CONFIG).unwrap_or_else(|e| panic!("{e}"));
    let ok = u.patrol(&["validate"]).await;
    assert_eq!(ok.code, 0);
    assert!(ok.stdout.contains("OK, 4 managed token(s)"));
}

#[tokio::test]
async fn an_unreachable_gitlab_or_a_rejected_credential_exits_3_and_changes_nothing() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(1);
    let url = format!("http://127.0.0.1:{closed}/api/v4");
    let unreachable = u.patrol_with(&["rotate"], &[("PATROL_GITLAB_URL", &url)]).await;
    assert_eq!(unreachable.code, 3, "{}", unreachable.stderr);
    assert!(unreachable.stderr.contains("cannot reach GitLab") && unreachable.stderr.contains("Nothing was changed"));

    let rejected = u.patrol_with(&["rotate"], &[("PATROL_TOKEN", "glpat-NotAValidToken000000")]).await;
    assert_eq!(rejected.code, 3, "{}", rejected.stderr);
    assert!(rejected.stderr.contains("rejected patrol's credential"), "{}", rejected.stderr);
    assert_eq!(u.writes_since(0), Vec::<String>::new());

    let missing = u.patrol_with(&["rotate"], &[("PATROL_TOKEN", "")]).await;
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("set the environment variable PATROL_TOKEN"), "{}", missing.stderr);
    let plain = u.patrol_with(&["plan"], &[("PATROL_GITLAB_URL", "http://gitlab.example.com/api/v4")]).await;
    assert_eq!(plain.code, 2);
    assert!(plain.stderr.contains("refusing plain http"), "{}", plain.stderr);
}

#[tokio::test]
async fn audit_lists_what_expires_soon_and_marks_managed_tokens() {
    let mut seed = fleet();
    seed.tokens.push(SeedToken { user: Some("alice".into()), ..token("alice-unmanaged", 20) });
    seed.tokens.push(SeedToken { user: Some("alice".into()), ..token("alice-far", 90) });
    seed.tokens.push(SeedToken { user: Some("alice".into()), ..token("alice-old", -45) });
    let u = Universe::new(seed, FLEET_CONFIG).await;
    let run = u.patrol(&["audit", "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    let rows: Vec<(String, String, String, serde_json::Value)> = report["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().into(),
                t["kind"].as_str().unwrap_or_default().into(),
                t["owner"].as_str().unwrap_or_default().into(),
                // Present in every entry: `null` for a token no [[token]] manages.
                t.get("managed").cloned().unwrap_or_else(|| panic!("an entry without `managed`: {t}")),
            )
        })
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert!(!names.contains(&"alice-far") && !names.contains(&"alice-old") && !names.contains(&"admin"), "{names:?}");
    assert_eq!(names.last(), Some(&"alice-unmanaged"), "sorted by expiry");
    let find = |n: &str| rows.iter().find(|r| r.0 == n).cloned().unwrap_or_else(|| panic!("{n} missing: {names:?}"));
    assert_eq!(find("app-ci"), ("app-ci".into(), "project".into(), "sec/app".into(), serde_json::json!("project")));
    assert_eq!(find("sec-reports").1, "group");
    assert_eq!(
        find("inventory"),
        ("inventory".into(), "service_account".into(), "svc-inv".into(), serde_json::json!("service"))
    );
    assert_eq!(find("alice-unmanaged").3, serde_json::Value::Null);
    assert_eq!(report["within_days"], 30);

    let by_group = u.patrol(&["audit", "--json", "--group", "sec"]).await;
    assert_eq!(by_group.code, 0, "{}", by_group.stderr);
    let report: serde_json::Value =
        serde_json::from_str(&by_group.stdout).unwrap_or_else(|e| panic!("{e}: {}", by_group.stdout));
    let kinds: Vec<&str> =
        report["tokens"].as_array().into_iter().flatten().filter_map(|t| t["kind"].as_str()).collect();
    assert_eq!(kinds.len(), 3, "{}", by_group.stdout);
    assert!(kinds.contains(&"project") && kinds.contains(&"group") && kinds.contains(&"service_account"));
    let table = u.patrol(&["audit"]).await;
    assert!(table.stdout.lines().next().is_some_and(|l| l.starts_with("TOKEN")), "{}", table.stdout);
}

#[tokio::test]
async fn patrol_demo_tells_the_story_and_exits_0() {
    let run =
        tokio::task::spawn_blocking(|| std::process::Command::new(env!("CARGO_BIN_EXE_patrol")).arg("demo").output())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}");
    for expected in [
        "inventory: would rotate: expires",
        "reports: would rotate: expired on",
        "inventory: rotated",
        "scanner: unchanged",
        "retried",
        "security/reports main: pipeline",
        "2 rotated, 0 created, 0 repaired, 1 unchanged, 0 due, 0 failed",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    assert!(!stdout.lines().any(|l| l.contains(": failed")), "{stdout}");
    assert_eq!(stdout.matches("glpat-").count(), 0, "no secret in the demo's output");
}

/// The expiry a run makes for `days` from its date: patrol takes the date (UTC) once, when it
/// starts. `started` and `ended` are the dates taken just before and after the run: the same
/// day, which gives one right answer, unless the run crossed midnight, when it is one of two.
pub fn expiry_after(started: chrono::NaiveDate, ended: chrono::NaiveDate, days: i64) -> Vec<String> {
    assert!(ended == started || ended == started + chrono::Duration::days(1), "a run spans at most one midnight");
    let mut dates = vec![(started + chrono::Duration::days(days)).to_string()];
    if ended != started {
        dates.push((ended + chrono::Duration::days(days)).to_string());
    }
    dates
}

pub fn tail(s: &str) -> String {
    s.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn shards_split_the_tokens_between_parallel_jobs() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let mut seen = Vec::new();
    for i in 1..=3 {
        let shard = format!("{i}/3");
        let by_flag = u.patrol(&["plan", "--shard", &shard]).await;
        let by_env = u.patrol_with(&["plan"], &[("CI_NODE_INDEX", &i.to_string()), ("CI_NODE_TOTAL", "3")]).await;
        assert_eq!(outcomes(&by_flag), outcomes(&by_env), "the flag and GitLab's parallel variables agree");
        seen.extend(outcomes(&by_flag).into_iter().map(|(id, _)| id));
    }
    seen.sort();
    assert_eq!(seen, vec!["group", "personal", "project", "service"], "every token in exactly one shard");
    assert_eq!(u.patrol(&["plan", "--shard", "4/3"]).await.code, 2);
}

#[tokio::test]
async fn ci_debug_trace_stops_patrol_before_it_contacts_gitlab_unless_allowed() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let refused = u.patrol_with(&["rotate"], &[("CI_DEBUG_TRACE", "true")]).await;
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("CI_DEBUG_TRACE") && refused.stderr.contains("--allow-debug-trace"),
        "{}",
        refused.stderr
    );
    assert!(u.sim.requests().is_empty(), "nothing was contacted");
    let allowed = u.patrol_with(&["--allow-debug-trace", "plan"], &[("CI_DEBUG_TRACE", "true")]).await;
    assert_eq!(allowed.code, 0, "{}", tail(&allowed.stderr));
    let offline = u.patrol_with(&["validate"], &[("CI_DEBUG_TRACE", "true")]).await;
    assert_eq!(offline.code, 0, "validate contacts nothing, so it runs");
}

#[tokio::test]
async fn json_logs_at_trace_level_are_json_lines_and_carry_no_secret() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    // The leak scan in `patrol_with` covers these lines, base64 forms included.
    let run = u.patrol_with(&["rotate"], &[("PATROL_LOG_FORMAT", "json"), ("PATROL_LOG", "trace")]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() > 50, "trace level logs every request: {}", lines.len());
    for line in &lines {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok_and(|v| v["level"].is_string()), "not a JSON log line: {line}");
    }
    assert!(lines.iter().any(|l| l.contains("\"TRACE\"")), "trace events are included");
}
