//! Fault injection: make chosen requests fail the ways real networks and GitLab fail.
//!
//! A fault names a route (method and path pattern) and fires on a count of matching requests,
//! after skipping some, or with a probability. `DropAfterCommit` is the failure that makes
//! rotation dangerous: GitLab performs the write and the client never hears the answer.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultAction {
    /// Answer with this status and GitLab's body for it; nothing is changed.
    Status { status: u16 },
    /// Wait this long, then handle the request normally.
    Latency { millis: u64 },
    /// Wait until the test opens the gate (`Simulator::open_gate`), then handle the request
    /// normally: a test puts another run's whole work between two steps of this one.
    /// `Simulator::wait_gated` says when a request is waiting.
    Gated,
    /// Never answer (until the simulator stops); nothing is changed.
    Hang,
    /// Perform the request, then close the connection without an answer.
    DropAfterCommit,
    /// Perform the request, then never answer: the moment a test kills the client process
    /// (`Simulator::wait_held` says when it has come).
    CommitThenHang,
    /// Hold the request without an answer, perform it `after_millis` after it arrived, then
    /// close the connection: GitLab keeps working on a request after the client gave up, until
    /// its request deadline (§12). `Simulator::wait_late_commits` says when it has committed.
    CommitsLate { after_millis: u64 },
    /// Perform the request, then answer a success with its JSON body cut to half its length,
    /// as a connection lost mid-answer leaves it. A refusal is answered whole.
    TruncatedAnswer,
    /// Answer 429 with `Retry-After`, as GitLab's throttle does (§5.3); nothing is changed.
    RateLimited { retry_after_secs: u64 },
    /// Answer with this body, as a proxy in front of GitLab or a broken answer might (an HTML
    /// page, truncated JSON, a redirect with `location`); nothing is changed.
    Respond { status: u16, content_type: String, body: String, location: Option<String> },
    /// Answer 200 with a JSON array this many bytes long; nothing is changed.
    Oversized { bytes: usize },
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// HTTP method, or `None` for any.
    pub method: Option<String>,
    /// Path pattern, matched against the raw request path: `*` is one segment, `**` any rest.
    pub path: String,
    /// Only requests carrying the secret of a token with this name (`None`: any).
    #[serde(default)]
    pub token_name: Option<String>,
    /// Only requests whose `key` parameter is this (`None`: any).
    #[serde(default)]
    pub key: Option<String>,
    pub action: FaultAction,
    /// Matching requests to let through before the fault starts firing.
    #[serde(default)]
    pub skip: u32,
    /// How many times it fires; `None` for every matching request.
    pub times: Option<u32>,
    /// Fire with this probability (seeded, so a run is repeatable).
    pub probability: Option<f64>,
}

impl Fault {
    pub fn new(method: Option<&str>, path: &str, action: FaultAction) -> Self {
        Fault {
            method: method.map(str::to_uppercase),
            path: path.into(),
            token_name: None,
            key: None,
            action,
            skip: 0,
            times: None,
            probability: None,
        }
    }

    /// Fires on the next `n` matching requests only.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    pub fn skip(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }

    pub fn probability(mut self, p: f64) -> Self {
        self.probability = Some(p);
        self
    }

    /// Only requests made with the secret of a token named `name`.
    pub fn as_token(mut self, name: Option<&str>) -> Self {
        self.token_name = name.map(str::to_owned);
        self
    }

    /// Only requests whose `key` parameter is `key`.
    pub fn with_key(mut self, key: Option<&str>) -> Self {
        self.key = key.map(str::to_owned);
        self
    }

    pub fn matches(&self, request: &Identity) -> bool {
        self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(request.method))
            && path_matches(&self.path, request.path)
            && self.token_name.as_deref().is_none_or(|n| request.token_name == Some(n))
            && self.key.as_deref().is_none_or(|k| request.key == Some(k))
    }
}

