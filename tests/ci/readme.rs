//! The README's CI setups, as a user pastes them: the blocks marked `<!-- e2e: NAME -->`, which
//! `.ci/component-e2e.sh` also runs under gitlab-ci-local. Here: they name a release that is
//! patrol's version, pass only inputs the component declares, give the required image, and what
//! GitLab builds from them validates against its schema.

use super::{assert_valid, cargo_version, component, interpolate, resolve_extends, root, to_json, with};
use serde_json::{Map, Value};
use yaml_rust2::YamlLoader;

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap_or_else(|e| panic!("README.md: {e}"))
}

/// The fenced blocks marked `<!-- e2e: NAME -->` on the line before, by name.
fn setups(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.trim().strip_prefix("<!-- e2e: ").and_then(|r| r.strip_suffix(" -->")) else {
            continue;
        };
        assert_eq!(lines.get(i + 1).map(|l| l.trim()), Some("```yaml"), "{name}: a ```yaml block follows the marker");
        let body: Vec<&str> = lines[i + 2..].iter().take_while(|l| l.trim() != "```").copied().collect();
        out.push((name.to_owned(), body.join("\n") + "\n"));
    }
    out
}

/// Every include of a setup: the include, and the inputs it
/// passes.
fn includes(name: &str, doc: &Value) -> Vec<(Value, Map<String, Value>)> {
    let list = doc["include"].as_array().cloned().unwrap_or_else(|| panic!("{name}: no include list"));
    list.into_iter()
        .map(|i| {
            let inputs = i["inputs"].as_object().cloned().unwrap_or_default();
            (i, inputs)
        })
        .collect()
}

#[test]
fn the_readme_setups_include_patrols_release_and_validate_as_gitlab_builds_them() {
    let version = cargo_version();
    let text = readme();
    let found = setups(&text);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["setup-1", "setup-2"], "the setups .ci/component-e2e.sh runs");
    let (_, body, given) = component();
    let (mut by_project, mut by_component) = (0, 0);
    for (name, yaml) in &found {
        let docs = YamlLoader::load_from_str(yaml).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"));
        assert_eq!(docs.len(), 1, "{name}");
        let doc = to_json(&docs[0]);
        assert_valid(name, &doc);
        for (include, inputs) in includes(name, &doc) {
            if let Some(project) = include["project"].as_str() {
                by_project += 1;
                assert_eq!(project, "security/patrol", "{name}");
                assert_eq!(include["file"], "/ci-templates/patrol.yml", "{name}: the documented path");
                assert_eq!(
                    include["ref"],
                    Value::String(version.clone()),
                    "{name}: ref is a release: Cargo.toml's version"
                );
            } else if let Some(path) = include["component"].as_str() {
                by_component += 1;
                assert_eq!(path, format!("$CI_SERVER_FQDN/security/patrol/patrol@{version}"), "{name}");
            } else {
                panic!("{name}: {include} includes neither the project file nor the component");
            }
            let image = inputs.get("image").and_then(Value::as_str).unwrap_or_else(|| panic!("{name}: no image"));
            assert_eq!(image, format!("$CI_REGISTRY/security/patrol:{version}"), "{name}: the release's image");
            for key in inputs.keys() {
                assert!(given.contains_key(key), "{name} passes {key}, which the component does not declare");
            }
            let chosen: Vec<(&str, Value)> = inputs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let mut built = interpolate(&body, &with(&given, &chosen)).as_object().cloned().unwrap_or_default();
            for (k, v) in doc.as_object().cloned().unwrap_or_default() {
                if k != "include" {
                    built.insert(k, v);
                }
            }
            assert_valid(&format!("{name} as GitLab builds it"), &resolve_extends(&Value::Object(built)));
        }
    }
    assert!(by_project > 0 && by_component > 0, "the setups show both ways to include the component");
}

/// Every version the README's CI section gives for patrol (a ref, a component version, an image
/// tag) is Cargo.toml's: a tag that exists once that version is released.
#[test]
fn every_patrol_version_in_the_readme_ci_section_is_cargos() {
    let version = cargo_version();
    let text = readme();
    let start = text.find("## Use it in GitLab CI").unwrap_or_else(|| panic!("no CI section"));
    let section = &text[start..text[start..].find("\n## Dependencies").map_or(text.len(), |e| start + e)];
    let mut named = Vec::new();
    for line in section.lines() {
        let line = line.split(" #").next().unwrap_or_default();
        if let Some(r) = line.trim().strip_prefix("ref: ") {
            named.push(r.trim().to_owned());
        }
        for marker in ["/patrol@", "/patrol:", "patrol/patrol:"] {
            for (at, _) in line.match_indices(marker) {
                let rest = &line[at + marker.len()..];
                let v: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.').collect();
                if v.chars().next().is_some_and(|c| c.is_ascii_digit() || c == 'v') {
                    named.push(v);
                }
            }
        }
    }
    assert!(named.len() >= 4, "the section names patrol's release: {named:?}");
    for v in &named {
        assert_eq!(v, &version, "the README names patrol {v}, but Cargo.toml says {version}");
    }
}

#[test]
fn setups_are_read_from_their_markers_only() {
    let text = "x\n<!-- e2e: a -->\n```yaml\nk: 1\n```\n```yaml\nnot: marked\n```\n";
    assert_eq!(setups(text), vec![("a".to_owned(), "k: 1\n".to_owned())]);
}
