//! The commands: turn parsed arguments into a run of the engine, print, report, and pick the
//! exit code. `main.rs` only sets up logging and calls [`run`].

use crate::cli::{AuditArgs, Cli, Command, Common, DiscoverArgs, PlanArgs, RotateArgs, Selection, Switch, Tuning};
use crate::config::{Config, ConfigError, ManagedToken};
use crate::engine::self_rotation::{rotate_self as rotate_self_engine, Refused, SelfTarget};
use crate::engine::{audit, Engine, Mode, Options, Progress};
use crate::gitlab::model::ApiToken;
use crate::gitlab::{Client, ClientOptions, GitlabError};
use crate::report::{self, RunReport, Summary, TokenReport};
use crate::secret::Secret;
use chrono::{NaiveDate, Utc};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

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
    let talks_to_gitlab =
        matches!(cli.command, Command::Plan(_) | Command::Rotate(_) | Command::Audit(_) | Command::Discover(_));
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
        Command::Discover(args) => run_discover(&cli, args, env).await,
        Command::Validate => validate(&cli, env),
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

/// Everything `plan`, `rotate` and `audit` would refuse before contacting GitLab, all at once:
/// the config file's problems (each with file, line and key), the GitLab URL they would use, the
/// CA file, the tunables set in the environment, and GitLab's `parallel:` variables. Only the
/// credential is not looked at: validate runs where there is none, and contacts nothing.
fn validate(cli: &Cli, env: &Env) -> Result<u8, Stop> {
    let (config, problems) = Config::load_all(&cli.config)?;
    let mut problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    // The URL from the flag or the environment; the config file's own was checked with the file.
    let from_outside =
        cli.gitlab_url.is_some() || env.get("CI_API_V4_URL").is_some() || env.get("CI_SERVER_URL").is_some();
    if from_outside || config.gitlab.url.is_none() {
        if let Err(stop) = gitlab_url(cli, env, None) {
            problems.push(stop.message);
        }
    }
    if config.gitlab.ca_file.is_none() {
        if let Some(path) = env.get("CI_SERVER_TLS_CA_FILE") {
            if let Err(e) = crate::gitlab::read_ca_file(Path::new(path)) {
                problems.push(format!("CI_SERVER_TLS_CA_FILE: {e}"));
            }
        }
    }
    problems.extend(tunables_in_env(env));
    let no_selection = Selection { only: Vec::new(), report: None, junit: None, shard: None };
    if let Err(stop) = shard(&no_selection, env) {
        problems.push(stop.message);
    }
    if !problems.is_empty() {
        return Err(Stop::usage(format!(
            "{}\n{} problem(s) found; plan and rotate would refuse to run. Nothing was contacted.",
            problems.join("\n"),
            problems.len()
        )));
    }
    println!("{}: OK, {} managed token(s)", cli.config.display(), config.tokens.len());
    Ok(EXIT_OK)
}

/// Each tunable of `plan`, `rotate` and `audit` set in the environment that their flag's parser
/// refuses: those commands would stop with exit 2 on it.
fn tunables_in_env(env: &Env) -> Vec<String> {
    use clap::CommandFactory;
    let mut root = Cli::command();
    root.build();
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for sub in root.get_subcommands().filter(|c| ["plan", "rotate", "audit"].contains(&c.get_name())) {
        for arg in sub.get_arguments() {
            let Some(name) = arg.get_env().and_then(|n| n.to_str()) else { continue };
            let Some(value) = env.vars.get(name) else { continue };
            if !seen.insert(name.to_owned()) {
                continue;
            }
            // The flag alone, with the value as if given on the command line.
            let Some(long) = arg.get_long() else { continue };
            let alone = clap::Command::new("patrol").no_binary_name(true).arg(arg.clone().env(None::<&str>));
            if let Err(e) = alone.try_get_matches_from([format!("--{long}={value}")]) {
                let text = e.to_string();
                let text = text.trim().trim_start_matches("error: ").lines().next().unwrap_or_default().to_owned();
                problems.push(format!("the environment variable {name}={value:?}: {text}"));
            }
        }
    }
    problems
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
    crate::config::check_gitlab_url(&url).map_err(Stop::usage)
}

