//! The supply-chain rules of `deny.toml`, enforced from `cargo metadata` so that CI needs no
//! extra tool: every crate comes from crates.io at the version `Cargo.lock` pins, under a
//! licence on the list, and none of the banned crates is in the tree.

use serde_json::Value;

fn policy() -> toml::Table {
    let text = std::fs::read_to_string(super::root().join("deny.toml")).unwrap_or_else(|e| panic!("deny.toml: {e}"));
    text.parse().unwrap_or_else(|e| panic!("deny.toml: {e}"))
}

/// `deny.toml`'s `[licenses] allow`, read from the file so the two cannot drift apart.
fn allowed_licenses(policy: &toml::Table) -> Vec<String> {
    policy
        .get("licenses")
        .and_then(|l| l.get("allow"))
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// `deny.toml`'s `[bans] deny` crate names.
fn banned(policy: &toml::Table) -> Vec<String> {
    policy
        .get("bans")
        .and_then(|b| b.get("deny"))
        .and_then(|d| d.as_array())
        .map(|d| d.iter().filter_map(|e| e.get("name").and_then(|n| n.as_str()).map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Whether an SPDX expression (`A OR B`, `(A OR B) AND C`, `A/B`) can be met with `allowed`.
pub fn acceptable(expression: &str, allowed: &[String]) -> bool {
    let expression = expression.replace('/', " OR ");
    // Split on top-level AND first: every part must be met; each part is an OR of choices.
    let mut depth = 0;
    let mut parts = Vec::new();
    let mut start = 0;
    let bytes = expression.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            _ if depth == 0 && expression[i..].starts_with(" AND ") => {
                parts.push(&expression[start..i]);
                start = i + 5;
                i += 4;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&expression[start..]);
    parts.iter().all(|part| {
        let part = part.trim().trim_start_matches('(').trim_end_matches(')');
        part.split(" OR ").any(|choice| {
            let choice = choice.trim().trim_start_matches('(').trim_end_matches(')').trim();
            allowed.iter().any(|a| a == choice)
        })
    })
}

fn metadata() -> Value {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(super::root())
        .output()
        .unwrap_or_else(|e| panic!("cargo metadata: {e}"));
    assert!(output.status.success(), "cargo metadata --locked: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("cargo metadata: {e}"))
}

#[test]
fn every_crate_is_from_crates_io_under_an_allowed_licence_and_none_is_banned() {
    assert!(super::root().join("Cargo.lock").exists(), "Cargo.lock is committed");
    let policy = policy();
    let allowed = allowed_licenses(&policy);
    let banned = banned(&policy);
    assert!(allowed.contains(&"MIT".to_string()) && banned.contains(&"openssl".to_string()));
    let meta = metadata();
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    for p in &packages {
        let name = p["name"].as_str().unwrap_or("?");
        let version = p["version"].as_str().unwrap_or("?");
        if name == "patrol" && p["source"].is_null() {
            continue;
        }
        let source = p["source"].as_str().unwrap_or("(local)");
        if source != "registry+https://github.com/rust-lang/crates.io-index" {
            problems.push(format!("{name} {version} comes from {source}"));
        }
        match p["license"].as_str() {
            Some(l) if acceptable(l, &allowed) => {}
            other => problems.push(format!("{name} {version} is licensed {other:?}, not on deny.toml's list")),
        }
        if banned.iter().any(|b| b == name) {
            problems.push(format!("{name} {version} is banned in deny.toml"));
        }
    }
    println!("supply chain: {} crates checked for source, licence and bans", packages.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn spdx_expressions_are_read_as_cargo_deny_reads_them() {
    let allowed = vec!["MIT".to_string(), "Apache-2.0".to_string(), "ISC".to_string()];
    assert!(acceptable("MIT OR Apache-2.0", &allowed));
    assert!(acceptable("Apache-2.0 AND ISC", &allowed));
    assert!(acceptable("MIT/Apache-2.0", &allowed));
    assert!(acceptable("(MIT OR Apache-2.0) AND ISC", &allowed));
    assert!(!acceptable("GPL-3.0", &allowed));
    assert!(!acceptable("MIT AND GPL-3.0", &allowed));
    assert!(!acceptable("(MIT OR Apache-2.0) AND GPL-3.0", &allowed));
}
