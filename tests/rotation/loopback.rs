//! Plain http: allowed to loopback only (all of 127.0.0.0/8, ::1, and exactly `localhost`), so
//! the credential never crosses a network unencrypted. Names that merely look like loopback are
//! refused before any connection.

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::Simulator;

/// `patrol plan` over plain http to `sim`, reached by the name or address `host`.
async fn plan_over_http(sim: Simulator, host: &str) {
    let url = format!("http://{host}:{}/api/v4", sim.addr().port());
    let u = Universe::around(sim, FLEET_CONFIG);
    let run = u.patrol_with(&["plan"], &[("PATROL_GITLAB_URL", &url)]).await;
    assert_eq!(run.code, 0, "{url}: plain http to loopback is allowed\n{}\n{}", run.stdout, tail(&run.stderr));
    assert!(!run.stderr.contains("refusing plain http"), "{url}: {}", tail(&run.stderr));
    let due: Vec<(String, String)> =
        ["personal", "project", "group", "service"].iter().map(|id| (id.to_string(), "due".to_string())).collect();
    assert_eq!(outcomes(&run), due, "{url}: the plan was made from the simulator's answers");
    assert!(!u.sim.requests().is_empty(), "{url}: patrol talked to the simulator");
}

#[tokio::test]
async fn plain_http_to_localhost_and_loopback_addresses_is_allowed() {
    // `localhost` by name, to a simulator on 127.0.0.1.
    let sim = Simulator::start_on("127.0.0.1:0", fleet()).await.unwrap_or_else(|e| panic!("simulator: {e}"));
    plan_over_http(sim, "localhost").await;
    // Any address of 127.0.0.0/8 is loopback, not only 127.0.0.1.
    let sim = Simulator::start_on("127.0.0.2:0", fleet()).await.unwrap_or_else(|e| panic!("simulator: {e}"));
    plan_over_http(sim, "127.0.0.2").await;
    // IPv6's loopback, where this machine has one.
    match Simulator::start_on("[::1]:0", fleet()).await {
        Ok(sim) => plan_over_http(sim, "[::1]").await,
        Err(e) => println!("note: skipped plain http to [::1]: this machine cannot listen there ({e})"),
    }
}

#[tokio::test]
async fn plain_http_to_a_name_that_only_looks_like_loopback_is_refused_before_any_connection() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let port = u.sim.addr().port();
    for url in [
        format!("http://localhost.example.com:{port}/api/v4"),
        // A wildcard DNS name that resolves to 127.0.0.1, that is to the simulator itself: had
        // patrol connected, the simulator would have seen the request.
        format!("http://127.0.0.1.nip.io:{port}/api/v4"),
        format!("http://localhost:{port}@gitlab.example.com/api/v4"),
        format!("http://127.0.0.1:{port}@gitlab.example.com/api/v4"),
        format!("http://notlocalhost:{port}/api/v4"),
    ] {
        for command in ["plan", "rotate", "audit"] {
            let run = u.patrol_with(&[command], &[("PATROL_GITLAB_URL", &url)]).await;
            assert_eq!(run.code, 2, "{command} {url}: a usage error\n{}", tail(&run.stderr));
            // A user-info part (`localhost:PORT@…`) is refused first, for itself.
            let refusal = if url.contains('@') {
                "the GitLab URL carries a user name or password (not shown)".to_owned()
            } else {
                format!("refusing plain http to {url}: the credential would cross the network unencrypted")
            };
            assert!(run.stderr.contains(&refusal), "{command} {url}: says why\n{}", tail(&run.stderr));
            assert!(!run.stderr.contains("cannot reach GitLab"), "{command} {url}: no connection was tried");
        }
    }
    assert_eq!(u.sim.requests().len(), 0, "nothing was contacted: {:?}", u.sim.requests());
}
