//! `discover --write-config`: a patrol.toml with one `[[token]]` per token identity (kind, owner
//! and name, as the config finds a token) that variables hold, with every variable holding any of
//! its tokens, and a retry of the default branch's pipeline of each project that holds it,
//! marked for review. A token that cannot be one (whose owner discover could not name, or whose
//! every copy is revoked) is written commented out, with the reason.

use super::{Discovery, Holds, State, TokenEntry, VariableRef};
use crate::config::TokenKind;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write;

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// An id for the config: the name in lower case, other characters as `-`, unique.
fn slug(name: &str, taken: &mut HashSet<String>) -> String {
    let mut base: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    while base.contains("--") {
        base = base.replace("--", "-");
    }
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "token" } else { base };
    let mut id = base.to_owned();
    let mut n = 2;
    while !taken.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// One config entry: the tokens of one identity.
struct Entry<'r> {
    tokens: Vec<&'r TokenEntry>,
    variables: BTreeSet<VariableRef>,
}

/// The text of the file.
pub fn render(discovery: &Discovery, generated_on: &str) -> (String, usize) {
    let report = &discovery.report;
    let mut entries: BTreeMap<(String, String, String), Entry> = BTreeMap::new();
    let mut orphans: Vec<&TokenEntry> = Vec::new();
    for t in report.tokens.iter().filter(|t| !t.variables.is_empty()) {
        match (t.kind, &t.owner) {
            (Some(kind), Some(owner)) => {
                let key = (kind.as_str().to_owned(), owner.to_ascii_lowercase(), t.name.clone());
                let e = entries.entry(key).or_insert_with(|| Entry { tokens: Vec::new(), variables: BTreeSet::new() });
                e.tokens.push(t);
                e.variables.extend(t.variables.iter().cloned());
            }
            _ => orphans.push(t),
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `patrol discover` on {generated_on} from {}.\n# One [[token]] per token that CI/CD variables hold, with every variable that holds it.\n# Review it before use: each pipeline is a guess (the default branch of each project that\n# holds the token), and blocks that patrol cannot manage as they are are commented out.\n# Check it with `patrol validate`, then see what would happen with `patrol plan`.",
        report.gitlab_url
    );
    let mut taken = HashSet::new();
    let mut written = 0;
    for e in entries.values() {
        // The entry's token: the active one, else the newest.
        let best = e.tokens.iter().min_by_key(|t| (t.state, std::cmp::Reverse(t.token_id))).copied();
        let Some(t) = best else { continue };
        let all_revoked = e.tokens.iter().all(|t| t.state == State::Revoked);
        // Several active tokens with one name: `plan` could not tell which is in use.
        let active: Vec<String> =
            e.tokens.iter().filter(|t| t.state == State::Active).map(|t| t.token_id.to_string()).collect();
        let several_active = active.len() > 1;
        // A service account whose group this walk did not see cannot be named as one: written as
        // its user's personal token it would need an administrator, and be a guess.
        let guessed_kind = t.kind == Some(TokenKind::ServiceAccount) && t.group.is_none();
        let mut block = String::new();
        let mut notes: Vec<String> = Vec::new();
        let id = slug(&t.name, &mut taken);
        let _ = writeln!(block, "[[token]]\nid = {}", quote(&id));
        let (kind, owner) = (t.kind.unwrap_or(TokenKind::Personal), t.owner.clone().unwrap_or_default());
        match (kind, &t.group) {
            (TokenKind::ServiceAccount, Some(group)) => {
                let _ = writeln!(
                    block,
                    "kind = \"service_account\"\nname = {}\nuser = {}\ngroup = {}",
                    quote(&t.name),
                    quote(&owner),
                    quote(group)
                );
            }
            (TokenKind::ServiceAccount, None) => {
                notes.push(format!(
                    "{owner} is a service account whose top-level group this walk did not see: set `group` to it and uncomment this block (walk its group to have it written)"
                ));
                let _ = writeln!(
                    block,
                    "kind = \"service_account\"\nname = {}\nuser = {}\ngroup = \"\"",
                    quote(&t.name),
                    quote(&owner)
                );
            }
            (TokenKind::Personal, _) => {
                let _ = writeln!(block, "kind = \"personal\"\nname = {}\nuser = {}", quote(&t.name), quote(&owner));
            }
            (TokenKind::Project, _) => {
                let _ = writeln!(block, "kind = \"project\"\nname = {}\nproject = {}", quote(&t.name), quote(&owner));
            }
            (TokenKind::Group, _) => {
                let _ = writeln!(block, "kind = \"group\"\nname = {}\ngroup = {}", quote(&t.name), quote(&owner));
            }
        }
        if !t.scopes.is_empty() {
            let scopes: Vec<String> = t.scopes.iter().map(|s| quote(s)).collect();
            let _ = writeln!(block, "scopes = [{}]", scopes.join(", "));
        }
        if let Some(m) = &t.managed {
            notes.push(format!("your config already manages this token as {m:?}"));
        }
        match t.state {
            State::Expired => notes.push(format!(
                "token {} expired{}: `patrol rotate` will rotate it and store the new secret everywhere below",
                t.token_id,
                t.expires_at.map(|d| format!(" on {d}")).unwrap_or_default()
            )),
            State::Revoked => notes.push(format!(
                "every copy is revoked (token {}): uncomment this block only if the token is still needed (`patrol rotate` would create it anew with these scopes); otherwise delete the variables below",
                t.token_id
            )),
            State::Active => {}
        }
        let stale: Vec<String> = e
            .variables
            .iter()
            .filter(|v| report.variables.iter().any(|x| &x.variable == *v && x.holds == Holds::Stale))
            .map(VariableRef::label)
            .collect();
        if !stale.is_empty() && !all_revoked {
            notes.push(format!(
                "{} hold(s) an older token of this name: `patrol plan` will say it repairs them",
                stale.join(", ")
            ));
        }
        for v in &e.variables {
            let holder = if v.holder == "group" { "group" } else { "project" };
            let _ = writeln!(
                block,
                "\n[[token.variable]]\n{holder} = {}\nkey = {}\nenvironment_scope = {}\nprotected = {}",
                quote(&v.path),
                quote(&v.key),
                quote(&v.environment_scope),
                v.protected
            );
        }
        let projects: BTreeSet<&str> =
            e.variables.iter().filter(|v| v.holder == "project").map(|v| v.path.as_str()).collect();
        for p in projects {
            match discovery.default_branches.get(p) {
                Some(Some(branch)) => {
                    let _ = writeln!(
                        block,
                        "\n# review: retries the latest pipeline on {p}'s default branch when it failed; check\n# that it reads this token, or remove it\n[[token.pipeline]]\nproject = {}\nref = {}\naction = \"retry\"",
                        quote(p),
                        quote(branch)
                    );
                }
                _ => notes.push(format!("project {p} has no default branch: add its pipelines by hand")),
            }
        }
        if e.variables.iter().any(|v| v.holder == "group") {
            notes.push("a group variable holds it: add the pipelines of the group's projects that read it".into());
        }
        if several_active {
            notes.push(format!(
                "{} active tokens are named {:?} (ids {}), and a config entry names a token by its name: revoke the ones not in use in GitLab, then uncomment this block",
                active.len(),
                t.name,
                active.join(", ")
            ));
        }
        out.push('\n');
        for n in &notes {
            let _ = writeln!(out, "# {n}");
        }
        if all_revoked || several_active || guessed_kind {
            for line in block.lines() {
                let _ = writeln!(out, "{}", if line.is_empty() { "#".to_owned() } else { format!("# {line}") });
            }
        } else {
            out.push_str(&block);
            written += 1;
        }
    }
    for t in orphans {
        let vars: Vec<String> = t.variables.iter().map(VariableRef::label).collect();
        let _ = writeln!(
            out,
            "\n# token {} {:?} cannot be written as a [[token]]: {}. It is held by {}.",
            t.token_id,
            t.name,
            t.owner_unknown.as_deref().unwrap_or("its owner is unknown"),
            vars.join(", ")
        );
    }
    let unknown: Vec<String> = report
        .variables
        .iter()
        .filter(|v| v.token_id.is_none() || !report.tokens.iter().any(|t| Some(t.token_id) == v.token_id))
        .map(|v| format!("#   {}: {}", v.variable.label(), v.detail))
        .collect();
    if !unknown.is_empty() {
        let _ = writeln!(
            out,
            "\n# Variables whose token discover could not name (not in any block above):\n{}",
            unknown.join("\n")
        );
    }
    (out, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_slugs_and_unique() {
        let mut taken = HashSet::new();
        assert_eq!(slug("GitLab Security Service - Inventory", &mut taken), "gitlab-security-service-inventory");
        assert_eq!(slug("scanner-ci", &mut taken), "scanner-ci");
        assert_eq!(slug("scanner ci", &mut taken), "scanner-ci-2");
        assert_eq!(slug("***", &mut taken), "token");
    }
}
