//! Command-line interface. The doc comments are the `--help` text; every option that can also
//! come from the environment names its variable. Precedence, for every setting: the flag, then
//! its environment variable, then the config file (where it has a key), then the default.

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "patrol",
    version,
    about = "Rotate GitLab access tokens before they expire, and write the new secrets where they are used.",
    after_help = "Durations take a unit: 500ms, 30s, 2m, 1h (a bare number is seconds). Every setting: the flag, else its environment variable, else the config file, else the default.\nExit codes: 0 success, 1 a token failed, 2 usage or config error, 3 GitLab unreachable or credential rejected, 4 plan --exit-code found tokens due."
)]
pub struct Cli {
    /// Config file (plan, rotate, audit, validate).
    #[arg(long, global = true, help_heading = "Global options", env = "PATROL_CONFIG", default_value = "patrol.toml")]
    pub config: PathBuf,
    /// GitLab API root, ending in /api/v4 [default: $CI_API_V4_URL, else $CI_SERVER_URL/api/v4, else [gitlab] url]
    #[arg(long, global = true, help_heading = "Global options", env = "PATROL_GITLAB_URL")]
    pub gitlab_url: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, help_heading = "Global options", env = "PATROL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The log (stderr) shows warnings and errors; -v adds what patrol does (info), -vv debug,
    /// -vvv trace.
    #[arg(short, long, global = true, help_heading = "Global options", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true, help_heading = "Global options", conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log filter, in tracing's env-filter syntax (`warn`, `patrol=debug`, `info,patrol::gitlab=trace`).
    /// The flag overrides -v and -q; the environment variable is overridden by them.
    #[arg(long, global = true, help_heading = "Global options", env = "PATROL_LOG", value_name = "FILTER", value_parser = parse_log_filter)]
    pub log_filter: Option<String>,
    /// Run even though GitLab's CI_DEBUG_TRACE is on (it writes every command and variable of
    /// the job to its log, where a secret patrol handles could end up).
    #[arg(long, global = true, help_heading = "Global options")]
    pub allow_debug_trace: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_tokens() {
        let ids: Vec<String> = (0..1000).map(|i| format!("token-{i}")).collect();
        for total in 1..=7 {
            let shards: Vec<Shard> = (1..=total).map(|index| Shard { index, total }).collect();
            let mut sizes = vec![0usize; total as usize];
            for id in &ids {
                let owners: Vec<usize> =
                    shards.iter().enumerate().filter(|(_, s)| s.owns(id)).map(|(i, _)| i).collect();
                assert_eq!(owners.len(), 1, "{id} in exactly one of {total} shards");
                sizes[owners[0]] += 1;
            }
            assert!(sizes.iter().all(|n| *n > 1000 / total as usize / 2), "{total}: {sizes:?}");
        }
    }

    /// Which shard owns an id is fixed across patrol versions: a job of `parallel: N` running
    /// one version and a retried job running another must split the tokens the same way. The
    /// expected shards are FNV-1a 64 of the id modulo N, plus one, worked out outside this code
    /// (Python: `h = 0xcbf29ce484222325; for b in id: h = ((h ^ b) * 0x100000001b3) % 2**64`):
    /// "inventory" hashes to 0x1de86446633071df, "token-0" to 0xe572f708d45bebe7, "token-1" to
    /// 0xe572f608d45bea34, "deploy" to 0xc0151e83a388ac9e.
    #[test]
    fn the_shard_of_an_id_is_fixed() {
        for (id, total, expected) in [
            ("inventory", 4, 4),
            ("inventory", 3, 3),
            ("inventory", 7, 5),
            ("token-0", 4, 4),
            ("token-0", 7, 7),
            ("token-1", 4, 1),
            ("token-1", 5, 2),
            ("deploy", 7, 2),
            ("deploy", 2, 1),
        ] {
            let owners: Vec<u32> = (1..=total).filter(|&index| Shard { index, total }.owns(id)).collect();
            assert_eq!(owners, [expected], "{id} in {total} shards");
        }
    }

