//! Two patrol runs on one config at once (issue 4): a manual emergency run racing the scheduled
//! one, without GitLab CI's `resource_group` to keep them apart. Each token is rotated by one of
//! them; the other leaves it alone or finds it done. No family is revoked, no variable is left
//! holding a dead token, no lock is left behind.

use crate::engine::tail;
use crate::helpers::*;
use patrol::engine::lock;
use patrol::simulator::world::{Source, Variable};
use std::time::Duration;

const NAMES: [&str; 4] = ["alice-ci", "app-ci", "sec-reports", "inventory"];

fn locks_left(u: &Universe) -> Vec<String> {
    u.sim.with_world(|w| {
        w.variables.iter().filter(|v| v.key.starts_with("PATROL_LOCK_")).map(|v| v.key.clone()).collect()
    })
}

fn dead_variables(u: &Universe) -> Vec<String> {
    u.sim.with_world(|w| {
        let today = w.today();
        w.variables
            .iter()
            .filter(|v| v.key.ends_with("_TOKEN"))
            .filter(|v| !w.token_by_secret(&v.value).is_some_and(|t| t.active(today)))
            .map(|v| v.key.clone())
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runs_started_together_rotate_each_token_once() {
    const ROUNDS: usize = 12;
    let mut contended = 0;
    for round in 0..ROUNDS {
        let u = Universe::new(fleet(), FLEET_CONFIG).await;
        // A few milliseconds per request keeps both runs inside each other's windows.
        u.sim.set_latency(Duration::from_millis(3 + round as u64 % 4));
        // Timeouts are not under test here: a loaded machine must not turn into lost answers.
        let slow = [("PATROL_TIMEOUT", "20")];
        let (a, b) = tokio::join!(u.patrol_with(&["rotate"], &slow), u.patrol_with(&["rotate"], &slow));
        for run in [&a, &b] {
            assert!(matches!(run.code, 0 | 1), "round {round}: exit {}\n{}", run.code, tail(&run.stderr));
        }
        assert!(u.sim.reuse_detections().is_empty(), "round {round}: reuse detection");
        for name in NAMES {
            assert_eq!(u.active(name).len(), 1, "round {round}: {name}");
        }
        assert_eq!(dead_variables(&u), Vec::<String>::new(), "round {round}");
        assert_eq!(locks_left(&u), Vec::<String>::new(), "round {round}");
        // Each token was rotated by exactly one of the two runs.
        let rotated = |run: &Run, id: &str| outcomes(run).iter().any(|(t, o)| t == id && o == "rotated");
        for id in ["personal", "project", "group", "service"] {
            assert!(
                rotated(&a, id) ^ rotated(&b, id),
                "round {round}: {id} rotated by {} runs\n{}\n{}",
                rotated(&a, id) as u8 + rotated(&b, id) as u8,
                a.report,
                b.report
            );
        }
        let rotates = u.sim.requests().iter().filter(|r| r.method == "POST" && r.path.ends_with("/rotate")).count();
        assert_eq!(rotates, 4, "round {round}: one rotate per token");
        contended += [&a, &b]
            .iter()
            .flat_map(|r| r.report["tokens"].as_array().cloned().unwrap_or_default())
            .filter(|t| t["error"].as_str().is_some_and(|e| e.contains("another run is working on token")))
            .count();
        // And the next run finds everything done.
        let next = u.patrol(&["rotate"]).await;
        assert_eq!(next.code, 0, "round {round}: {}\n{}", next.stdout, tail(&next.stderr));
        assert_eq!(outcomes(&next).len(), 4, "round {round}: every token is in the report: {:?}", outcomes(&next));
        assert!(outcomes(&next).iter().all(|(_, o)| o == "unchanged"), "round {round}: {:?}", outcomes(&next));
    }
    println!("concurrent runs: {ROUNDS} rounds of 2 runs x 4 tokens; a run found a token locked {contended} times");
    assert!(contended > 0, "the two runs never met at a lock, so this test proved nothing");
}

/// The key of the lock on the GitLab token named `name`: keyed by its identity (its user and
/// name), whichever config or `[[token]]` id works on it.
fn lock_key(u: &Universe, name: &str) -> String {
    let user = u.sim.with_world(|w| w.tokens.values().find(|t| t.name == name).map(|t| t.user_id)).unwrap_or_default();
    lock::key(&lock::identity(user, name))
}

/// A lock on the token named `name` in sec/app, where both the project token (its own project)
/// and alice's token (its only variable's project) keep their locks.
fn lock_variable(u: &Universe, name: &str, value: String) {
    let key = lock_key(u, name);
    u.sim.with_world(|w| {
        let project = w.project_by_path("sec/app").map(|p| p.id).unwrap_or_default();
        w.variables.push(Variable {
            owner: Source::Project(project),
            key,
            value,
            variable_type: "env_var".into(),
            protected: false,
            masked: false,
            hidden: false,
            raw: true,
            environment_scope: "*".into(),
            description: None,
        });
    });
}

#[tokio::test]
async fn a_live_runs_lock_is_respected_and_an_expired_one_is_taken_over() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let old = u.active("app-ci");
    let me = lock::RunId::new();
    let live = lock::value(&me, chrono::Utc::now() + chrono::Duration::hours(1));
    lock_variable(&u, "app-ci", live);
    let run = u.patrol(&["rotate", "--only", "project"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let error = run.report["tokens"][0]["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("another run is working on token \"project\"")
            && error.contains(&format!("pid {}", me.pid))
            && error.contains(&lock_key(&u, "app-ci")),
        "{error}"
    );
    assert_eq!(u.active("app-ci"), old, "left alone");
    assert_eq!(locks_left(&u), vec![lock_key(&u, "app-ci")], "not ours to remove");

    // Another host's lock whose lease ran out: taken over.
    let elsewhere = lock::RunId { host: "other-host".into(), ..me };
    lock_variable(&u, "alice-ci", lock::value(&elsewhere, chrono::Utc::now() - chrono::Duration::minutes(1)));
    let run = u.patrol(&["rotate", "--only", "personal"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    assert_eq!(outcomes(&run), vec![("personal".to_string(), "rotated".to_string())]);
    assert_eq!(locks_left(&u), vec![lock_key(&u, "app-ci")], "only the expired lock was taken over");
    assert!(u.sim.reuse_detections().is_empty());
}

/// Issue 13: host names collide between containers on one runner, and PID namespaces differ, so
/// "this host has no such process" says nothing about another run. A lock naming this machine's
/// host name and a process that does not exist here stands until its lease ends.
#[tokio::test]
async fn a_lock_naming_this_host_and_a_missing_process_stands_until_its_lease_ends() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let old = u.active("app-ci");
    let here = lock::RunId::new();
    let other = lock::RunId { id: "fedcba9876543210".into(), host: here.host.clone(), pid: u32::MAX - 1, job: None };
    let value = lock::value(&other, chrono::Utc::now() + chrono::Duration::minutes(3));
    lock_variable(&u, "app-ci", value.clone());
    let run = u.patrol(&["rotate", "--only", "project"]).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, tail(&run.stderr));
    let error = run.report["tokens"][0]["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("another run is working on token \"project\"") && error.contains("fedcba9876543210"),
        "{error}"
    );
    assert_eq!(u.active("app-ci"), old, "left alone");
    let key = lock_key(&u, "app-ci");
    let lock = u.sim.with_world(|w| w.variables.iter().find(|v| v.key == key).map(|v| v.value.clone()));
    assert_eq!(lock, Some(value), "the other run's lock is still there, unchanged");
    assert!(u.sim.reuse_detections().is_empty());
}

/// Found in review: a lock was stale at once when GitLab showed its CI job finished, but a job
/// killed while its rotate was in flight leaves a request GitLab may still carry out until its
/// deadline (§12). A finished job's lock now stands until its lease ends, like any other.
#[tokio::test]
async fn a_finished_ci_jobs_lock_stands_until_its_lease_ends() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let project = u.sim.with_world(|w| w.project_by_path("sec/app").map(|p| p.id)).unwrap_or_default();
    u.sim.with_world(|w| w.jobs.insert(77, (project, "canceled".into())));
    let job = lock::RunId {
        id: "0123456789abcdef".into(),
        host: "runner-container-1".into(),
        pid: 7,
        job: Some(format!("{project}/77")),
    };
    lock_variable(&u, "app-ci", lock::value(&job, chrono::Utc::now() + chrono::Duration::minutes(3)));
    let old = u.active("app-ci");
    let run = u.patrol(&["rotate", "--only", "project"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.report["tokens"][0]["error"].as_str().is_some_and(|e| e.contains("runner-container-1")),
        "{}",
        run.report
    );
    assert_eq!(u.active("app-ci"), old, "left alone although the job is over");
    assert_eq!(locks_left(&u), vec![lock_key(&u, "app-ci")]);
}

/// Issue 13, case 4: the lock was keyed by the config's id and sat at the first configured
/// variable, so two configs managing one token (other ids, variables in another order) did not
/// exclude each other. The key now comes from the token's identity in GitLab, and its place from
/// the token (or its variables in a fixed order).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_configs_for_the_same_tokens_exclude_each_other() {
    const ROUNDS: usize = 6;
    // The same four tokens under other ids, each personal token's variables in the other order.
    let other = FLEET_CONFIG
        .replace("id = \"personal\"", "id = \"alice\"")
        .replace("id = \"project\"", "id = \"app\"")
        .replace("id = \"group\"", "id = \"reports\"")
        .replace("id = \"service\"", "id = \"inventory\"")
        .replace(
            "[[token.variable]]\nproject = \"sec/app\"\nkey = \"PERSONAL_TOKEN\"\n",
            "[[token.variable]]\nproject = \"sec/reports\"\nkey = \"PERSONAL_COPY\"\n\n[[token.variable]]\nproject = \"sec/app\"\nkey = \"PERSONAL_TOKEN\"\n",
        );
    assert!(other.contains("PERSONAL_COPY"));
    let mut contended = 0;
    for round in 0..ROUNDS {
        let u = Universe::new(fleet(), FLEET_CONFIG).await;
        let second = u.dir.join("other-team.toml");
        std::fs::write(&second, &other).unwrap_or_else(|e| panic!("{e}"));
        let second = second.display().to_string();
        u.sim.set_latency(Duration::from_millis(3 + round as u64 % 4));
        let (first_env, second_env) =
            ([("PATROL_TIMEOUT", "20")], [("PATROL_TIMEOUT", "20"), ("PATROL_CONFIG", &second)]);
        let (a, b) = tokio::join!(u.patrol_with(&["rotate"], &first_env), u.patrol_with(&["rotate"], &second_env));
        for run in [&a, &b] {
            assert!(matches!(run.code, 0 | 1), "round {round}: exit {}\n{}", run.code, tail(&run.stderr));
        }
        assert!(u.sim.reuse_detections().is_empty(), "round {round}: reuse detection");
        let rotates = u.sim.requests().iter().filter(|r| r.method == "POST" && r.path.ends_with("/rotate")).count();
        assert_eq!(rotates, 4, "round {round}: one rotate per token across both configs");
        for name in NAMES {
            assert_eq!(u.active(name).len(), 1, "round {round}: {name}");
        }
        assert_eq!(locks_left(&u), Vec::<String>::new(), "round {round}");
        contended += [&a, &b]
            .iter()
            .flat_map(|r| r.report["tokens"].as_array().cloned().unwrap_or_default())
            .filter(|t| t["error"].as_str().is_some_and(|e| e.contains("another run is working on token")))
            .count();
    }
    println!("two configs: {ROUNDS} rounds of 2 runs x 4 tokens; a run found a token locked {contended} times");
    assert!(contended > 0, "the two runs never met at a lock, so this test proved nothing");
}

/// Issue 14's review: a run looks at a due token; before it locks the token, another run
/// rotates it completely and unlocks it. The first run must not act on its stale look (a rotate
/// of a token replaced meanwhile, a pending marker over the other run's marker): under the lock
/// it lists the token again, sees the change, looks again and finds the token done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_another_run_rotated_after_this_run_looked_is_looked_at_again() {
    use patrol::simulator::{Fault, FaultAction};
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    // The first run's lock create (the service account's lock lives in its group) waits at a gate.
    u.sim.inject(Fault::new(Some("POST"), "/api/v4/groups/*/variables", FaultAction::Gated).times(1));
    let (cmd, files) = u.command(&["rotate", "--only", "service"], &[]).unwrap_or_else(|e| panic!("{e}"));
    let first = tokio::task::spawn_blocking(move || { cmd }.output());
    u.sim.wait_gated(1).await;
    let old = u.active("inventory");
    let other = u.patrol(&["rotate", "--only", "service"]).await;
    assert_eq!(other.code, 0, "{}\n{}", other.stdout, tail(&other.stderr));
    assert_eq!(outcomes(&other), vec![("service".to_owned(), "rotated".to_owned())]);
    let done = u.active("inventory");
    assert_ne!(done, old);
    u.sim.open_gate();
    let output = first.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("cannot run patrol: {e}"));
    let first = u.finish(output, &files);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, tail(&first.stderr));
    assert_eq!(outcomes(&first), vec![("service".to_owned(), "unchanged".to_owned())], "{}", first.report);
    let rotates: Vec<u16> = u
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/rotate"))
        .map(|r| r.status)
        .collect();
    assert_eq!(rotates, vec![200], "only the other run's rotate was sent");
    assert!(u.sim.reuse_detections().is_empty());
    assert_eq!(u.active("inventory"), done, "nothing changed after the other run");
    assert_eq!(u.variable_holds("SA_TOKEN", "*"), done.first().copied());
    assert_eq!(locks_left(&u), Vec::<String>::new());
}

