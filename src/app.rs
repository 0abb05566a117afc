//! The commands: turn parsed arguments into a run of the engine, print, report, and pick the
//! exit code. `main.rs` only sets up logging and calls [`run`].

use crate::cli::{AuditArgs, Cli, Command, PlanArgs, RotateArgs, Selection};
use crate::config::{Config, ConfigError, ManagedToken};
use crate::engine::self_rotation::{rotate_self as rotate_self_engine, Refused, SelfTarget};
use crate::engine::{audit, Engine, Mode, Options, Progress};
use crate::gitlab::model::ApiToken;
use crate::gitlab::{Client, ClientOptions, GitlabError};
use crate::report::{self, RunReport, Summary, TokenReport};
use crate::secret::Secret;
use chrono::{NaiveDate, Utc};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;
pub const EXIT_DUE: u8 = 4;

/// A reason to stop before doing anything, with its exit code.
#[derive(Debug)]
pub struct Stop {
    pub code: u8,
    pub message: String,
}

impl Stop {
    fn usage(message: impl Into<String>) -> Stop {
        Stop { code: EXIT_USAGE, message: message.into() }
    }
}

impl From<ConfigError> for Stop {
    fn from(e: ConfigError) -> Stop {
        Stop::usage(e.to_string())
    }
}

/// What the commands read from the process environment, gathered once so tests can pass their own.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: std::collections::HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Env {
        Env { vars: std::env::vars().collect() }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }
}

pub async fn run(cli: Cli, env: &Env) -> u8 {
    let talks_to_gitlab = matches!(cli.command, Command::Plan(_) | Command::Rotate(_) | Command::Audit(_));
    if talks_to_gitlab && debug_trace(env) && !cli.allow_debug_trace {
        eprintln!(
            "patrol: refusing to run with CI_DEBUG_TRACE enabled: GitLab then writes every command and variable of the job to its log, and it masks only the variables it knew when the job started, so a secret patrol handles could be shown. Turn CI_DEBUG_TRACE off for this job, or pass --allow-debug-trace if the log is private and will be deleted. Nothing was contacted."
        );
        return EXIT_USAGE;
    }
    let result = match &cli.command {
        Command::Plan(args) => plan(&cli, args, env).await,
        Command::Rotate(args) => rotate(&cli, args, env).await,
        Command::Audit(args) => run_audit(&cli, args, env).await,
        Command::Validate => validate(&cli.config),
        Command::Demo => crate::demo::run().await,
        Command::Simulator(_) => Err(Stop::usage("the simulator is started by main")),
    };
    match result {
        Ok(code) => code,
        Err(stop) => {
            eprintln!("patrol: {}", stop.message);
            stop.code
        }
    }
}

/// GitLab's debug logging of a job: `CI_DEBUG_TRACE` true as the runner reads it, with Go's
/// `strconv.ParseBool` (`1`, `t`, `T`, `TRUE`, `true`, `True`). Anything else it takes for false,
/// with a warning in the job log, and logs nothing more (`common/build_settings.go` in
/// gitlab-runner). `CI_DEBUG_SERVICES` only copies service containers' output into the log: it
/// shows no command or variable of the job, so it is no reason to stop.
fn debug_trace(env: &Env) -> bool {
    env.get("CI_DEBUG_TRACE").is_some_and(go_parse_bool_true)
}

/// Whether Go's `strconv.ParseBool` reads `value` as true.
fn go_parse_bool_true(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

fn validate(path: &Path) -> Result<u8, Stop> {
    let config = Config::load(path)?;
    println!("{}: OK, {} managed token(s)", path.display(), config.tokens.len());
    Ok(EXIT_OK)
}

/// The API root: --gitlab-url / PATROL_GITLAB_URL, else CI_API_V4_URL, else CI_SERVER_URL/api/v4,
/// else `[gitlab] url`. Plain http is refused except on loopback.
pub fn gitlab_url(cli: &Cli, env: &Env, config: Option<&Config>) -> Result<String, Stop> {
    let url = cli
        .gitlab_url
        .clone()
        .or_else(|| env.get("CI_API_V4_URL").map(str::to_owned))
        .or_else(|| env.get("CI_SERVER_URL").map(|s| format!("{}/api/v4", s.trim_end_matches('/'))))
        .or_else(|| config.and_then(|c| c.gitlab.url.clone()))
        .ok_or_else(|| {
            Stop::usage("no GitLab URL: pass --gitlab-url, set PATROL_GITLAB_URL, or set [gitlab] url in the config")
        })?;
    let url = url.trim_end_matches('/').to_owned();
    let parsed = reqwest::Url::parse(&url).map_err(|e| Stop::usage(format!("GitLab URL {url:?} is not a URL: {e}")))?;
    if !url.ends_with("/api/v4") {
        return Err(Stop::usage(format!("GitLab URL {url:?} must be the API root, ending in /api/v4")));
    }
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(Stop::usage(format!(
            "refusing plain http to {url}: the credential would cross the network unencrypted. Use https (plain http is allowed only for loopback: localhost, 127.0.0.0/8 and ::1)."
        ))),
        other => Err(Stop::usage(format!("GitLab URL {url:?} has scheme {other:?}; use https"))),
    }
}

