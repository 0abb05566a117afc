//! Fleet benchmark: how close `patrol rotate` and `patrol audit` come to what GitLab's latency
//! and rate limit allow. It measures and prints; it asserts no time. It fails (exit 1, the table
//! so far printed) when a run did not do the fleet's work: a patrol run that exits non-zero, a
//! rotate whose `--report` does not name exactly the seeded due tokens, each once (over all
//! shards together), a simulator that does not show exactly those rotations or saw a rotated
//! token reused, or an audit that does not list every managed token once.
//!
//! Peak memory is the kernel's own high-water mark of the patrol process (`ru_maxrss` at its
//! exit), read through GNU `time -f %M`, which must be installed (Debian: `apt-get install time`):
//! see BENCHMARKS.md for why not from this process, and why not by sampling.
//!
//! Run: `cargo bench --bench fleet`. Settings (environment):
//! - `PATROL_BENCH_SIZES` (default `100,1000,10000`): fleet sizes N;
//! - `PATROL_BENCH_LATENCY_MS` (default 20): latency the simulator adds to every request;
//! - `PATROL_BENCH_RATE_LIMIT` (default none): GitLab's per-minute throttle;
//! - `PATROL_BENCH_SHARDS` (default 4): the largest N is also run split into this many shards;
//! - `PATROL_BENCH_COMMANDS` (default `discover,rotate,audit`): which commands to measure per N
//!   (`discover` only with this build: it walks all N variables and identifies each value);
//! - `PATROL_BENCH_FLEET` (default `warm`): `warm`, a fleet patrol has managed before (each
//!   variable carries the marker with the fingerprint patrol writes with a secret), or `cold`, a
//!   fleet patrol has never written to (first adoption);
//! - `PATROL_BENCH_BASELINE` (default none): the path of another `patrol` binary (an older
//!   build, say); every measurement is then made with it too, on a fresh simulator, and printed
//!   as `before` next to this build's `after`;
//! - `PATROL_BENCH_CONCURRENCY` (default 8, patrol's default): `--concurrency` for every run.
//!
//! Each fleet: N personal tokens, ten per owner, each held by one readable masked variable and
//! feeding one failing pipeline; a quarter expire in 5 days (due), the rest in 200. patrol runs as
//! its real binary with the default concurrency (8), so its peak memory is its own.

use patrol::simulator::seed::{SeedPipeline, SeedProject, SeedToken, SeedUser, SeedVariable};
use patrol::simulator::world::RequestRecord;
use patrol::simulator::{Seed, Simulator};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "glpat-FleetBenchmarkAdmin0";
/// Requests on a due token's critical path in a warm fleet: preflight, user, listing, variable,
/// lock, rotate, write, verify `self`, unlock, then the pipeline's latest and retry. A cold fleet
/// adds the variable's value's `self`.
const ROTATE_CHAIN: u64 = 11;
/// Preflight, first page, then one batch of pages.
const AUDIT_CHAIN: u64 = 3;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Stops the benchmark: a run did not do what the fleet needs, so its numbers mean nothing.
fn fail(message: &str) -> ! {
    eprintln!("\nfleet benchmark FAILED: {message}");
    std::process::exit(1)
}

/// A seeded fleet: the simulator's data, patrol's config, and what a rotate must do.
struct Fleet {
    seed: Seed,
    config: String,
    /// Every managed token's config id.
    ids: BTreeSet<String>,
    /// The due tokens (expiring within `rotate_before_days`): config id → name in GitLab.
    due: BTreeMap<String, String>,
}