fn credential(env: &Env, config: Option<&Config>) -> Result<Secret, Stop> {
    let name = config.map(|c| c.gitlab.token_env.as_str()).unwrap_or("PATROL_TOKEN");
    env.get(name).map(Secret::new).ok_or_else(|| {
        Stop::usage(format!("no credential: set the environment variable {name} to a GitLab token with the `api` scope (patrol never takes a secret on the command line)"))
    })
}

pub fn client(url: &str, secret: Secret, common: &Common, env: &Env, config: Option<&Config>) -> Result<Client, Stop> {
    let mut options = ClientOptions {
        concurrency: usize::from(common.concurrency),
        timeout: common.timeout,
        ..ClientOptions::default()
    };
    options.retry.budget = common.retry_budget;
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
        Err(e @ GitlabError::Unreachable { .. }) => Err(Stop {
            code: EXIT_UNREACHABLE,
            message: format!("cannot reach GitLab at {}: {}. Nothing was changed.", client.base(), e.message()),
        }),
        Err(e @ GitlabError::Transport { .. }) => Err(Stop {
            code: EXIT_UNREACHABLE,
            message: format!(
                "cannot reach GitLab at {}: {e}. Nothing was changed; run again later, or raise --timeout / --retry-budget if GitLab is slow.",
                client.base()
            ),
        }),
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
    let end = engine_run(cli, env, &args.common, None, &args.selection, Mode::Plan, false).await?;
    Ok(match end {
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
    let end = engine_run(cli, env, &args.common, Some(&args.tuning), &args.selection, mode, args.force).await?;
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
    let out = human_output(&args.selection)?;
    if args.tuning.lock == Switch::Off {
        // Only from the environment: the flag is refused with --self (cli::idle_flags).
        tracing::warn!("PATROL_LOCK=off is ignored: rotate --self always locks its token");
    }
    let url = gitlab_url(cli, env, None)?;
    let client = client(&url, secret, &args.common, env, None)?;
    let mut options = Options::new(mode, today());
    options.force = args.force;
    tune(&mut options, Some(&args.tuning), None);
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
    print_progress(out, 1, 1, &report, env.get("GITLAB_CI") == Some("true"));
    let command = if mode == Mode::Plan { "plan" } else { "rotate" };
    let run = RunReport::new(command, started_at, url, vec![report]);
    say(out, &report::totals_line(&run.summary));
    write_reports(&run, &args.selection)?;
    Ok(if run.summary.failed > 0 { EXIT_FAILED } else { EXIT_OK })
}

/// The engine's pacing: `rotate`'s flags (or their environment variables), then the config
/// file, then the defaults. The request deadline is `--request-deadline`, else `[gitlab]
/// request_deadline_seconds`, else 90 s. A lock lasts at least one and a half request
/// deadlines: a run that dies leaves a lock the next run may take over once it has passed; a
/// dead holder's last request left at most a third of a lease before its last renewal, so the
/// lease's end is at least a deadline after it, when GitLab can no longer carry it out (§12).
fn tune(options: &mut Options, tuning: Option<&Tuning>, config: Option<&Config>) {
    options.request_deadline = tuning
        .and_then(|t| t.request_deadline)
        .or_else(|| config.and_then(|c| c.gitlab.request_deadline))
        .unwrap_or(crate::config::DEFAULT_REQUEST_DEADLINE);
    if let Some(t) = tuning {
        options.write_budget = t.write_budget;
        options.lock_lease = t.lock_lease;
        options.lock = t.lock == Switch::On;
    }
    options.lock_lease = options.lock_lease.max(options.request_deadline * 3 / 2);
}

struct RunEnd {
    failed: bool,
    due: bool,
}

async fn engine_run(
    cli: &Cli,
    env: &Env,
    common: &Common,
    tuning: Option<&Tuning>,
    selection: &Selection,
    mode: Mode,
    force: bool,
) -> Result<RunEnd, Stop> {
    let out = human_output(selection)?;
    let config = Config::load(&cli.config)?;
    let mut tokens = selected(&config, &selection.only)?;
    if let Some(shard) = shard(selection, env)? {
        tokens.retain(|t| shard.owns(&t.id));
        tracing::info!(shard = shard.index, of = shard.total, tokens = tokens.len(), "working on one shard");
    }
    let url = gitlab_url(cli, env, Some(&config))?;
    let secret = credential(env, Some(&config))?;
    let client = client(&url, secret, common, env, Some(&config))?;
    let me = preflight(&client, mode).await?;
    let mut options = Options::new(mode, today());
    options.credential_token = Some(me.id);
    options.credential_user = me.user_id;
    options.force = force;
    tune(&mut options, tuning, Some(&config));
    // Tokens waiting on a shared lookup hold no request slot: let more tokens be in flight than
    // requests, so the --concurrency request slots stay busy.
    options.concurrency = usize::from(common.concurrency) * 4;
    let started_at = Utc::now();
    let reports =
        execute(&Engine::new(client.clone(), options), &tokens, env.get("GITLAB_CI") == Some("true"), out).await;
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
            say(out, &line);
        }
        for warning in notified.warnings {
            eprintln!("patrol: warning: {warning}");
        }
    }
    Ok(RunEnd { failed: run.summary.failed > 0, due: run.summary.due > 0 })
}

