//! The lock itself (issue 13, case 7), driven through `lock::acquire` and `lock::release` against
//! the simulator: a release or a takeover deletes only the lock it read or wrote, and a holder
//! renews its lease while it works.

use crate::helpers::*;
use patrol::config::Holder;
use patrol::engine::lock;
use patrol::gitlab::{Client, ClientOptions};
use patrol::secret::Secret;
use patrol::simulator::world::{Source, Variable};

fn client(u: &Universe) -> Client {
    Client::new(&u.sim.api_url(), Secret::new(ADMIN), ClientOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn holder() -> Holder {
    Holder::Project("sec/app".into())
}

/// The lock variable's value, if it exists.
fn lock_value(u: &Universe, token: &str) -> Option<String> {
    u.sim.with_world(|w| w.variables.iter().find(|v| v.key == lock::key(token)).map(|v| v.value.clone()))
}

fn set_lock_value(u: &Universe, token: &str, value: &str) {
    u.sim.with_world(|w| {
        let v = w.variables.iter_mut().find(|v| v.key == lock::key(token));
        v.unwrap_or_else(|| panic!("no lock on {token}")).value = value.to_owned();
    });
}

/// A lock variable as another run would have left it.
fn put_lock(u: &Universe, token: &str, value: String) {
    u.sim.with_world(|w| {
        let owner = Source::Project(w.project_by_path("sec/app").map(|p| p.id).unwrap_or_default());
        w.variables.push(Variable {
            owner,
            key: lock::key(token),
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

/// Our lease ran out (say the machine slept) and another run took the lock over: our release must
/// leave that run's lock alone. (A lease of zero has run out by the time it is released.)
#[tokio::test]
async fn release_leaves_alone_a_lock_another_run_took_over() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let client = client(&u);
    let me = lock::RunId::new();
    let held = lock::acquire(&client, &me, "project", "project", &holder(), std::time::Duration::ZERO).await;
    let held = held.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|busy| panic!("{busy}"));
    assert!(lock_value(&u, "project").is_some_and(|v| v.contains(&format!("run={}", me.id))));

    let other = lock::RunId { id: "fedcba9876543210".into(), ..me.clone() };
    let theirs = lock::value(&other, chrono::Utc::now() + chrono::Duration::minutes(3));
    set_lock_value(&u, "project", &theirs);
    lock::release(&client, &held).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lock_value(&u, "project"), Some(theirs), "the other run's lock is still there");
    assert!(!u.sim.requests().iter().any(|r| r.method == "DELETE"), "no DELETE was sent for a lock that is not ours");
}

/// Our own lock is released: gone afterwards.
#[tokio::test]
async fn release_removes_our_own_lock() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let client = client(&u);
    let me = lock::RunId::new();
    let held = lock::acquire(&client, &me, "project", "project", &holder(), lock::LEASE).await;
    let held = held.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|busy| panic!("{busy}"));
    assert!(lock_value(&u, "project").is_some());
    lock::release(&client, &held).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lock_value(&u, "project"), None);
    // Releasing twice (self-rotation may) is fine.
    lock::release(&client, &held).await.unwrap_or_else(|e| panic!("{e}"));
}

/// Polls `done` every 20 ms until it holds, for at most `bound`; whether it did.
async fn eventually(bound: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < bound {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    done()
}

fn until_of(value: &str) -> chrono::DateTime<chrono::Utc> {
    lock::parse(value).and_then(|o| o.until).unwrap_or_else(|| panic!("no lease in {value:?}"))
}

/// A holder renews its lease while it works, so the lease can be short; the release removes it.
#[tokio::test]
async fn a_held_lock_is_renewed_until_released() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let client = client(&u);
    let me = lock::RunId::new();
    let lease = std::time::Duration::from_secs(2);
    let held = lock::acquire(&client, &me, "project", "project", &holder(), lease).await;
    let held = held.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|busy| panic!("{busy}"));
    let first = lock_value(&u, "project").unwrap_or_else(|| panic!("no lock"));
    // Renewals every 2/3 s; `until` has whole seconds, so it moves within two of them.
    let renewed = eventually(std::time::Duration::from_secs(10), || {
        lock_value(&u, "project").is_some_and(|v| until_of(&v) > until_of(&first))
    })
    .await;
    let now = lock_value(&u, "project").unwrap_or_else(|| panic!("the lock is gone"));
    assert!(renewed, "the lease was not renewed: {first} / {now}");
    assert!(now.contains(&format!("run={}", me.id)), "{now}");
    assert!(u.sim.requests().iter().any(|r| r.method == "PUT" && r.path.ends_with(&lock::key("project"))));
    assert!(!held.lost());
    lock::release(&client, &held).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lock_value(&u, "project"), None);
    // No renewal after the release: nothing brings the lock back.
    let puts = |u: &Universe| u.sim.requests().iter().filter(|r| r.method == "PUT").count();
    let before = puts(&u);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(puts(&u), before, "a renewal after the release");
    assert_eq!(lock_value(&u, "project"), None);
}