fn fleet(n: usize) -> Fleet {
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
    let (mut ids, mut due) = (BTreeSet::new(), BTreeMap::new());
    for k in 0..owners {
        seed.users.push(SeedUser { username: format!("owner-{k}"), ..Default::default() });
        seed.projects.push(SeedProject { path: format!("fleet/p{k}"), ..Default::default() });
    }
    for i in 0..n {
        let k = i / 10;
        let name = format!("svc-{i}");
        let days = if i % 4 == 0 { 5 } else { 200 };
        // The default policy rotates what expires within 14 days.
        if days < 14 {
            due.insert(format!("t{i}"), name.clone());
        }
        ids.insert(format!("t{i}"));
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
    Fleet { seed, config, ids, due }
}

struct Measured {
    wall: Duration,
    peak_rss_mb: f64,
    code: i32,
}

/// GNU `time` (or one that takes `-f %M -o FILE` and exits with its command's code), found on
/// PATH and checked on patrol itself.
fn gnu_time(dir: &Path) -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("time")).find(|t| t.is_file()))
        .unwrap_or_default()
        .unwrap_or_else(|| PathBuf::from("/usr/bin/time"));
    let probe = dir.join("time-probe");
    let ran = Command::new(&found)
        .args(["-f", "%M", "-o"])
        .arg(&probe)
        .arg(env!("CARGO_BIN_EXE_patrol"))
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    match ran {
        Ok(status) if status.success() && peak_kb(&probe).is_some() => found,
        other => fail(&format!(
            "peak memory is read with GNU time (`{} -f %M`), which did not work here ({other:?}); \
             install it (Debian, Ubuntu: apt-get install time)",
            found.display()
        )),
    }
}

/// The `%M` (peak resident set, KB) that `time -o FILE` wrote: its last line, after any
/// "Command exited with non-zero status" line.
fn peak_kb(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.lines().rev().find(|l| !l.trim().is_empty())?.trim().parse().ok()
}

/// Runs the real binary under `time` and measures its wall time and its own peak memory.
/// stdout goes to `out`, stderr to `log`.
fn run_patrol(time: &Path, binary: &Path, args: &[String], url: &str, log: &Path, out: &Path) -> Measured {
    let memory = log.with_extension("maxrss");
    let stderr = std::fs::File::create(log).unwrap_or_else(|e| fail(&format!("{}: {e}", log.display())));
    let stdout = std::fs::File::create(out).unwrap_or_else(|e| fail(&format!("{}: {e}", out.display())));
    let started = Instant::now();
    // `time` forks patrol from its own small process and reads the kernel's ru_maxrss for it at
    // exit (wait4): the high-water mark over the whole life of the process, the last moment
    // included. A child of this process would inherit this process's size in ru_maxrss at exec.
    let status = Command::new(time)
        .args(["-f", "%M", "-o"])
        .arg(&memory)
        .arg(binary)
        .args(args)
        .env_clear()
        .env("PATROL_GITLAB_URL", url)
        .env("PATROL_TOKEN", ADMIN)
        .env("PATROL_LOG", "warn")
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run patrol under {}: {e}", time.display())));
    let wall = started.elapsed();
    let peak = peak_kb(&memory).unwrap_or_else(|| {
        let text = std::fs::read_to_string(&memory).unwrap_or_default();
        fail(&format!("no peak memory from time for `patrol {}`: {text:?}", args.join(" ")))
    });
    // `time` exits with patrol's code; a signal is 128 + its number (or no code at all).
    Measured { wall, peak_rss_mb: peak as f64 / 1024.0, code: status.code().unwrap_or(-1) }
}

/// Fails unless the run exited 0, with the end of its log.
fn check_exit(what: &str, code: i32, log: &Path) {
    if code != 0 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        fail(&format!("{what} exited {code}; the end of its log ({}):\n{}", log.display(), tail.join("\n")));
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    serde_json::from_str(&text).unwrap_or_else(|e| fail(&format!("{} is not JSON: {e}", path.display())))
}

