//! Issue 16: `patrol discover` against the simulator: the map (token → variables, variable →
//! what it holds), each finding, hidden variables, the token information API on and off, one
//! identification request per distinct value, `--json`, and `--write-config` → `validate` →
//! `plan` → `rotate` converging. Every run goes through the leak scan (`Universe::finish`), and
//! every written config is scanned too.

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::seed::{SeedProject, SeedToken, SeedUser, SeedVariable};
use patrol::simulator::Seed;
use serde_json::Value;

/// A config that manages one of the tokens, so that `managed` shows.
const CONFIG: &str = r#"
[[token]]
id = "app"
kind = "project"
name = "app-ci"
project = "sec/app"

[[token.variable]]
project = "sec/app"
key = "APP_TOKEN"
"#;

fn readable(project: &str, key: &str, token: &str) -> SeedVariable {
    SeedVariable { protected: true, ..variable(Some(project), None, key, token, false) }
}

/// app-ci (sec/app's project token) in sec/app and sec/web; a revoked token of alice in sec/ops;
/// a token of alice without expiry in sec/ops; alice's token expiring in 10 days in no variable;
/// a group token in a hidden group variable; a service account's token in a hidden variable
/// carrying patrol's marker (set by [`world`]).
fn seed() -> Seed {
    let mut seed = people(&["sec/app", "sec/web", "sec/ops", "sec/inventory"]);
    seed.tokens.extend([
        SeedToken { project: Some("sec/app".into()), ..token("app-ci", 200) },
        SeedToken { user: Some("alice".into()), revoked: true, ..token("old-deploy", 100) },
        SeedToken { user: Some("alice".into()), expires_in_days: None, ..token("forever", 0) },
        SeedToken { user: Some("alice".into()), ..token("alice-laptop", 10) },
        SeedToken { group: Some("sec".into()), ..token("sec-reports", 200) },
        SeedToken { user: Some("svc-inv".into()), ..token("inventory", 200) },
    ]);
    Seed {
        variables: vec![
            readable("sec/app", "APP_TOKEN", "app-ci"),
            readable("sec/web", "APP_TOKEN", "app-ci"),
            readable("sec/ops", "DEPLOY_TOKEN", "old-deploy"),
            readable("sec/ops", "FOREVER_TOKEN", "forever"),
            variable(None, Some("sec"), "GROUP_TOKEN", "sec-reports", true),
            variable(Some("sec/inventory"), None, "SA_TOKEN", "inventory", true),
            SeedVariable {
                project: Some("sec/web".into()),
                key: "GREETING".into(),
                value: Some("hello world".into()),
                environment_scope: "*".into(),
                ..Default::default()
            },
        ],
        ..seed
    }
}

/// The people of discover's tests: an administrator (whose token is patrol's credential), alice,
/// and group sec with its service account svc-inv; and these projects of sec, without tokens.
pub fn people(projects: &[&str]) -> Seed {
    Seed {
        users: vec![
            SeedUser { username: "root".into(), admin: true, ..Default::default() },
            SeedUser { username: "alice".into(), ..Default::default() },
            SeedUser { username: "svc-inv".into(), service_account_of: Some("sec".into()), ..Default::default() },
        ],
        groups: vec!["sec".into()],
        projects: projects.iter().map(|p| SeedProject { path: (*p).into(), ..Default::default() }).collect(),
        tokens: vec![SeedToken { user: Some("root".into()), secret: Some(ADMIN.into()), ..token("admin", 300) }],
        ..Default::default()
    }
}

async fn world(seed: Seed) -> Universe {
    let u = Universe::new(seed, CONFIG).await;
    u.sim.with_world(|w| {
        let id = w.tokens.values().find(|t| t.name == "inventory").map(|t| t.id).unwrap_or_default();
        if let Some(v) = w.variables.iter_mut().find(|v| v.key == "SA_TOKEN") {
            v.description = Some(format!("inventory [patrol: token {id}]"));
        }
    });
    u
}

fn id_of(u: &Universe, name: &str) -> u64 {
    u.sim.with_world(|w| w.tokens.values().find(|t| t.name == name).map(|t| t.id).unwrap_or_default())
}

async fn discover_json(u: &Universe, args: &[&str]) -> Value {
    let run = u.patrol(&[&["discover", "--json"], args].concat()).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn findings<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["findings"].as_array().into_iter().flatten().filter(|f| f["kind"] == kind).collect()
}

