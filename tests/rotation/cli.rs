//! The command line a new user meets (issue 15, "The first hour with patrol"): every tunable a
//! flag with an environment fallback and units, a malformed value refused; connections that
//! cannot succeed refused at once; `validate` refusing what `plan` and `rotate` would; the role
//! of a created token; `-` for stdout; flags a command would ignore refused; output in config
//! order; a quiet log; the preflight's scope check.

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::{Fault, FaultAction};
use std::time::{Duration, Instant};

/// `patrol ARGS` in the universe, without the report files `Universe::patrol` adds to `plan`
/// and `rotate` (a leading global flag leaves them out), so a test can pass its own.
async fn plain(u: &Universe, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = vec!["--log-format=text"];
    all.extend_from_slice(args);
    let (mut cmd, files) = u.command(&all, env).unwrap_or_else(|e| panic!("{e}"));
    // In the universe's directory: a file a run writes by mistake (one named `-`) shows there.
    cmd.current_dir(&u.dir);
    let output = tokio::task::spawn_blocking(move || { cmd }.output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("cannot run patrol: {e}"));
    u.finish(output, &files)
}

/// A loopback port where something accepts connections and never answers: a silent host.
fn silent_host() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    // The kernel completes the handshakes (the backlog); nothing reads or answers.
    (listener, port)
}

/// A loopback port where nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}

// ---- 1. tunables ------------------------------------------------------------------------------

/// `PATROL_TIMEOUT=2s` used to be ignored (a silent host took two minutes to fail): units are
/// read, the flag beats the variable, and a silent host fails within the timeout.
#[tokio::test]
async fn timeouts_take_units_and_the_flag_beats_the_environment() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let (_silent, port) = silent_host();
    let url = format!("http://127.0.0.1:{port}/api/v4");
    for (args, env, shown) in [
        (vec!["plan"], vec![("PATROL_TIMEOUT", "300ms"), ("PATROL_RETRY_SECONDS", "0s")], "300ms"),
        (vec!["plan", "--timeout", "0.4s"], vec![("PATROL_TIMEOUT", "20s"), ("PATROL_RETRY_SECONDS", "0")], "400ms"),
        (vec!["plan", "--timeout=250ms", "--retry-budget=0s"], vec![("PATROL_TIMEOUT", "20")], "250ms"),
    ] {
        let mut env = env;
        env.push(("PATROL_GITLAB_URL", &url));
        let started = Instant::now();
        let run = u.patrol_with(&args, &env).await;
        let took = started.elapsed();
        assert_eq!(run.code, 3, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(&format!("no answer within {shown}")), "{args:?}: {}", run.stderr);
        assert!(took < Duration::from_secs(5), "{args:?}: a silent host fails within the timeout, took {took:?}");
    }
}

/// Every tunable read from the environment: a malformed value stops the run (exit 2) naming the
/// variable, before anything is contacted; they were ignored before.
#[tokio::test]
async fn a_malformed_tunable_is_refused_naming_its_variable() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    for (name, value, command) in [
        ("PATROL_TIMEOUT", "2x", "plan"),
        ("PATROL_TIMEOUT", "abc", "rotate"),
        ("PATROL_TIMEOUT", "2h", "audit"),
        ("PATROL_RETRY_SECONDS", "soon", "plan"),
        ("PATROL_CONCURRENCY", "0", "plan"),
        ("PATROL_WRITE_SECONDS", "5 minutes", "rotate"),
        ("PATROL_REQUEST_DEADLINE_SECONDS", "-1", "rotate"),
        ("PATROL_LOCK_LEASE_SECONDS", "0s", "rotate"),
        ("PATROL_LOCK", "maybe", "rotate"),
        ("PATROL_LOG", "patrol=loud", "plan"),
        ("PATROL_LOG_FORMAT", "xml", "plan"),
    ] {
        let run = u.patrol_with(&[command], &[(name, value)]).await;
        assert_eq!(run.code, 2, "{name}={value} {command}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("the environment variable {name}")),
            "{name}={value}: names the variable: {}",
            run.stderr
        );
        assert!(run.stderr.contains(&format!("'{value}'")), "{name}={value}: shows the value: {}", run.stderr);
    }
    // On the command line the flag is named, and no variable is blamed.
    let run = u.patrol_with(&["rotate", "--write-budget", "forever"], &[]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--write-budget") && !run.stderr.contains("environment variable"), "{}", run.stderr);
    assert!(u.sim.requests().is_empty(), "nothing was contacted");
}

