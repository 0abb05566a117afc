//! Malformed answers (issue 4): truncated JSON, wrong types, a proxy's HTML page, a body of
//! tens of megabytes, a redirect to another host. Each gives a clear error for that token and
//! changes nothing, and the credential never reaches another host.

use crate::helpers::*;
use patrol::simulator::{Fault, FaultAction};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const LISTING: &str = "/api/v4/projects/sec%2Fapp/access_tokens";

fn respond(status: u16, content_type: &str, body: &str, location: Option<String>) -> FaultAction {
    FaultAction::Respond { status, content_type: content_type.into(), body: body.into(), location }
}

/// A listener on another port that counts connections: another origin for the redirect.
async fn elsewhere() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (format!("http://127.0.0.1:{port}"), seen)
}

#[tokio::test]
async fn each_malformed_answer_fails_its_token_clearly_and_changes_nothing() {
    let (other, seen) = elsewhere().await;
    let cases: Vec<(&str, FaultAction, &str)> = vec![
        (
            "truncated JSON",
            respond(200, "application/json", r#"[{"id": 12, "name": "app-ci", "rev"#, None),
            "truncated",
        ),
        ("wrong types", respond(200, "application/json", r#"[{"id": "twelve", "name": 5}]"#, None), "unexpected shape"),
        ("an object for a list", respond(200, "application/json", r#"{"id": 12}"#, None), "unexpected shape"),
        (
            "a login page",
            respond(200, "text/html", "<!DOCTYPE html><html><body>Sign in</body></html>", None),
            "not JSON",
        ),
        (
            "a proxy's error page",
            respond(502, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>", None),
            "an HTML page instead of GitLab's JSON",
        ),
        ("20 MB", FaultAction::Oversized { bytes: 20 * 1024 * 1024 }, "larger than 16 MiB"),
        (
            "a redirect to another host",
            respond(302, "text/html", "", Some(format!("{other}{LISTING}"))),
            "which patrol does not follow",
        ),
    ];
    let count = cases.len();
    for (what, action, expected) in cases {
        let u = Universe::new(fleet(), FLEET_CONFIG).await;
        u.sim.inject(Fault::new(Some("GET"), LISTING, action));
        let run = u.patrol(&["rotate", "--only", "project"]).await;
        assert_eq!(run.code, 1, "{what}: {}\n{}", run.stdout, run.stderr);
        let error = run.report["tokens"][0]["error"].as_str().unwrap_or_default();
        assert!(error.contains(expected) && error.contains("app-ci"), "{what}: {error}");
        assert_eq!(u.writes_since(0), Vec::<String>::new(), "{what}: nothing changed");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0, "no request, so no credential, reached the other host");
    println!("malformed answers: {count} kinds, each a clear error for its token and no change");
}