fn keys(vars: &Value) -> Vec<String> {
    vars.as_array()
        .into_iter()
        .flatten()
        .map(|v| format!("{} {}", v["path"].as_str().unwrap_or_default(), v["key"].as_str().unwrap_or_default()))
        .collect()
}

fn token_entry(report: &Value, id: u64) -> &Value {
    report["tokens"].as_array().into_iter().flatten().find(|t| t["token_id"] == id).unwrap_or(&Value::Null)
}

fn variable_entry<'a>(report: &'a Value, path: &str, key: &str) -> &'a Value {
    report["variables"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["path"] == path && v["key"] == key)
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn discover_maps_each_token_to_every_variable_that_holds_it() {
    let u = world(seed()).await;
    let report = discover_json(&u, &[]).await;
    let app = token_entry(&report, id_of(&u, "app-ci"));
    assert_eq!(app["kind"], "project");
    assert_eq!(app["owner"], "sec/app");
    assert_eq!(app["state"], "active");
    assert_eq!(app["managed"], "app", "the config's id for it");
    assert_eq!(keys(&app["variables"]), ["sec/app APP_TOKEN", "sec/web APP_TOKEN"]);
    assert_eq!(app["variables"][0]["masked"], true);
    assert_eq!(app["variables"][0]["protected"], true);
    assert_eq!(app["variables"][0]["environment_scope"], "*");
    // Each variable → what it holds; a plain value is not listed.
    let web = variable_entry(&report, "sec/web", "APP_TOKEN");
    assert_eq!((web["holds"].as_str(), web["token_id"].as_u64()), (Some("active"), Some(id_of(&u, "app-ci"))));
    assert_eq!(variable_entry(&report, "sec/web", "GREETING"), &Value::Null);
    let ops = variable_entry(&report, "sec/ops", "DEPLOY_TOKEN");
    assert_eq!((ops["holds"].as_str(), ops["token_id"].as_u64()), (Some("stale"), Some(id_of(&u, "old-deploy"))));
    assert_eq!(report["walked"]["projects"], 4);
    assert_eq!(report["walked"]["groups"], 1);
    assert_eq!(report["walked"]["variables"], 7);
    // The table says the same, grouped by token.
    let run = u.patrol(&["discover"]).await;
    assert_eq!(run.code, 0, "{}", tail(&run.stderr));
    let at = run.stdout.find("\"app-ci\": active").unwrap_or_else(|| panic!("{}", run.stdout));
    let block: Vec<&str> = run.stdout[at..].lines().skip(1).take(2).collect();
    assert_eq!(
        block,
        [
            "    project sec/app APP_TOKEN [*]  (masked, protected)",
            "    project sec/web APP_TOKEN [*]  (masked, protected)"
        ]
    );
}

#[tokio::test]
async fn a_variable_holding_a_revoked_token_is_a_stale_copy() {
    let u = world(seed()).await;
    let report = discover_json(&u, &[]).await;
    let stale = findings(&report, "stale_copy");
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert_eq!(stale[0]["token_id"], id_of(&u, "old-deploy"));
    assert_eq!(keys(&stale[0]["variables"]), ["sec/ops DEPLOY_TOKEN"]);
    assert!(stale[0]["message"].as_str().is_some_and(|m| m.contains("revoked")), "{}", stale[0]);
    // An expired one is stale too.
    let u = world(seed()).await;
    u.sim.with_world(|w| {
        let today = w.today();
        if let Some(t) = w.tokens.values_mut().find(|t| t.name == "forever") {
            t.expires_at = Some(today - chrono::Duration::days(1));
        }
    });
    let report = discover_json(&u, &[]).await;
    let stale: Vec<String> = findings(&report, "stale_copy").iter().flat_map(|f| keys(&f["variables"])).collect();
    assert_eq!(stale, ["sec/ops DEPLOY_TOKEN", "sec/ops FOREVER_TOKEN"]);
}

#[tokio::test]
async fn a_token_in_several_variables_is_a_finding() {
    let u = world(seed()).await;
    let report = discover_json(&u, &[]).await;
    let several = findings(&report, "several_places");
    assert_eq!(several.len(), 1, "{several:?}");
    assert_eq!(several[0]["token_id"], id_of(&u, "app-ci"));
    assert_eq!(keys(&several[0]["variables"]), ["sec/app APP_TOKEN", "sec/web APP_TOKEN"]);
}

