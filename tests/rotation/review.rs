//! Issue 14's second review: sequences that broke the claims about the path for a token due by
//! its marker, and about the lock's release. Each test asserts what the claim promises; each
//! failed before its fix.

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::{Fault, FaultAction};

/// Writes the marker patrol would write with the secret the variable now holds (a readable
/// variable patrol stored): `[patrol: token N user U expires D #fp]`.
fn prove(u: &Universe, key: &str) {
    u.sim.with_world(|w| {
        let Some(i) = w.variables.iter().position(|v| v.key == key) else { panic!("no {key}") };
        let value = w.variables[i].value.clone();
        let Some(t) = w.token_by_secret(&value) else { panic!("{key} holds no token") };
        let stored = patrol::engine::Stored { id: t.id, user_id: t.user_id, expires_at: t.expires_at };
        w.variables[i].description = Some(patrol::engine::with_marker(None, t.id, Some((&stored, &value))));
    });
}

fn rotates(u: &Universe, from: usize) -> Vec<(String, u16)> {
    u.sim.requests()[from..]
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/rotate"))
        .map(|r| (r.path.clone(), r.status))
        .collect()
}

/// Claim 2 / RELIABILITY promise 5 ("two entries for one GitLab token both fail before anything
/// changes"). plan_run finds duplicates by shared token ids; a deferred entry contributes only
/// its marker's id. Two entries for one project token (by path and by id) whose readable
/// variables prove different tokens of the family (one stale, e.g. after `--only by-path`) are
/// both deferred and share nothing: both go on. Their lock is the same variable, and the second
/// entry's acquire finds it naming this very run (`o.run == me.id`) and takes it as its own.
#[tokio::test]
async fn two_entries_for_one_token_due_by_different_markers_both_fail() {
    let mut seed = fleet();
    seed.variables[1].hidden = false; // PROJECT_TOKEN readable
    seed.variables.push(variable(Some("sec/app"), None, "COPY", "app-ci", false));
    let u = Universe::new(seed, "").await;
    by_path_and_by_id(&u, "");
    // Both variables were stored by patrol when one entry held both (fingerprinted markers).
    prove(&u, "PROJECT_TOKEN");
    prove(&u, "COPY");
    // A run on one entry only: rotates the token, writes PROJECT_TOKEN; COPY keeps the old one.
    let only = u.patrol(&["rotate", "--only", "by-path"]).await;
    assert_eq!(only.code, 0, "{}\n{}", only.stdout, tail(&only.stderr));
    let before = u.active("app-ci");

    // Now the whole config, forced (an emergency): the promise is that both entries fail.
    let from = u.sim.requests().len();
    let run = u.patrol(&["rotate", "--force", "--all"]).await;
    println!("exit {}\n{}", run.code, run.stdout);
    for t in run.report["tokens"].as_array().into_iter().flatten() {
        println!("{} {} {}", t["id"], t["outcome"], t["error"]);
    }
    let sent = rotates(&u, from);
    println!("rotates sent: {sent:?}; active before {before:?}, after {:?}", u.active("app-ci"));
    let locks: Vec<String> = u.sim.requests()[from..]
        .iter()
        .filter(|r| r.path.contains("PATROL_LOCK") || (r.method == "POST" && r.path.ends_with("/variables")))
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    println!("lock requests: {locks:#?}");
    println!(
        "after the run: PROJECT_TOKEN holds active token {:?}, COPY holds active token {:?}",
        u.variable_holds("PROJECT_TOKEN", "*"),
        u.variable_holds("COPY", "*")
    );
    assert!(sent.is_empty(), "two entries for one token: nothing may be rotated, yet {} rotates were sent", sent.len());
}

