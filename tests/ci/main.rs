//! The CI files validate against GitLab's CI schema (`gitlab-ci.json` here, see SOURCE.txt), as
//! GitLab checks them: a component's header as written, and its body after GitLab has
//! interpolated the inputs (with the defaults, and with every non-default choice a user can make).
//! Then the promises the component makes are checked job by job: the resource groups of the
//! shards, the documented include path that forwards to the component, and the README's setups.

use serde_json::{json, Map, Value};
use std::path::Path;
use yaml_rust2::{Yaml, YamlLoader};

mod readme;
mod shards;
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

/// GitLab's `extends`: the job is deep-merged over the jobs it names (one, or a list merged in
/// order), each of them resolved first, the job winning. The schema checks hidden jobs loosely
/// (they may be any YAML), so the merged jobs are what to validate, as GitLab does.
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
    fn resolved(top: &Map<String, Value>, name: &str, depth: usize) -> Value {
        assert!(depth <= 11, "{name}: GitLab allows 11 levels of extends");
        let job = top.get(name).unwrap_or_else(|| panic!("extends names {name}, which does not exist"));
        let bases: Vec<&str> = match job.get("extends") {
            None => return job.clone(),
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            Some(other) => panic!("{name}: extends {other} is neither a name nor a list of names"),
        };
        let mut merged = Value::Object(Map::new());
        for base in bases {
            merged = merge(&merged, &resolved(top, base, depth + 1));
        }
        let mut merged = merge(&merged, job);
        if let Value::Object(m) = &mut merged {
            m.remove("extends");
        }
        merged
    }
    let Value::Object(top) = doc else { return doc.clone() };
    let out = top.keys().map(|name| (name.clone(), resolved(top, name, 0))).collect();
    Value::Object(out)
}

/// The value the tests give the one input without a default: the component has no default image.
const TEST_IMAGE: &str = "registry.example.com/security/patrol:0.1.0";

/// The component's two documents, and the inputs of a user who gives only what is required.
fn component() -> (Value, Value, Map<String, Value>) {
    component_at("templates/patrol.yml")
}

fn component_at(relative: &str) -> (Value, Value, Map<String, Value>) {
    let docs = documents(relative);
    assert_eq!(docs.len(), 2, "{relative}: a component is a spec header and a body, separated by ---");
    let inputs = docs[0]["spec"]["inputs"].as_object().cloned().unwrap_or_default();
    assert!(!inputs.is_empty(), "{relative}: the header declares inputs");
    let given = inputs
        .iter()
        .map(|(k, spec)| match spec.get("default") {
            Some(default) => (k.clone(), default.clone()),
            None if k == "image" => (k.clone(), json!(TEST_IMAGE)),
            None => panic!("{relative}: input {k} has no default; give the tests a value for it"),
        })
        .collect();
    (docs[0].clone(), docs[1].clone(), given)
}

fn with(defaults: &Map<String, Value>, changes: &[(&str, Value)]) -> Map<String, Value> {
    let mut inputs = defaults.clone();
    for (k, v) in changes {
        assert!(inputs.contains_key(*k), "no input {k}");
        inputs.insert((*k).to_owned(), v.clone());
    }
    inputs
}

/// Every input changed to another value of its type, so that an input the wrapper dropped or
/// mixed up shows.
fn every_input_changed(given: &Map<String, Value>) -> Map<String, Value> {
    given
        .iter()
        .map(|(k, v)| {
            let other = match v {
                Value::String(s) if s.is_empty() => json!(format!("{}_X", k.to_uppercase())),
                Value::String(s) => json!(format!("{s}-x")),
                Value::Number(n) => json!(n.as_i64().unwrap_or(0) + 2),
                Value::Bool(b) => json!(!b),
                other => panic!("input {k}: no other value for {other}"),
            };
            (k.clone(), other)
        })
        .collect()
}

#[test]
fn the_component_header_and_body_validate_with_defaults_and_with_every_choice() {
    let (header, body, defaults) = component();
    assert_valid("the component header", &header);
    let choices: Vec<(&str, Map<String, Value>)> = vec![
        ("defaults", defaults.clone()),
        ("self-rotation", with(&defaults, &[("self_variable", json!("MY_TOKEN")), ("retry_ref", json!("main"))])),
        (
            "self-rotation in an environment",
            with(&defaults, &[("self_variable", json!("MY_TOKEN")), ("environment_scope", json!("production"))]),
        ),
        ("dry run, 4 shards", with(&defaults, &[("dry_run", json!(true)), ("parallel", json!(4))])),
        ("renamed", with(&defaults, &[("job_prefix", json!("tokens")), ("stage", json!("deploy"))])),
        ("every input changed", every_input_changed(&defaults)),
    ];
    for (what, inputs) in choices {
        let doc = resolve_extends(&interpolate(&body, &inputs));
        assert_valid(&format!("the component body ({what})"), &doc);
        let prefix = inputs["job_prefix"].as_str().unwrap_or_default();
        assert!(doc.get(format!("{prefix}-rotate")).is_some(), "{what}: jobs are named by the prefix");
    }
}

