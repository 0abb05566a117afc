//! patrol rotates GitLab access tokens before they expire, writes each new secret to the CI/CD
//! variables that hold it, verifies it, and retries the pipelines that depend on it.
//!
//! The crate is a library (what the tests import) and the `patrol` binary (`main.rs`).

pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod discover;
pub mod engine;
pub mod gitlab;
pub mod report;
pub mod secret;
pub mod simulator;