/// The same race for a token due by its marker, which a run lists only under the lock: the
/// listing there shows another active token than the marker's, so the run looks again and finds
/// the token done, never acting on what it read before the lock (its variable then held the
/// token the other run replaced, which would look stale and be "repaired" by rotating the other
/// run's new token).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_due_by_its_marker_is_listed_under_the_lock_and_a_change_there_is_seen() {
    use patrol::simulator::{Fault, FaultAction};
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    // As patrol left it a year ago: the variable carries its marker, and the token is due.
    u.sim.with_world(|w| {
        let soon = w.today() + chrono::Duration::days(5);
        let token = w.tokens.values_mut().find(|t| t.name == "inventory");
        let Some(token) = token else { panic!("no inventory token") };
        token.expires_at = Some(soon);
        let stored = patrol::engine::Stored { id: token.id, user_id: token.user_id, expires_at: token.expires_at };
        let secret = token.secret.clone();
        let v = w.variables.iter_mut().find(|v| v.key == "SA_TOKEN");
        let Some(v) = v else { panic!("no SA_TOKEN") };
        v.description = Some(patrol::engine::with_marker(None, stored.id, Some((&stored, &secret))));
    });
    u.sim.inject(Fault::new(Some("POST"), "/api/v4/groups/*/variables", FaultAction::Gated).times(1));
    let from = u.sim.requests().len();
    let (cmd, files) = u.command(&["rotate", "--only", "service"], &[]).unwrap_or_else(|e| panic!("{e}"));
    let gated = tokio::task::spawn_blocking(move || { cmd }.output());
    u.sim.wait_gated(1).await;
    let listed = u.sim.requests()[from..].iter().filter(|r| r.path.ends_with("/personal_access_tokens")).count();
    assert_eq!(listed, 0, "a token due by its marker is listed only under the lock");
    let other = u.patrol(&["rotate", "--only", "service"]).await;
    assert_eq!(other.code, 0, "{}\n{}", other.stdout, tail(&other.stderr));
    assert_eq!(outcomes(&other), vec![("service".to_owned(), "rotated".to_owned())]);
    let done = u.active("inventory");
    u.sim.open_gate();
    let output = gated.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("cannot run patrol: {e}"));
    let gated = u.finish(output, &files);
    assert_eq!(gated.code, 0, "{}\n{}", gated.stdout, tail(&gated.stderr));
    assert_eq!(outcomes(&gated), vec![("service".to_owned(), "unchanged".to_owned())], "{}", gated.report);
    let rotates = u.sim.requests()[from..].iter().filter(|r| r.method == "POST" && r.path.ends_with("/rotate")).count();
    assert_eq!(rotates, 1, "only the other run rotated");
    assert!(u.sim.reuse_detections().is_empty());
    assert_eq!(u.active("inventory"), done);
    assert_eq!(u.variable_holds("SA_TOKEN", "*"), done.first().copied());
    assert_eq!(locks_left(&u), Vec::<String>::new());
}