#[tokio::test]
async fn a_token_expiring_soon_that_no_variable_holds_is_a_finding() {
    let u = world(seed()).await;
    let report = discover_json(&u, &[]).await;
    let ids: Vec<u64> = findings(&report, "expiring_unheld").iter().filter_map(|f| f["token_id"].as_u64()).collect();
    assert_eq!(ids, [id_of(&u, "alice-laptop")], "{}", report["findings"]);
    // Outside the window it is not.
    let report = discover_json(&u, &["--within-days", "5"]).await;
    assert!(findings(&report, "expiring_unheld").is_empty(), "{}", report["findings"]);
}

#[tokio::test]
async fn another_projects_bot_token_in_a_variable_is_a_finding() {
    let u = world(seed()).await;
    let report = discover_json(&u, &[]).await;
    let foreign = findings(&report, "foreign_bot");
    assert_eq!(foreign.len(), 1, "{foreign:?}");
    assert_eq!(foreign[0]["token_id"], id_of(&u, "app-ci"));
    assert_eq!(keys(&foreign[0]["variables"]), ["sec/web APP_TOKEN"], "not its own project's variable");
}

#[tokio::test]
async fn a_token_without_expiry_is_a_finding() {
    let u = world(seed()).await;
    let report = discover_json(&u, &[]).await;
    let ids: Vec<u64> = findings(&report, "no_expiry").iter().filter_map(|f| f["token_id"].as_u64()).collect();
    assert_eq!(ids, [id_of(&u, "forever")]);
    // `--exit-code` exits 4 when there are findings.
    let run = u.patrol(&["discover", "--exit-code"]).await;
    assert_eq!(run.code, 4, "{}", tail(&run.stderr));
}

#[tokio::test]
async fn hidden_variables_are_unknown_unless_patrols_marker_names_their_token() {
    let u = world(seed()).await;
    let report = discover_json(&u, &[]).await;
    let group = variable_entry(&report, "sec", "GROUP_TOKEN");
    assert_eq!((group["holder"].as_str(), group["holds"].as_str()), (Some("group"), Some("unknown")));
    assert_eq!((group["hidden"].as_bool(), group["token_id"].as_u64()), (Some(true), None));
    let marked = variable_entry(&report, "sec/inventory", "SA_TOKEN");
    let inventory = id_of(&u, "inventory");
    assert_eq!((marked["holds"].as_str(), marked["token_id"].as_u64()), (Some("active"), Some(inventory)));
    assert_eq!(marked["evidence"], "marker");
    let t = token_entry(&report, inventory);
    assert_eq!((t["kind"].as_str(), t["group"].as_str()), (Some("service_account"), Some("sec")));
    assert_eq!(keys(&t["variables"]), ["sec/inventory SA_TOKEN"]);
    // No value of a hidden variable was asked about: only readable token-shaped values.
    assert_eq!(report["walked"]["distinct_values"], 3);
}

/// Requests that identify a value: the token information API, and `self` with anything but
/// patrol's credential.
fn identifications(u: &Universe) -> (usize, Vec<String>) {
    let requests = u.sim.requests();
    let api = requests.iter().filter(|r| r.method == "POST" && r.path.ends_with("/admin/token")).count();
    let selfs = requests
        .iter()
        .filter(|r| r.path.ends_with("/personal_access_tokens/self") && r.token_name.as_deref() != Some("admin"))
        .map(|r| r.token_name.clone().unwrap_or_default())
        .collect();
    (api, selfs)
}

#[tokio::test]
async fn each_distinct_value_is_identified_with_one_request() {
    let mut s = seed();
    // A third copy of app-ci, in another scope: still one value.
    s.variables
        .push(SeedVariable { environment_scope: "production".into(), ..readable("sec/web", "APP_TOKEN", "app-ci") });
    let u = world(s).await;
    let report = discover_json(&u, &[]).await;
    assert_eq!(report["identification"]["token_info_api"], true);
    // app-ci, old-deploy, forever: 3 distinct values, and one question about patrol's own credential.
    assert_eq!(report["walked"]["distinct_values"], 3);
    let (api, selfs) = identifications(&u);
    assert_eq!((api, selfs.len()), (3 + 1, 0), "{selfs:?}");
    assert_eq!(keys(&token_entry(&report, id_of(&u, "app-ci"))["variables"]).len(), 3);
}