fn credential(env: &Env, config: Option<&Config>) -> Result<Secret, Stop> {
    let name = config.map(|c| c.gitlab.token_env.as_str()).unwrap_or("PATROL_TOKEN");
    env.get(name).map(Secret::new).ok_or_else(|| {
        Stop::usage(format!("no credential: set the environment variable {name} to a GitLab token with the `api` scope (patrol never takes a secret on the command line)"))
    })
}

pub fn client(url: &str, secret: Secret, concurrency: u16, env: &Env, config: Option<&Config>) -> Result<Client, Stop> {
    let mut options = ClientOptions { concurrency: usize::from(concurrency), ..ClientOptions::default() };
    // Seconds, fractions allowed; at least 0.1.
    if let Some(secs) = env.get("PATROL_TIMEOUT").and_then(|s| s.parse::<f64>().ok()).filter(|s| s.is_finite()) {
        options.timeout = Duration::from_secs_f64(secs.clamp(0.1, 86_400.0));
    }
    if let Some(secs) = env.get("PATROL_RETRY_SECONDS").and_then(|s| s.parse::<u64>().ok()) {
        options.retry.budget = Duration::from_secs(secs);
    }
    options.ca_file =
        config.and_then(|c| c.gitlab.ca_file.clone()).or_else(|| env.get("CI_SERVER_TLS_CA_FILE").map(Into::into));
    Client::new(url, secret, options).map_err(|e| Stop::usage(e.to_string()))
}

/// Exit 3 before any change when GitLab cannot be reached or the credential is refused, or when
/// a run that writes (`rotate`) has a credential without the `api` scope: GitLab would refuse
/// every write with 403 after the first rotation. Returns which token the credential is.
async fn preflight(client: &Client, mode: Mode) -> Result<ApiToken, Stop> {
    match client.token_self(client.credential()).await {
        Ok(me) if mode == Mode::Rotate && !me.scopes.iter().any(|s| s == "api") => Err(Stop {
            code: EXIT_UNREACHABLE,
            message: format!(
                "patrol's credential (token {} {:?}) has the scopes {} but not `api`, which rotating tokens and writing CI/CD variables need. Nothing was changed. Give patrol a token with the `api` scope (`read_api` is enough for `plan` and `audit`).",
                me.id,
                me.name,
                if me.scopes.is_empty() { "(none)".to_owned() } else { me.scopes.join(", ") }
            ),
        }),
        Ok(me) => Ok(me),
        Err(e @ GitlabError::Transport { .. }) => {
            Err(Stop { code: EXIT_UNREACHABLE, message: format!("cannot reach GitLab at {}: {e}. Nothing was changed.", client.base()) })
        }
        Err(e) if matches!(e.status(), Some(401 | 403)) => Err(Stop {
            code: EXIT_UNREACHABLE,
            message: format!("GitLab at {} rejected patrol's credential: {e}. Check that the token is valid, not expired, and has the `api` scope. Nothing was changed.", client.base()),
        }),
        Err(e) => Err(Stop { code: EXIT_UNREACHABLE, message: format!("GitLab at {} did not answer as expected: {e}. Nothing was changed.", client.base()) }),
    }
}

/// The shard to work on: --shard, else GitLab's `parallel:` variables.
fn shard(selection: &Selection, env: &Env) -> Result<Option<crate::cli::Shard>, Stop> {
    if selection.shard.is_some() {
        return Ok(selection.shard);
    }
    match (env.get("CI_NODE_INDEX"), env.get("CI_NODE_TOTAL")) {
        (Some(i), Some(n)) => crate::cli::parse_shard(&format!("{i}/{n}"))
            .map(Some)
            .map_err(|e| Stop::usage(format!("CI_NODE_INDEX/CI_NODE_TOTAL: {e}"))),
        _ => Ok(None),
    }
}