/// The ids a rotate's `--report` (schema_version 2) says it rotated, after checking that its
/// summary counts the same and that no token failed.
fn rotated_in_report(path: &Path) -> Vec<String> {
    let report = read_json(path);
    // Version 1 from a baseline build (`PATROL_BENCH_BASELINE`) reads the same here.
    if report["schema_version"] != 2 && report["schema_version"] != 1 {
        fail(&format!("{}: schema_version {}, expected 2", path.display(), report["schema_version"]));
    }
    let Some(tokens) = report["tokens"].as_array() else { fail(&format!("{}: no tokens array", path.display())) };
    let with = |outcome: &str| -> Vec<String> {
        tokens.iter().filter(|t| t["outcome"] == outcome).map(|t| t["id"].as_str().unwrap_or("?").to_owned()).collect()
    };
    let (rotated, failed) = (with("rotated"), with("failed"));
    if report["summary"]["rotated"].as_u64() != Some(rotated.len() as u64) {
        fail(&format!(
            "{}: summary.rotated is {}, but {} tokens have outcome rotated",
            path.display(),
            report["summary"]["rotated"],
            rotated.len()
        ));
    }
    if !failed.is_empty() {
        fail(&format!("{}: {} tokens failed: {:?}", path.display(), failed.len(), &failed[..failed.len().min(10)]));
    }
    rotated
}

/// A rotate (or all its shards together) rotated exactly the due tokens, none twice, by its
/// reports and by the simulator's state, and GitLab's reuse detection never fired.
fn check_rotation(what: &str, reports: &[PathBuf], due: &BTreeMap<String, String>, sim: &Simulator) {
    let rotated: Vec<String> = reports.iter().flat_map(|r| rotated_in_report(r)).collect();
    let unique: BTreeSet<&String> = rotated.iter().collect();
    if unique.len() != rotated.len() {
        fail(&format!("{what}: {} tokens reported rotated, only {} distinct: some twice", rotated.len(), unique.len()));
    }
    if rotated.len() != due.len() {
        fail(&format!("{what}: rotated {} tokens, {} were seeded due", rotated.len(), due.len()));
    }
    let expected: BTreeSet<&String> = due.keys().collect();
    if unique != expected {
        let missing: Vec<_> = expected.difference(&unique).take(10).collect();
        let extra: Vec<_> = unique.difference(&expected).take(10).collect();
        fail(&format!(
            "{what}: rotated the wrong tokens; due but not rotated {missing:?}, rotated but not due {extra:?}"
        ));
    }
    // GitLab's side: one token made by rotation per due token, named as the due one.
    let mut made: Vec<String> =
        sim.with_world(|w| w.tokens.values().filter(|t| t.previous.is_some()).map(|t| t.name.clone()).collect());
    made.sort();
    let mut names: Vec<String> = due.values().cloned().collect();
    names.sort();
    if made != names {
        fail(&format!(
            "{what}: the simulator holds {} tokens made by rotation, {} were due (first of them: {:?})",
            made.len(),
            names.len(),
            &made[..made.len().min(10)]
        ));
    }
    let reused = sim.reuse_detections();
    if !reused.is_empty() {
        fail(&format!("{what}: GitLab's reuse detection fired {} times: {reused:?}", reused.len()));
    }
}

/// A discover walked every one of the fleet's N variables and identified each value (each holds
/// a token of its own), once.
fn check_discover(what: &str, out: &Path, n: usize) {
    let report = read_json(out);
    let walked = report["walked"]["variables"].as_u64();
    let distinct = report["walked"]["distinct_values"].as_u64();
    if walked != Some(n as u64) || distinct != Some(n as u64) {
        fail(&format!(
            "{what}: walked {walked:?} variables holding {distinct:?} distinct values; the fleet has {n} of each"
        ));
    }
}

