use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use patrol::app::{self, Env};
use patrol::cli::{self, Cli, Command, LogFormat, SimulatorArgs};
use patrol::simulator::{Seed, Simulator};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // A panic's message is text patrol did not build; print it with anything token-shaped
    // removed, and say it is a bug.
    patrol::secret::install_panic_hook();
    let (cli, matches) = parse();
    let refused = cli::idle_flags(&cli, &matches);
    if !refused.is_empty() {
        for reason in refused {
            eprintln!("patrol: refusing {reason}; remove it.");
        }
        return ExitCode::from(app::EXIT_USAGE);
    }
    init_logging(&cli, &matches);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("patrol: cannot start the async runtime: {e}");
            return ExitCode::from(app::EXIT_FAILED);
        }
    };
    let env = Env::from_process();
    ExitCode::from(runtime.block_on(async {
        match &cli.command {
            Command::Simulator(args) => run_simulator(args).await,
            _ => app::run(cli, &env).await,
        }
    }))
}

/// The arguments, or exit: 0 for --help and --version, 2 for a usage error. A bad value that
/// came from an environment variable is said to, since the command line does not show it.
fn parse() -> (Cli, ArgMatches) {
    let parsed = Cli::command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    match parsed {
        Ok(both) => both,
        Err(e) => {
            let _ = e.print();
            if matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
                if let Some(name) = from_environment(&e) {
                    eprintln!("patrol: the value came from the environment variable {name}; correct it or unset it.");
                }
            }
            std::process::exit(e.exit_code())
        }
    }
}

/// The environment variable a refused value came from: the refused option's, when it is set and
/// the option is not on the command line.
fn from_environment(e: &clap::Error) -> Option<String> {
    let Some(ContextValue::String(shown)) = e.get(ContextKind::InvalidArg) else { return None };
    let root = Cli::command();
    let commands = std::iter::once(&root).chain(root.get_subcommands());
    let arg = commands.flat_map(|c| c.get_arguments()).find(|a| {
        a.get_long().is_some_and(|long| shown == &format!("--{long}") || shown.starts_with(&format!("--{long} ")))
    })?;
    let long = format!("--{}", arg.get_long()?);
    let name = arg.get_env()?.to_str()?.to_owned();
    let on_command_line = std::env::args().any(|a| a == long || a.starts_with(&format!("{long}=")));
    (std::env::var_os(&name).is_some() && !on_command_line).then_some(name)
}

/// The log on stderr: warnings and errors by default, so that a run in a terminal shows its
/// lines on stdout and only what needs attention besides; -v adds what patrol does (info), -vv
/// debug, -vvv trace, -q keeps errors only. `--log-filter` overrides them; `PATROL_LOG` (its
/// environment variable) is overridden by them.
fn init_logging(cli: &Cli, matches: &ArgMatches) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "patrol=debug,info",
        (false, _) => "patrol=trace,debug",
    };
    let sub = matches.subcommand().map(|(_, m)| m);
    let filter_flag = [Some(matches), sub]
        .into_iter()
        .flatten()
        .any(|m| m.value_source("log_filter") == Some(ValueSource::CommandLine));
    let level_flags = cli.quiet || cli.verbose > 0;
    let filter = match &cli.log_filter {
        Some(f) if filter_flag || !level_flags => f.as_str(),
        _ => level,
    };
    // The filter was checked when the arguments were read.
    let filter = EnvFilter::builder().parse(filter).unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(ansi).with_target(false).init()
        }
    }
}

async fn run_simulator(args: &SimulatorArgs) -> u8 {
    let seed = match &args.seed {
        Some(path) => match Seed::load(path) {
            Ok(seed) => seed,
            Err(e) => {
                eprintln!("patrol simulator: {e}");
                return app::EXIT_USAGE;
            }
        },
        None => Seed::demo(),
    };
    let sim = match Simulator::start_on(&args.listen, seed).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("patrol simulator: {e}");
            return app::EXIT_USAGE;
        }
    };
    sim.set_rate_limit(args.rate_limit);
    sim.set_latency(Duration::from_millis(args.latency_ms));
    println!("{}", sim.api_url());
    match sim.admin_secret() {
        Some(secret) => println!("export PATROL_GITLAB_URL={} PATROL_TOKEN={secret}", sim.api_url()),
        None => println!("export PATROL_GITLAB_URL={}  # the seed has no admin token", sim.api_url()),
    }
    eprintln!("patrol simulator: serving a simulated GitLab; press Ctrl-C to stop");
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("patrol simulator: cannot wait for Ctrl-C: {e}");
    }
    sim.shutdown().await;
    eprintln!("patrol simulator: stopped");
    app::EXIT_OK
}