    #[test]
    fn durations_take_a_unit_or_are_seconds() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("30s", ms(30_000)),
            ("2m", ms(120_000)),
            ("500ms", ms(500)),
            ("1h", ms(3_600_000)),
            ("1.5s", ms(1500)),
            (" 2 s ", ms(2000)),
            ("2", ms(2000)),
            ("0.5", ms(500)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in
            ["", "abc", "2x", "-1", "-1s", "s", "1e3", "1..2s", "inf", "NaN", "2sec", "1d", "99999999999999999999999h"]
        {
            let e = parse_duration(bad).err().unwrap_or_else(|| panic!("{bad:?} was accepted"));
            assert!(e.contains("500ms, 30s, 2m, 1h") || e.contains("not a duration"), "{bad:?}: {e}");
        }
        let timeout = duration_between(Duration::from_millis(100), HOUR);
        assert!(timeout("1h").is_ok() && timeout("100ms").is_ok());
        assert_eq!(timeout("2h").err().as_deref(), Some("\"2h\" is out of range: between 100ms and 1h"));
        assert!(timeout("50ms").is_err());
        assert_eq!(
            [show(ms(90_000)), show(ms(500)), show(ms(7_200_000)), show(ms(1500))],
            ["90s", "500ms", "2h", "1500ms"]
        );
    }

    /// The defaults `--help` shows are the ones the engine and the client use. Read from the
    /// definitions, not parsed, so that a PATROL_* variable in the environment cannot matter.
    #[test]
    fn the_defaults_shown_are_the_engines() {
        use clap::CommandFactory;
        let root = Cli::command();
        let default = |sub: &str, id: &str| -> String {
            let arg = root
                .find_subcommand(sub)
                .and_then(|c| c.get_arguments().find(|a| a.get_id() == id))
                .unwrap_or_else(|| panic!("no {sub} --{id}"));
            arg.get_default_values().first().and_then(|v| v.to_str()).unwrap_or_default().to_owned()
        };
        let duration = |sub: &str, id: &str| parse_duration(&default(sub, id)).unwrap_or_else(|e| panic!("{e}"));
        let engine = crate::engine::Options::new(crate::engine::Mode::Rotate, chrono::NaiveDate::MIN);
        assert_eq!(duration("rotate", "write_budget"), engine.write_budget);
        assert_eq!(duration("rotate", "lock_lease"), engine.lock_lease);
        assert_eq!(default("rotate", "lock"), if engine.lock { "on" } else { "off" });
        assert_eq!(default("rotate", "request_deadline"), "", "the config's, else the engine's");
        assert_eq!(engine.request_deadline, crate::config::DEFAULT_REQUEST_DEADLINE);
        let client = crate::gitlab::ClientOptions::default();
        for sub in ["plan", "rotate", "audit"] {
            assert_eq!(duration(sub, "timeout"), client.timeout);
            assert_eq!(duration(sub, "retry_budget"), client.retry.budget);
            assert_eq!(default(sub, "concurrency"), client.concurrency.to_string());
        }
    }

