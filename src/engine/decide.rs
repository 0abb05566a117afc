//! The decision "what should happen to this token": a pure function of what was observed in
//! GitLab, the token's policy and today's date (UTC).

use crate::config::Policy;
use crate::gitlab::model::ApiToken;
use chrono::NaiveDate;

/// What a configured variable holds, as far as patrol can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holds {
    /// The variable does not exist (in that environment scope).
    Missing,
    /// It holds the token with this id: its value authenticates as it, or (hidden) its patrol
    /// marker names it.
    Token(u64),
    /// Its value authenticates as no active token.
    Dead,
    /// A live token of another identity (another name, kind or owner), or patrol's marker for
    /// one: never overwritten.
    Foreign { id: u64, name: Option<String> },
    /// Hidden, never written by patrol, and marked by a run that set out to replace this token:
    /// stale once that token is no longer the one in use, unknown while it still is.
    Pending(u64),
    /// Hidden and without a patrol marker: its content cannot be known.
    Unknown,
}

/// What patrol saw of one managed token.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The active token in use.
    pub current: Option<ApiToken>,
    /// With no active token: the newest expired but unrevoked one, which can still be rotated.
    pub expired: Option<ApiToken>,
    /// Each configured variable, by label (`project security/app INVENTORY_TOKEN [*]`).
    pub variables: Vec<(String, Holds)>,
    /// Whether patrol may create the token when none can be rotated: GitLab knows this identity
    /// (a revoked or expired token of this kind, owner and name is listed) or the config says
    /// `create = true`.
    pub may_create: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The token is due (near expiry, expired, or forced): a rotation.
    Due,
    /// Not due, but a variable does not hold it: a repair.
    OutOfSync,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Unchanged {
        reason: String,
    },
    /// Rotate this token (active, or expired but unrevoked).
    Rotate {
        target: ApiToken,
        why: Why,
        reason: String,
    },
    /// No token can be rotated: create one with the configured name and scopes.
    Create {
        reason: String,
    },
    /// Nothing may change: a variable holds a token of another identity.
    Refuse {
        reason: String,
    },
    /// GitLab has never had this token and the config does not ask to create it.
    Unknown,
}

impl Decision {
    pub fn acts(&self) -> bool {
        matches!(self, Decision::Rotate { .. } | Decision::Create { .. })
    }
}

/// Days from `today` until the token stops working at 00:00 UTC on `expires_at` (§6).
pub fn days_left(expires_at: NaiveDate, today: NaiveDate) -> i64 {
    (expires_at - today).num_days()
}