fn selected(config: &Config, only: &[String]) -> Result<Vec<ManagedToken>, Stop> {
    for id in only {
        if !config.tokens.iter().any(|t| &t.id == id) {
            let known: Vec<&str> = config.tokens.iter().map(|t| t.id.as_str()).collect();
            return Err(Stop::usage(format!(
                "--only {id:?}: no such token in {} (known: {})",
                config.path.display(),
                known.join(", ")
            )));
        }
    }
    Ok(config.tokens.iter().filter(|t| only.is_empty() || only.contains(&t.id)).cloned().collect())
}

pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

async fn plan(cli: &Cli, args: &PlanArgs, env: &Env) -> Result<u8, Stop> {
    let code = engine_run(cli, env, &args.common.concurrency, &args.selection, Mode::Plan, false).await?;
    Ok(match code {
        RunEnd { failed: true, .. } => EXIT_FAILED,
        RunEnd { due: true, .. } if args.exit_code => EXIT_DUE,
        _ => EXIT_OK,
    })
}

async fn rotate(cli: &Cli, args: &RotateArgs, env: &Env) -> Result<u8, Stop> {
    if let Some(var) = &args.myself.var {
        let mode = if args.dry_run { Mode::Plan } else { Mode::Rotate };
        return rotate_self(cli, args, var, mode, env).await;
    }
    if args.force && args.selection.only.is_empty() && !args.all {
        return Err(Stop::usage(
            "--force needs --only ID (repeatable) or --all, so an emergency rotation is always deliberate",
        ));
    }
    let mode = if args.dry_run { Mode::Plan } else { Mode::Rotate };
    let end = engine_run(cli, env, &args.common.concurrency, &args.selection, mode, args.force).await?;
    Ok(if end.failed { EXIT_FAILED } else { EXIT_OK })
}

/// `rotate --self VAR`: the token in `$VAR` renews itself; no config file is read.
async fn rotate_self(cli: &Cli, args: &RotateArgs, var: &str, mode: Mode, env: &Env) -> Result<u8, Stop> {
    let project = args.myself.project.clone().or_else(|| env.get("CI_PROJECT_ID").map(str::to_owned)).ok_or_else(
        || Stop::usage(format!("--self {var}: which project holds the CI/CD variable {var}? Pass --project, or run in GitLab CI (CI_PROJECT_ID)")),
    )?;
    let secret = env.get(var).map(Secret::new).ok_or_else(|| {
        Stop::usage(format!(
            "--self {var}: the environment variable {var} is unset or empty. In GitLab CI, define the CI/CD variable {var} (masked, hidden) holding the token to keep alive."
        ))
    })?;
    let url = gitlab_url(cli, env, None)?;
    let client = client(&url, secret, args.common.concurrency, env, None)?;
    let mut options = Options::new(mode, today());
    options.force = args.force;
    options.write_budget = write_budget(env);
    options.request_deadline = request_deadline(env, None)?;
    options.lock_lease = lock_lease(env, options.request_deadline)?;
    let target = SelfTarget {
        var: var.to_owned(),
        project,
        environment_scope: args.myself.environment_scope.clone(),
        rotate_before_days: args.myself.rotate_before_days,
        expires_in_days: args.myself.expires_in_days,
        retry_refs: args.myself.retry_ref.clone(),
    };
    let started_at = Utc::now();
    let report = rotate_self_engine(&client, &target, &options)
        .await
        .map_err(|Refused(message)| Stop { code: EXIT_UNREACHABLE, message })?;
    print_progress(1, 1, &report, env.get("GITLAB_CI") == Some("true"));
    let command = if mode == Mode::Plan { "plan" } else { "rotate" };
    let run = RunReport::new(command, started_at, url, vec![report]);
    println!("{}", report::totals_line(&run.summary));
    write_reports(&run, &args.selection)?;
    Ok(if run.summary.failed > 0 { EXIT_FAILED } else { EXIT_OK })
}

/// How long to keep trying to store a new secret: `PATROL_WRITE_SECONDS`, default 300.
fn write_budget(env: &Env) -> Duration {
    Duration::from_secs(env.get("PATROL_WRITE_SECONDS").and_then(|s| s.parse().ok()).unwrap_or(300))
}

