//! `patrol simulator` as a user runs it: first line the API root, then the export line; it
//! answers requests; Ctrl-C (SIGINT) stops it cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn patrol_simulator_serves_until_interrupted() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_patrol"))
        .args(["simulator", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let url = lines.next().and_then(Result::ok).unwrap_or_default();
    let export = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/api/v4"), "first line: {url:?}");
    assert_eq!(export, format!("export PATROL_GITLAB_URL={url} PATROL_TOKEN={}", patrol::simulator::DEMO_ADMIN_SECRET));

    let resp = reqwest::Client::new()
        .get(format!("{url}/projects/security%2Finventory-builder/pipelines"))
        .header("PRIVATE-TOKEN", patrol::simulator::DEMO_ADMIN_SECRET)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200);

    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()));
    let exit = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(exit.success(), "Ctrl-C should end it cleanly: {exit:?}");
}

#[test]
fn help_and_version_work() {
    let help = Command::new(env!("CARGO_BIN_EXE_patrol")).arg("--help").output().unwrap_or_else(|e| panic!("{e}"));
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("simulator"));
    let version =
        Command::new(env!("CARGO_BIN_EXE_patrol")).arg("--version").output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("patrol {}", env!("CARGO_PKG_VERSION")));
}
