//! Project and group CI/CD variables (§3.1, §3.2): partial `PUT`, `filter[environment_scope]`
//! and its 409, key and masking validation, hidden variables, and where group variables differ
//! (§11): a `PUT` finds its variable by key alone unless the filter names an existing scope.

use super::{Ctx, Owner};
use crate::simulator::http::{ApiResult, Reply};
use crate::simulator::world::{Source, Variable, MAINTAINER, OWNER};
use serde_json::{json, Value};

const FILTER: &str = "filter[environment_scope]";

/// GitLab's masking rules (§3.1): expandable values must match `\A[a-zA-Z0-9_+=/@:.~-]{8,}\z`,
/// raw ones `\A\S{8,}\z`.
pub fn maskable(value: &str, raw: bool) -> bool {
    value.chars().count() >= 8
        && value.chars().all(|c| {
            if raw {
                !c.is_whitespace()
            } else {
                c.is_ascii_alphanumeric() || "_+=/@:.~-".contains(c)
            }
        })
}

fn variable_json(v: &Variable) -> Value {
    json!({
        "variable_type": v.variable_type,
        "key": v.key,
        "value": if v.hidden { Value::Null } else { Value::String(v.value.clone()) },
        "protected": v.protected,
        "masked": v.masked,
        "hidden": v.hidden,
        "raw": v.raw,
        "environment_scope": v.environment_scope,
        "description": v.description,
    })
}

/// Project variables need Maintainer (`admin_build`, §3.4); group variables need Owner.
fn writable(ctx: &Ctx, owner: &Owner) -> Result<Source, Reply> {
    let source = ctx.source(owner)?;
    let needed = if matches!(source, Source::Group(_)) { OWNER } else { MAINTAINER };
    if ctx.level(source) < needed {
        return Err(Reply::forbidden());
    }
    Ok(source)
}

fn not_found(source: Source) -> Reply {
    match source {
        Source::Project(_) => Reply::not_found("Variable"),
        Source::Group(_) => Reply::not_found("GroupVariable"),
    }
}

/// The variable a `:key` (and optional filter) names: 404 for none, 409 for several (§3.1).
fn find(ctx: &Ctx, source: Source, key: &str) -> Result<usize, Reply> {
    let filter = ctx.req.params.str(FILTER);
    let matches: Vec<usize> = ctx
        .world
        .variables
        .iter()
        .enumerate()
        .filter(|(_, v)| v.owner == source && v.key == key)
        .filter(|(_, v)| filter.as_deref().is_none_or(|f| v.environment_scope == f))
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [] => Err(not_found(source)),
        [one] => Ok(*one),
        _ => Err(Reply::message(
            409,
            "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'",
        )),
    }
}

fn check(v: &Variable) -> Result<(), Reply> {
    if v.key.chars().count() > 255 {
        return Err(Reply::validation("key", "is too long (maximum is 255 characters)"));
    }
    if v.key.is_empty() || !v.key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Reply::validation("key", "can contain only letters, digits and '_'."));
    }
    if v.masked && !maskable(&v.value, v.raw) {
        return Err(Reply::validation("value", "is invalid"));
    }
    if v.description.as_ref().is_some_and(|d| d.chars().count() > 255) {
        return Err(Reply::validation("description", "is too long (maximum is 255 characters)"));
    }
    if v.variable_type != "env_var" && v.variable_type != "file" {
        return Err(Reply::json(400, json!({"error": "variable_type does not have a valid value"})));
    }
    Ok(())
}

fn taken(ctx: &Ctx, v: &Variable, except: Option<usize>) -> bool {
    ctx.world.variables.iter().enumerate().any(|(i, o)| {
        Some(i) != except && o.owner == v.owner && o.key == v.key && o.environment_scope == v.environment_scope
    })
}

pub fn list(ctx: &mut Ctx, owner: &Owner) -> ApiResult {
    let source = writable(ctx, owner)?;
    let items = ctx.world.variables.iter().filter(|v| v.owner == source).map(variable_json).collect();
    ctx.paginate(items)
}

pub fn get(ctx: &mut Ctx, owner: &Owner, key: &str) -> ApiResult {
    let source = writable(ctx, owner)?;
    let i = find(ctx, source, key)?;
    Ok(Reply::json(200, variable_json(&ctx.world.variables[i])))
}

