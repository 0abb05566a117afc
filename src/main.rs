use clap::Parser;
use patrol::cli::{Cli, Command, SimulatorArgs};
use patrol::simulator::{Seed, Simulator};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PATROL_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("patrol: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Simulator(args) => run_simulator(args).await,
        }
    })
}

async fn run_simulator(args: SimulatorArgs) -> ExitCode {
    let seed = match &args.seed {
        Some(path) => match Seed::load(path) {
            Ok(seed) => seed,
            Err(e) => {
                eprintln!("patrol simulator: {e}");
                return ExitCode::from(2);
            }
        },
        None => Seed::demo(),
    };
    let sim = match Simulator::start_on(&args.listen, seed).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("patrol simulator: {e}");
            return ExitCode::from(2);
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
    ExitCode::SUCCESS
}