    /// Every global flag against every command: refused exactly where the command would not use
    /// it. The logging flags configure the log every command has.
    #[test]
    fn idle_global_flags_are_refused_where_the_command_ignores_them() {
        use clap::{CommandFactory, FromArgMatches};
        let commands: [&[&str]; 7] = [
            &["plan"],
            &["rotate"],
            &["rotate", "--self", "VAR"],
            &["audit"],
            &["validate"],
            &["simulator"],
            &["demo"],
        ];
        let flags: [(&[&str], &[&str]); 7] = [
            (&["--config", "x.toml"], &["rotate --self", "simulator", "demo"]),
            (&["--gitlab-url", "https://g.example/api/v4"], &["simulator", "demo"]),
            (&["--allow-debug-trace"], &["validate", "simulator", "demo"]),
            (&["--log-format", "json"], &[]),
            (&["-v"], &[]),
            (&["-q"], &[]),
            (&["--log-filter", "debug"], &[]),
        ];
        for command in commands {
            let name = command.join(" ").replace(" VAR", "");
            for (flag, refused_by) in flags {
                // Before the command and after it: a global flag may stand on either side.
                for args in [[&["patrol"], flag, command].concat(), [&["patrol"], command, flag].concat()] {
                    let matches =
                        Cli::command().try_get_matches_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{e}"));
                    let refused = idle_flags(&cli, &matches);
                    let expected = refused_by.contains(&name.as_str());
                    assert_eq!(refused.len(), usize::from(expected), "{args:?}: {refused:?}");
                    if expected {
                        assert!(
                            refused[0].starts_with(flag[0]) && refused[0].contains(&format!("`patrol {name}`")),
                            "{refused:?}"
                        );
                    }
                }
            }
        }
        let matches = Cli::command().try_get_matches_from(["patrol", "rotate", "--self", "V", "--lock", "off"]);
        let matches = matches.unwrap_or_else(|e| panic!("{e}"));
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(idle_flags(&cli, &matches).len(), 1);
    }

    #[test]
    fn shard_syntax_is_checked() {
        assert_eq!(parse_shard("2/4"), Ok(Shard { index: 2, total: 4 }));
        for bad in ["0/4", "5/4", "1/0", "x/2", "3"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read-only: inspect every managed token and say what `rotate` would do.
    Plan(PlanArgs),
    /// Rotate what is due, write the new secret to every configured CI/CD variable, verify it,
    /// then retry or start the dependent pipelines.
    Rotate(RotateArgs),
    /// Read-only: list every token the credential can see that expires within N days, marking
    /// which ones the config manages.
    Audit(AuditArgs),
    /// Read-only: find where tokens are stored. Walks the CI/CD variables of every project and
    /// group the credential can read (or those given), learns whose token each holds, and lists
    /// each token with its variables and what a person should act on.
    Discover(DiscoverArgs),
    /// Check offline (no network, no credential) everything plan and rotate would refuse: the
    /// config file, the GitLab URL, the CA file, the settings; print every problem found.
    Validate,
    /// Run the built-in GitLab API simulator on a local address.
    Simulator(SimulatorArgs),
    /// Start the built-in simulator with sample data and run plan + rotate against it.
    Demo,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// How many GitLab requests may be in flight at once (1 to 256).
    #[arg(long, env = "PATROL_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// How long one request to GitLab may take (100ms to 1h).
    #[arg(long, env = "PATROL_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = duration_between(Duration::from_millis(100), HOUR))]
    pub timeout: Duration,
    /// How long to keep retrying a request that may be sent again (a read, a variable write) after
    /// no answer, a 5xx or a 429 (0s: no retry; at most 1h).
    #[arg(long, env = "PATROL_RETRY_SECONDS", value_name = "DURATION", default_value = "2m", value_parser = duration_between(Duration::ZERO, HOUR))]
    pub retry_budget: Duration,
}

const HOUR: Duration = Duration::from_secs(3600);

const DURATIONS: &str = "Durations take a unit: 500ms, 30s, 2m, 1h (a bare number is seconds). Every setting: the flag, else its environment variable, else the config file, else the default.";

/// How `rotate` paces its changes. Only `rotate` changes anything, so only it has these.
#[derive(Debug, Clone, Args)]
pub struct Tuning {
    /// How long to keep trying to store a new secret in a CI/CD variable (0s to 1h).
    #[arg(long, env = "PATROL_WRITE_SECONDS", value_name = "DURATION", default_value = "5m", value_parser = duration_between(Duration::ZERO, HOUR))]
    pub write_budget: Duration,
    /// How long GitLab may still carry out a request whose answer was lost (1s to 1h); a rotate
    /// is never sent again before it has passed [default: [gitlab] request_deadline_seconds, else 90s]
    #[arg(long, env = "PATROL_REQUEST_DEADLINE_SECONDS", value_name = "DURATION", value_parser = duration_between(Duration::from_secs(1), HOUR))]
    pub request_deadline: Option<Duration>,
    /// How long a token's lock lasts unless renewed (every third of it); never less than one and
    /// a half request deadlines (1s to 1h).
    #[arg(long, env = "PATROL_LOCK_LEASE_SECONDS", value_name = "DURATION", default_value = "3m", value_parser = duration_between(Duration::from_secs(1), HOUR))]
    pub lock_lease: Duration,
    /// Lock each token before changing it. `off` only where one GitLab resource_group serializes
    /// every run that can touch the tokens (README, "Skipping the lock"); not with --self.
    #[arg(long, env = "PATROL_LOCK", value_enum, default_value_t = Switch::On)]
    pub lock: Switch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// A duration: a number and a unit, `500ms`, `30s`, `2m`, `1h`, `1.5s`; a bare number is
/// seconds (`PATROL_TIMEOUT=0.5` keeps working).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let split = s.find(|ch: char| !(ch.is_ascii_digit() || ch == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let not_a_duration = || {
        format!("{text:?} is not a duration; write a number and a unit: 500ms, 30s, 2m, 1h (a bare number is seconds)")
    };
    if number.is_empty() {
        return Err(not_a_duration());
    }
    let seconds_per = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!("{text:?}: unknown unit {other:?}; write a number and a unit: 500ms, 30s, 2m, 1h"))
        }
    };
    let value: f64 = number.parse().map_err(|_| not_a_duration())?;
    // Whole milliseconds: finer means nothing for a network timeout, and prints as written.
    let millis = (value * seconds_per * 1000.0).round();
    if !millis.is_finite() || millis > 1e15 {
        return Err(not_a_duration());
    }
    Ok(Duration::from_millis(millis as u64))
}

