//! Discover benchmark: `patrol discover` walking a fleet of CI/CD variables, with the requests it
//! sends and the time it takes, with the token information API on and off. It measures and
//! prints; it asserts no time. It fails (exit 1) when a run did not do its work: a non-zero exit,
//! a walk that did not list every variable, a value identified with more than one request, or a
//! stale copy missed.
//!
//! Run: `cargo bench --bench discover`. Settings (environment):
//! - `PATROL_BENCH_VARIABLES` (default 1200): variables, 10 per project, each holding one of
//!   N/3 personal tokens (so each token sits in 3 projects), one in 12 of them revoked;
//! - `PATROL_BENCH_LATENCY_MS` (default 20): latency the simulator adds to every request;
//! - `PATROL_BENCH_CONCURRENCY` (default 8, patrol's default): `--concurrency`.

use patrol::simulator::seed::{SeedProject, SeedToken, SeedUser, SeedVariable};
use patrol::simulator::{Seed, Simulator};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const ADMIN: &str = "glpat-DiscoverBenchAdmin00";

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn fail(message: &str) -> ! {
    eprintln!("\ndiscover benchmark FAILED: {message}");
    std::process::exit(1)
}

struct Fleet {
    seed: Seed,
    variables: usize,
    tokens: usize,
    revoked: usize,
    projects: usize,
}

fn fleet(variables: usize, token_info_api: bool) -> Fleet {
    let projects = variables.div_ceil(10);
    let tokens = variables.div_ceil(3);
    let mut seed = Seed {
        token_info_api: Some(token_info_api),
        users: vec![
            SeedUser { username: "root".into(), admin: true, ..Default::default() },
            SeedUser { username: "owner".into(), ..Default::default() },
        ],
        tokens: vec![SeedToken {
            name: "admin".into(),
            user: Some("root".into()),
            expires_in_days: Some(300),
            secret: Some(ADMIN.into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    seed.projects =
        (0..projects).map(|p| SeedProject { path: format!("fleet/p{p:04}"), ..Default::default() }).collect();
    let mut revoked = 0;
    for t in 0..tokens {
        let dead = t % 12 == 11;
        revoked += usize::from(dead);
        seed.tokens.push(SeedToken {
            name: format!("t{t:05}"),
            user: Some("owner".into()),
            expires_in_days: Some(100 + (t % 200) as i64),
            revoked: dead,
            ..Default::default()
        });
    }
    for v in 0..variables {
        // Token t sits in variables 3t, 3t+1, 3t+2: three projects apart.
        let (t, copy) = (v / 3, v % 3);
        let project = (t + copy * (projects / 3).max(1)) % projects;
        seed.variables.push(SeedVariable {
            project: Some(format!("fleet/p{project:04}")),
            key: format!("TOKEN_{t:05}_{copy}"),
            token: Some(format!("t{t:05}")),
            environment_scope: "*".into(),
            masked: true,
            ..Default::default()
        });
    }
    Fleet { seed, variables, tokens, revoked: revoked * 3, projects }
}

struct Measured {
    wall: Duration,
    requests: usize,
    identification: usize,
}

async fn measure(fleet: Fleet, latency: Duration, concurrency: usize) -> Measured {
    let sim = Simulator::start(fleet.seed).await.unwrap_or_else(|e| fail(&format!("simulator: {e}")));
    sim.set_latency(latency);
    let url = sim.api_url();
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_patrol"))
            .args(["discover", "--json", "-q", "--concurrency", &concurrency.to_string()])
            .env_clear()
            .env("PATROL_CONFIG", "/nonexistent/patrol.toml")
            .env("PATROL_GITLAB_URL", url)
            .env("PATROL_TOKEN", ADMIN)
            .output()
    })
    .await
    .unwrap_or_else(|e| fail(&format!("{e}")))
    .unwrap_or_else(|e| fail(&format!("cannot run patrol: {e}")));
    let wall = started.elapsed();
    if !output.status.success() {
        fail(&format!(
            "patrol discover exited {:?}: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| fail(&format!("not JSON: {e}")));
    let walked = &report["walked"];
    if walked["variables"].as_u64() != Some(fleet.variables as u64)
        || walked["projects"].as_u64() != Some(fleet.projects as u64)
    {
        fail(&format!("walked {walked} instead of {} variables in {} projects", fleet.variables, fleet.projects));
    }
    if walked["distinct_values"].as_u64() != Some(fleet.tokens as u64) {
        fail(&format!("{} distinct values instead of {}", walked["distinct_values"], fleet.tokens));
    }
    let stale = report["findings"].as_array().into_iter().flatten().filter(|f| f["kind"] == "stale_copy").count();
    if stale != fleet.revoked {
        fail(&format!("{stale} stale copies found instead of {}", fleet.revoked));
    }
    let requests = sim.requests();
    let identification = requests
        .iter()
        .filter(|r| {
            r.path.ends_with("/admin/token")
                || (r.path.ends_with("/personal_access_tokens/self") && r.token_name.as_deref() != Some("admin"))
        })
        .count();
    // One per distinct value, plus the probe about patrol's own credential.
    if identification > fleet.tokens + 1 {
        fail(&format!("{identification} identification requests for {} distinct values", fleet.tokens));
    }
    let measured = Measured { wall, requests: requests.len(), identification };
    sim.shutdown().await;
    measured
}

#[tokio::main]
async fn main() {
    let variables: usize = env_or("PATROL_BENCH_VARIABLES", 1200);
    let latency = Duration::from_millis(env_or("PATROL_BENCH_LATENCY_MS", 20));
    let concurrency: usize = env_or("PATROL_BENCH_CONCURRENCY", 8);
    println!(
        "patrol discover: {variables} variables, 10 per project, {} tokens (3 copies each), latency {} ms, concurrency {concurrency}",
        variables.div_ceil(3),
        latency.as_millis()
    );
    println!("{:<24} {:>9} {:>10} {:>16}", "token information API", "wall (s)", "requests", "identification");
    for api in [true, false] {
        let m = measure(fleet(variables, api), latency, concurrency).await;
        println!(
            "{:<24} {:>9.2} {:>10} {:>16}",
            if api { "on" } else { "off" },
            m.wall.as_secs_f64(),
            m.requests,
            m.identification
        );
    }
}