/// An audit's JSON lists every managed token, once.
fn check_audit(what: &str, out: &Path, ids: &BTreeSet<String>) {
    let audit = read_json(out);
    let Some(tokens) = audit["tokens"].as_array() else { fail(&format!("{}: no tokens array", out.display())) };
    let managed: Vec<&str> = tokens.iter().filter_map(|t| t["managed"].as_str()).collect();
    let unique: BTreeSet<&str> = managed.iter().copied().collect();
    let expected: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    if managed.len() != ids.len() || unique != expected {
        fail(&format!(
            "{what}: listed {} managed tokens ({} distinct), the config has {}",
            managed.len(),
            unique.len(),
            ids.len()
        ));
    }
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
    /// `after` (this build) or `before` (`PATROL_BENCH_BASELINE`).
    build: &'static str,
    command: String,
    n: usize,
    wall: f64,
    requests: usize,
    bound: f64,
    rss: f64,
    code: i32,
    endpoints: BTreeMap<String, usize>,
    /// patrol's stderr and stdout.
    log: PathBuf,
    out: PathBuf,
}

/// The least time GitLab's latency and throttle allow. The throttle counts requests in fixed
/// windows of a minute (GitLab's Rack::Attack, and the simulator, align them to the clock's
/// minutes), and each throttled run starts at a window's start: every full window before the
/// last one must pass, then the last window's requests at `concurrency` in flight.
fn bound(requests: usize, chain: u64, latency: Duration, rate_limit: Option<u32>, concurrency: u64) -> f64 {
    let l = latency.as_secs_f64();
    let spread = requests as f64 * l / concurrency as f64;
    let path = chain as f64 * l;
    let throttle = rate_limit.map_or(0.0, |per_minute| {
        let per_minute = per_minute.max(1) as usize;
        let full = requests.saturating_sub(1) / per_minute;
        full as f64 * 60.0 + (requests - full * per_minute) as f64 * l / concurrency as f64
    });
    spread.max(path).max(throttle)
}