/// A renewal that finds another run's value (or no variable) stops, says the lock is lost, and
/// writes nothing.
#[tokio::test]
async fn a_renewal_that_finds_the_lock_taken_over_or_gone_stops_and_writes_nothing() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let client = client(&u);
    let me = lock::RunId::new();
    let lease = std::time::Duration::from_secs(2);

    let held = lock::acquire(&client, &me, "project", "project", &holder(), lease).await;
    let held = held.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|busy| panic!("{busy}"));
    let other = lock::RunId { id: "fedcba9876543210".into(), ..me.clone() };
    let theirs = lock::value(&other, chrono::Utc::now() + chrono::Duration::minutes(3));
    set_lock_value(&u, "project", &theirs);
    assert!(eventually(std::time::Duration::from_secs(10), || held.lost()).await, "the loss was not noticed");
    assert_eq!(lock_value(&u, "project").as_deref(), Some(theirs.as_str()), "their lock was overwritten");
    lock::release(&client, &held).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lock_value(&u, "project").as_deref(), Some(theirs.as_str()), "their lock was deleted");

    let held = lock::acquire(&client, &me, "group", "group", &holder(), lease).await;
    let held = held.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|busy| panic!("{busy}"));
    u.sim.with_world(|w| w.variables.retain(|v| v.key != lock::key("group")));
    assert!(eventually(std::time::Duration::from_secs(10), || held.lost()).await, "the loss was not noticed");
    assert_eq!(lock_value(&u, "group"), None, "a renewal recreated the lock");
    assert!(!u.sim.requests().iter().any(|r| r.method == "PUT"), "no renewal was written");
    lock::release(&client, &held).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lock_value(&u, "group"), None);
}

/// A takeover deletes only the very lock it judged stale: if another run replaced it in the
/// meantime, that run's lock stands and this one is told the token is busy.
#[tokio::test]
async fn a_takeover_deletes_only_the_lock_it_judged_stale() {
    use patrol::simulator::{Fault, FaultAction};
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    let project = u.sim.with_world(|w| w.project_by_path("sec/app").map(|p| p.id)).unwrap_or_default();
    let client = client(&u);
    let me = lock::RunId::new();
    // A lock whose lease ran out: stale. The second read, the one before the DELETE, takes its
    // time, and meanwhile another run takes the lock over.
    let dead = lock::RunId { id: "0123456789abcdef".into(), host: "runner-1".into(), pid: 7, job: None };
    put_lock(&u, "project", lock::value(&dead, chrono::Utc::now() - chrono::Duration::minutes(1)));
    let path = format!("/api/v4/projects/{project}/variables/{}", lock::key("project"));
    let lock_path = format!("/api/v4/projects/*/variables/{}", lock::key("project"));
    u.sim.inject(Fault::new(Some("GET"), &lock_path, FaultAction::Latency { millis: 1500 }).skip(1).times(1));
    let from = u.sim.requests().len();
    let taking = tokio::spawn({
        let (client, me) = (client.clone(), me.clone());
        async move { lock::acquire(&client, &me, "project", "project", &holder(), lock::LEASE).await }
    });
    let read = eventually(std::time::Duration::from_secs(10), || {
        u.sim.requests()[from..].iter().any(|r| r.method == "GET" && r.path.ends_with(&lock::key("project")))
    })
    .await;
    assert!(read, "the lock was never read at {path}");
    let other = lock::RunId { id: "fedcba9876543210".into(), host: "runner-2".into(), pid: 8, job: None };
    let theirs = lock::value(&other, chrono::Utc::now() + chrono::Duration::minutes(3));
    set_lock_value(&u, "project", &theirs);

    let result = taking.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    let Err(busy) = result else { panic!("took a lock another run holds") };
    assert!(busy.contains("fedcba9876543210"), "{busy}");
    assert_eq!(lock_value(&u, "project"), Some(theirs), "the other run's lock is still there");
    assert!(!u.sim.requests()[from..].iter().any(|r| r.method == "DELETE"), "no DELETE of a lock that changed");
}

