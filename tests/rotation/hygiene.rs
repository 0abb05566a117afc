//! Secret hygiene at the edges (issue 13): `CI_DEBUG_TRACE` read as the runner reads it, no
//! proxy for plain http, and GitLab's error texts redacted before they reach any output.

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::{Fault, FaultAction};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;

/// The runner parses `CI_DEBUG_TRACE` with Go's `strconv.ParseBool`: `1`, `t`, `TRUE` and `True`
/// turn the trace on as `true` does, and `false` or `0` leave it off.
#[tokio::test]
async fn ci_debug_trace_is_read_as_the_runner_reads_it() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    for on in ["1", "t", "TRUE", "True"] {
        let refused = u.patrol_with(&["rotate"], &[("CI_DEBUG_TRACE", on)]).await;
        assert_eq!(refused.code, 2, "CI_DEBUG_TRACE={on}: {}", tail(&refused.stderr));
        assert!(refused.stderr.contains("refusing to run with CI_DEBUG_TRACE enabled"), "{on}: {}", refused.stderr);
        assert!(u.sim.requests().is_empty(), "CI_DEBUG_TRACE={on}: nothing was contacted");
    }
    for off in ["false", "0"] {
        let run = u.patrol_with(&["plan"], &[("CI_DEBUG_TRACE", off)]).await;
        assert_eq!(run.code, 0, "CI_DEBUG_TRACE={off}: the plan runs: {}", tail(&run.stderr));
        assert!(!run.stderr.contains("refusing"), "{off}: {}", run.stderr);
    }
}

/// What a fake proxy saw: connections, and whether any of them carried the credential.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    heads: Mutex<Vec<String>>,
}

/// A listener on 127.0.0.1 that plays a proxy: it records each connection and the head of what
/// it was sent, then hangs up.
async fn fake_proxy() -> (String, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
    let seen = Arc::new(Seen::default());
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            record.connections.fetch_add(1, Ordering::SeqCst);
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let n = tokio::time::timeout(std::time::Duration::from_secs(1), stream.read(&mut head))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                let head = String::from_utf8_lossy(&head[..n]).into_owned();
                record.heads.lock().unwrap_or_else(|e| e.into_inner()).push(head);
            });
        }
    });
    (format!("http://127.0.0.1:{port}"), seen)
}

fn proxy_env(proxy: &str) -> Vec<(&'static str, String)> {
    ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"]
        .into_iter()
        .map(|k| (k, proxy.to_owned()))
        .collect()
}

/// reqwest sends a plain-http request to `HTTP_PROXY`/`ALL_PROXY`, loopback included (it has no
/// exception for it unless `NO_PROXY` says so), and the `PRIVATE-TOKEN` header with it. patrol
/// speaks plain http only to a loopback GitLab, and never through a proxy. The URL's scheme is
/// also tried in capitals, which `url` accepts as http.
#[tokio::test]
async fn plain_http_never_goes_through_a_proxy() {
    let (proxy, seen) = fake_proxy().await;
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let env = proxy_env(&proxy);
    let shouted = u.sim.api_url().replacen("http://", "HTTP://", 1);
    for url in [u.sim.api_url(), shouted] {
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("PATROL_GITLAB_URL", url.as_str()));
        let run = u.patrol_with(&["plan"], &env).await;
        assert_eq!(run.code, 0, "{url}: the plan reached GitLab directly: {}", tail(&run.stderr));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let heads = seen.heads.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        !heads.iter().any(|h| h.to_ascii_lowercase().contains("private-token")),
        "the credential reached the proxy in clear"
    );
    assert_eq!(seen.connections.load(Ordering::SeqCst), 0, "the proxy was used for plain http: {heads:?}");
}

/// Over https a proxy only tunnels, so `HTTPS_PROXY` is still honoured: patrol asks it to
/// `CONNECT` to GitLab (here a name that resolves nowhere, so only the proxy can reach it).
#[tokio::test]
async fn https_still_goes_through_the_proxy() {
    let (proxy, seen) = fake_proxy().await;
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let env = proxy_env(&proxy);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("PATROL_GITLAB_URL", "https://gitlab.invalid/api/v4"));
    let run = u.patrol_with(&["plan"], &env).await;
    assert_eq!(run.code, 3, "the fake proxy tunnels nowhere: {}", tail(&run.stderr));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let heads = seen.heads.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(heads.iter().any(|h| h.starts_with("CONNECT gitlab.invalid:443")), "{heads:?}");
    assert!(!heads.iter().any(|h| h.to_ascii_lowercase().contains("private-token")), "{heads:?}");
}