/// [`parse_duration`], within `min..=max`.
fn duration_between(min: Duration, max: Duration) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |text| {
        let d = parse_duration(text)?;
        if d < min || d > max {
            return Err(format!("{text:?} is out of range: between {} and {}", show(min), show(max)));
        }
        Ok(d)
    }
}

/// A duration as its flag takes it: `90s`, `2m`, `500ms`.
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// The filter, checked now so that a malformed one is an error and not the default in silence.
fn parse_log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("{text:?} is not a log filter ({e}); e.g. warn, info, patrol=debug"))
}

/// Flags given on the command line that the chosen command would not use: each is refused with
/// the reason, rather than silently ignored. A value from the environment is not refused (one CI
/// job's variables serve several commands); the caller warns about those it ignores.
pub fn idle_flags(cli: &Cli, matches: &ArgMatches) -> Vec<String> {
    let given = |id: &str| {
        // Global flags are in the subcommand's matches too; either shows where a value came from.
        let sub = matches.subcommand().map(|(_, m)| m);
        [Some(matches), sub]
            .into_iter()
            .flatten()
            .any(|m| m.try_get_raw(id).ok().flatten().is_some() && m.value_source(id) == Some(ValueSource::CommandLine))
    };
    let mut refused = Vec::new();
    let (name, uses_config, uses_gitlab) = match &cli.command {
        Command::Plan(_) | Command::Audit(_) | Command::Discover(_) => ("", true, true),
        Command::Rotate(r) if r.myself.var.is_some() => ("rotate --self", false, true),
        Command::Rotate(_) => ("", true, true),
        Command::Validate => ("validate", true, true),
        Command::Simulator(_) => ("simulator", false, false),
        Command::Demo => ("demo", false, false),
    };
    if !uses_config && given("config") {
        refused.push(format!(
            "--config: `patrol {name}` reads no config file ({})",
            match &cli.command {
                Command::Demo => "it runs on its own sample data",
                Command::Simulator(_) => "the simulator is seeded with --seed FILE",
                _ => "--self takes everything from its flags and the CI job's variables",
            }
        ));
    }
    if !uses_gitlab && given("gitlab_url") {
        refused.push(format!("--gitlab-url: `patrol {name}` talks to no GitLab but its own simulator"));
    }
    let talks_to_gitlab =
        matches!(cli.command, Command::Plan(_) | Command::Rotate(_) | Command::Audit(_) | Command::Discover(_));
    if !talks_to_gitlab && given("allow_debug_trace") {
        refused.push(format!(
            "--allow-debug-trace: `patrol {name}` handles no secret of yours, so it runs with CI_DEBUG_TRACE on anyway"
        ));
    }
    if let Command::Rotate(r) = &cli.command {
        if r.myself.var.is_some() && given("lock") {
            refused.push("--lock: `patrol rotate --self` always locks its token".into());
        }
    }
    refused
}

