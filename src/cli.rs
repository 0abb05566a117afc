//! Command-line interface. The doc comments are the `--help` text; every option that can also
//! come from the environment names its variable.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "patrol",
    version,
    about = "Rotate GitLab access tokens before they expire, and write the new secrets where they are used.",
    after_help = "Exit codes: 0 success, 1 a token failed, 2 usage or config error, 3 GitLab unreachable or credential rejected, 4 plan --exit-code found tokens due."
)]
pub struct Cli {
    /// Config file.
    #[arg(long, global = true, env = "PATROL_CONFIG", default_value = "patrol.toml")]
    pub config: PathBuf,
    /// GitLab API root, ending in /api/v4 [default: $CI_API_V4_URL, else $CI_SERVER_URL/api/v4, else [gitlab] url]
    #[arg(long, global = true, env = "PATROL_GITLAB_URL")]
    pub gitlab_url: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, env = "PATROL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log detail (-v debug, -vv trace). PATROL_LOG (an env-filter) overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Run even though GitLab's CI_DEBUG_TRACE is on (it writes every command and variable of
    /// the job to its log, where a secret patrol handles could end up).
    #[arg(long, global = true)]
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
    /// Check the config file offline (no network); print every problem found.
    Validate,
    /// Run the built-in GitLab API simulator on a local address.
    Simulator(SimulatorArgs),
    /// Start the built-in simulator with sample data and run plan + rotate against it.
    Demo,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// How many GitLab requests may be in flight at once.
    #[arg(long, env = "PATROL_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
}

#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// Act on this managed token only (its `id` in the config); repeatable.
    #[arg(long = "only", value_name = "ID")]
    pub only: Vec<String>,
    /// Write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write a JUnit XML report to FILE, one test case per managed token.
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
pub struct PlanArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub selection: Selection,
    /// Exit 4 instead of 0 when at least one token is due.
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
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
    #[command(flatten)]
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
pub struct AuditArgs {
    #[command(flatten)]
    pub common: Common,
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