/// A component input without a default is required (GitLab fails the pipeline without it), and
/// the image is the one that must be: no default that points at a namespace someone else controls.
#[test]
fn every_input_is_described_and_only_the_image_is_required() {
    let (header, body, _) = component();
    let inputs = header["spec"]["inputs"].as_object().cloned().unwrap_or_default();
    let text = body.to_string();
    for (name, spec) in &inputs {
        assert!(spec["description"].as_str().is_some_and(|d| !d.is_empty()), "{name} has no description");
        assert!(text.contains(&format!("$[[ inputs.{name} ]]")), "input {name} is declared but never used");
        if name == "image" {
            assert!(spec.get("default").is_none(), "image has a default ({}): it must be required", spec["default"]);
            continue;
        }
        let default = &spec["default"];
        let fits = match spec["type"].as_str().unwrap_or("string") {
            "number" => default.is_number(),
            "boolean" => default.is_boolean(),
            _ => default.is_string(),
        };
        assert!(fits, "{name}: default {default} does not fit its type");
    }
    assert!(inputs.contains_key("image"), "the component declares its image input");
}

/// `ci-templates/patrol.yml`, the path `include: project:` has always used, includes the
/// component from the same project and ref and forwards every input: same header, and what GitLab
/// builds through it is what it builds from the component.
#[test]
fn the_documented_include_path_is_a_thin_wrapper_that_forwards_every_input() {
    let (header, body, given) = component();
    let (wrapper_header, wrapper_body, _) = component_at("ci-templates/patrol.yml");
    assert_eq!(wrapper_header, header, "the wrapper's spec is the component's, word for word");
    let names: Vec<String> =
        header["spec"]["inputs"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    let forwarded: Map<String, Value> =
        names.iter().map(|n| (n.clone(), json!(format!("$[[ inputs.{n} ]]")))).collect();
    assert_eq!(
        wrapper_body,
        json!({"include": [{"local": "/templates/patrol.yml", "inputs": forwarded}]}),
        "the wrapper holds no job of its own, only the include of the component with every input"
    );
    for (what, inputs) in [("the required inputs", given.clone()), ("every input changed", every_input_changed(&given))]
    {
        let through = interpolate(&wrapper_body, &inputs);
        assert_valid(&format!("the wrapper's body ({what})"), &through);
        let passed = through["include"][0]["inputs"].as_object().cloned().unwrap_or_default();
        assert_eq!(passed, inputs, "{what}: the wrapper passes each input on, with its type");
        assert_eq!(interpolate(&body, &passed), interpolate(&body, &inputs), "{what}");
    }
}

/// Each `patrol ...` command line of the component, with what its arguments are built from.
fn patrol_invocations(doc: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    for job in doc.as_object().map(|m| m.values().cloned().collect::<Vec<_>>()).unwrap_or_default() {
        for key in ["before_script", "script"] {
            for item in job[key].as_array().cloned().unwrap_or_default() {
                lines.extend(item.as_str().unwrap_or_default().lines().map(str::to_owned));
            }
        }
    }
    lines
}

#[test]
fn the_component_jobs_keep_their_promises() {
    let (_, body, defaults) = component();
    let doc = resolve_extends(&interpolate(&body, &defaults));
    let job = |name: &str| -> Value { doc.get(name).cloned().unwrap_or_else(|| panic!("no job {name}")) };
    let rules = |j: &Value| j["rules"].to_string();
    let rotate = job("patrol-rotate");
    assert!(rules(&rotate).contains(r#"$CI_PIPELINE_SOURCE == \"schedule\""#), "{}", rules(&rotate));
    assert_eq!(rotate["image"]["name"], TEST_IMAGE, "the image is the one given");
    let plan = job("patrol-plan");
    assert!(rules(&plan).contains("merge_request_event") && plan["rules"][1]["changes"][0] == "patrol.toml");
    assert!(plan["script"].to_string().contains("patrol plan"));
    assert!(plan.get("resource_group").is_none(), "plan only reads: it waits for no rotation");
    // The emergency: one manual job behind a confirmation, only in a web pipeline with
    // PATROL_FORCE set, that releases the sharded rotation.
    let gate = job("patrol-emergency");
    let web_and_force = r#"$CI_PIPELINE_SOURCE == "web" && $PATROL_FORCE"#;
    assert_eq!(gate["rules"], json!([{"if": web_and_force, "when": "manual"}]));
    assert_eq!(gate["allow_failure"], false, "the pipeline waits for the decision");
    assert!(gate["manual_confirmation"].as_str().is_some_and(|m| m.contains("PATROL_FORCE")));
    assert!(gate.get("resource_group").is_none() && !gate["script"].to_string().contains("patrol rotate"));
    let emergency = job("patrol-emergency-rotate");
    assert_eq!(emergency["needs"], json!(["patrol-emergency"]), "it starts only once the manual job ran");
    assert_eq!(emergency["rules"][1], json!({"if": web_and_force}));
    assert!(emergency["script"].to_string().contains("--force"));
    assert!(doc["variables"]["PATROL_FORCE"]["description"].is_string(), "the run-pipeline form offers PATROL_FORCE");
    assert_eq!(doc["variables"]["PATROL_FORCE"]["value"], "", "no emergency unless someone asks for one");
    let variants: Vec<(String, Value)> = ["rotate", "plan", "emergency-rotate"]
        .iter()
        .map(|n| (format!("{n}-in-environment"), job(&format!("patrol-{n}-in-environment"))))
        .collect();
    let mut all =
        vec![("rotate".to_owned(), rotate), ("plan".to_owned(), plan), ("emergency-rotate".to_owned(), emergency)];
    all.extend(variants);
    for (name, j) in &all {
        assert_eq!(j["interruptible"], false, "{name}");
        assert_eq!(j["artifacts"]["when"], "always", "{name}");
        assert_eq!(j["artifacts"]["access"], "developer", "{name}");
        assert_eq!(j["artifacts"]["reports"]["junit"], "patrol-junit.xml", "{name}");
        assert_eq!(j["artifacts"]["paths"], json!(["patrol-report.json"]), "{name}: nothing else is kept");
        assert!(j["artifacts"]["reports"].get("dotenv").is_none(), "{name}: no dotenv, it could carry a secret");
        assert_eq!(j["image"]["entrypoint"], json!([""]), "{name}");
        if !name.starts_with("plan") {
            assert_eq!(j["resource_group"], "patrol-shard-$CI_NODE_INDEX", "{name}: the shard's own group");
            assert_eq!(j["parallel"], 1, "{name}");
        }
    }
    // No secret on a command line: patrol's arguments are built with `set --` from names and
    // settings only, and every patrol command takes them as "$@", nothing else expanded.
    let lines = patrol_invocations(&doc);
    let mut invocations = 0;
    for line in &lines {
        if line.trim_start().starts_with("set --") {
            assert!(!line.contains("TOKEN"), "a credential in patrol's arguments: {line}");
        }
        for (at, _) in line.match_indices("patrol ").filter(|(at, _)| {
            let rest = &line[at + "patrol ".len()..];
            rest.starts_with("plan") || rest.starts_with("rotate")
        }) {
            invocations += 1;
            let args = line[at..].split(';').next().unwrap_or_default().replace("\"$@\"", "");
            assert!(!args.contains('$'), "patrol gets only \"$@\" and literal flags: {line}");
        }
    }
    assert!(invocations >= 4, "the patrol commands of rotate, plan and emergency-rotate were found ({invocations})");
    // The read-only credential reaches patrol through the environment, under the name it reads.
    assert!(job("patrol-plan")["script"].to_string().contains(r#"export \"$patrol_credential=$PATROL_PLAN_TOKEN\""#));
}

/// GitLab gives a job the variable of the environment scope that matches its `environment:` (the
/// `*` one without an environment). In self-rotation with a scope naming an environment, each job
/// runs as its `-in-environment` variant in that environment; otherwise as itself, without one.
#[test]
fn self_rotation_jobs_run_in_the_environment_whose_scope_they_write() {
    let (_, body, defaults) = component();
    // GitLab's environment-name characters (`Gitlab::Regex.environment_name_regex`): checked on
    // the file as written, so a name that is only "*" would fail the whole pipeline.
    let allowed =
        |name: &str| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_/${}. -".contains(c));
    for scope in ["*", "production", "review/*"] {
        let inputs = with(&defaults, &[("self_variable", json!("MY_TOKEN")), ("environment_scope", json!(scope))]);
        let doc = resolve_extends(&interpolate(&body, &inputs));
        for name in ["rotate", "plan", "emergency-rotate"] {
            let plain = &doc[format!("patrol-{name}")];
            let variant = &doc[format!("patrol-{name}-in-environment")];
            assert!(plain.get("environment").is_none(), "{name}: the plain job has no environment");
            assert_eq!(variant["environment"], json!({"name": "$PATROL_SELF_SCOPE", "action": "access"}), "{name}");
            assert!(allowed(variant["environment"]["name"].as_str().unwrap_or_default()), "{name}");
            assert_eq!(variant["variables"]["PATROL_SELF_SCOPE"], scope, "{name}: the name is the scope");
            // Exactly one of the two runs: the plain job first excludes what the variant requires.
            let only_in_environment = r"$PATROL_SELF && $PATROL_SELF_SCOPE !~ /\*/";
            assert_eq!(plain["rules"][0], json!({"if": only_in_environment, "when": "never"}), "{name}");
            let mut expected = plain["rules"][1].clone();
            let source = expected["if"].as_str().unwrap_or_default().to_owned();
            expected["if"] = json!(format!("{only_in_environment} && {source}"));
            assert_eq!(variant["rules"], json!([expected]), "{name}");
            // Otherwise the variant is the same job.
            let strip = |j: &Value| {
                let mut j = j.clone();
                if let Value::Object(m) = &mut j {
                    m.remove("rules");
                    m.remove("environment");
                }
                j
            };
            assert_eq!(strip(variant), strip(plain), "{name}");
        }
    }
    // What the rules decide: for each mode and pipeline source, exactly one of the two jobs is
    // created, and it is the variant exactly when self-rotation writes a scope naming an environment.
    for (self_variable, scope) in
        [("", "*"), ("", "production"), ("MY_TOKEN", "*"), ("MY_TOKEN", "review/*"), ("MY_TOKEN", "production")]
    {
        let inputs = with(&defaults, &[("self_variable", json!(self_variable)), ("environment_scope", json!(scope))]);
        let doc = resolve_extends(&interpolate(&body, &inputs));
        let in_environment = !self_variable.is_empty() && !scope.contains('*');
        for (name, source) in [("rotate", "schedule"), ("plan", "merge_request_event"), ("emergency-rotate", "web")] {
            let created = |job: &Value, force: &str| {
                let mut vars: Map<String, Value> = job["variables"].as_object().cloned().unwrap_or_default();
                vars.insert("CI_PIPELINE_SOURCE".into(), json!(source));
                vars.insert("PATROL_FORCE".into(), json!(force));
                job_is_created(&job["rules"], &vars)
            };
            let (plain, variant) = (&doc[format!("patrol-{name}")], &doc[format!("patrol-{name}-in-environment")]);
            assert_eq!(
                (created(plain, "all"), created(variant, "all")),
                (!in_environment, in_environment),
                "{name} in a {source} pipeline, self_variable {self_variable:?}, scope {scope:?}"
            );
            if source == "web" {
                assert!(!created(plain, "") && !created(variant, ""), "{name}: no emergency without PATROL_FORCE");
                let gate = &doc["patrol-emergency"];
                let gate_created = |force: &str| {
                    let vars = Map::from_iter([
                        ("CI_PIPELINE_SOURCE".to_owned(), json!(source)),
                        ("PATROL_FORCE".to_owned(), json!(force)),
                    ]);
                    job_is_created(&gate["rules"], &vars)
                };
                assert!(gate_created("all") && !gate_created(""), "the manual job comes with PATROL_FORCE only");
            }
            // No other pipeline source creates either.
            let mut vars: Map<String, Value> = plain["variables"].as_object().cloned().unwrap_or_default();
            vars.insert("CI_PIPELINE_SOURCE".into(), json!("push"));
            vars.insert("PATROL_FORCE".into(), json!("all"));
            assert!(!job_is_created(&plain["rules"], &vars) && !job_is_created(&variant["rules"], &vars), "{name}");
        }
    }
}

/// GitLab's `rules`, for the expressions this component uses: the first rule whose `if` holds
/// decides (`when: never` excludes the job); no rule holding excludes it. An `if` is clauses
/// joined by `&&`: `$X` (set and not empty), `$X == "s"`, `$X != "s"`, and `$X =~ /p/`, `$X !~ /p/`
/// for a pattern without regex operators but escaped ones (`\*`). `changes:` is taken as met.
fn job_is_created(rules: &Value, vars: &Map<String, Value>) -> bool {
    let var = |name: &str| vars.get(name.trim_start_matches('$')).and_then(Value::as_str).unwrap_or("").to_owned();
    let clause = |c: &str| -> bool {
        let c = c.trim();
        if let Some((name, rest)) = c.split_once(' ') {
            let (op, operand) = rest.trim().split_at(2);
            let operand = operand.trim();
            let text = match operand.strip_prefix('"').and_then(|o| o.strip_suffix('"')) {
                Some(t) => t.to_owned(),
                None => {
                    let p = operand.strip_prefix('/').and_then(|o| o.strip_suffix('/'));
                    let p = p.unwrap_or_else(|| panic!("unsupported operand in {c:?}"));
                    let literal = p.replace("\\*", "*");
                    assert!(
                        !literal.contains(['.', '+', '?', '[', '(', '^', '$', '|'])
                            && !p.replace("\\*", "").contains('*'),
                        "unsupported pattern in {c:?}"
                    );
                    literal
                }
            };
            match op {
                "==" => var(name) == text,
                "!=" => var(name) != text,
                "=~" => var(name).contains(&text),
                "!~" => !var(name).contains(&text),
                _ => panic!("unsupported operator in {c:?}"),
            }
        } else {
            !var(c).is_empty()
        }
    };
    for rule in rules.as_array().cloned().unwrap_or_default() {
        let holds = rule["if"].as_str().is_none_or(|e| e.split("&&").all(clause));
        if holds {
            return rule["when"] != "never";
        }
    }
    false
}

/// The version in Cargo.toml: patrol's, its release tag's and its component's.
fn cargo_version() -> String {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap_or_else(|e| panic!("Cargo.toml: {e}"));
    let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("Cargo.toml: {e}"));
    table["package"]["version"].as_str().unwrap_or_else(|| panic!("Cargo.toml has no package version")).to_owned()
}

#[test]
fn this_projects_pipeline_validates_and_includes_the_component_with_inputs_it_declares() {
    let docs = documents(".gitlab-ci.yml");
    assert_eq!(docs.len(), 1);
    let pipeline = &docs[0];
    assert_valid(".gitlab-ci.yml", pipeline);
    let (_, body, defaults) = component();
    // GitLab's way to test a component in its own project: from this commit.
    let include = pipeline["include"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["component"] == "$CI_SERVER_FQDN/$CI_PROJECT_PATH/patrol@$CI_COMMIT_SHA"))
        .unwrap_or_else(|| panic!("the pipeline includes the component from this commit"));
    for name in include["inputs"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
        assert!(defaults.contains_key(&name), "the include passes {name}, which the component does not declare");
    }
    assert_eq!(include["inputs"]["dry_run"], true);
    assert!(include["inputs"].get("image").is_some(), "the required image is given");
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
    for job in ["rotate", "plan", "emergency", "emergency-rotate"] {
        assert_eq!(combined[format!("component-check-{job}")]["rules"], json!([{"when": "never"}]), "{job}");
    }
    for job in ["fmt", "clippy", "test", "binary", "container-image", "component-check", "release", "release-version"] {
        assert!(pipeline.get(job).is_some(), "no {job} job");
    }
    assert_eq!(pipeline["test"]["artifacts"]["reports"]["junit"], "target/nextest/ci/junit.xml");
    assert!(pipeline["release"]["release"]["tag_name"] == "$CI_COMMIT_TAG");
    // Releases are tagged with Cargo.toml's version as is: the rule that publishes takes it, and
    // the release waits for the job that refuses any other tag.
    let on_tag = pipeline[".on-tag"]["rules"][0]["if"].as_str().unwrap_or_default().to_owned();
    assert_eq!(on_tag, r"$CI_COMMIT_TAG =~ /^\d+\.\d+\.\d+$/");
    let version = cargo_version();
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        "{version}"
    );
    assert!(pipeline["release"]["needs"].as_array().is_some_and(|n| n.contains(&json!("release-version"))));
    assert!(pipeline["release-version"]["script"].to_string().contains("Cargo.toml"));
}

#[test]
fn the_interpolation_used_here_rejects_unknown_inputs() {
    let inputs = Map::from_iter([("a".to_owned(), json!(2))]);
    assert_eq!(interpolate(&json!({"x-$[[ inputs.a ]]": "$[[ inputs.a ]]"}), &inputs), json!({"x-2": 2}));
    let unknown = std::panic::catch_unwind(|| interpolate(&json!("$[[ inputs.b ]]"), &inputs));
    assert!(unknown.is_err());
}