/// GitLab's request deadline (§12): `[gitlab] request_deadline_seconds`, else
/// `PATROL_REQUEST_DEADLINE_SECONDS`, else 90.
fn request_deadline(env: &Env, config: Option<&Config>) -> Result<Duration, Stop> {
    if let Some(d) = config.and_then(|c| c.gitlab.request_deadline) {
        return Ok(d);
    }
    match env.get("PATROL_REQUEST_DEADLINE_SECONDS") {
        None => Ok(crate::config::DEFAULT_REQUEST_DEADLINE),
        Some(s) => s.parse().map(Duration::from_secs).map_err(|_| {
            Stop::usage(format!(
                "PATROL_REQUEST_DEADLINE_SECONDS={s:?} is not a whole number of seconds (how long GitLab may still carry out a request whose answer was lost; default 90)"
            ))
        }),
    }
}

/// How long a lock lasts unless its holder renews it (every third of that):
/// `PATROL_LOCK_LEASE_SECONDS`, default 180, and never less than one and a half request
/// deadlines. A run that dies leaves a lock the next run may take over once it has passed; a
/// dead holder's last request left at most a third of a lease before its last renewal, so the
/// lease's end is at least a deadline after it, when GitLab can no longer carry it out (§12).
fn lock_lease(env: &Env, deadline: Duration) -> Result<Duration, Stop> {
    let lease = match env.get("PATROL_LOCK_LEASE_SECONDS") {
        None => crate::engine::lock::LEASE,
        Some(s) => s.parse::<u64>().ok().filter(|n| *n >= 1).map(Duration::from_secs).ok_or_else(|| {
            Stop::usage(format!(
                "PATROL_LOCK_LEASE_SECONDS={s:?} is not a whole number of seconds, at least 1 (how long a lock lasts unless renewed; default 180)"
            ))
        })?,
    };
    Ok(lease.max(deadline * 3 / 2))
}

/// Whether to lock each token before changing it: `PATROL_LOCK` = `on` (default) or `off`. Off
/// is for a setup where one GitLab `resource_group` serializes every run that can touch the
/// tokens (README, "Skipping the lock").
fn take_locks(env: &Env) -> Result<bool, Stop> {
    match env.get("PATROL_LOCK") {
        None | Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(s) => Err(Stop::usage(format!(
            "PATROL_LOCK={s:?} is neither \"on\" nor \"off\" (whether patrol locks each token before changing it; default on)"
        ))),
    }
}

struct RunEnd {
    failed: bool,
    due: bool,
}

async fn engine_run(
    cli: &Cli,
    env: &Env,
    concurrency: &u16,
    selection: &Selection,
    mode: Mode,
    force: bool,
) -> Result<RunEnd, Stop> {
    let config = Config::load(&cli.config)?;
    let mut tokens = selected(&config, &selection.only)?;
    if let Some(shard) = shard(selection, env)? {
        tokens.retain(|t| shard.owns(&t.id));
        tracing::info!(shard = shard.index, of = shard.total, tokens = tokens.len(), "working on one shard");
    }
    let url = gitlab_url(cli, env, Some(&config))?;
    let secret = credential(env, Some(&config))?;
    let client = client(&url, secret, *concurrency, env, Some(&config))?;
    let me = preflight(&client, mode).await?;
    let mut options = Options::new(mode, today());
    options.credential_token = Some(me.id);
    options.force = force;
    options.write_budget = write_budget(env);
    options.request_deadline = request_deadline(env, Some(&config))?;
    options.lock_lease = lock_lease(env, options.request_deadline)?;
    options.lock = take_locks(env)?;
    // Tokens waiting on a shared lookup hold no request slot: let more tokens be in flight than
    // requests, so the --concurrency request slots stay busy.
    options.concurrency = usize::from(*concurrency) * 4;
    let started_at = Utc::now();
    let reports = execute(&Engine::new(client.clone(), options), &tokens, env.get("GITLAB_CI") == Some("true")).await;
    let command = if mode == Mode::Plan { "plan" } else { "rotate" };
    let run = RunReport::new(command, started_at, url, reports);
    write_reports(&run, selection)?;
    if let (Some(section), Mode::Rotate) = (&config.notify, mode) {
        let this_run = match env.get("CI_JOB_URL") {
            Some(url) => format!("job {url}"),
            None => format!("the run of {}", started_at.format("%Y-%m-%d %H:%M UTC")),
        };
        let notified = crate::engine::notify::notify(&client, section, &run.tokens, &this_run).await;
        for line in notified.lines {
            println!("{line}");
        }
        for warning in notified.warnings {
            eprintln!("patrol: warning: {warning}");
        }
    }
    Ok(RunEnd { failed: run.summary.failed > 0, due: run.summary.due > 0 })
}

