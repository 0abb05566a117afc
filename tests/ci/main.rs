//! The CI files validate against GitLab's CI schema (`gitlab-ci.json` here, see SOURCE.txt), as
//! GitLab checks them: a component's header as written, and its body after GitLab has
//! interpolated the inputs (with the defaults, and with every non-default choice a user can make).
//! Then the promises the component makes are checked job by job.

use serde_json::{json, Map, Value};
use std::path::Path;
use yaml_rust2::{Yaml, YamlLoader};

mod supply_chain;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s.parse::<f64>().map(Value::from).unwrap_or_else(|_| Value::String(s.clone())),
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    other => to_json(other).to_string(),
                };
                m.insert(key, to_json(v));
            }
            Value::Object(m)
        }
        Yaml::Null => Value::Null,
        Yaml::Alias(_) | Yaml::BadValue => panic!("unsupported YAML value {y:?}"),
    }
}

fn documents(relative: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{relative} is not YAML: {e}"));
    docs.iter().map(to_json).collect()
}

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("tests/ci/gitlab-ci.json")).unwrap_or_else(|e| panic!("{e}"));
    let schema: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    jsonschema::draft7::new(&schema).unwrap_or_else(|e| panic!("the schema does not compile: {e}"))
}

fn assert_valid(what: &str, doc: &Value) {
    let errors: Vec<String> =
        validator().iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path())).take(10).collect();
    assert!(errors.is_empty(), "{what} does not validate against GitLab's CI schema:\n{}", errors.join("\n"));
}

/// GitLab's `$[[ inputs.NAME ]]` interpolation: a value that is only the expression takes the
/// input's type; inside a longer string it is spliced as text. Keys are interpolated too.
fn interpolate(v: &Value, inputs: &Map<String, Value>) -> Value {
    match v {
        Value::String(s) => {
            let trimmed = s.trim();
            if let Some(name) = trimmed.strip_prefix("$[[ inputs.").and_then(|r| r.strip_suffix(" ]]")) {
                if !name.contains("$[[") {
                    return inputs.get(name).cloned().unwrap_or_else(|| panic!("unknown input {name:?}"));
                }
            }
            Value::String(splice(s, inputs))
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| interpolate(x, inputs)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (splice(k, inputs), interpolate(x, inputs))).collect()),
        other => other.clone(),
    }
}

fn splice(s: &str, inputs: &Map<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("$[[ inputs.") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "$[[ inputs.".len()..];
        let end = after.find(" ]]").unwrap_or_else(|| panic!("unterminated interpolation in {s:?}"));
        let name = &after[..end];
        match inputs.get(name).unwrap_or_else(|| panic!("unknown input {name:?} in {s:?}")) {
            Value::String(x) => out.push_str(x),
            other => out.push_str(&other.to_string()),
        }
        rest = &after[end + 3..];
    }
    out.push_str(rest);
    out
}

/// GitLab's `extends`: the job is deep-merged over the hidden job it names, the job winning.
/// The schema checks hidden jobs loosely (they may be any YAML), so the merged jobs are what to
/// validate, as GitLab does.
fn resolve_extends(doc: &Value) -> Value {
    fn merge(base: &Value, over: &Value) -> Value {
        match (base, over) {
            (Value::Object(b), Value::Object(o)) => {
                let mut out = b.clone();
                for (k, v) in o {
                    let merged = out.get(k).map(|x| merge(x, v)).unwrap_or_else(|| v.clone());
                    out.insert(k.clone(), merged);
                }
                Value::Object(out)
            }
            (_, o) => o.clone(),
        }
    }
    let Value::Object(top) = doc else { return doc.clone() };
    let mut out = top.clone();
    for (name, job) in top {
        let Some(base) = job.get("extends").and_then(Value::as_str) else { continue };
        let base = top.get(base).unwrap_or_else(|| panic!("{name} extends {base}, which does not exist"));
        let mut merged = merge(base, job);
        if let Value::Object(m) = &mut merged {
            m.remove("extends");
        }
        out.insert(name.clone(), merged);
    }
    Value::Object(out)
}