#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// Act on this managed token only (its `id` in the config); repeatable.
    #[arg(long = "only", value_name = "ID")]
    pub only: Vec<String>,
    /// Write the JSON report to FILE; `-` is stdout, and the per-token lines then go to stderr.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write a JUnit XML report to FILE, one test case per managed token; `-` is stdout, as for
    /// --report.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Work on shard I of N only (1-based): managed tokens are split by a stable hash of their
    /// id, so N parallel jobs never touch the same token [default: $CI_NODE_INDEX/$CI_NODE_TOTAL]
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
}

/// One of N disjoint parts of the managed tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based, like GitLab's `CI_NODE_INDEX`.
    pub index: u32,
    pub total: u32,
}

impl Shard {
    /// Whether the token with this config id belongs to this shard. FNV-1a over the id: stable
    /// across runs, machines and patrol versions, unlike std's randomly seeded hasher.
    pub fn owns(&self, id: &str) -> bool {
        let hash = id.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
        hash % u64::from(self.total) == u64::from(self.index - 1)
    }
}

pub fn parse_shard(s: &str) -> Result<Shard, String> {
    let (i, n) = s.split_once('/').ok_or_else(|| format!("{s:?} is not I/N, e.g. 2/4"))?;
    let index: u32 = i.trim().parse().map_err(|_| format!("{i:?} is not a number"))?;
    let total: u32 = n.trim().parse().map_err(|_| format!("{n:?} is not a number"))?;
    if total == 0 || index == 0 || index > total {
        return Err(format!("shard {index}/{total}: I must be between 1 and N"));
    }
    Ok(Shard { index, total })
}

#[derive(Debug, Args)]
#[command(after_help = DURATIONS)]
pub struct PlanArgs {
    #[command(flatten, next_help_heading = "Requests to GitLab")]
    pub common: Common,
    #[command(flatten, next_help_heading = "Selection and reports")]
    pub selection: Selection,
    /// Exit 4 instead of 0 when at least one token is due.
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(Debug, Args)]
#[command(after_help = DURATIONS)]
pub struct RotateArgs {
    #[command(flatten, next_help_heading = "Requests to GitLab")]
    pub common: Common,
    #[command(flatten, next_help_heading = "Pacing changes")]
    pub tuning: Tuning,
    #[command(flatten, next_help_heading = "Selection and reports")]
    pub selection: Selection,
    /// Rotate the selected tokens even if not due (a leaked token). Requires --only or --all.
    #[arg(long)]
    pub force: bool,
    /// With --force: select every managed token.
    #[arg(long, requires = "force")]
    pub all: bool,
    /// Only say what would be done, like `plan`.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten, next_help_heading = "Self-rotation")]
    pub myself: SelfArgs,
}