/// What a fault is matched against: a request's method and path, the name of the token whose
/// secret it carried, and its `key` parameter.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub token_name: Option<&'a str>,
    pub key: Option<&'a str>,
}

impl<'a> Identity<'a> {
    /// A request known by method and path alone.
    pub fn of(method: &'a str, path: &'a str) -> Self {
        Identity { method, path, token_name: None, key: None }
    }
}

/// `*` matches one non-empty segment, `**` the rest of the path.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let mut pat = pattern.trim_matches('/').split('/');
    let mut segs = path.trim_matches('/').split('/');
    loop {
        match (pat.next(), segs.next()) {
            (Some("**"), _) => return true,
            (Some("*"), Some(s)) if !s.is_empty() => continue,
            (Some(p), Some(s)) if p == s => continue,
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    seen: u32,
    fired: u32,
}

/// The faults in force, with their counters.
#[derive(Debug)]
pub struct FaultSet {
    armed: Vec<Armed>,
    rng: StdRng,
    /// Added to every request.
    pub latency: Duration,
}

impl Default for FaultSet {
    fn default() -> Self {
        FaultSet { armed: Vec::new(), rng: StdRng::seed_from_u64(0x5eed), latency: Duration::ZERO }
    }
}

impl FaultSet {
    pub fn add(&mut self, fault: Fault) {
        self.armed.push(Armed { fault, seen: 0, fired: 0 });
    }

    pub fn clear(&mut self) {
        self.armed.clear();
    }

    pub fn seed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// The actions that apply to this request, in the order they were added; each counts it.
    pub fn take(&mut self, request: &Identity) -> Vec<FaultAction> {
        let mut actions = Vec::new();
        for armed in &mut self.armed {
            if !armed.fault.matches(request) {
                continue;
            }
            armed.seen += 1;
            if armed.seen <= armed.fault.skip {
                continue;
            }
            if armed.fault.times.is_some_and(|t| armed.fired >= t) {
                continue;
            }
            if let Some(p) = armed.fault.probability {
                if !self.rng.random_bool(p.clamp(0.0, 1.0)) {
                    continue;
                }
            }
            armed.fired += 1;
            actions.push(armed.fault.action.clone());
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_segments() {
        assert!(path_matches("/api/v4/projects/*/variables/*", "/api/v4/projects/a%2Fb/variables/K"));
        assert!(!path_matches("/api/v4/projects/*/variables", "/api/v4/projects/1/variables/K"));
        assert!(path_matches("/api/v4/**", "/api/v4/personal_access_tokens/3/rotate"));
        assert!(!path_matches("/api/v4/*/x", "/api/v4//x"));
    }

    #[test]
    fn counted_fault_fires_after_skip_then_stops() {
        let mut set = FaultSet::default();
        set.add(Fault::new(Some("post"), "/a/*", FaultAction::Hang).skip(1).times(2));
        let fired: Vec<bool> = (0..5).map(|_| !set.take(&Identity::of("POST", "/a/1")).is_empty()).collect();
        assert_eq!(fired, vec![false, true, true, false, false]);
        assert!(set.take(&Identity::of("GET", "/a/1")).is_empty());
    }

    #[test]
    fn a_fault_can_be_narrowed_to_a_token_and_a_key() {
        let mut set = FaultSet::default();
        set.add(Fault::new(None, "/v/*", FaultAction::Hang).as_token(Some("ci")).with_key(Some("LOCK")));
        let request = |token_name, key| Identity { method: "POST", path: "/v/1", token_name, key };
        assert!(set.take(&request(Some("other"), Some("LOCK"))).is_empty());
        assert!(set.take(&request(Some("ci"), Some("VALUE"))).is_empty());
        assert!(set.take(&request(Some("ci"), None)).is_empty());
        assert_eq!(set.take(&request(Some("ci"), Some("LOCK"))), vec![FaultAction::Hang]);
    }
}