/// The old names, with bare numbers of seconds, keep working (every test of the suite sets
/// them); `--help` shows each tunable with its variable, default and units.
#[tokio::test]
async fn help_shows_each_tunable_with_its_variable_and_default() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let help = plain(&u, &["rotate", "--help"], &[]).await;
    assert_eq!(help.code, 0, "{}", help.stderr);
    for needed in [
        "--timeout <DURATION>",
        "[env: PATROL_TIMEOUT=2]",
        "[default: 30s]",
        "--retry-budget <DURATION>",
        "PATROL_RETRY_SECONDS",
        "[default: 2m]",
        "--write-budget <DURATION>",
        "PATROL_WRITE_SECONDS",
        "[default: 5m]",
        "--request-deadline <DURATION>",
        "PATROL_REQUEST_DEADLINE_SECONDS",
        "--lock-lease <DURATION>",
        "PATROL_LOCK_LEASE_SECONDS",
        "[default: 3m]",
        "--lock <LOCK>",
        "PATROL_LOCK",
        "--concurrency <CONCURRENCY>",
        "PATROL_CONCURRENCY",
        "--log-filter <FILTER>",
        "PATROL_LOG",
        "500ms, 30s, 2m, 1h",
    ] {
        assert!(help.stdout.contains(needed), "{needed:?} missing from rotate --help:\n{}", help.stdout);
    }
}

// ---- 2. connections that cannot succeed -------------------------------------------------------

/// One short message and exit 3 at once: no retries, no warning per attempt. The retry budget
/// is large, so a retry would show in the time taken.
fn assert_refused_at_once(run: &Run, took: Duration, needed: &[&str]) {
    assert_eq!(run.code, 3, "{}", run.stderr);
    for n in needed.iter().chain(&["Nothing was changed"]) {
        assert!(run.stderr.contains(n), "{n:?} missing from: {}", run.stderr);
    }
    assert!(!run.stderr.contains("retrying"), "a connection that cannot succeed is not retried: {}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one message: {lines:#?}");
    assert!(lines[0].len() < 600, "a message to read, not a dump: {}", lines[0]);
    assert!(took < Duration::from_secs(5), "at once, took {took:?}");
}

#[tokio::test]
async fn an_unknown_host_or_a_closed_port_fails_at_once_with_one_message() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    // No log but warnings, as a user's terminal; a minute of retries if one were made.
    let quiet = [("PATROL_LOG", UNSET), ("PATROL_RETRY_SECONDS", "60")];

    // `.invalid` resolves nowhere (RFC 2606), without a network.
    let mut env = quiet.to_vec();
    env.push(("PATROL_GITLAB_URL", "https://gitlab.invalid/api/v4"));
    let started = Instant::now();
    let run = u.patrol_with(&["rotate"], &env).await;
    if run.stderr.contains("Temporary failure in name resolution") {
        // A machine without a name server cannot tell "no such host"; that may pass, and is retried.
        println!("note: skipped the unknown host: this machine has no name server to ask");
    } else {
        assert_refused_at_once(
            &run,
            started.elapsed(),
            &["gitlab.invalid", "does not resolve", "Check the GitLab URL"],
        );
    }

    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/api/v4");
    let mut env = quiet.to_vec();
    env.push(("PATROL_GITLAB_URL", &url));
    for command in ["plan", "rotate", "audit"] {
        let started = Instant::now();
        let run = u.patrol_with(&[command], &env).await;
        let port_named = format!("127.0.0.1 port {port}");
        assert_refused_at_once(
            &run,
            started.elapsed(),
            &[&port_named, "connection refused", "Check the host and port"],
        );
    }
    assert!(u.sim.requests().is_empty());
}

