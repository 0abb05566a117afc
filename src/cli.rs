//! Command-line interface. The doc comments are the `--help` text.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "patrol",
    version,
    about = "Rotate GitLab access tokens before they expire, and write the new secrets where they are used."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the built-in GitLab API simulator on a local address.
    Simulator(SimulatorArgs),
}

#[derive(Debug, clap::Args)]
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