/// Runs the engine, printing one line per token as it finishes and the totals; in GitLab CI each
/// token's details go in a collapsed log section.
pub async fn execute(engine: &Engine, tokens: &[ManagedToken], gitlab_ci: bool) -> Vec<TokenReport> {
    let total = tokens.len();
    let reports = engine
        .run(tokens, |event| match event {
            Progress::Token(done, report) => print_progress(done, total, report, gitlab_ci),
            Progress::PipelineFailed(report) => {
                println!("{}: failed — {}", report.id, report.error.as_deref().unwrap_or("a pipeline failed"))
            }
        })
        .await;
    println!("{}", report::totals_line(&Summary::of(&reports)));
    reports
}

/// One token's progress line; in GitLab CI its details follow in a collapsed log section.
fn print_progress(done: usize, total: usize, report: &TokenReport, gitlab_ci: bool) {
    let line = report::progress_line(done, total, report);
    let mut out = std::io::stdout().lock();
    let _ = if gitlab_ci {
        let ts = Utc::now().timestamp();
        let details = report::describe(report);
        writeln!(
            out,
            "\x1b[0Ksection_start:{ts}:patrol_token_{done}[collapsed=true]\r\x1b[0K{line}\n{details}\n\x1b[0Ksection_end:{ts}:patrol_token_{done}\r\x1b[0K"
        )
    } else {
        writeln!(out, "{line}")
    };
}

fn write_reports(run: &RunReport, selection: &Selection) -> Result<(), Stop> {
    let write = |path: &Path, text: String| {
        std::fs::write(path, text)
            .map_err(|e| Stop { code: EXIT_FAILED, message: format!("cannot write {}: {e}", path.display()) })
    };
    if let Some(path) = &selection.report {
        write(path, run.to_json())?;
    }
    if let Some(path) = &selection.junit {
        write(path, run.to_junit())?;
    }
    Ok(())
}

async fn run_audit(cli: &Cli, args: &AuditArgs, env: &Env) -> Result<u8, Stop> {
    let config = match Config::load(&cli.config) {
        Ok(c) => Some(c),
        Err(ConfigError::Read { .. }) if !cli.config.exists() => None,
        Err(e) => return Err(e.into()),
    };
    let url = gitlab_url(cli, env, config.as_ref())?;
    let secret = credential(env, config.as_ref())?;
    let client = client(&url, secret, args.common.concurrency, env, config.as_ref())?;
    preflight(&client, Mode::Plan).await?;
    let report = audit::audit(&client, config.as_ref(), args.group.as_deref(), today(), args.within_days)
        .await
        .map_err(|e| Stop { code: EXIT_FAILED, message: format!("audit failed: {e}") })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        println!(
            "{:<8} {:<16} {:<11} {:>5}  {:<24} {:<14} NAME",
            "TOKEN", "KIND", "EXPIRES", "DAYS", "OWNER", "MANAGED"
        );
        for t in &report.tokens {
            println!(
                "{:<8} {:<16} {:<11} {:>5}  {:<24} {:<14} {}",
                t.token_id,
                t.kind.as_str(),
                t.expires_at.map(|d| d.to_string()).unwrap_or_else(|| "never".into()),
                t.days_left.map(|d| d.to_string()).unwrap_or_default(),
                t.owner,
                t.managed.as_deref().unwrap_or("-"),
                t.name
            );
        }
        println!(
            "patrol: {} token(s) expire within {} days or expired in the last {}",
            report.tokens.len(),
            args.within_days,
            args.within_days
        );
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod debug_trace_tests {
    use super::*;

    fn env(value: &str) -> Env {
        Env { vars: [("CI_DEBUG_TRACE".to_owned(), value.to_owned())].into_iter().collect() }
    }

    /// The runner's reading: Go's `strconv.ParseBool`, and false for what it cannot parse.
    #[test]
    fn ci_debug_trace_is_read_as_the_runner_reads_it() {
        for on in ["1", "t", "T", "TRUE", "true", "True"] {
            assert!(debug_trace(&env(on)), "{on:?} turns the trace on");
        }
        for off in ["0", "f", "F", "FALSE", "false", "False", "", "tRuE", "yes", "on", " true", "true ", "2"] {
            assert!(!debug_trace(&env(off)), "{off:?} leaves the trace off");
        }
        assert!(!debug_trace(&Env::default()));
    }
}
