//! Fleet benchmark: how close `patrol rotate` and `patrol audit` come to what GitLab's latency
//! and rate limit allow. Not a test: it measures and prints.
//!
//! Run: `cargo bench --bench fleet`. Settings (environment):
//! - `PATROL_BENCH_SIZES` (default `100,1000,10000`): fleet sizes N;
//! - `PATROL_BENCH_LATENCY_MS` (default 20): latency the simulator adds to every request;
//! - `PATROL_BENCH_RATE_LIMIT` (default none): GitLab's per-minute throttle;
//! - `PATROL_BENCH_SHARDS` (default 4): the largest N is also run split into this many shards;
//! - `PATROL_BENCH_COMMANDS` (default `rotate,audit`): which commands to measure per N.
//!
//! Each fleet: N personal tokens, ten per owner, each held by one readable masked variable and
//! feeding one failing pipeline; a quarter expire in 5 days (due), the rest in 200. patrol runs as
//! its real binary with the default concurrency (8), so its peak memory is its own.

use patrol::simulator::seed::{SeedPipeline, SeedProject, SeedToken, SeedUser, SeedVariable};
use patrol::simulator::world::RequestRecord;
use patrol::simulator::{Seed, Simulator};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "glpat-FleetBenchmarkAdmin0";
const CONCURRENCY: u64 = 8;
/// Requests on a due token's critical path: preflight, user, listing, variable, its value's
/// `self`, stamp, rotate, write, verify `self`, read back, then the pipeline's latest and retry.
const ROTATE_CHAIN: u64 = 12;
/// Preflight, first page, then one batch of pages.
const AUDIT_CHAIN: u64 = 3;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn fleet(n: usize) -> (Seed, String) {
    let owners = n.div_ceil(10).max(1);
    let mut seed = Seed {
        users: vec![SeedUser { username: "root".into(), admin: true, ..Default::default() }],
        tokens: vec![SeedToken {
            name: "admin".into(),
            user: Some("root".into()),
            expires_in_days: Some(300),
            secret: Some(ADMIN.into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut config = String::with_capacity(n * 200);
    for k in 0..owners {
        seed.users.push(SeedUser { username: format!("owner-{k}"), ..Default::default() });
        seed.projects.push(SeedProject { path: format!("fleet/p{k}"), ..Default::default() });
    }
    for i in 0..n {
        let k = i / 10;
        let name = format!("svc-{i}");
        let days = if i % 4 == 0 { 5 } else { 200 };
        seed.tokens.push(SeedToken {
            name: name.clone(),
            user: Some(format!("owner-{k}")),
            expires_in_days: Some(days),
            ..Default::default()
        });
        seed.variables.push(SeedVariable {
            project: Some(format!("fleet/p{k}")),
            key: format!("T_{i}"),
            token: Some(name.clone()),
            environment_scope: "*".into(),
            masked: true,
            ..Default::default()
        });
        seed.pipelines.push(SeedPipeline {
            project: format!("fleet/p{k}"),
            ref_: format!("r{i}"),
            status: "failed".into(),
            uses: Some(vec![format!("T_{i}")]),
            source: "schedule".into(),
            ..Default::default()
        });
        config.push_str(&format!(
            "[[token]]\nid = \"t{i}\"\nkind = \"personal\"\nname = \"{name}\"\nuser = \"owner-{k}\"\n\n\
             [[token.variable]]\nproject = \"fleet/p{k}\"\nkey = \"T_{i}\"\n\n\
             [[token.pipeline]]\nproject = \"fleet/p{k}\"\nref = \"r{i}\"\n\n"
        ));
    }
    (seed, config)
}

struct Measured {
    wall: Duration,
    peak_rss_mb: f64,
    code: i32,
}

/// Runs the real binary and measures its wall time and its own peak memory (VmHWM).
fn run_patrol(args: &[String], url: &str, log: &Path) -> Measured {
    let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_patrol"))
        .args(args)
        .env_clear()
        .env("PATROL_GITLAB_URL", url)
        .env("PATROL_TOKEN", ADMIN)
        .env("PATROL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run patrol: {e}"));
    let pid = child.id() as libc::pid_t;
    // Peak memory is read from /proc/<pid>/status (VmHWM) while patrol runs: `wait4`'s
    // ru_maxrss would include this benchmark's own size, which a spawned child inherits at exec.
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let running = running.clone();
        std::thread::spawn(move || {
            let mut peak_kb = 0u64;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let hwm = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| {
                    s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse::<u64>().ok()
                });
                peak_kb = peak_kb.max(hwm.unwrap_or(0));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak_kb
        })
    };
    let mut status = 0;
    // SAFETY: waitpid on our own child, with a valid pointer to a local; std's Child is not used
    // to wait afterwards.
    #[allow(unsafe_code)]
    unsafe {
        libc::waitpid(pid, &mut status, 0);
    }
    let wall = started.elapsed();
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak_kb = sampler.join().unwrap_or(0);
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    Measured { wall, peak_rss_mb: peak_kb as f64 / 1024.0, code }
}

/// `GET /projects/:path/variables/:key`-style names for the request log.
fn endpoint(r: &RequestRecord) -> String {
    let mut out = Vec::new();
    let mut after_variables = false;
    for seg in r.path.trim_start_matches("/api/v4").split('/').filter(|s| !s.is_empty()) {
        let name = if after_variables {
            ":key".to_owned()
        } else if seg.chars().all(|c| c.is_ascii_digit()) {
            ":id".to_owned()
        } else if seg.contains("%2F") {
            ":path".to_owned()
        } else {
            seg.to_owned()
        };
        after_variables = seg == "variables";
        out.push(name);
    }
    format!("{} /{}", r.method, out.join("/"))
}

struct Row {
    command: String,
    n: usize,
    wall: f64,
    requests: usize,
    bound: f64,
    rss: f64,
    code: i32,
    endpoints: BTreeMap<String, usize>,
}

fn bound(requests: usize, chain: u64, latency: Duration, rate_limit: Option<u32>) -> f64 {
    let l = latency.as_secs_f64();
    let spread = requests as f64 * l / CONCURRENCY as f64;
    let path = chain as f64 * l;
    let throttle = rate_limit.map_or(0.0, |per_minute| requests as f64 / (f64::from(per_minute) / 60.0));
    spread.max(path).max(throttle)
}

async fn measure(
    sim: &Simulator,
    command: &str,
    args: Vec<String>,
    n: usize,
    dir: &Path,
    latency: Duration,
    rate: Option<u32>,
) -> Row {
    let before = sim.requests().len();
    let url = sim.api_url();
    let log = dir.join(format!("{command}-{n}.log"));
    let m = tokio::task::spawn_blocking(move || run_patrol(&args, &url, &log)).await.unwrap_or_else(|e| panic!("{e}"));
    let requests: Vec<RequestRecord> = sim.requests()[before..].to_vec();
    let mut endpoints = BTreeMap::new();
    for r in &requests {
        *endpoints.entry(endpoint(r)).or_insert(0) += 1;
    }
    let chain = if command == "rotate" { ROTATE_CHAIN } else { AUDIT_CHAIN };
    Row {
        command: command.into(),
        n,
        wall: m.wall.as_secs_f64(),
        requests: requests.len(),
        bound: bound(requests.len(), chain, latency, rate),
        rss: m.peak_rss_mb,
        code: m.code,
        endpoints,
    }
}

fn print_row(r: &Row) {
    println!(
        "| {} | {} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {} |",
        r.command,
        r.n,
        r.wall,
        r.requests,
        r.requests as f64 / r.n as f64,
        r.bound,
        r.wall / r.bound,
        r.rss,
        r.code
    );
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cores} cores, {cpu}")
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = env_or("PATROL_BENCH_SIZES", "100,1000,10000".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let latency = Duration::from_millis(env_or("PATROL_BENCH_LATENCY_MS", 20));
    let rate: Option<u32> = std::env::var("PATROL_BENCH_RATE_LIMIT").ok().and_then(|v| v.parse().ok());
    let shards: u32 = env_or("PATROL_BENCH_SHARDS", 4);
    let commands = env_or("PATROL_BENCH_COMMANDS", "rotate,audit".to_owned());
    let wants = |c: &str| commands.split(',').any(|w| w.trim() == c);
    let dir: PathBuf = std::env::temp_dir().join(format!("patrol-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    println!("patrol {} fleet benchmark on {}", env!("CARGO_PKG_VERSION"), machine());
    println!(
        "latency {} ms per request, rate limit {}, concurrency {CONCURRENCY}\n",
        latency.as_millis(),
        rate.map_or("none".into(), |r| format!("{r}/min"))
    );
    println!("| command | N | wall s | requests | per token | lower bound s | ratio | peak RSS MB | exit |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut details = Vec::new();
    for &n in &sizes {
        let (seed, config) = fleet(n);
        let path = dir.join(format!("fleet-{n}.toml"));
        std::fs::write(&path, &config).unwrap_or_else(|e| panic!("{e}"));
        let cfg = path.display().to_string();
        let sim = Simulator::start(seed).await.unwrap_or_else(|e| panic!("{e}"));
        sim.set_latency(latency);
        sim.set_rate_limit(rate);
        if wants("rotate") {
            let args = vec!["--config".into(), cfg.clone(), "rotate".into()];
            let rotate = measure(&sim, "rotate", args, n, &dir, latency, rate).await;
            print_row(&rotate);
            details.push(rotate);
        }
        if wants("audit") {
            let args = vec![
                "--config".into(),
                cfg.clone(),
                "audit".into(),
                "--json".into(),
                "--within-days".into(),
                "365".into(),
            ];
            let audit = measure(&sim, "audit", args, n, &dir, latency, rate).await;
            print_row(&audit);
            details.push(audit);
        }
        if sim.throttled() > 0 {
            println!("| (GitLab answered 429 {} times) |||||||||", sim.throttled());
        }
        sim.shutdown().await;
    }
    if let (Some(&n), true) = (sizes.iter().max(), shards > 1) {
        let (seed, config) = fleet(n);
        let path = dir.join(format!("fleet-{n}-shards.toml"));
        std::fs::write(&path, &config).unwrap_or_else(|e| panic!("{e}"));
        let sim = Simulator::start(seed).await.unwrap_or_else(|e| panic!("{e}"));
        sim.set_latency(latency);
        sim.set_rate_limit(rate);
        println!("\nN = {n} in {shards} shards, run at once (as `parallel: {shards}` jobs would):\n");
        println!("| shard | wall s | peak RSS MB | exit |");
        println!("|---|---|---|---|");
        let started = Instant::now();
        let runs: Vec<_> = (1..=shards)
            .map(|i| {
                let args: Vec<String> = vec![
                    "--config".into(),
                    path.display().to_string(),
                    "rotate".into(),
                    "--shard".into(),
                    format!("{i}/{shards}"),
                ];
                let (url, log) = (sim.api_url(), dir.join(format!("shard-{i}.log")));
                tokio::task::spawn_blocking(move || (i, run_patrol(&args, &url, &log)))
            })
            .collect();
        for run in runs {
            let (i, m) = run.await.unwrap_or_else(|e| panic!("{e}"));
            println!("| {i}/{shards} | {:.2} | {:.1} | {} |", m.wall.as_secs_f64(), m.peak_rss_mb, m.code);
        }
        println!("| all | {:.2} | | |", started.elapsed().as_secs_f64());
        let rotated = sim.with_world(|w| w.tokens.values().filter(|t| t.previous.is_some()).count());
        println!(
            "\ntokens rotated across the shards: {rotated} (expected {}); reuse detections: {}",
            n.div_ceil(4),
            sim.reuse_detections().len()
        );
        sim.shutdown().await;
    }
    println!("\nRequests by endpoint:\n");
    for r in &details {
        println!("{} N={}:", r.command, r.n);
        for (name, count) in &r.endpoints {
            println!("  {count:>7}  {name}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
