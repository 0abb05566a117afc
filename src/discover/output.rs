//! `discover`'s table for people: grouped by token, then the variables whose content is unknown,
//! then the findings and a totals line. Built from the report alone, so it holds no secret.

use super::{Holds, Report, State, TokenEntry, VariableEntry, VariableRef};

fn settings(v: &VariableRef) -> String {
    let mut s: Vec<&str> = Vec::new();
    if v.masked {
        s.push("masked");
    }
    if v.hidden {
        s.push("hidden");
    }
    if v.protected {
        s.push("protected");
    }
    if s.is_empty() {
        String::new()
    } else {
        format!("  ({})", s.join(", "))
    }
}

fn head(t: &TokenEntry) -> String {
    let whose = match (t.kind, &t.owner) {
        (Some(k), Some(o)) => format!("{} {o}", k.as_str()),
        _ => format!("owner unknown ({})", t.owner_unknown.as_deref().unwrap_or("?")),
    };
    let state = match (t.state, t.expires_at, t.days_left) {
        (State::Revoked, _, _) => "REVOKED".to_owned(),
        (State::Expired, Some(d), _) => format!("EXPIRED on {d}"),
        (State::Expired, None, _) => "EXPIRED".to_owned(),
        (State::Active, Some(d), Some(left)) => format!("active, expires {d} (in {left} days)"),
        (State::Active, _, _) => "active, never expires".to_owned(),
    };
    let managed = t.managed.as_ref().map(|m| format!("  [managed: {m}]")).unwrap_or_default();
    format!("token {} {whose} {:?}: {state}{managed}", t.token_id, t.name)
}

/// The lines of the table.
pub fn lines(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let by_variable = |r: &VariableRef| report.variables.iter().find(|v| &v.variable == r);
    for t in &report.tokens {
        out.push(head(t));
        if t.variables.is_empty() {
            out.push("    held by no variable walked".into());
        }
        for r in &t.variables {
            let how = match by_variable(r) {
                Some(VariableEntry { holds: Holds::Stale, detail, .. }) => format!("  <- stale copy: {detail}"),
                Some(VariableEntry { evidence: Some(super::Evidence::Marker), .. }) => "  (by patrol's marker)".into(),
                _ => String::new(),
            };
            out.push(format!("    {}{}{how}", r.label(), settings(r)));
        }
    }
    let unowned: Vec<&VariableEntry> = report
        .variables
        .iter()
        .filter(|v| v.token_id.is_none_or(|id| !report.tokens.iter().any(|t| t.token_id == id)))
        .collect();
    if !unowned.is_empty() {
        out.push("no token identified".into());
        for v in unowned {
            let what = match v.holds {
                Holds::Stale => "stale",
                Holds::Active => "active",
                Holds::Unknown => "unknown",
            };
            out.push(format!("    {}{}  {what}: {}", v.variable.label(), settings(&v.variable), v.detail));
        }
    }
    for u in &report.walked.unreadable {
        out.push(format!("cannot read the variables of {} {}: {}", u.holder, u.path, u.reason));
    }
    if !report.findings.is_empty() {
        out.push(String::new());
        out.push(format!("findings ({}):", report.findings.len()));
        for f in &report.findings {
            out.push(format!("  {}: {}", f.kind.title(), f.message));
        }
    }
    out.push(totals(report));
    out
}

pub fn totals(report: &Report) -> String {
    let w = &report.walked;
    let how = if report.identification.token_info_api {
        "with the token information API"
    } else {
        "each by its own GET /personal_access_tokens/self"
    };
    let held = report.tokens.iter().filter(|t| !t.variables.is_empty()).count();
    format!(
        "patrol: {} project(s), {} group(s), {} variable(s) walked; {} token-shaped value(s) identified {how}; {held} token(s) held by variables; {} finding(s)",
        w.projects,
        w.groups,
        w.variables,
        w.distinct_values,
        report.findings.len()
    )
}
