use clap::Parser;
use patrol::app::{self, Env};
use patrol::cli::{Cli, Command, LogFormat, SimulatorArgs};
use patrol::simulator::{Seed, Simulator};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // A panic's message is text patrol did not build; print it with anything token-shaped
    // removed, and say it is a bug.
    patrol::secret::install_panic_hook();
    let cli = Cli::parse();
    init_logging(&cli);
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

fn init_logging(cli: &Cli) {
    // The demo speaks on stdout; its log would only interleave with the story.
    let quiet = cli.quiet || matches!(cli.command, Command::Demo);
    let default = match (quiet, cli.verbose) {
        (true, 0) => "warn",
        (true, _) => "info",
        (false, 0) => "info",
        (false, 1) => "patrol=debug,info",
        (false, _) => "patrol=trace,debug",
    };
    let filter = EnvFilter::try_from_env("PATROL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
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