/// Under a throttle, waits for the start of the next minute: GitLab's windows are the clock's
/// minutes, and a run that starts late in one gets a window's worth of requests early, which
/// would make runs incomparable.
async fn window_start(rate: Option<u32>) {
    if rate.is_none() {
        return;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let into = now.as_millis() % 60_000;
    tokio::time::sleep(Duration::from_millis((60_000 - into) as u64 + 50)).await;
}

/// How the benchmark runs: the same for every measurement.
struct Setup {
    time: PathBuf,
    dir: PathBuf,
    latency: Duration,
    rate: Option<u32>,
    concurrency: u64,
    warm: bool,
}

async fn measure(
    sim: &Simulator,
    setup: &Setup,
    build: (&'static str, &Path),
    command: &str,
    args: Vec<String>,
    n: usize,
) -> Row {
    let Setup { time, dir, latency, rate, concurrency, warm } = setup;
    let (latency, rate) = (*latency, *rate);
    let url = sim.api_url();
    let (log, out) =
        (dir.join(format!("{}-{command}-{n}.log", build.0)), dir.join(format!("{}-{command}-{n}.out", build.0)));
    let (time, binary, l, o) = (time.to_owned(), build.1.to_owned(), log.clone(), out.clone());
    let mut args = args;
    args.extend(["--concurrency".to_owned(), concurrency.to_string()]);
    window_start(rate).await;
    let before = sim.requests().len();
    let m = tokio::task::spawn_blocking(move || run_patrol(&time, &binary, &args, &url, &l, &o))
        .await
        .unwrap_or_else(|e| fail(&format!("the {command} run: {e}")));
    let requests: Vec<RequestRecord> = sim.requests()[before..].to_vec();
    let mut endpoints = BTreeMap::new();
    for r in &requests {
        *endpoints.entry(endpoint(r)).or_insert(0) += 1;
    }
    let chain = match command {
        "rotate" if *warm => ROTATE_CHAIN,
        "rotate" => ROTATE_CHAIN + 1,
        // Preflight, the project list, a project's variables, a value's identification.
        "discover" => 4,
        _ => AUDIT_CHAIN,
    };
    Row {
        build: build.0,
        command: command.into(),
        n,
        wall: m.wall.as_secs_f64(),
        requests: requests.len(),
        bound: bound(requests.len(), chain, latency, rate, *concurrency),
        rss: m.peak_rss_mb,
        code: m.code,
        endpoints,
        log,
        out,
    }
}

fn print_row(r: &Row) {
    println!(
        "| {} | {} | {} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {} |",
        r.build,
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

/// A simulator holding the fleet. Every token was made a year before it expires (GitLab's
/// longest lifetime). In a warm fleet each variable carries the marker patrol writes with a
/// secret (with its fingerprint), as after patrol's first rotation.
async fn start(seed: Seed, setup: &Setup) -> Simulator {
    let sim = Simulator::start(seed).await.unwrap_or_else(|e| panic!("{e}"));
    sim.with_world(|w| {
        for t in w.tokens.values_mut() {
            if let Some(expires) = t.expires_at.and_then(|d| d.and_hms_opt(0, 0, 0)) {
                t.created_at = expires.and_utc() - chrono::Duration::days(365);
            }
        }
    });
    if setup.warm {
        sim.with_world(|w| {
            let marks: Vec<Option<String>> = w
                .variables
                .iter()
                .map(|v| {
                    w.token_by_secret(&v.value).map(|t| {
                        let stored = patrol::engine::Stored { id: t.id, user_id: t.user_id, expires_at: t.expires_at };
                        patrol::engine::with_marker(v.description.as_deref(), t.id, Some((&stored, &v.value)))
                    })
                })
                .collect();
            for (v, mark) in w.variables.iter_mut().zip(marks) {
                if mark.is_some() {
                    v.description = mark;
                }
            }
        });
    }
    sim.set_latency(setup.latency);
    sim.set_rate_limit(setup.rate);
    sim
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
    let commands = env_or("PATROL_BENCH_COMMANDS", "discover,rotate,audit".to_owned());
    let concurrency: u64 = env_or("PATROL_BENCH_CONCURRENCY", 8);
    let warm = match env_or("PATROL_BENCH_FLEET", "warm".to_owned()).as_str() {
        "warm" => true,
        "cold" => false,
        other => fail(&format!("PATROL_BENCH_FLEET={other:?}: expected warm or cold")),
    };
    let baseline: Option<PathBuf> = std::env::var_os("PATROL_BENCH_BASELINE").map(PathBuf::from);
    let wants = |c: &str| commands.split(',').any(|w| w.trim() == c);
    let dir: PathBuf = std::env::temp_dir().join(format!("patrol-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let time = gnu_time(&dir);
    let current = PathBuf::from(env!("CARGO_BIN_EXE_patrol"));
    let mut builds: Vec<(&'static str, &Path)> = Vec::new();
    if let Some(b) = &baseline {
        builds.push(("before", b.as_path()));
    }
    builds.push(("after", current.as_path()));
    let setup = Setup { time: time.clone(), dir: dir.clone(), latency, rate, concurrency, warm };
    println!("patrol {} fleet benchmark on {}", env!("CARGO_PKG_VERSION"), machine());
    println!(
        "latency {} ms per request, rate limit {}, concurrency {concurrency}, {} fleet{}\n",
        latency.as_millis(),
        rate.map_or("none".into(), |r| format!("{r}/min")),
        if warm { "warm" } else { "cold" },
        baseline.as_ref().map_or(String::new(), |b| format!(", before = {}", b.display()))
    );
    println!("| build | command | N | wall s | requests | per token | lower bound s | ratio | peak RSS MB | exit |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut details = Vec::new();
    for &n in &sizes {
        for &build in &builds {
            let Fleet { seed, config, ids, due } = fleet(n);
            let path = dir.join(format!("fleet-{n}.toml"));
            std::fs::write(&path, &config).unwrap_or_else(|e| panic!("{e}"));
            let cfg = path.display().to_string();
            let sim = start(seed, &setup).await;
            let what = |c: &str| format!("{} {c} N={n}", build.0);
            // Before the rotate (which changes no count it checks): the baseline has no discover.
            if wants("discover") && build.0 == "after" {
                let args = vec!["--config".into(), cfg.clone(), "discover".into(), "--json".into()];
                let discover = measure(&sim, &setup, build, "discover", args, n).await;
                print_row(&discover);
                check_exit(&what("discover"), discover.code, &discover.log);
                check_discover(&what("discover"), &discover.out, n);
                details.push(discover);
            }
            if wants("rotate") {
                let report = dir.join(format!("{}-rotate-{n}.json", build.0));
                let args = vec![
                    "--config".into(),
                    cfg.clone(),
                    "rotate".into(),
                    "--report".into(),
                    report.display().to_string(),
                ];
                let rotate = measure(&sim, &setup, build, "rotate", args, n).await;
                print_row(&rotate);
                check_exit(&what("rotate"), rotate.code, &rotate.log);
                check_rotation(&what("rotate"), &[report], &due, &sim);
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
                let audit = measure(&sim, &setup, build, "audit", args, n).await;
                print_row(&audit);
                check_exit(&what("audit"), audit.code, &audit.log);
                check_audit(&what("audit"), &audit.out, &ids);
                details.push(audit);
            }
            if sim.throttled() > 0 {
                println!("| (GitLab answered 429 {} times) ||||||||||", sim.throttled());
            }
            sim.shutdown().await;
        }
    }
    if let (Some(&n), true) = (sizes.iter().max(), shards > 1) {
        let Fleet { seed, config, due, .. } = fleet(n);
        let path = dir.join(format!("fleet-{n}-shards.toml"));
        std::fs::write(&path, &config).unwrap_or_else(|e| panic!("{e}"));
        let sim = start(seed, &setup).await;
        println!("\nN = {n} in {shards} shards, run at once (as `parallel: {shards}` jobs would):\n");
        println!("| shard | wall s | peak RSS MB | exit |");
        println!("|---|---|---|---|");
        let started = Instant::now();
        let runs: Vec<_> = (1..=shards)
            .map(|i| {
                let report = dir.join(format!("shard-{i}.json"));
                let args: Vec<String> = vec![
                    "--config".into(),
                    path.display().to_string(),
                    "rotate".into(),
                    "--shard".into(),
                    format!("{i}/{shards}"),
                    "--report".into(),
                    report.display().to_string(),
                    "--concurrency".into(),
                    concurrency.to_string(),
                ];
                let (url, log, out) =
                    (sim.api_url(), dir.join(format!("shard-{i}.log")), dir.join(format!("shard-{i}.out")));
                let (time, binary) = (time.clone(), current.clone());
                tokio::task::spawn_blocking(move || {
                    (i, report, log.clone(), run_patrol(&time, &binary, &args, &url, &log, &out))
                })
            })
            .collect();
        let mut finished = Vec::new();
        for run in runs {
            let (i, report, log, m) = run.await.unwrap_or_else(|e| fail(&format!("a shard's run: {e}")));
            println!("| {i}/{shards} | {:.2} | {:.1} | {} |", m.wall.as_secs_f64(), m.peak_rss_mb, m.code);
            finished.push((i, report, log, m.code));
        }
        println!("| all | {:.2} | | |", started.elapsed().as_secs_f64());
        for (i, _, log, code) in &finished {
            check_exit(&format!("shard {i}/{shards} of N={n}"), *code, log);
        }
        let reports: Vec<PathBuf> = finished.into_iter().map(|(_, report, _, _)| report).collect();
        check_rotation(&format!("N={n} in {shards} shards"), &reports, &due, &sim);
        let rotated = sim.with_world(|w| w.tokens.values().filter(|t| t.previous.is_some()).count());
        println!(
            "\ntokens rotated across the shards: {rotated}, exactly the {} due, none twice (checked); reuse detections: {}",
            due.len(),
            sim.reuse_detections().len()
        );
        sim.shutdown().await;
    }
    println!("\nRequests by endpoint:\n");
    for r in &details {
        println!("{} {} N={}:", r.build, r.command, r.n);
        for (name, count) in &r.endpoints {
            println!("  {count:>7}  {name}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