/// Found in review: a run whose lock was lost (not renewed for a whole lease, then taken over)
/// went on to send its rotate again. Now nothing more is sent for a token whose lock is lost.
#[tokio::test]
async fn a_run_that_lost_its_lock_sends_no_further_rotate() {
    use patrol::simulator::{Fault, FaultAction};
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    // The project token's rotate hangs and never happens; patrol waits for GitLab's deadline
    // before it may send it again, renewing its lock every second.
    u.sim.inject(Fault::new(Some("POST"), "/api/v4/projects/*/access_tokens/*/rotate", FaultAction::Hang).times(1));
    let env = [("PATROL_TIMEOUT", "0.5"), ("PATROL_REQUEST_DEADLINE_SECONDS", "2"), ("PATROL_LOCK_LEASE_SECONDS", "3")];
    let run = tokio::spawn({
        let (cmd, files) = u.command(&["rotate", "--only", "project"], &env).unwrap_or_else(|e| panic!("{e}"));
        async move { (tokio::task::spawn_blocking(move || { cmd }.output()).await, files) }
    });
    let sent = eventually(std::time::Duration::from_secs(10), || {
        u.sim.requests().iter().any(|r| r.method == "POST" && r.path.ends_with("/rotate"))
    })
    .await;
    assert!(sent, "the rotate was never sent");
    // Meanwhile another run takes the lock over.
    let key =
        u.sim.with_world(|w| w.variables.iter().find(|v| v.key.starts_with("PATROL_LOCK_")).map(|v| v.key.clone()));
    let key = key.unwrap_or_else(|| panic!("no lock held"));
    let other = lock::RunId { id: "fedcba9876543210".into(), host: "runner-2".into(), pid: 8, job: None };
    let theirs = lock::value(&other, chrono::Utc::now() + chrono::Duration::minutes(3));
    u.sim.with_world(|w| {
        if let Some(v) = w.variables.iter_mut().find(|v| v.key == key) {
            v.value = theirs.clone();
        }
    });
    let (output, files) = run.await.unwrap_or_else(|e| panic!("{e}"));
    let output = output.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    let run = u.finish(output, &files);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let error = run.report["tokens"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("lock on token \"project\" was lost"), "{error}");
    let rotates = u.sim.requests().iter().filter(|r| r.method == "POST" && r.path.ends_with("/rotate")).count();
    assert_eq!(rotates, 1, "nothing sent after the lock was lost");
    let still = u.sim.with_world(|w| w.variables.iter().find(|v| v.key == key).map(|v| v.value.clone()));
    assert_eq!(still, Some(theirs), "the other run's lock is left alone");
}

/// Found in review: a run whose lock renewals kept failing sent its rotate just before its lease
/// ran out; another run took the lock over and rotated, and the first rotate then committed on a
/// revoked token. A rotate is now sent only while the lease confirmed last outlasts GitLab's
/// request deadline (renewing once more first), so that run sends nothing.
#[tokio::test]
async fn a_rotate_is_sent_only_while_the_lock_outlasts_the_request_deadline() {
    use patrol::simulator::{Fault, FaultAction};
    let u =
        Universe::new(patrol::simulator::Seed { revoked_rotate_revokes_family: true, ..fleet() }, FLEET_CONFIG).await;
    // Every write of the lock after it is created fails: renewals never get through.
    let user = u.sim.with_world(|w| w.tokens.values().find(|t| t.name == "app-ci").map(|t| t.user_id));
    let key = lock::key(&lock::identity(user.unwrap_or_default(), "app-ci"));
    let lock_path = format!("/api/v4/projects/*/variables/{key}");
    u.sim.inject(Fault::new(Some("PUT"), &lock_path, FaultAction::Status { status: 500 }));
    // The pending marker written under the lock (the hidden variable was never written by
    // patrol) is slow: by the time the rotate would go, little lease is left.
    u.sim.inject(
        Fault::new(Some("PUT"), "/api/v4/projects/*/variables/PROJECT_TOKEN", FaultAction::Latency { millis: 4500 })
            .times(1),
    );
    let env = [
        ("PATROL_TIMEOUT", "10"),
        ("PATROL_RETRY_SECONDS", "1"),
        ("PATROL_REQUEST_DEADLINE_SECONDS", "4"),
        ("PATROL_LOCK_LEASE_SECONDS", "6"),
    ];
    let old = u.active("app-ci");
    let run = u.patrol_with(&["rotate", "--only", "project"], &env).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let error = run.report["tokens"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("could not be renewed to outlast GitLab's request deadline"), "{error}");
    let rotates = u.sim.requests().iter().filter(|r| r.method == "POST" && r.path.ends_with("/rotate")).count();
    assert_eq!(rotates, 0, "no rotate sent under a lease about to end");
    assert_eq!(u.active("app-ci"), old);
    assert!(u.sim.reuse_detections().is_empty());
}