pub fn decide(observed: &Observed, policy: &Policy, today: NaiveDate, force: bool) -> Decision {
    if observed.current.is_none() && observed.expired.is_none() && !observed.may_create {
        return Decision::Unknown;
    }
    let foreign: Vec<String> = observed
        .variables
        .iter()
        .filter_map(|(label, h)| match h {
            Holds::Foreign { id, name: Some(name) } => Some(format!("{label} holds token {id} ({name:?})")),
            Holds::Foreign { id, name: None } => Some(format!("{label} is marked by patrol as holding token {id}")),
            _ => None,
        })
        .collect();
    if !foreign.is_empty() {
        return Decision::Refuse {
            reason: format!(
                "{}, which is not a token of this entry's kind, owner and name, so nothing was changed: patrol never overwrites another token. Check `name`, `kind` and the owner in the config, and which token the variable should hold.",
                foreign.join("; ")
            ),
        };
    }
    let Some(current) = &observed.current else {
        return match &observed.expired {
            Some(t) => Decision::Rotate {
                target: t.clone(),
                why: Why::Due,
                reason: match t.expires_at {
                    Some(d) => format!("expired on {d}"),
                    None => "inactive".into(),
                },
            },
            None if observed.may_create => {
                Decision::Create { reason: "no active or rotatable token with this name".into() }
            }
            None => Decision::Unknown,
        };
    };
    let rotate = |why, reason: String| Decision::Rotate { target: current.clone(), why, reason };
    if force {
        return rotate(Why::Due, "forced (--force)".into());
    }
    let expiry = current.expires_at.map(|d| (d, days_left(d, today)));
    match expiry {
        Some((d, left)) if left <= 0 => return rotate(Why::Due, format!("expired on {d}")),
        Some((d, left)) if left < policy.rotate_before_days => {
            return rotate(Why::Due, format!("expires {d}, within {} days", policy.rotate_before_days));
        }
        _ => {}
    }
    let stale: Vec<&str> = observed
        .variables
        .iter()
        .filter(|(_, h)| match h {
            Holds::Missing | Holds::Dead => true,
            Holds::Token(id) | Holds::Pending(id) => *id != current.id,
            Holds::Unknown | Holds::Foreign { .. } => false,
        })
        .map(|(label, _)| label.as_str())
        .collect();
    if !stale.is_empty() {
        return rotate(Why::OutOfSync, format!("not due, but {} does not hold the current token", stale.join(", ")));
    }
    let mut reason = match expiry {
        Some((d, left)) => format!("expires {d}, in {left} days"),
        None => "does not expire".into(),
    };
    let unknown: Vec<&str> = observed
        .variables
        .iter()
        .filter(|(_, h)| matches!(h, Holds::Unknown | Holds::Pending(_)))
        .map(|(l, _)| l.as_str())
        .collect();
    if !unknown.is_empty() {
        reason.push_str(&format!(
            "; cannot tell what hidden {} holds (no patrol marker yet): the next rotation takes it over",
            unknown.join(", ")
        ));
    }
    Decision::Unchanged { reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    fn token(id: u64, expires: Option<&str>) -> ApiToken {
        ApiToken {
            id,
            name: "t".into(),
            revoked: false,
            active: true,
            expires_at: expires.map(day),
            created_at: None,
            scopes: vec!["api".into()],
            user_id: Some(1),
            last_used_at: None,
            description: None,
            access_level: None,
        }
    }

    const POLICY: Policy = Policy { rotate_before_days: 14, expires_in_days: 365, strategy: Strategy::Rotate };

    fn observed(current: Option<ApiToken>, vars: Vec<Holds>) -> Observed {
        Observed {
            current,
            expired: None,
            variables: vars.into_iter().enumerate().map(|(i, h)| (format!("V{i}"), h)).collect(),
            may_create: true,
        }
    }

    fn kind(d: &Decision) -> (&'static str, Option<Why>) {
        match d {
            Decision::Unchanged { .. } => ("unchanged", None),
            Decision::Rotate { why, .. } => ("rotate", Some(*why)),
            Decision::Create { .. } => ("create", None),
            Decision::Refuse { .. } => ("refuse", None),
            Decision::Unknown => ("unknown", None),
        }
    }

    #[test]
    fn due_exactly_when_fewer_days_than_the_policy_remain() {
        let today = day("2026-11-28");
        // 14 days left is not due; 13 is.
        let cases = [
            ("2026-12-12", "unchanged"),
            ("2026-12-11", "rotate"),
            ("2026-11-29", "rotate"),
            ("2026-11-28", "rotate"),
            ("2027-11-28", "unchanged"),
        ];
        for (expires, expected) in cases {
            let d = decide(&observed(Some(token(1, Some(expires))), vec![Holds::Token(1)]), &POLICY, today, false);
            assert_eq!(kind(&d).0, expected, "expires {expires}");
        }
    }

    #[test]
    fn the_day_boundary_follows_utc_midnight() {
        // A token expiring 2026-12-12 has 14 days left on 11-28 and 13 on 11-29, whatever the hour.
        let t = token(1, Some("2026-12-12"));
        let on = |today| kind(&decide(&observed(Some(t.clone()), vec![]), &POLICY, day(today), false)).0;
        assert_eq!((on("2026-11-28"), on("2026-11-29")), ("unchanged", "rotate"));
        assert_eq!(days_left(day("2026-12-12"), day("2026-12-12")), 0);
        let zero = Policy { rotate_before_days: 0, ..POLICY };
        assert_eq!(
            kind(&decide(&observed(Some(token(1, Some("2026-11-29"))), vec![]), &zero, day("2026-11-28"), false)).0,
            "unchanged"
        );
        assert_eq!(
            kind(&decide(&observed(Some(token(1, Some("2026-11-28"))), vec![]), &zero, day("2026-11-28"), false)).0,
            "rotate"
        );
    }

    #[test]
    fn force_rotates_a_healthy_token() {
        let d = decide(
            &observed(Some(token(1, Some("2027-06-01"))), vec![Holds::Token(1)]),
            &POLICY,
            day("2026-11-28"),
            true,
        );
        assert_eq!(kind(&d), ("rotate", Some(Why::Due)));
        assert!(matches!(d, Decision::Rotate { reason, .. } if reason == "forced (--force)"));
    }

    #[test]
    fn a_pending_marker_is_stale_once_its_token_is_replaced_and_unknown_while_it_is_in_use() {
        let today = day("2026-11-28");
        let healthy = || Some(token(2, Some("2027-06-01")));
        let replaced = decide(&observed(healthy(), vec![Holds::Token(2), Holds::Pending(1)]), &POLICY, today, false);
        assert_eq!(kind(&replaced), ("rotate", Some(Why::OutOfSync)));
        assert!(matches!(&replaced, Decision::Rotate { reason, .. } if reason.contains("V1")), "{replaced:?}");
        let in_use = decide(&observed(healthy(), vec![Holds::Token(2), Holds::Pending(2)]), &POLICY, today, false);
        assert_eq!(kind(&in_use), ("unchanged", None));
        assert!(matches!(&in_use, Decision::Unchanged { reason } if reason.contains("cannot tell what hidden V1")));
    }

    #[test]
    fn another_identitys_token_in_a_variable_refuses_everything_even_when_due() {
        let foreign = Holds::Foreign { id: 9, name: Some("other".into()) };
        for expires in ["2026-11-30", "2027-06-01"] {
            let d = decide(
                &observed(Some(token(1, Some(expires))), vec![Holds::Token(1), foreign.clone()]),
                &POLICY,
                day("2026-11-28"),
                true,
            );
            assert!(
                matches!(&d, Decision::Refuse { reason } if reason.starts_with("V1 holds token 9 (\"other\")")),
                "{d:?}"
            );
            assert!(!d.acts());
        }
        let marked = Holds::Foreign { id: 9, name: None };
        let d = decide(&observed(Some(token(1, None)), vec![marked]), &POLICY, day("2026-11-28"), false);
        assert!(
            matches!(&d, Decision::Refuse { reason } if reason.starts_with("V0 is marked by patrol as holding token 9"))
        );
    }

    #[test]
    fn a_token_gitlab_never_had_is_created_only_when_allowed() {
        let mut o = observed(None, vec![Holds::Missing]);
        assert_eq!(kind(&decide(&o, &POLICY, day("2026-11-28"), false)).0, "create");
        o.may_create = false;
        let d = decide(&o, &POLICY, day("2026-11-28"), false);
        assert_eq!(d, Decision::Unknown);
        assert!(!d.acts());
        // An expired, unrevoked token is rotated whatever `may_create` says.
        o.expired = Some(token(3, Some("2026-11-01")));
        assert_eq!(kind(&decide(&o, &POLICY, day("2026-11-28"), false)), ("rotate", Some(Why::Due)));
    }

    #[test]
    fn a_variable_out_of_sync_is_repaired_even_when_not_due() {
        let today = day("2026-11-28");
        for stale in [Holds::Missing, Holds::Dead, Holds::Token(7)] {
            let d = decide(
                &observed(Some(token(1, Some("2027-06-01"))), vec![Holds::Token(1), stale.clone()]),
                &POLICY,
                today,
                false,
            );
            assert_eq!(kind(&d), ("rotate", Some(Why::OutOfSync)), "{stale:?}");
            assert!(matches!(&d, Decision::Rotate { reason, .. } if reason.contains("V1")));
        }
    }

    #[test]
    fn due_wins_over_out_of_sync() {
        let d = decide(
            &observed(Some(token(1, Some("2026-12-01"))), vec![Holds::Missing]),
            &POLICY,
            day("2026-11-28"),
            false,
        );
        assert_eq!(kind(&d), ("rotate", Some(Why::Due)));
    }

    #[test]
    fn an_unknown_hidden_variable_does_not_trigger_a_rotation_but_is_reported() {
        let d = decide(
            &observed(Some(token(1, Some("2027-06-01"))), vec![Holds::Unknown]),
            &POLICY,
            day("2026-11-28"),
            false,
        );
        assert!(
            matches!(&d, Decision::Unchanged { reason } if reason.contains("cannot tell what hidden V0 holds")),
            "{d:?}"
        );
    }

    #[test]
    fn without_an_active_token_rotate_the_expired_one_or_create() {
        let mut o = observed(None, vec![]);
        assert_eq!(kind(&decide(&o, &POLICY, day("2026-11-28"), false)).0, "create");
        let mut expired = token(3, Some("2026-11-20"));
        expired.active = false;
        o.expired = Some(expired);
        let d = decide(&o, &POLICY, day("2026-11-28"), false);
        assert!(
            matches!(&d, Decision::Rotate { target, why: Why::Due, reason } if target.id == 3 && reason == "expired on 2026-11-20"),
            "{d:?}"
        );
    }

    #[test]
    fn a_token_without_expiry_is_never_due_by_date() {
        let d = decide(&observed(Some(token(1, None)), vec![Holds::Token(1)]), &POLICY, day("2026-11-28"), false);
        assert_eq!(d, Decision::Unchanged { reason: "does not expire".into() });
    }
}