#[tokio::test]
async fn a_refused_certificate_fails_at_once_with_one_message() {
    let quiet = [("PATROL_LOG", UNSET), ("PATROL_RETRY_SECONDS", "60")];
    // Signed by an authority patrol was not told to trust.
    let (u, _ca) = crate::tls::tls_universe(&["localhost"], FLEET_CONFIG).await;
    let started = Instant::now();
    let run = u.patrol_with(&["rotate"], &quiet).await;
    assert_refused_at_once(
        &run,
        started.elapsed(),
        &["localhost", "certificate authority patrol does not trust", "ca_file"],
    );

    // Trusted, but issued for another name.
    let (u, ca) = crate::tls::tls_universe(&["gitlab.example.com"], FLEET_CONFIG).await;
    let ca_path = u.dir.join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap_or_else(|e| panic!("{e}"));
    let ca_path = ca_path.display().to_string();
    let mut env = quiet.to_vec();
    env.push(("CI_SERVER_TLS_CA_FILE", &ca_path));
    let started = Instant::now();
    let run = u.patrol_with(&["plan"], &env).await;
    assert_refused_at_once(&run, started.elapsed(), &["was not issued for this host name"]);
    assert!(u.sim.requests().is_empty());
}

/// What may pass keeps its retries: a 503, a 429, a connection reset.
#[tokio::test]
async fn transient_failures_keep_their_retries() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let me = "/api/v4/personal_access_tokens/self";
    // One after the other: the first request, the second, the third.
    u.sim.inject(Fault::new(Some("GET"), me, FaultAction::Status { status: 503 }).times(1));
    u.sim.inject(Fault::new(Some("GET"), me, FaultAction::RateLimited { retry_after_secs: 0 }).skip(1).times(1));
    u.sim.inject(Fault::new(Some("GET"), me, FaultAction::DropAfterCommit).skip(2).times(1));
    let run = u.patrol_with(&["plan"], &[("PATROL_LOG", UNSET), ("PATROL_RETRY_SECONDS", "30s")]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let retries: Vec<&str> = run.stderr.lines().filter(|l| l.contains("retrying")).collect();
    assert_eq!(retries.len(), 3, "{}", run.stderr);
    assert!(retries.iter().all(|l| l.len() < 300), "each warning short: {retries:#?}");
    assert!(retries[0].contains("503") && retries[1].contains("429"), "{retries:#?}");
}

// ---- 3. validate -----------------------------------------------------------------------------

/// Whatever `plan` or `rotate` refuses before contacting GitLab, `validate` refuses too (it
/// contacted nothing), with the same reason; what they accept, it accepts.
#[tokio::test]
async fn validate_refuses_what_plan_and_rotate_would_refuse() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let missing_ca = u.dir.join("missing-ca.pem").display().to_string();
    let broken_ca = u.dir.join("broken-ca.pem");
    std::fs::write(&broken_ca, "not a certificate\n").unwrap_or_else(|e| panic!("{e}"));
    let broken_ca = broken_ca.display().to_string();
    let with_url = |url: &str| format!("[gitlab]\nurl = {url:?}\n{FLEET_CONFIG}");
    // What, the config file, the environment, what the refusal says.
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "http url in the file",
            with_url("http://gitlab.example.com/api/v4"),
            vec![("PATROL_GITLAB_URL", UNSET)],
            "refusing plain http",
        ),
        (
            "url not the API root",
            with_url("https://gitlab.example.com"),
            vec![("PATROL_GITLAB_URL", UNSET)],
            "ending in /api/v4",
        ),
        (
            "http url from the environment",
            FLEET_CONFIG.into(),
            vec![("PATROL_GITLAB_URL", "http://gitlab.example.com/api/v4")],
            "refusing plain http",
        ),
        (
            "http url from GitLab CI",
            FLEET_CONFIG.into(),
            vec![("PATROL_GITLAB_URL", UNSET), ("CI_SERVER_URL", "http://gitlab.example.com")],
            "refusing plain http",
        ),
        ("no url anywhere", FLEET_CONFIG.into(), vec![("PATROL_GITLAB_URL", UNSET)], "no GitLab URL"),
        (
            "missing CA file",
            format!("[gitlab]\nca_file = {missing_ca:?}\n{FLEET_CONFIG}"),
            vec![],
            "cannot read CA file",
        ),
        (
            "broken CA file",
            format!("[gitlab]\nca_file = {broken_ca:?}\n{FLEET_CONFIG}"),
            vec![],
            "holds no certificate",
        ),
        (
            "missing CA file from GitLab CI",
            FLEET_CONFIG.into(),
            vec![("CI_SERVER_TLS_CA_FILE", &missing_ca)],
            "cannot read CA file",
        ),
        ("bad timeout", FLEET_CONFIG.into(), vec![("PATROL_TIMEOUT", "2x")], "PATROL_TIMEOUT"),
        ("bad lock switch", FLEET_CONFIG.into(), vec![("PATROL_LOCK", "maybe")], "PATROL_LOCK"),
        ("bad shard", FLEET_CONFIG.into(), vec![("CI_NODE_INDEX", "5"), ("CI_NODE_TOTAL", "3")], "CI_NODE_INDEX"),
        ("bad kind", FLEET_CONFIG.replace("kind = \"group\"", "kind = \"grup\""), vec![], "\"grup\" is not one of"),
        (
            "role of a personal token",
            FLEET_CONFIG.replace("user = \"alice\"", "user = \"alice\"\naccess_level = \"developer\""),
            vec![],
            "access_level is for project and group tokens",
        ),
    ];
    for (what, config, env, reason) in &cases {
        std::fs::write(u.dir.join("patrol.toml"), config).unwrap_or_else(|e| panic!("{e}"));
        let validate = u.patrol_with(&["validate"], env).await;
        assert_eq!(validate.code, 2, "{what}: validate refuses it:\n{}{}", validate.stdout, validate.stderr);
        assert!(validate.stderr.contains(reason), "{what}: validate says {reason:?}: {}", validate.stderr);
        // `rotate` has every flag `plan` has, and more.
        let rotate = u.patrol_with(&["rotate"], env).await;
        assert_eq!(rotate.code, 2, "{what}: rotate refuses it: {}", rotate.stderr);
        assert!(rotate.stderr.contains(reason), "{what}: rotate says {reason:?}: {}", rotate.stderr);
    }
    assert!(u.sim.requests().is_empty(), "nothing was contacted: {:?}", u.sim.requests().first());
    // What they accept, validate accepts.
    std::fs::write(u.dir.join("patrol.toml"), FLEET_CONFIG).unwrap_or_else(|e| panic!("{e}"));
    let ok = u.patrol(&["validate"]).await;
    assert_eq!((ok.code, ok.stdout.contains("OK, 4 managed token(s)")), (0, true), "{}", ok.stderr);
}