/// Self-rotation: a token renews itself from the CI job that uses it; no config file.
#[derive(Debug, Clone, Args)]
pub struct SelfArgs {
    /// Self-rotation: the credential is the token in the environment variable VAR; patrol rotates
    /// it with its own self-rotate endpoint and writes the new value back to the CI/CD variable
    /// VAR of the project. No config file is read.
    #[arg(long = "self", value_name = "VAR", conflicts_with_all = ["only", "all", "shard"])]
    pub var: Option<String>,
    /// With --self: the project whose CI/CD variable VAR holds the token (id or path) [default: $CI_PROJECT_ID]
    #[arg(long, value_name = "ID_OR_PATH", requires = "var")]
    pub project: Option<String>,
    /// With --self: the environment scope of the CI/CD variable.
    #[arg(long, value_name = "SCOPE", default_value = "*", requires = "var")]
    pub environment_scope: String,
    /// With --self: rotate when fewer than this many days are left.
    #[arg(long, value_name = "DAYS", default_value_t = 14, requires = "var")]
    pub rotate_before_days: i64,
    /// With --self: the new token expires this many days from today (GitLab allows at most 365).
    #[arg(long, value_name = "DAYS", default_value_t = 365, value_parser = clap::value_parser!(i64).range(1..=400), requires = "var")]
    pub expires_in_days: i64,
    /// With --self: after a rotation, retry the latest pipeline on REF of the project if it failed;
    /// repeatable.
    #[arg(long, value_name = "REF", requires = "var")]
    pub retry_ref: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = DURATIONS)]
pub struct AuditArgs {
    /// List tokens expiring within this many days (and those expired in as many past days).
    #[arg(long, default_value_t = 30)]
    pub within_days: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only this group's access tokens, its projects' tokens and its service accounts' tokens,
    /// subgroups included.
    #[arg(long, value_name = "PATH")]
    pub group: Option<String>,
    #[command(flatten, next_help_heading = "Requests to GitLab")]
    pub common: Common,
}

#[derive(Debug, Args)]
#[command(after_help = DURATIONS)]
pub struct DiscoverArgs {
    /// Walk only this group: its variables, its subgroups' and its projects'; repeatable.
    /// Without --group and --project: every project and group the credential can read.
    #[arg(long, value_name = "PATH")]
    pub group: Vec<String>,
    /// Walk only this project's variables; repeatable.
    #[arg(long, value_name = "PATH")]
    pub project: Vec<String>,
    /// Write a patrol.toml with a [[token]] per token found in variables, to review.
    #[arg(long, value_name = "FILE")]
    pub write_config: Option<PathBuf>,
    /// With --write-config: replace FILE if it exists.
    #[arg(long, requires = "write_config")]
    pub force: bool,
    /// Print the map as JSON (schema in the README) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Exit 4 instead of 0 when there are findings.
    #[arg(long)]
    pub exit_code: bool,
    /// A token expiring within this many days that no variable holds is a finding.
    #[arg(long, env = "PATROL_WITHIN_DAYS", value_name = "DAYS", default_value_t = 30)]
    pub within_days: u32,
    /// Your instance's custom personal access token prefix (besides glpat-); repeatable, or
    /// comma-separated in the variable.
    #[arg(long, env = "PATROL_TOKEN_PREFIX", value_name = "PREFIX", value_delimiter = ',', value_parser = parse_prefix)]
    pub token_prefix: Vec<String>,
    #[command(flatten, next_help_heading = "Requests to GitLab")]
    pub common: Common,
}

/// A token prefix: a few characters a token starts with, no whitespace.
fn parse_prefix(text: &str) -> Result<String, String> {
    let p = text.trim();
    if p.len() < 2 || p.len() > 20 || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{text:?} is not a token prefix: 2 to 20 characters without spaces, e.g. acme-pat-"));
    }
    Ok(p.to_owned())
}

#[derive(Debug, Args)]
pub struct SimulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Seed file (TOML, or JSON by its `.json` extension); default: the demo data.
    #[arg(long)]
    pub seed: Option<PathBuf>,
    /// Per-minute request limit, with GitLab's RateLimit-* headers and 429 answers.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
}