/// The component's two documents, and the defaults of its inputs.
fn component() -> (Value, Value, Map<String, Value>) {
    let docs = documents("ci-templates/patrol.yml");
    assert_eq!(docs.len(), 2, "a component is a spec header and a body, separated by ---");
    let inputs = docs[0]["spec"]["inputs"].as_object().cloned().unwrap_or_default();
    assert!(!inputs.is_empty(), "the header declares inputs");
    let defaults = inputs.iter().map(|(k, spec)| (k.clone(), spec["default"].clone())).collect();
    (docs[0].clone(), docs[1].clone(), defaults)
}

fn with(defaults: &Map<String, Value>, changes: &[(&str, Value)]) -> Map<String, Value> {
    let mut inputs = defaults.clone();
    for (k, v) in changes {
        assert!(inputs.contains_key(*k), "no input {k}");
        inputs.insert((*k).to_owned(), v.clone());
    }
    inputs
}

#[test]
fn the_component_header_and_body_validate_with_defaults_and_with_every_choice() {
    let (header, body, defaults) = component();
    assert_valid("the component header", &header);
    let choices: Vec<(&str, Map<String, Value>)> = vec![
        ("defaults", defaults.clone()),
        ("self-rotation", with(&defaults, &[("self_variable", json!("MY_TOKEN")), ("retry_ref", json!("main"))])),
        ("dry run, 4 shards", with(&defaults, &[("dry_run", json!(true)), ("parallel", json!(4))])),
        ("renamed", with(&defaults, &[("job_prefix", json!("tokens")), ("stage", json!("deploy"))])),
    ];
    for (what, inputs) in choices {
        let doc = resolve_extends(&interpolate(&body, &inputs));
        assert_valid(&format!("the component body ({what})"), &doc);
        let prefix = inputs["job_prefix"].as_str().unwrap_or_default();
        assert!(doc.get(format!("{prefix}-rotate")).is_some(), "{what}: jobs are named by the prefix");
    }
}

#[test]
fn every_input_has_a_description_a_default_and_a_type_that_fits_it() {
    let (header, body, _) = component();
    let inputs = header["spec"]["inputs"].as_object().cloned().unwrap_or_default();
    let text = body.to_string();
    for (name, spec) in &inputs {
        assert!(spec["description"].as_str().is_some_and(|d| !d.is_empty()), "{name} has no description");
        let default = &spec["default"];
        let fits = match spec["type"].as_str().unwrap_or("string") {
            "number" => default.is_number(),
            "boolean" => default.is_boolean(),
            _ => default.is_string(),
        };
        assert!(fits, "{name}: default {default} does not fit its type");
        assert!(text.contains(&format!("$[[ inputs.{name} ]]")), "input {name} is declared but never used");
    }
}