#[tokio::test]
async fn without_the_token_information_api_each_value_asks_its_own_self() {
    let u = world(Seed { token_info_api: Some(false), ..seed() }).await;
    let report = discover_json(&u, &[]).await;
    assert_eq!(report["identification"]["token_info_api"], false);
    assert!(report["identification"]["reason"].as_str().is_some_and(|r| r.contains("admin_agnostic_token_finder")));
    let (api, mut selfs) = identifications(&u);
    selfs.sort();
    // One refused probe; then one `self` per value: the revoked one answers 401 and names nothing.
    assert_eq!(api, 1);
    assert_eq!(selfs, ["app-ci", "forever", "old-deploy"]);
    let ops = variable_entry(&report, "sec/ops", "DEPLOY_TOKEN");
    assert_eq!((ops["holds"].as_str(), ops["token_id"].as_u64()), (Some("stale"), None));
    assert_eq!(findings(&report, "stale_copy").len(), 1);
    assert_eq!(token_entry(&report, id_of(&u, "app-ci"))["variables"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn the_json_report_has_its_documented_shape() {
    let u = world(seed()).await;
    let report = discover_json(&u, &[]).await;
    assert_eq!(report["schema_version"], 1);
    let fields = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        k.sort();
        k
    };
    assert_eq!(
        fields(&report),
        [
            "findings",
            "gitlab_url",
            "identification",
            "schema_version",
            "today",
            "tokens",
            "variables",
            "walked",
            "within_days"
        ]
    );
    assert_eq!(fields(&report["walked"]), ["distinct_values", "groups", "projects", "unreadable", "variables"]);
    assert_eq!(fields(&report["identification"]), ["reason", "token_info_api"]);
    assert_eq!(
        fields(token_entry(&report, id_of(&u, "app-ci"))),
        [
            "days_left",
            "expires_at",
            "group",
            "kind",
            "managed",
            "name",
            "owner",
            "scopes",
            "state",
            "token_id",
            "variables"
        ]
    );
    let variable =
        ["environment_scope", "hidden", "holder", "key", "masked", "path", "protected"].map(String::from).to_vec();
    assert_eq!(fields(&report["tokens"][0]["variables"][0]), variable);
    let mut entry = variable.clone();
    entry.extend(["detail", "evidence", "holds", "token_id"].map(String::from));
    entry.sort();
    assert_eq!(fields(&report["variables"][0]), entry);
    assert_eq!(fields(&report["findings"][0]), ["kind", "message", "token_id", "variables"]);
}

#[tokio::test]
async fn a_walk_can_be_limited_to_groups_and_projects() {
    let mut s = seed();
    s.projects.push(SeedProject { path: "other/tool".into(), ..Default::default() });
    s.variables.push(readable("other/tool", "APP_TOKEN", "app-ci"));
    let u = world(s).await;
    let all = discover_json(&u, &[]).await;
    assert_eq!(keys(&token_entry(&all, id_of(&u, "app-ci"))["variables"]).len(), 3);
    let only = discover_json(&u, &["--project", "other/tool"]).await;
    assert_eq!(only["walked"]["projects"], 1);
    assert_eq!(keys(&token_entry(&only, id_of(&u, "app-ci"))["variables"]), ["other/tool APP_TOKEN"]);
    let sec = discover_json(&u, &["--group", "sec"]).await;
    assert_eq!((sec["walked"]["projects"].as_u64(), sec["walked"]["groups"].as_u64()), (Some(4), Some(1)));
}

fn scan(u: &Universe, text: &str) {
    if let Some(leak) = find_leak(&u.sim.issued_secrets(), text) {
        panic!("a secret leaked into the written config: {leak}");
    }
}

#[tokio::test]
async fn a_written_config_validates_plans_and_rotates_to_a_converged_state() {
    let u = world(seed()).await;
    // A stale copy of app-ci: an older, revoked token of the same name in sec/ops.
    u.sim.with_world(|w| {
        let Some(bot) = w.tokens.values().find(|t| t.name == "app-ci").map(|t| t.user_id) else { return };
        let old = w.insert_token(bot, "app-ci", None, vec!["api".into()], None, None, None);
        let secret = w.tokens.get_mut(&old).map(|t| {
            t.revoked = true;
            t.secret.clone()
        });
        if let Some(secret) = secret {
            w.variables.push(patrol::simulator::world::Variable {
                owner: w.variables[0].owner,
                key: "OLD_APP_TOKEN".into(),
                value: secret,
                variable_type: "env_var".into(),
                protected: false,
                masked: true,
                hidden: false,
                raw: false,
                environment_scope: "*".into(),
                description: None,
            });
        }
    });
    let file = u.dir.join("discovered.toml");
    let path = file.display().to_string();
    let run = u.patrol(&["discover", "--write-config", &path]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
    scan(&u, &text);
    assert!(text.contains("# review:"), "pipelines are marked for review:\n{text}");
    assert!(
        text.contains("# [[token]]\n# id = \"old-deploy\""),
        "a token whose copies are all revoked is commented out:\n{text}"
    );
    let validate = u.patrol(&["validate", "--config", &path]).await;
    assert_eq!(validate.code, 0, "{}\n{}\n{text}", validate.stdout, validate.stderr);
    assert!(validate.stdout.contains("OK, 3 managed token(s)"), "{}\n{text}", validate.stdout);

    let env = [("PATROL_CONFIG", path.as_str())];
    let plan = u.patrol_with(&["plan"], &env).await;
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, tail(&plan.stderr));
    assert!(plan.stdout.contains("app-ci: would repair"), "{}", plan.stdout);
    let rotate = u.patrol_with(&["rotate"], &env).await;
    assert_eq!(rotate.code, 0, "{}\n{}", rotate.stdout, tail(&rotate.stderr));
    // Converged: nothing left to do, and no stale copy of app-ci anywhere.
    let again = u.patrol_with(&["plan", "--exit-code"], &env).await;
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, tail(&again.stderr));
    assert!(again.stdout.contains("0 repaired, 3 unchanged, 0 due, 0 failed"), "{}", again.stdout);
    let after = discover_json(&u, &[]).await;
    let stale: Vec<String> = findings(&after, "stale_copy").iter().flat_map(|f| keys(&f["variables"])).collect();
    assert_eq!(stale, ["sec/ops DEPLOY_TOKEN"], "only the revoked token nobody manages is left");
    let app: Vec<u64> = u.active("app-ci");
    assert_eq!(app.len(), 1);
    for key in ["APP_TOKEN", "OLD_APP_TOKEN"] {
        assert!(
            u.sim.with_world(|w| w
                .variables
                .iter()
                .filter(|v| v.key == key)
                .all(|v| w.token_by_secret(&v.value).is_some_and(|t| t.id == app[0]))),
            "{key}"
        );
    }
}

#[tokio::test]
async fn write_config_never_overwrites_a_file_without_force() {
    let u = world(seed()).await;
    let file = u.dir.join("existing.toml");
    std::fs::write(&file, "# mine\n").unwrap_or_else(|e| panic!("{e}"));
    let path = file.display().to_string();
    let run = u.patrol(&["discover", "--write-config", &path]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("refusing to overwrite") && run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap_or_default(), "# mine\n");
    assert!(u.sim.requests().is_empty(), "nothing was contacted");
    let forced = u.patrol(&["discover", "--write-config", &path, "--force"]).await;
    assert_eq!(forced.code, 0, "{}", tail(&forced.stderr));
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    scan(&u, &text);
    assert!(text.contains("[[token]]\nid = \"app-ci\""), "{text}");
    // --force alone does nothing, and is refused.
    let alone = u.patrol(&["discover", "--force"]).await;
    assert_eq!(alone.code, 2, "{}", alone.stderr);
}

#[tokio::test]
async fn the_demo_data_tells_discovers_story() {
    let u = Universe::new(Seed::demo(), CONFIG).await;
    let run = u.patrol_with(&["discover"], &[("PATROL_TOKEN", patrol::simulator::DEMO_ADMIN_SECRET)]).await;
    assert_eq!(run.code, 0, "{}", tail(&run.stderr));
    for line in [
        "    project security/dashboard SCANNER_TOKEN [*]  (masked)",
        "  stale copy: project security/dashboard DEPLOY_TOKEN [*] holds token",
        "  stored in several places: token",
        "    project security/inventory-builder INVENTORY_API_TOKEN [*]  (masked, hidden, protected)  unknown: hidden",
    ] {
        assert!(run.stdout.contains(line), "{line}\n{}", run.stdout);
    }
}