/// Every problem at once, each with its line and key: two bad values in one token, an unknown
/// key, a wrong type, an http URL, and a token with no variable further down.
#[tokio::test]
async fn validate_reports_every_problem_at_once() {
    let config = format!(
        "[gitlab]\nurl = \"http://gitlab.example.com/api/v4\"\n{}",
        FLEET_CONFIG
            .replacen(
                "kind = \"personal\"",
                "kind = \"personl\"\nstrategy = \"ovelap\"\nrotate_before_days = \"soon\"",
                1
            )
            .replacen("key = \"PROJECT_TOKEN\"", "key = \"PROJECT_TOKEN\"\nprotect = true", 1)
            .replacen("[[token.variable]]\ngroup = \"sec\"\nkey = \"GROUP_TOKEN\"\n", "", 1)
            .replacen("kind = \"service_account\"", "kind = \"service_acount\"", 1)
    );
    let u = Universe::new(fleet(), &config).await;
    let run = u.patrol_with(&["validate"], &[("PATROL_GITLAB_URL", UNSET)]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let lines: Vec<&str> = config.lines().collect();
    let line_of = |needle: &str| lines.iter().position(|l| l.contains(needle)).map(|i| i + 1).unwrap_or(0);
    for (needle, key, says) in [
        ("url = \"http:", "url", "refusing plain http"),
        ("kind = \"personl\"", "kind", "\"personl\" is not one of personal, project, group, service_account"),
        ("strategy = \"ovelap\"", "strategy", "\"ovelap\" is not one of rotate, overlap"),
        ("rotate_before_days = \"soon\"", "rotate_before_days", "must be a whole number, not a string"),
        ("protect = true", "protect", "unknown field `protect`"),
        ("kind = \"service_acount\"", "kind", "\"service_acount\" is not one of"),
    ] {
        let expected = format!("patrol.toml:{}: `{key}`: ", line_of(needle));
        let found = run.stderr.lines().find(|l| l.contains(&expected) && l.contains(says));
        assert!(found.is_some(), "{expected}…{says} missing from:\n{}", run.stderr);
    }
    assert!(run.stderr.contains("token \"group\" has no [[token.variable]]"), "{}", run.stderr);
    assert!(run.stderr.contains("7 problem(s) found"), "{}", run.stderr);
}

// ---- 4. the role of a created token ---------------------------------------------------------

fn create_config(project_level: &str, group_level: &str) -> String {
    format!(
        r#"
[[token]]
id = "deploy"
kind = "project"
name = "deploy-ci"
project = "sec/app"
create = true
scopes = ["read_api"]
{project_level}

[[token.variable]]
project = "sec/app"
key = "DEPLOY_TOKEN"

[[token]]
id = "reports"
kind = "group"
name = "reports-ci"
group = "sec"
create = true
scopes = ["read_api"]
{group_level}

[[token.variable]]
group = "sec"
key = "REPORTS_TOKEN"
"#
    )
}

/// The role of each token named, as GitLab shows it.
fn roles(u: &Universe) -> Vec<(String, Option<u8>)> {
    u.sim.with_world(|w| {
        let today = w.today();
        let mut found: Vec<(String, Option<u8>)> = w
            .tokens
            .values()
            .filter(|t| t.active(today) && t.name.ends_with("-ci") && t.name != "alice-ci")
            .map(|t| (t.name.clone(), w.token_access_level(t)))
            .collect();
        found.sort();
        found
    })
}

#[tokio::test]
async fn access_level_sets_the_role_of_a_created_token() {
    let u = Universe::new(fleet(), &create_config("access_level = \"developer\"", "access_level = 20")).await;
    let run = u.patrol(&["rotate", "--only", "deploy", "--only", "reports"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    let by_name: Vec<(String, Option<u8>)> = roles(&u).into_iter().filter(|(n, _)| n != "app-ci").collect();
    assert_eq!(by_name, vec![("deploy-ci".into(), Some(30)), ("reports-ci".into(), Some(20))]);
    assert!(u.variable_holds("DEPLOY_TOKEN", "*").is_some() && u.variable_holds("REPORTS_TOKEN", "*").is_some());

    // Without it, GitLab's default: Maintainer.
    let u = Universe::new(fleet(), &create_config("", "")).await;
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    let by_name: Vec<(String, Option<u8>)> = roles(&u).into_iter().filter(|(n, _)| n != "app-ci").collect();
    assert_eq!(by_name, vec![("deploy-ci".into(), Some(40)), ("reports-ci".into(), Some(40))]);
}

/// `overlap` creates the successor: it gets the configured role, and without one the role of
/// the token it replaces (GitLab would make it a Maintainer). (GitLab's rotate keeps a token's
/// role, so a plain rotation needs none.)
#[tokio::test]
async fn an_overlap_successor_gets_the_configured_role() {
    for role in ["\naccess_level = \"developer\"", ""] {
        overlap_successor_role(role).await;
    }
}

async fn overlap_successor_role(role: &str) {
    let mut seed = fleet();
    for t in seed.tokens.iter_mut().filter(|t| t.name == "app-ci") {
        t.access_level = Some(30);
    }
    let config = FLEET_CONFIG.replacen(
        "project = \"sec/app\"\n\n[[token.variable]]",
        &format!("project = \"sec/app\"\nstrategy = \"overlap\"{role}\n\n[[token.variable]]"),
        1,
    );
    assert_ne!(config, FLEET_CONFIG);
    let u = Universe::new(seed, &config).await;
    let old = u.active("app-ci");
    let run = u.patrol(&["rotate", "--only", "project"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    let now = u.active("app-ci");
    assert!(now.len() == 1 && now != old, "{old:?} → {now:?}");
    assert_eq!(
        roles(&u),
        vec![("app-ci".to_string(), Some(30))],
        "{role:?}: the successor is a developer, like its predecessor"
    );
}

#[tokio::test]
async fn a_role_gitlab_does_not_have_or_on_a_personal_token_is_refused() {
    for (level, says) in [
        ("access_level = \"admin\"", "not a role GitLab gives a token; use one of guest (10), planner (15)"),
        ("access_level = 60", "not a role GitLab gives a token"),
        ("access_level = true", "must be a role, one of guest (10)"),
    ] {
        let u = Universe::new(fleet(), &create_config(level, "")).await;
        let run = u.patrol(&["validate"]).await;
        assert_eq!(run.code, 2, "{level}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("patrol.toml:9: `access_level`: token \"deploy\": {says}")),
            "{level}: {}",
            run.stderr
        );
        assert_eq!(u.patrol(&["rotate"]).await.code, 2, "{level}: rotate refuses it too");
    }
    let personal = FLEET_CONFIG.replacen("user = \"alice\"", "user = \"alice\"\naccess_level = \"owner\"", 1);
    let u = Universe::new(fleet(), &personal).await;
    let run = u.patrol(&["validate"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("`access_level`: token \"personal\": a personal token has its user's role"),
        "{}",
        run.stderr
    );
    assert!(u.sim.requests().is_empty());
}

// ---- 5. `-` is stdout ------------------------------------------------------------------------

#[tokio::test]
async fn a_report_to_stdout_is_alone_there_and_the_lines_go_to_stderr() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let run = plain(&u, &["plan", "--report", "-"], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is the report alone ({e}):\n{}", run.stdout));
    assert_eq!(report["summary"]["due"], 4);
    assert!(
        run.stderr.contains("[1/4] personal: would rotate") && run.stderr.contains("patrol: 0 rotated"),
        "{}",
        run.stderr
    );
    assert!(!u.dir.join("-").exists(), "no file named -");

    let run = plain(&u, &["rotate", "--junit", "-", "--only", "project"], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.trim_start().starts_with("<?xml") && run.stdout.trim_end().ends_with("</testsuites>"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("project (rotated)") && run.stderr.contains("[1/1] project: rotated"),
        "{}",
        run.stdout
    );
    assert!(!u.dir.join("-").exists());

    let both = plain(&u, &["plan", "--report", "-", "--junit", "-"], &[]).await;
    assert_eq!(both.code, 2);
    assert!(both.stderr.contains("would both write to stdout"), "{}", both.stderr);
}

// ---- 6. flags a command would ignore -------------------------------------------------------

#[tokio::test]
async fn flags_a_command_does_not_use_are_refused() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    for (args, says) in [
        (vec!["demo", "--config", "x.toml"], "--config: `patrol demo` reads no config file"),
        (vec!["--config", "x.toml", "demo"], "--config: `patrol demo` reads no config file"),
        (vec!["demo", "--gitlab-url", "https://gitlab.example.com/api/v4"], "--gitlab-url: `patrol demo`"),
        (vec!["demo", "--allow-debug-trace"], "--allow-debug-trace: `patrol demo`"),
        (vec!["simulator", "--config", "x.toml"], "--config: `patrol simulator` reads no config file"),
        (vec!["simulator", "--gitlab-url", "https://gitlab.example.com/api/v4"], "--gitlab-url: `patrol simulator`"),
        (vec!["validate", "--allow-debug-trace"], "--allow-debug-trace: `patrol validate`"),
        (
            vec!["rotate", "--self", "APP_TOKEN", "--config", "x.toml"],
            "--config: `patrol rotate --self` reads no config file",
        ),
        (vec!["rotate", "--self", "APP_TOKEN", "--lock", "off"], "--lock: `patrol rotate --self` always locks"),
    ] {
        let run = plain(&u, &args, &[("APP_TOKEN", "glpat-NotUsedAnyway0000000")]).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(&format!("patrol: refusing {says}")), "{args:?}: {}", run.stderr);
    }
    // Flags of another command are clap's to refuse; a config from the environment is not
    // refused (one CI job's variables serve several commands).
    assert_eq!(plain(&u, &["validate", "--lock", "off"], &[]).await.code, 2);
    assert_eq!(plain(&u, &["audit", "--report", "x.json"], &[]).await.code, 2);
    let ok = plain(&u, &["validate", "--gitlab-url", &u.sim.api_url(), "-v"], &[]).await;
    assert_eq!(ok.code, 0, "validate uses --gitlab-url and the log flags: {}", ok.stderr);
    assert!(u.sim.requests().is_empty());
}

// ---- 7. output in config order ---------------------------------------------------------------

#[tokio::test]
async fn token_lines_are_printed_in_config_order_whatever_finishes_first() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    // The first token in the config finishes last.
    u.sim.inject(
        Fault::new(Some("POST"), "/api/v4/personal_access_tokens/*/rotate", FaultAction::Latency { millis: 1500 })
            .as_token(Some("admin")),
    );
    for gitlab_ci in ["false", "true"] {
        let run = u.patrol_with(&["rotate", "--force", "--all"], &[("GITLAB_CI", gitlab_ci)]).await;
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
        let order: Vec<String> = run
            .stdout
            .lines()
            .filter_map(|l| l.split("] ").nth(1).filter(|_| l.contains("[")).and_then(|rest| rest.split(':').next()))
            .map(str::to_owned)
            .collect();
        assert_eq!(order, ["personal", "project", "group", "service"], "GITLAB_CI={gitlab_ci}:\n{}", run.stdout);
        let numbered: Vec<bool> = (1..=4).map(|i| run.stdout.contains(&format!("[{i}/4] {}:", order[i - 1]))).collect();
        assert_eq!(numbered, [true; 4], "{}", run.stdout);
        if gitlab_ci == "true" {
            // After the lines, each token's block in a section, open, in config order.
            for (i, id) in order.iter().enumerate().map(|(i, id)| (i + 1, id)) {
                let start = format!("patrol_token_{i}[collapsed=false]\r\x1b[0K{id}: rotated");
                assert!(run.stdout.contains(&start), "{start} in {}", run.stdout);
                assert_eq!(run.stdout.matches(&format!(":patrol_token_{i}\r")).count(), 1, "one section end each");
            }
        }
    }
}

// ---- 8. a quiet log ---------------------------------------------------------------------------

#[tokio::test]
async fn by_default_the_log_shows_warnings_only_and_repeats_no_stdout_line() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let run = u.patrol_with(&["rotate", "--only", "project"], &[("PATROL_LOG", UNSET)]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("[1/1] project: rotated"), "{}", run.stdout);
    assert_eq!(run.stderr, "", "nothing needed attention, so the log is empty");

    // A warning shows; what stdout says is not repeated.
    u.sim.inject(
        Fault::new(Some("GET"), "/api/v4/personal_access_tokens/self", FaultAction::Status { status: 502 }).times(1),
    );
    let run = u.patrol_with(&["plan"], &[("PATROL_LOG", UNSET)]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let log: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(log.len(), 1, "{log:#?}");
    assert!(log[0].contains("WARN") && log[0].contains("retrying"), "{log:#?}");
    for line in run.stdout.lines() {
        assert!(!run.stderr.contains(line), "{line:?} is on stdout and in the log");
    }

    // -v adds what patrol does; -q leaves errors only.
    let verbose = u.patrol_with(&["plan", "-v"], &[("PATROL_LOG", "error")]).await;
    assert!(verbose.stderr.contains(" INFO "), "-v beats PATROL_LOG: {}", tail(&verbose.stderr));
    u.sim.inject(
        Fault::new(Some("GET"), "/api/v4/personal_access_tokens/self", FaultAction::Status { status: 502 }).times(1),
    );
    let quiet = u.patrol_with(&["plan", "-q"], &[("PATROL_LOG", UNSET)]).await;
    assert_eq!((quiet.code, quiet.stderr.as_str()), (0, ""), "-q hides the warning");
    let filtered = u.patrol_with(&["plan", "-v", "--log-filter", "error"], &[]).await;
    assert!(!filtered.stderr.contains(" INFO "), "--log-filter beats -v: {}", tail(&filtered.stderr));
}

// ---- 9. the preflight ------------------------------------------------------------------------

#[tokio::test]
async fn a_read_api_credential_plans_but_never_starts_a_rotation() {
    let mut seed = fleet();
    for t in seed.tokens.iter_mut().filter(|t| t.name == "admin") {
        t.scopes = vec!["read_api".into()];
    }
    let u = Universe::new(seed, FLEET_CONFIG).await;
    let plan = u.patrol(&["plan"]).await;
    assert_eq!(plan.code, 0, "read_api is enough to plan: {}", plan.stderr);
    assert_eq!(outcomes(&plan).len(), 4);
    assert!(outcomes(&plan).iter().all(|(_, o)| o == "due"), "{:?}", outcomes(&plan));

    for args in [vec!["rotate"], vec!["rotate", "--force", "--only", "project"]] {
        let run = u.patrol(&args).await;
        assert_eq!(run.code, 3, "{args:?}: {}", run.stderr);
        for needed in
            ["has the scopes read_api but not `api`", "Nothing was changed", "`read_api` is enough for `plan`"]
        {
            assert!(run.stderr.contains(needed), "{args:?}: {needed:?} missing from {}", run.stderr);
        }
    }
    assert_eq!(u.writes_since(0), Vec::<String>::new(), "nothing was written");
    let audit = u.patrol(&["audit"]).await;
    assert_eq!(audit.code, 0, "read_api is enough to audit: {}", audit.stderr);
}