#[test]
fn the_component_jobs_keep_their_promises() {
    let (_, body, defaults) = component();
    let doc = resolve_extends(&interpolate(&body, &defaults));
    let job = |name: &str| -> Value { doc.get(name).cloned().unwrap_or_else(|| panic!("no job {name}")) };
    let rules = |j: &Value| j["rules"].to_string();
    let rotate = job("patrol-rotate");
    assert!(rules(&rotate).contains(r#"$CI_PIPELINE_SOURCE == \"schedule\""#), "{}", rules(&rotate));
    let plan = job("patrol-plan");
    assert!(rules(&plan).contains("merge_request_event") && plan["rules"][0]["changes"][0] == "patrol.toml");
    assert!(plan["script"].to_string().contains("patrol plan"));
    let emergency = job("patrol-emergency");
    assert_eq!(emergency["rules"][0]["if"], r#"$CI_PIPELINE_SOURCE == "web""#);
    assert_eq!(emergency["rules"][0]["when"], "manual");
    assert!(emergency["manual_confirmation"].as_str().is_some_and(|m| m.contains("PATROL_FORCE")));
    assert!(emergency["script"].to_string().contains("--force"));
    assert!(doc["variables"]["PATROL_FORCE"]["description"].is_string(), "the run-pipeline form offers PATROL_FORCE");
    for (name, j) in [("rotate", &rotate), ("plan", &plan), ("emergency", &emergency)] {
        assert_eq!(j["resource_group"], "patrol", "{name}: one resource group for every job");
        assert_eq!(j["interruptible"], false, "{name}");
        assert_eq!(j["artifacts"]["when"], "always", "{name}");
        assert_eq!(j["artifacts"]["access"], "developer", "{name}");
        assert_eq!(j["artifacts"]["reports"]["junit"], "patrol-junit.xml", "{name}");
        assert_eq!(j["artifacts"]["paths"], json!(["patrol-report.json"]), "{name}: nothing else is kept");
        assert!(j["artifacts"]["reports"].get("dotenv").is_none(), "{name}: no dotenv, it could carry a secret");
        assert_eq!(j["image"]["entrypoint"], json!([""]), "{name}");
    }
    // No job ever passes a secret on the command line: the credential stays in the environment.
    for line in doc.to_string().split("\\n") {
        assert!(!line.contains("PATROL_TOKEN"), "{line}");
    }
}

#[test]
fn this_projects_pipeline_validates_and_includes_the_component_with_inputs_it_declares() {
    let docs = documents(".gitlab-ci.yml");
    assert_eq!(docs.len(), 1);
    let pipeline = &docs[0];
    assert_valid(".gitlab-ci.yml", pipeline);
    let (_, body, defaults) = component();
    let include = pipeline["include"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["local"] == "/ci-templates/patrol.yml"))
        .unwrap_or_else(|| panic!("the pipeline includes the component from this commit"));
    for name in include["inputs"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
        assert!(defaults.contains_key(&name), "the include passes {name}, which the component does not declare");
    }
    assert_eq!(include["inputs"]["dry_run"], true);
    // What GitLab builds: the included component, interpolated with these inputs, under the file.
    let given: Vec<(&str, Value)> = include["inputs"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v.clone())).collect())
        .unwrap_or_default();
    let mut combined = interpolate(&body, &with(&defaults, &given)).as_object().cloned().unwrap_or_default();
    for (k, v) in pipeline.as_object().cloned().unwrap_or_default() {
        let merged = match (combined.get(&k), &v) {
            (Some(Value::Object(base)), Value::Object(over)) => {
                let mut m = base.clone();
                m.extend(over.clone());
                Value::Object(m)
            }
            _ => v,
        };
        combined.insert(k, merged);
    }
    let combined = resolve_extends(&Value::Object(combined));
    assert_valid(".gitlab-ci.yml with the component included", &combined);
    assert_eq!(combined["component-check"]["resource_group"], "patrol");
    assert_eq!(combined["component-check-rotate"]["rules"], json!([{"when": "never"}]));
    for job in ["fmt", "clippy", "test", "binary", "container-image", "component-check", "release"] {
        assert!(pipeline.get(job).is_some(), "no {job} job");
    }
    assert_eq!(pipeline["test"]["artifacts"]["reports"]["junit"], "target/nextest/ci/junit.xml");
    assert!(pipeline["release"]["release"]["tag_name"] == "$CI_COMMIT_TAG");
}

#[test]
fn the_interpolation_used_here_rejects_unknown_inputs() {
    let inputs = Map::from_iter([("a".to_owned(), json!(2))]);
    assert_eq!(interpolate(&json!({"x-$[[ inputs.a ]]": "$[[ inputs.a ]]"}), &inputs), json!({"x-2": 2}));
    let unknown = std::panic::catch_unwind(|| interpolate(&json!("$[[ inputs.b ]]"), &inputs));
    assert!(unknown.is_err());
}