/// RELIABILITY promise 5 / plan_run: patrol's own credential is renewed last, and never when no
/// configured variable is known to hold it (`patrols_own_credential_stored_nowhere_known_is_refused`).
/// The deferred path skips both checks when the configured variable proves (by its fingerprint)
/// an older token of the credential's family: `due_by_marker` compares only the marker's id
/// with the credential's, and plan_run sees no `observed.current` for a deferred token.
/// Sequence: the admin token A0 was stored by patrol in ADMIN_TOKEN; near its expiry a person
/// rotates it by hand and gives patrol's job the new secret A1 by another way (ADMIN_TOKEN is
/// left stale). The next scheduled run authenticates with A1.
#[tokio::test]
async fn patrols_own_credential_behind_a_stale_marker_is_left_alone_when_no_variable_holds_it() {
    let mut seed = fleet();
    seed.tokens[0].expires_in_days = Some(3);
    seed.variables.push(variable(Some("sec/app"), None, "ADMIN_TOKEN", "admin", false));
    let config = format!(
        "{FLEET_CONFIG}\n[[token]]\nid = \"patrol\"\nkind = \"personal\"\nname = \"admin\"\nuser = \"root\"\n\n[[token.variable]]\nproject = \"sec/app\"\nkey = \"ADMIN_TOKEN\"\n"
    );
    let u = Universe::new(seed, &config).await;
    prove(&u, "ADMIN_TOKEN");
    // A person rotates the admin token by hand (valid a year) and hands the job the new secret.
    let a1 = u.sim.with_world(|w| {
        let a0 = w.tokens.values().find(|t| t.name == "admin").map(|t| t.id).unwrap_or_default();
        let until = w.today() + chrono::Duration::days(300);
        let a1 = w.rotate_token(a0, Some(until)).unwrap_or_default();
        w.tokens.get(&a1).map(|t| (a1, t.secret.clone())).unwrap_or_default()
    });
    let run = u.patrol_with(&["rotate"], &[("PATROL_TOKEN", &a1.1)]).await;
    println!("exit {}\n{}", run.code, run.stdout);
    let tokens = run.report["tokens"].as_array().cloned().unwrap_or_default();
    for t in &tokens {
        println!("{} {} {} {}", t["id"], t["outcome"], t["reason"], t["error"]);
    }
    let requests = u.sim.requests();
    let created = requests
        .iter()
        .position(|r| r.method == "POST" && r.path.contains("/users/") && r.path.ends_with("/personal_access_tokens"));
    let revoked = requests
        .iter()
        .position(|r| r.method == "DELETE" && r.path.ends_with(&format!("/personal_access_tokens/{}", a1.0)));
    let last_retry = requests.iter().rposition(|r| r.path.ends_with("/retry"));
    println!("create of successor at {created:?}, revoke of A1 at {revoked:?}, last pipeline retry at {last_retry:?}");
    let unauthorized = requests.iter().filter(|r| r.status == 401).count();
    println!("401 answers during the run: {unauthorized}");
    let next = u.patrol_with(&["rotate"], &[("PATROL_TOKEN", &a1.1)]).await;
    println!("next run with the job's credential: exit {}", next.code);
    assert!(
        u.active("admin") == vec![a1.0],
        "patrol's own credential A1, which no configured variable holds, must be left alone; active now {:?}",
        u.active("admin")
    );
}

/// Release never deletes another run's lock. The release's `DELETE` used to be resent when its
/// answer was lost, and the first one could still land until GitLab's deadline (§12): after the
/// resent one freed the lock and run B took it, the first deleted B's lock, and run C rotated the
/// token while B's rotate was in flight. Now it is sent once, while the lease outlasts the
/// deadline: a lost answer leaves the lock in place until it lands (or its lease runs out), B is
/// turned away meanwhile, and no two runs work on the token at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_delete_committing_late_never_deletes_the_next_runs_lock() {
    let u = Universe::new(fleet(), FLEET_CONFIG).await;
    // Run A: its lock release (the service account's lock lives in group sec) commits late.
    u.sim.inject(
        Fault::new(Some("DELETE"), "/api/v4/groups/*/variables/*", FaultAction::CommitsLate { after_millis: 4_000 })
            .times(1),
    );
    let a = u.patrol(&["rotate", "--only", "service"]).await;
    assert_eq!(a.code, 0, "{}\n{}", a.stdout, tail(&a.stderr));
    let n1 = u.active("inventory");
    let deletes = u.sim.requests().iter().filter(|r| r.method == "DELETE" && r.path.contains("PATROL_LOCK")).count();
    assert_eq!(deletes, 0, "the release's DELETE was sent once and has not landed yet (it is held)");

    // Run B, while A's DELETE has not landed: A's lock still stands, so B leaves the token alone.
    let from = u.sim.requests().len();
    let b = u.patrol(&["rotate", "--only", "service", "--force"]).await;
    assert_eq!(b.code, 1, "{}", b.stdout);
    assert!(b.report["tokens"][0]["error"].as_str().unwrap_or_default().contains("another run is working on token"));
    // A's DELETE lands; then run C finds the token free and works on it.
    u.sim.wait_late_commits(1).await;
    let c = u.patrol(&["rotate", "--only", "service", "--force"]).await;
    assert_eq!(c.code, 0, "{}\n{}", c.stdout, tail(&c.stderr));
    let sent = rotates(&u, from);
    assert_eq!(sent.len(), 1, "one rotate after A: C's ({sent:?})");
    assert!(sent[0].0.contains(&format!("/{}/rotate", n1[0])));
    assert!(u.sim.reuse_detections().is_empty());
    let locks: Vec<String> = u.sim.with_world(|w| {
        w.variables.iter().filter(|v| v.key.starts_with("PATROL_LOCK_")).map(|v| v.key.clone()).collect()
    });
    assert_eq!(locks, Vec::<String>::new());
}
