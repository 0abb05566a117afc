//! Requests: nothing fetched twice, one listing per owner, GitLab's rate limit never tripped.

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::seed::SeedToken;

#[tokio::test]
async fn rate_limit_headers_pace_patrol_so_gitlab_never_answers_429() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    // A window of one second that holds 12 requests: the run needs several windows.
    u.sim.set_rate_limit(Some(12));
    u.sim.set_rate_limit_window(1);
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    let requests = u.sim.requests().len();
    assert!(requests > 24, "the run spans several windows ({requests} requests)");
    assert_eq!(u.sim.throttled(), 0, "patrol paced itself by RateLimit-Remaining/Reset");
    assert_eq!(outcomes(&run).len(), 4, "every token is in the report: {:?}", outcomes(&run));
    assert!(outcomes(&run).iter().all(|(_, o)| o == "rotated"), "{:?}", outcomes(&run));
}

#[tokio::test]
async fn one_listing_and_one_user_lookup_serve_every_token_of_an_owner() {
    let mut seed = fleet();
    let mut config = String::new();
    for i in 0..5 {
        seed.tokens.push(SeedToken { user: Some("alice".into()), ..token(&format!("alice-{i}"), 100) });
        seed.variables.push(variable(Some("sec/app"), None, &format!("ALICE_{i}"), &format!("alice-{i}"), true));
        config.push_str(&format!(
            "[[token]]\nid = \"a{i}\"\nkind = \"personal\"\nname = \"alice-{i}\"\nuser = \"alice\"\n\n[[token.variable]]\nproject = \"sec/app\"\nkey = \"ALICE_{i}\"\n\n"
        ));
    }
    let u = Universe::new(seed, &config).await;
    let run = u.patrol(&["plan"]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    let gets: Vec<String> =
        u.sim.requests().iter().filter(|r| r.method == "GET").map(|r| format!("{}?{}", r.path, r.query)).collect();
    let count = |needle: &str| gets.iter().filter(|g| g.contains(needle)).count();
    assert_eq!(count("/users?username=alice"), 1, "{gets:#?}");
    assert_eq!(count("/personal_access_tokens?"), 1, "{gets:#?}");
    // Revoked tokens too: they tell patrol which identities GitLab knows (a recreation).
    assert!(
        gets.iter()
            .all(|g| !g.contains("/personal_access_tokens?")
                || (!g.contains("revoked=") && g.contains("per_page=100"))),
        "{gets:#?}"
    );
    // Each variable read once, nothing else twice.
    let mut sorted = gets.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), gets.len(), "a request was repeated: {gets:#?}");
}

#[tokio::test]
async fn past_ten_thousand_records_every_page_is_still_read_once() {
    let mut seed = fleet();
    let bulk = 10_050;
    seed.tokens.extend((0..bulk).map(|i| SeedToken { user: Some("alice".into()), ..token(&format!("bulk-{i}"), 100) }));
    let u = Universe::new(seed, FLEET_CONFIG).await;
    let run = u.patrol(&["audit", "--json", "--within-days", "365"]).await;
    assert_eq!(run.code, 0, "{}", tail(&run.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("the audit's JSON: {e}: {}", tail(&run.stdout)));
    let ids: Vec<u64> =
        report["tokens"].as_array().into_iter().flatten().filter_map(|t| t["token_id"].as_u64()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "no token listed twice");
    assert_eq!(ids.len(), bulk + 5, "every unrevoked token in the window: the bulk, 4 managed and the admin's");
    let pages: Vec<String> = u
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/personal_access_tokens"))
        .map(|r| r.query.clone())
        .collect();
    let mut sorted = pages.clone();
    sorted.sort();
    sorted.dedup();
    assert!(
        pages.len() - sorted.len() == 0 && pages.len() <= 101 + 8,
        "each page fetched once, at most one batch past the end: {}",
        pages.len()
    );
}