/// `masked_and_hidden=true` makes the variable masked and hidden; only creation can do that.
pub fn create(ctx: &mut Ctx, owner: &Owner) -> ApiResult {
    let source = writable(ctx, owner)?;
    let p = &ctx.req.params;
    let key = p.required_str("key")?;
    let value = p.required_str("value")?;
    let hidden = p.bool("masked_and_hidden")?.unwrap_or(false);
    let v = Variable {
        owner: source,
        key,
        value,
        variable_type: p.str("variable_type").unwrap_or_else(|| "env_var".into()),
        protected: p.bool("protected")?.unwrap_or(false),
        masked: hidden || p.bool("masked")?.unwrap_or(false),
        hidden,
        raw: p.bool("raw")?.unwrap_or(false),
        environment_scope: environment_scope(ctx, source).unwrap_or_else(|| "*".into()),
        description: p.str("description"),
    };
    check(&v)?;
    if taken(ctx, &v, None) {
        return Err(Reply::validation("key", &format!("({}) has already been taken", v.key)));
    }
    let body = variable_json(&v);
    ctx.world.variables.push(v);
    Ok(Reply::json(201, body))
}

/// Only the parameters sent change (§3.1 "Update"); `hidden` and `masked_and_hidden` are not
/// declared on update and are dropped silently; changing `masked` on a hidden variable fails;
/// `environment_scope` moves the variable.
pub fn update(ctx: &mut Ctx, owner: &Owner, key: &str) -> ApiResult {
    let source = writable(ctx, owner)?;
    let i = match source {
        Source::Project(_) => find(ctx, source, key)?,
        Source::Group(_) => find_group_variable_to_update(ctx, source, key)?,
    };
    let p = &ctx.req.params;
    let mut v = ctx.world.variables[i].clone();
    if p.has("value") {
        v.value = p.str("value").ok_or_else(|| Reply::validation("value", "is invalid"))?;
    }
    if let Some(masked) = p.bool("masked")? {
        if v.hidden && masked != v.masked {
            return Err(Reply::validation(
                "base",
                "The visibility setting cannot be changed for masked and hidden variables.",
            ));
        }
        v.masked = masked;
    }
    if let Some(protected) = p.bool("protected")? {
        v.protected = protected;
    }
    if let Some(raw) = p.bool("raw")? {
        v.raw = raw;
    }
    if let Some(scope) = environment_scope(ctx, source) {
        v.environment_scope = scope;
    }
    if let Some(t) = p.str("variable_type") {
        v.variable_type = t;
    }
    if p.has("description") {
        v.description = p.str("description");
    }
    check(&v)?;
    if taken(ctx, &v, Some(i)) {
        return Err(Reply::validation("key", &format!("({}) has already been taken", v.key)));
    }
    let body = variable_json(&v);
    ctx.world.variables[i] = v;
    Ok(Reply::json(200, body))
}

/// `environment_scope` as sent, except on a group of a tier without scoped group variables,
/// where it is dropped (§11).
fn environment_scope(ctx: &Ctx, source: Source) -> Option<String> {
    let dropped = matches!(source, Source::Group(_)) && !ctx.world.settings.scoped_group_variables;
    ctx.req.params.str("environment_scope").filter(|_| !dropped)
}

/// A group variable's `PUT` (§11): with `filter[environment_scope]` naming a scope the key
/// has, that variable; otherwise, filter or not, `find_by!(key:)` takes the first variable with
/// the key in any scope (the oldest), never answering 409. So a filter on a scope that does not
/// exist updates another scope's variable.
fn find_group_variable_to_update(ctx: &Ctx, source: Source, key: &str) -> Result<usize, Reply> {
    let filter = ctx.req.params.str(FILTER);
    let with_key = |scope: Option<&str>| {
        ctx.world
            .variables
            .iter()
            .position(|v| v.owner == source && v.key == key && scope.is_none_or(|s| v.environment_scope == s))
    };
    filter.as_deref().and_then(|f| with_key(Some(f))).or_else(|| with_key(None)).ok_or_else(|| not_found(source))
}

pub fn delete(ctx: &mut Ctx, owner: &Owner, key: &str) -> ApiResult {
    let source = writable(ctx, owner)?;
    let i = find(ctx, source, key)?;
    ctx.world.variables.remove(i);
    Ok(Reply::no_content())
}

#[cfg(test)]
mod tests {
    use super::maskable;

    #[test]
    fn masking_rules_follow_both_regexes() {
        assert!(maskable("glpat-abcdefghij_KLMNOPQ-12", false));
        assert!(!maskable("short", false));
        assert!(!maskable("has space in it", true));
        assert!(!maskable("dollar$sign", false));
        assert!(maskable("dollar$sign", true));
    }
}