/// Where the lines for people go: stdout, unless a report is written there (`--report -` or
/// `--junit -`); then stderr, so that stdout holds the report alone and can be piped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Human {
    Stdout,
    Stderr,
}

fn human_output(selection: &Selection) -> Result<Human, Stop> {
    let dash = |p: &Option<std::path::PathBuf>| p.as_deref() == Some(Path::new("-"));
    match (dash(&selection.report), dash(&selection.junit)) {
        (true, true) => Err(Stop::usage(
            "--report - and --junit - would both write to stdout, mixing JSON and XML; write one of them to a file",
        )),
        (false, false) => Ok(Human::Stdout),
        _ => Ok(Human::Stderr),
    }
}

/// One line for people, where they go.
pub fn say(out: Human, line: &str) {
    let _ = match out {
        Human::Stdout => writeln!(std::io::stdout().lock(), "{line}"),
        Human::Stderr => writeln!(std::io::stderr().lock(), "{line}"),
    };
}

/// Runs the engine, printing one line per token in config order, and the totals; in GitLab CI
/// each token's details go in a collapsed log section. Tokens are worked on several at once and
/// finish in any order: a token's line is printed as soon as it and every token before it in
/// the config are done, so the output is the same from run to run.
pub async fn execute(engine: &Engine, tokens: &[ManagedToken], gitlab_ci: bool, out: Human) -> Vec<TokenReport> {
    let total = tokens.len();
    let plan = engine.mode() == Mode::Plan;
    let position: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();
    let mut finished: BTreeMap<usize, TokenReport> = BTreeMap::new();
    let mut printed = 0;
    let reports = engine
        .run(tokens, |event| match event {
            Progress::Token(_, report) => {
                if let Some(&i) = position.get(report.id.as_str()) {
                    finished.insert(i, report.clone());
                }
                while let Some(report) = finished.remove(&printed) {
                    printed += 1;
                    print_progress(out, printed, total, &report, plan);
                }
            }
            Progress::PipelineFailed(_) => {}
        })
        .await;
    // Any token whose line could not be placed (none, unless the engine skipped one): in order.
    for (i, report) in reports.iter().enumerate().skip(printed) {
        print_progress(out, i + 1, total, report, plan);
    }
    if !plan {
        print_blocks(out, &reports, gitlab_ci);
    }
    say(out, &report::totals_line(&Summary::of(&reports)));
    reports
}

/// One token's line as it is done; in `plan`, with what `rotate` would write and retry or start.
fn print_progress(out: Human, done: usize, total: usize, report: &TokenReport, plan: bool) {
    say(out, &report::progress_line(done, total, report));
    if plan {
        for line in report::block(report) {
            say(out, &line);
        }
    }
}

