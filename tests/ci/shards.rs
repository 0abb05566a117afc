//! The shards of `parallel: N` and their resource groups, as GitLab creates and schedules them: the
//! N shards of the scheduled rotation must be able to run side by side, and an emergency rotation
//! must never run beside a job that changes one of its tokens.

use super::{component, interpolate, resolve_extends, root, with};
use serde_json::{json, Map, Value};

/// GitLab's expansion of a resource group's name (`ExpandVariables.expand` with the job's
/// variables, lib/gitlab/ci/pipeline/seed/build/resource_group.rb): `$NAME` and `${NAME}` become
/// the variable's value, or nothing when the job has no such variable.
fn expand(text: &str, vars: &Map<String, Value>) -> String {
    let value = |name: &str| match vars.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').unwrap_or_else(|| panic!("unterminated ${{ in {text:?}"));
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push_str(&value(name));
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The jobs GitLab creates from one job: with `parallel: N`, N of them, each with CI_NODE_INDEX
/// and CI_NODE_TOTAL among its variables (lib/gitlab/ci/config/normalizer/number_strategy.rb,
/// lib/gitlab/ci/variables/builder.rb); without, one with CI_NODE_TOTAL 1 and no CI_NODE_INDEX.
fn instances(job: &Value) -> Vec<Map<String, Value>> {
    let base: Map<String, Value> = job["variables"].as_object().cloned().unwrap_or_default();
    match job.get("parallel") {
        None => vec![with_vars(&base, &[("CI_NODE_TOTAL", "1")])],
        Some(Value::Number(n)) => {
            let total = n.as_u64().unwrap_or_else(|| panic!("parallel: {n}"));
            (1..=total)
                .map(|i| with_vars(&base, &[("CI_NODE_INDEX", &i.to_string()), ("CI_NODE_TOTAL", &total.to_string())]))
                .collect()
        }
        Some(other) => panic!("parallel: {other} is not modelled here"),
    }
}

fn with_vars(base: &Map<String, Value>, extra: &[(&str, &str)]) -> Map<String, Value> {
    let mut vars = base.clone();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), json!(v));
    }
    vars
}

/// One job GitLab would run: its resource group (None: none) and the managed tokens it may change.
#[derive(Debug)]
struct Run {
    job: String,
    group: Option<String>,
    tokens: Vec<String>,
}

/// The config ids patrol would work on in a job with these variables: patrol's own shard function
/// (`--shard`, by default `$CI_NODE_INDEX/$CI_NODE_TOTAL`, src/app.rs), over `ids`.
fn shard_of(vars: &Map<String, Value>, ids: &[String]) -> Vec<String> {
    match (vars.get("CI_NODE_INDEX").and_then(Value::as_str), vars.get("CI_NODE_TOTAL").and_then(Value::as_str)) {
        (Some(i), Some(n)) => {
            let shard = patrol::cli::parse_shard(&format!("{i}/{n}")).unwrap_or_else(|e| panic!("{e}"));
            ids.iter().filter(|id| shard.owns(id)).cloned().collect()
        }
        _ => ids.to_vec(),
    }
}

fn runs(doc: &Value, name: &str, ids: &[String]) -> Vec<Run> {
    let job = doc.get(name).unwrap_or_else(|| panic!("no job {name}"));
    let script = format!("{}{}", job["before_script"], job["script"]);
    assert!(!script.contains("--shard"), "{name}: its shard must be the one its resource group stands for");
    instances(job)
        .into_iter()
        .map(|vars| Run {
            job: format!("{name} {}", vars.get("CI_NODE_INDEX").and_then(Value::as_str).unwrap_or("")),
            group: job["resource_group"].as_str().map(|g| expand(g, &vars)),
            tokens: shard_of(&vars, ids),
        })
        .collect()
}

/// The config ids of the example config, and many more, so that every shard has some.
fn ids() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("ci-templates/example.toml")).unwrap_or_else(|e| panic!("{e}"));
    let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("example.toml: {e}"));
    let mut ids: Vec<String> = table["token"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    assert_eq!(ids.len(), 3);
    ids.extend((1..=60).map(|i| format!("token-{i}")));
    ids
}

#[test]
fn each_shard_has_its_own_resource_group_and_an_emergency_shard_shares_only_its_own() {
    let (_, body, given) = component();
    let ids = ids();
    for n in 1..=6u64 {
        let doc = resolve_extends(&interpolate(&body, &with(&given, &[("parallel", json!(n))])));
        let rotate = runs(&doc, "patrol-rotate", &ids);
        let emergency = runs(&doc, "patrol-emergency-rotate", &ids);
        assert_eq!((rotate.len(), emergency.len()), (n as usize, n as usize), "parallel: {n}");
        // The shards run side by side: each has a resource group of its own.
        let mut groups: Vec<&str> = rotate.iter().filter_map(|r| r.group.as_deref()).collect();
        groups.sort_unstable();
        groups.dedup();
        assert_eq!(
            groups.len(),
            n as usize,
            "parallel: {n}: the shards share resource groups, so GitLab runs them one after another: {rotate:?}"
        );
        // Between them the shards cover every token, once.
        let mut covered: Vec<&String> = rotate.iter().flat_map(|r| &r.tokens).collect();
        covered.sort_unstable();
        assert_eq!(covered.len(), ids.len(), "parallel: {n}");
        covered.dedup();
        assert_eq!(covered.len(), ids.len(), "parallel: {n}: a token in two shards");
        // Emergency shard I waits for scheduled shard I: the same group, the same tokens.
        for (e, r) in emergency.iter().zip(&rotate) {
            assert_eq!(e.group, r.group, "parallel: {n}: {} and {}", e.job, r.job);
            assert_eq!(e.tokens, r.tokens, "parallel: {n}: {} and {}", e.job, r.job);
        }
        // GitLab may start at once any two of these that are in different resource groups
        // (another pipeline's shards included): none of those pairs may share a token.
        let all: Vec<&Run> = rotate.iter().chain(&emergency).collect();
        for a in &all {
            for b in &all {
                let together = match (&a.group, &b.group) {
                    (Some(x), Some(y)) => x != y,
                    _ => true,
                };
                if together {
                    let shared: Vec<&String> = a.tokens.iter().filter(|t| b.tokens.contains(t)).collect();
                    assert!(
                        shared.is_empty(),
                        "parallel: {n}: {} and {} may run at once and share {shared:?}",
                        a.job,
                        b.job
                    );
                }
            }
        }
        // Plan only reads: it holds up no rotation, and the manual job does no work itself.
        assert!(doc["patrol-plan"].get("resource_group").is_none());
        assert!(doc["patrol-emergency"].get("resource_group").is_none());
    }
}

#[test]
fn resource_group_names_expand_as_gitlab_expands_them() {
    let vars = Map::from_iter([("CI_NODE_INDEX".to_owned(), json!("3")), ("A_B".to_owned(), json!("x"))]);
    assert_eq!(expand("patrol-shard-$CI_NODE_INDEX", &vars), "patrol-shard-3");
    assert_eq!(expand("p-${CI_NODE_INDEX}-$A_B/$MISSING.", &vars), "p-3-x/.");
    let job = json!({"parallel": 2, "variables": {"X": "1"}});
    let made = instances(&job);
    assert_eq!(made.len(), 2);
    assert_eq!((made[1]["CI_NODE_INDEX"].as_str(), made[1]["CI_NODE_TOTAL"].as_str()), (Some("2"), Some("2")));
    assert_eq!(instances(&json!({}))[0].get("CI_NODE_INDEX"), None);
}