/// Token-shaped, but never issued: the leak scan does not know it, so this checks the redaction
/// itself.
const SHAPED: &str = "glpat-NotIssuedButShaped0123";
const SHAPED_RUNNER: &str = "glrt-AlsoNotIssued456789";

/// Every output a run leaves, tracking issues included.
fn outputs(u: &Universe, run: &Run) -> String {
    let issues: String = u.sim.with_world(|w| {
        w.issues.iter().map(|i| format!("{}\n{}\n{}\n", i.title, i.description, i.notes.join("\n"))).collect()
    });
    format!("{}\n{}\n{}\n{}\n{issues}", run.stdout, run.stderr, run.report, run.junit)
}

fn echo(status: u16, message: &str) -> FaultAction {
    FaultAction::Respond {
        status,
        content_type: "application/json".into(),
        body: serde_json::json!({ "message": message }).to_string(),
        location: None,
    }
}

/// GitLab (or a proxy) echoing tokens in an error: on the rotate and on a variable's `PUT`. The
/// report, JUnit, stdout, stderr at trace level and the tracking issue show `[REDACTED]` where
/// each was, the admin's own secret included (the leak scan checks that one too).
#[tokio::test]
async fn tokens_echoed_in_gitlabs_errors_are_redacted_everywhere() {
    let config = format!("[notify]\nproject = \"sec/reports\"\n{FLEET_CONFIG}");
    let u = Universe::new(fleet(), &config).await;
    let message = format!("token {SHAPED} is invalid (sent by {ADMIN}; runner {SHAPED_RUNNER})");
    u.sim.inject(Fault::new(Some("POST"), "/api/v4/projects/*/access_tokens/*/rotate", echo(400, &message)));
    u.sim.inject(Fault::new(Some("PUT"), "/api/v4/projects/*/variables/PERSONAL_TOKEN", echo(400, &message)));
    let run = u.patrol(&["rotate", "--only", "project", "--only", "personal"]).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, tail(&run.stderr));
    let tokens = run.report["tokens"].as_array().cloned().unwrap_or_default();
    for id in ["project", "personal"] {
        let error = tokens
            .iter()
            .find(|t| t["id"] == id)
            .and_then(|t| t["error"].as_str())
            .unwrap_or_else(|| panic!("{id} failed with an error: {}", run.report));
        assert!(
            error.contains("token glpat-[REDACTED] is invalid (sent by glpat-[REDACTED]; runner glrt-[REDACTED])"),
            "{id}: {error}"
        );
    }
    let all = outputs(&u, &run);
    for secret in [SHAPED, ADMIN, SHAPED_RUNNER] {
        let body = &secret[secret.find('-').map_or(0, |d| d + 1)..];
        assert!(!all.contains(body), "{secret} shown");
    }
    assert!(u.sim.with_world(|w| w.issues.iter().any(|i| i.description.contains("glpat-[REDACTED]"))));
}

/// A credential made under a custom prefix is not token-shaped; patrol redacts it anyway, as one
/// of the secrets the request carried.
#[tokio::test]
async fn a_credential_with_a_custom_prefix_is_redacted_when_echoed() {
    const CUSTOM: &str = "acme_CustomPrefixAdmin0042";
    let mut seed = fleet();
    for t in seed.tokens.iter_mut().filter(|t| t.secret.as_deref() == Some(ADMIN)) {
        t.secret = Some(CUSTOM.into());
    }
    let u = Universe::new(seed, FLEET_CONFIG).await;
    let message = format!("{CUSTOM} may not rotate this token");
    u.sim.inject(Fault::new(Some("POST"), "/api/v4/projects/*/access_tokens/*/rotate", echo(403, &message)));
    let run = u.patrol_with(&["rotate", "--only", "project"], &[("PATROL_TOKEN", CUSTOM)]).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, tail(&run.stderr));
    let error = run.report["tokens"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("[REDACTED] may not rotate this token"), "{error}");
    assert!(!outputs(&u, &run).contains("CustomPrefixAdmin"));
}