/// After a `rotate`, once the pipelines have run: per token that changed something or failed,
/// what it wrote and which pipelines it retried or started, and how they ended. In GitLab CI each
/// token's block is a collapsible log section (open), with the token's details inside.
fn print_blocks(out: Human, reports: &[TokenReport], gitlab_ci: bool) {
    let shown: Vec<&TokenReport> =
        reports.iter().filter(|r| r.outcome == report::Outcome::Failed || !report::block(r).is_empty()).collect();
    if shown.is_empty() {
        return;
    }
    say(out, "");
    for (i, r) in shown.into_iter().enumerate().map(|(i, r)| (i + 1, r)) {
        let head = report::block_head(r);
        let lines = report::block(r).join("\n");
        if gitlab_ci {
            let ts = Utc::now().timestamp();
            let details = report::describe(r);
            say(
                out,
                &format!(
                    "\x1b[0Ksection_start:{ts}:patrol_token_{i}[collapsed=false]\r\x1b[0K{head}\n{lines}\n{details}\n\x1b[0Ksection_end:{ts}:patrol_token_{i}\r\x1b[0K"
                ),
            );
        } else if lines.is_empty() {
            say(out, &head);
        } else {
            say(out, &format!("{head}\n{lines}"));
        }
    }
}

/// Writes the reports asked for; `-` is stdout.
fn write_reports(run: &RunReport, selection: &Selection) -> Result<(), Stop> {
    let write = |path: &Path, text: String| {
        if path == Path::new("-") {
            let mut stdout = std::io::stdout().lock();
            return writeln!(stdout, "{text}")
                .and_then(|()| stdout.flush())
                .map_err(|e| Stop { code: EXIT_FAILED, message: format!("cannot write the report to stdout: {e}") });
        }
        std::fs::write(path, text).map_err(|e| Stop {
            code: EXIT_FAILED,
            message: format!("cannot write {}: {e}. The run itself is done; see its lines above.", path.display()),
        })
    };
    if let Some(path) = &selection.report {
        write(path, run.to_json())?;
    }
    if let Some(path) = &selection.junit {
        write(path, run.to_junit())?;
    }
    Ok(())
}

