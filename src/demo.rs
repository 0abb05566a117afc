//! `patrol demo`: the runbook's story on the built-in simulator, in half a minute of reading.

use crate::app::{execute, Human, Stop, EXIT_FAILED, EXIT_OK};
use crate::config::Config;
use crate::engine::{Engine, Mode, Options};
use crate::gitlab::{Client, ClientOptions};
use crate::report::{Outcome, TokenReport};
use crate::secret::Secret;
use crate::simulator::{Seed, Simulator, DEMO_ADMIN_SECRET};
use std::path::Path;
use std::time::Duration;

/// The config the demo runs with, shared with the CI component check.
pub const DEMO_CONFIG: &str = include_str!("../ci-templates/example.toml");

pub async fn run() -> Result<u8, Stop> {
    let fail =
        |what: &str, e: &dyn std::fmt::Display| Stop { code: EXIT_FAILED, message: format!("demo: {what}: {e}") };
    let sim = Simulator::start(Seed::demo()).await.map_err(|e| fail("cannot start the simulator", &e))?;
    let config = Config::parse(Path::new("demo.toml"), DEMO_CONFIG)?;
    let client = Client::new(&sim.api_url(), Secret::new(DEMO_ADMIN_SECRET), ClientOptions::default())
        .map_err(|e| fail("cannot build the client", &e))?;
    let today = crate::app::today();
    println!("patrol demo: a simulated GitLab at {} with three managed tokens", sim.api_url());
    println!("  inventory  a service account's token that expires in 5 days; its pipeline is failing");
    println!("  scanner    a project token that is healthy");
    println!("  reports    a group token that expired 2 days ago and broke a pipeline\n");

    println!("$ patrol plan        (read-only: what is due, and why)");
    let plan = Engine::new(client.clone(), Options::new(Mode::Plan, today));
    execute(&plan, &config.tokens, false, Human::Stdout).await;

    println!("\n$ patrol rotate      (rotate what is due, store and verify the secrets, retry the pipelines)");
    let mut options = Options::new(Mode::Rotate, today);
    options.poll_interval = Duration::from_millis(100);
    let reports = execute(&Engine::new(client.clone(), options), &config.tokens, false, Human::Stdout).await;

    println!("\nThe dependent pipelines now:");
    for project in ["security/inventory-builder", "security/scanner", "security/reports"] {
        match client.latest_pipeline(project, "main").await {
            Ok(Some(p)) => println!("  {project} main: pipeline #{} {}", p.id, p.status),
            Ok(None) => println!("  {project} main: no pipeline"),
            Err(e) => println!("  {project} main: cannot read: {e}"),
        }
    }
    let leaked = leaked(&sim, &reports);
    sim.shutdown().await;
    if leaked {
        return Err(Stop { code: EXIT_FAILED, message: "demo: a secret reached a report; this is a bug".into() });
    }
    println!("\nTry it on your own config: `patrol simulator` serves this demo instance; see the README.");
    Ok(if reports.iter().any(|r| r.outcome == Outcome::Failed) { EXIT_FAILED } else { EXIT_OK })
}

/// The demo checks its own reports for any secret the simulator issued.
fn leaked(sim: &Simulator, reports: &[TokenReport]) -> bool {
    let text = format!("{reports:?}");
    sim.issued_secrets().iter().any(|s| text.contains(s.as_str()))
}