/// The config for a command that also works without one (`audit`, `discover`): none when the
/// file does not exist, an error when it exists and is wrong.
fn optional_config(cli: &Cli) -> Result<Option<Config>, Stop> {
    match Config::load(&cli.config) {
        Ok(c) => Ok(Some(c)),
        Err(ConfigError::Read { .. }) if !cli.config.exists() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn run_audit(cli: &Cli, args: &AuditArgs, env: &Env) -> Result<u8, Stop> {
    let config = optional_config(cli)?;
    let url = gitlab_url(cli, env, config.as_ref())?;
    let secret = credential(env, config.as_ref())?;
    let client = client(&url, secret, &args.common, env, config.as_ref())?;
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

/// `patrol discover`: the map of where tokens are stored, its findings, and optionally a config.
async fn run_discover(cli: &Cli, args: &DiscoverArgs, env: &Env) -> Result<u8, Stop> {
    if let Some(path) = &args.write_config {
        if path.symlink_metadata().is_ok() && !args.force {
            return Err(Stop::usage(format!(
                "--write-config {}: the file exists; refusing to overwrite it. Pass --force to replace it, or name another file. Nothing was contacted.",
                path.display()
            )));
        }
    }
    let config = optional_config(cli)?;
    let url = gitlab_url(cli, env, config.as_ref())?;
    let secret = credential(env, config.as_ref())?;
    let client = client(&url, secret, &args.common, env, config.as_ref())?;
    let token = preflight(&client, Mode::Plan).await?;
    let admin = match client.current_user().await {
        Ok(user) => user.is_admin,
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell whether patrol's credential is an administrator's (GET /user); walking as if it is not");
            false
        }
    };
    let options = crate::discover::Options {
        groups: args.group.clone(),
        projects: args.project.clone(),
        prefixes: args.token_prefix.clone(),
        within_days: args.within_days,
        today: today(),
        concurrency: usize::from(args.common.concurrency),
        progress: !cli.quiet,
    };
    let me = crate::discover::Credential { token, admin };
    let discovery = crate::discover::discover(&client, &me, config.as_ref(), &options).await.map_err(|e| Stop {
        code: EXIT_FAILED,
        message: format!("discover stopped: {e}. Nothing was changed; run again once GitLab answers, or narrow the walk with --group/--project."),
    })?;
    let report = &discovery.report;
    let out = if args.json { Human::Stderr } else { Human::Stdout };
    if args.json {
        let json = serde_json::to_string_pretty(report)
            .map_err(|e| Stop { code: EXIT_FAILED, message: format!("cannot write the JSON report: {e}") })?;
        println!("{json}");
    } else {
        for line in crate::discover::output::lines(report) {
            say(out, &line);
        }
    }
    if let Some(path) = &args.write_config {
        let (text, written) = crate::discover::config_out::render(&discovery, &today().to_string());
        if written == 0 {
            return Err(Stop {
                code: EXIT_FAILED,
                message: format!(
                    "--write-config {}: no token found in a variable could be written as a [[token]] (see above), so no file was written: a config without one is refused by validate",
                    path.display()
                ),
            });
        }
        write_new(path, &text, args.force).map_err(|e| Stop {
            code: EXIT_FAILED,
            message: format!("cannot write {}: {e}. Nothing in GitLab was changed.", path.display()),
        })?;
        say(
            out,
            &format!(
                "wrote {} with {written} [[token]] block(s); review it (pipelines are marked `# review`), then `patrol validate --config {}` and `patrol plan --config {}`",
                path.display(),
                path.display(),
                path.display()
            ),
        );
    }
    Ok(if args.exit_code && !report.findings.is_empty() { EXIT_DUE } else { EXIT_OK })
}

/// Writes `text` to `path`; without `force`, only if no file is there by then (a file that
/// appeared during the walk is not replaced).
fn write_new(path: &Path, text: &str, force: bool) -> std::io::Result<()> {
    let mut file = if force {
        std::fs::File::create(path)?
    } else {
        std::fs::OpenOptions::new().write(true).create_new(true).open(path)?
    };
    file.write_all(text.as_bytes())?;
    file.flush()
}

#[cfg(test)]
mod tuning_tests {
    use super::*;
    use std::time::Duration;

    fn tuning(request_deadline: Option<u64>, lock_lease: u64) -> Tuning {
        Tuning {
            write_budget: Duration::from_secs(7),
            request_deadline: request_deadline.map(Duration::from_secs),
            lock_lease: Duration::from_secs(lock_lease),
            lock: Switch::Off,
        }
    }

    /// The request deadline: the flag or its variable (clap has put either in `Tuning`), else
    /// the config file, else 90 s; a lock outlasts one and a half deadlines.
    #[test]
    fn settings_come_from_the_flag_then_the_config_then_the_default() {
        let config = Config::parse(
            Path::new("patrol.toml"),
            &crate::config::tests::GOOD.replace("[gitlab]\n", "[gitlab]\nrequest_deadline_seconds = 40\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let tuned = |t: Option<&Tuning>, c: Option<&Config>| {
            let mut o = Options::new(Mode::Rotate, today());
            tune(&mut o, t, c);
            (o.request_deadline.as_secs(), o.lock_lease.as_secs(), o.write_budget.as_secs(), o.lock)
        };
        assert_eq!(tuned(Some(&tuning(Some(5), 200)), Some(&config)), (5, 200, 7, false), "the flag");
        assert_eq!(tuned(Some(&tuning(None, 200)), Some(&config)), (40, 200, 7, false), "the config");
        assert_eq!(tuned(Some(&tuning(None, 200)), None), (90, 200, 7, false), "the default");
        assert_eq!(tuned(Some(&tuning(Some(100), 1)), None), (100, 150, 7, false), "a lease outlasts the deadline");
        assert_eq!(tuned(None, Some(&config)), (40, 180, 300, true), "plan: the engine's own");
    }
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
