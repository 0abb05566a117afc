//! The universe a rotation test runs in: a seeded simulator, a config file in a temp dir, and the
//! real binary. Every run is scanned for any secret the simulator ever issued.

use patrol::simulator::seed::{SeedMember, SeedPipeline, SeedProject, SeedToken, SeedUser, SeedVariable};
use patrol::simulator::{Seed, Simulator};
use std::path::PathBuf;
use std::process::Command;

pub const ADMIN: &str = "glpat-RotationTestsAdmin00";

/// As a value in `Universe::patrol_with`'s environment: the variable is not set at all, not
/// even to one of the values the universe sets for every run.
pub const UNSET: &str = "\u{0}unset";

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub report: serde_json::Value,
    pub junit: String,
}

/// Where one run writes its reports.
pub struct Files {
    pub report: PathBuf,
    pub junit: PathBuf,
}

pub struct Universe {
    pub sim: Simulator,
    pub dir: PathBuf,
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Universe {
    pub async fn new(seed: Seed, config: &str) -> Universe {
        let sim = Simulator::start(seed).await.unwrap_or_else(|e| panic!("simulator: {e}"));
        Universe::around(sim, config)
    }

    /// A universe around a simulator started some other way (with TLS, say).
    pub fn around(sim: Simulator, config: &str) -> Universe {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("patrol-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("patrol.toml"), config).unwrap_or_else(|e| panic!("{e}"));
        Universe { sim, dir }
    }

    /// Runs `patrol ARGS` with the simulator's URL and the admin credential, logging at trace
    /// level, writing both reports; then checks that no issued secret appears anywhere.
    pub async fn patrol(&self, args: &[&str]) -> Run {
        self.patrol_with(args, &[]).await
    }

    pub async fn patrol_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let (cmd, files) = self.command(args, env).unwrap_or_else(|e| panic!("{e}"));
        let output = tokio::task::spawn_blocking(move || { cmd }.output())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("cannot run patrol: {e}"));
        self.finish(output, &files)
    }

    /// The command `patrol_with` runs, and the report files it writes: new ones for each run,
    /// so that runs at the same time do not share them.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> std::io::Result<(Command, Files)> {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let report = self.dir.join(format!("report-{n}.json"));
        let junit = self.dir.join(format!("junit-{n}.xml"));
        // `PATROL_CONFIG` in `env` names another config file, as a second team's would.
        let config = env
            .iter()
            .find(|(k, _)| *k == "PATROL_CONFIG")
            .map_or_else(|| self.dir.join("patrol.toml").display().to_string(), |(_, v)| (*v).to_owned());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_patrol"));
        // The config through its environment variable, as the CI/CD component passes it: a
        // command that reads no config file (`rotate --self`) refuses a --config flag.
        cmd.args(args)
            .env_clear()
            .env("PATROL_CONFIG", &config)
            .env("PATROL_GITLAB_URL", self.sim.api_url())
            .env("PATROL_TOKEN", ADMIN)
            .env("PATROL_LOG", "trace")
            .env("PATROL_TIMEOUT", "2")
            .env("PATROL_RETRY_SECONDS", "3")
            // The simulator carries a request out at once unless a test holds it (`CommitsLate`),
            // so GitLab's request deadline (§12) is short here; tests of it set their own.
            .env("PATROL_REQUEST_DEADLINE_SECONDS", "2");
        if matches!(args.first(), Some(&"plan") | Some(&"rotate")) {
            cmd.args(["--report", &report.display().to_string(), "--junit", &junit.display().to_string()]);
        }
        for (k, v) in env {
            if *v == UNSET {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        Ok((cmd, Files { report, junit }))
    }

    /// The run from a finished process's output and report files, scanned for leaks.
    pub fn finish(&self, output: std::process::Output, files: &Files) -> Run {
        let Files { report, junit } = files;
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            report: std::fs::read_to_string(report)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default(),
            junit: std::fs::read_to_string(junit).unwrap_or_default(),
        };
        self.assert_no_leak(&run);
        run
    }

    /// Scans every output for every secret the simulator ever issued: whole, cut short, or
    /// without its prefix. Any run of [`LEAK_WINDOW`] characters of a secret is a leak, found by
    /// a set lookup per position (linear in the output); so is a base64 form of a secret.
    pub fn assert_no_leak(&self, run: &Run) {
        let report = run.report.to_string();
        // Tracking issues are written by patrol too.
        let issues: String = self.sim.with_world(|w| {
            w.issues.iter().map(|i| format!("{}\n{}\n{}\n", i.title, i.description, i.notes.join("\n"))).collect()
        });
        let secrets = self.sim.issued_secrets();
        // Secrets travel in headers and bodies only: never in a URL (the simulator blanks a
        // `private_token` parameter in its log, so its presence alone is the leak).
        let urls: String = self.sim.requests().iter().map(|r| format!("{}?{}\n", r.path, r.query)).collect();
        assert!(!urls.contains("private_token"), "a secret travelled in a URL");
        for (what, text) in [
            ("stdout", &run.stdout),
            ("stderr", &run.stderr),
            ("report", &report),
            ("junit", &run.junit),
            ("issues", &issues),
            ("a request URL", &urls),
        ] {
            if let Some(leak) = find_leak(&secrets, text) {
                panic!("a secret leaked into {what}: {leak}");
            }
        }
    }

    /// The active tokens with this name.
    pub fn active(&self, name: &str) -> Vec<u64> {
        self.sim.with_world(|w| {
            let today = w.today();
            w.tokens.values().filter(|t| t.name == name && t.active(today)).map(|t| t.id).collect()
        })
    }

    /// The id of the token whose secret the variable holds, if it is active.
    pub fn variable_holds(&self, key: &str, scope: &str) -> Option<u64> {
        self.sim.with_world(|w| {
            let v = w.variables.iter().find(|v| v.key == key && v.environment_scope == scope)?;
            let today = w.today();
            w.token_by_secret(&v.value).filter(|t| t.active(today)).map(|t| t.id)
        })
    }

    pub fn variable(&self, key: &str, scope: &str) -> Option<patrol::simulator::world::Variable> {
        self.sim.with_world(|w| w.variables.iter().find(|v| v.key == key && v.environment_scope == scope).cloned())
    }

    pub fn pipeline_status(&self, project: &str) -> Option<String> {
        self.sim.with_world(|w| {
            let p = w.project_by_path(project)?.id;
            w.pipelines.values().filter(|x| x.project == p).max_by_key(|x| x.id).map(|x| x.status.clone())
        })
    }

    pub fn writes_since(&self, from: usize) -> Vec<String> {
        self.sim.requests()[from..]
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

impl Drop for Universe {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn outcomes(run: &Run) -> Vec<(String, String)> {
    run.report["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (t["id"].as_str().unwrap_or_default().to_owned(), t["outcome"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

pub fn token(name: &str, days: i64) -> SeedToken {
    SeedToken { name: name.into(), expires_in_days: Some(days), ..Default::default() }
}

pub fn variable(project: Option<&str>, group: Option<&str>, key: &str, token: &str, hidden: bool) -> SeedVariable {
    SeedVariable {
        project: project.map(Into::into),
        group: group.map(Into::into),
        key: key.into(),
        token: Some(token.into()),
        environment_scope: "*".into(),
        masked: true,
        hidden,
        ..Default::default()
    }
}

pub fn failed_pipeline(project: &str) -> SeedPipeline {
    SeedPipeline {
        project: project.into(),
        ref_: "main".into(),
        status: "failed".into(),
        source: "schedule".into(),
        ..Default::default()
    }
}

/// One token of each kind, each due in 3 days, each held by a variable that a failing pipeline
/// reads: a personal token in a readable project variable, a project token in a hidden one, a
/// group token in a group variable, a service account's token in another project.
pub fn fleet() -> Seed {
    Seed {
        users: vec![
            SeedUser { username: "root".into(), admin: true, ..Default::default() },
            SeedUser { username: "alice".into(), ..Default::default() },
            SeedUser { username: "svc-inv".into(), service_account_of: Some("sec".into()), ..Default::default() },
        ],
        groups: vec!["sec".into()],
        projects: vec![
            SeedProject {
                path: "sec/app".into(),
                ci_uses: vec!["PERSONAL_TOKEN".into(), "PROJECT_TOKEN".into()],
                ..Default::default()
            },
            SeedProject { path: "sec/inventory".into(), ci_uses: vec!["SA_TOKEN".into()], ..Default::default() },
            SeedProject { path: "sec/reports".into(), ci_uses: vec!["GROUP_TOKEN".into()], ..Default::default() },
        ],
        members: vec![SeedMember {
            user: "alice".into(),
            group: Some("sec".into()),
            access_level: 30,
            ..Default::default()
        }],
        tokens: vec![
            SeedToken { user: Some("root".into()), secret: Some(ADMIN.into()), ..token("admin", 300) },
            SeedToken { user: Some("alice".into()), ..token("alice-ci", 3) },
            SeedToken { project: Some("sec/app".into()), ..token("app-ci", 3) },
            SeedToken { group: Some("sec".into()), ..token("sec-reports", 3) },
            SeedToken { user: Some("svc-inv".into()), ..token("inventory", 3) },
        ],
        variables: vec![
            variable(Some("sec/app"), None, "PERSONAL_TOKEN", "alice-ci", false),
            variable(Some("sec/app"), None, "PROJECT_TOKEN", "app-ci", true),
            variable(None, Some("sec"), "GROUP_TOKEN", "sec-reports", true),
            variable(Some("sec/inventory"), None, "SA_TOKEN", "inventory", false),
        ],
        pipelines: vec![failed_pipeline("sec/app"), failed_pipeline("sec/inventory"), failed_pipeline("sec/reports")],
        ..Default::default()
    }
}

/// Writes a config with two entries for the project token app-ci: by path (variable
/// PROJECT_TOKEN) and by the project's id (variable COPY), each with `extra` lines.
pub fn by_path_and_by_id(u: &Universe, extra: &str) {
    let id = u.sim.with_world(|w| w.project_by_path("sec/app").map(|p| p.id)).unwrap_or_default();
    let entry = |tid: &str, project: &str, key: &str| {
        format!(
            "[[token]]\nid = \"{tid}\"\nkind = \"project\"\nname = \"app-ci\"\nproject = \"{project}\"\n{extra}\n[[token.variable]]\nproject = \"sec/app\"\nkey = \"{key}\"\n\n"
        )
    };
    let config = format!("{}{}", entry("by-path", "sec/app", "PROJECT_TOKEN"), entry("by-id", &id.to_string(), "COPY"));
    std::fs::write(u.dir.join("patrol.toml"), config).unwrap_or_else(|e| panic!("{e}"));
}

pub const FLEET_CONFIG: &str = r#"
[[token]]
id = "personal"
kind = "personal"
name = "alice-ci"
user = "alice"

[[token.variable]]
project = "sec/app"
key = "PERSONAL_TOKEN"

[[token]]
id = "project"
kind = "project"
name = "app-ci"
project = "sec/app"

[[token.variable]]
project = "sec/app"
key = "PROJECT_TOKEN"

[[token.pipeline]]
project = "sec/app"
ref = "main"
wait_minutes = 1

[[token]]
id = "group"
kind = "group"
name = "sec-reports"
group = "sec"

[[token.variable]]
group = "sec"
key = "GROUP_TOKEN"

[[token.pipeline]]
project = "sec/reports"
ref = "main"
wait_minutes = 1

[[token]]
id = "service"
kind = "service_account"
name = "inventory"
group = "sec"
user = "svc-inv"

[[token.variable]]
project = "sec/inventory"
key = "SA_TOKEN"

[[token.pipeline]]
project = "sec/inventory"
ref = "main"
action = "create"
wait_minutes = 1
"#;

/// How many consecutive characters of a secret make a leak: a secret's body without its prefix,
/// or a secret cut short, still gives it away.
pub const LEAK_WINDOW: usize = 12;

/// Where `text` gives a secret away, described without the secret: any [`LEAK_WINDOW`]
/// characters of one (a whole secret when it is shorter), or 16 characters of a base64 form of
/// one. GitLab's secrets are URL-safe, so their URL-encoded form is the secret itself.
pub fn find_leak(secrets: &[String], text: &str) -> Option<String> {
    use std::collections::HashSet;
    let pieces: HashSet<&[u8]> = secrets.iter().flat_map(|s| s.as_bytes().windows(LEAK_WINDOW)).collect();
    // Every 16 characters of an encoded form that start on a base64 quantum: the secret's, and
    // its body's without the prefix (`glpat-…` → `…`), in each of the three alignments.
    let encoded: HashSet<String> = secrets
        .iter()
        .flat_map(|s| {
            let body = s.rsplit_once('-').map(|(_, b)| b.to_owned()).filter(|b| b.len() >= 12);
            std::iter::once(s.clone()).chain(body)
        })
        .flat_map(|s| base64_cores(&s))
        .flat_map(|core| {
            (0..=core.len().saturating_sub(16)).step_by(4).map(move |i| core[i..i + 16].to_owned()).collect::<Vec<_>>()
        })
        .collect();
    let bytes = text.as_bytes();
    if let Some(at) = bytes.windows(LEAK_WINDOW).position(|w| pieces.contains(w)) {
        return Some(format!("{LEAK_WINDOW} characters of a secret at byte {at}"));
    }
    if let Some(at) = bytes.windows(16).position(|w| std::str::from_utf8(w).is_ok_and(|w| encoded.contains(w))) {
        return Some(format!("a secret, base64-encoded, at byte {at}"));
    }
    secrets
        .iter()
        .filter(|s| s.len() < LEAK_WINDOW)
        .find_map(|s| text.find(s.as_str()).map(|at| format!("a short secret at byte {at}")))
}

#[test]
fn the_leak_scan_finds_a_secret_whole_cut_short_or_without_its_prefix() {
    let secrets = vec!["glpat-Zq3xY9pLm2Kd8Vn4Rt6W".to_owned(), "tiny".to_owned()];
    let found = |text: &str| find_leak(&secrets, text).is_some();
    assert!(found("token glpat-Zq3xY9pLm2Kd8Vn4Rt6W stored"));
    assert!(found("body Zq3xY9pLm2Kd8Vn4Rt6W only"), "without the prefix");
    assert!(found("cut glpat-Zq3xY9pLm2 short"), "the first 12 characters with the prefix");
    assert!(found("tail pLm2Kd8Vn4Rt6W"), "the last 14 characters");
    assert!(found("a tiny one"), "a secret shorter than the window, whole");
    assert!(!found("eleven here Zq3xY9pLm2K, and glpat-Zq3xY"), "11 characters are not enough");
    assert!(!found("[REDACTED] glpat-... Vn4Rt6"));
    // base64("Authorization: glpat-Zq3xY9pLm2Kd8Vn4Rt6W"), computed independently with python3.
    assert!(found("QXV0aG9yaXphdGlvbjogZ2xwYXQtWnEzeFk5cExtMktkOFZuNFJ0Nlc="));
    // Found in review: the body without its prefix, base64-encoded alone and in a Basic header
    // (python3 -c 'import base64;print(base64.b64encode(b"user:Zq3xY9pLm2Kd8Vn4Rt6W").decode())').
    assert!(found("WnEzeFk5cExtMktkOFZuNFJ0Nlc="), "the body alone");
    assert!(found("dXNlcjpacTN4WTlwTG0yS2Q4Vm40UnQ2Vw=="), "the body in a Basic header");
}

/// The part of `base64(prefix + secret + suffix)` that depends only on the secret, for each of
/// the three ways the secret can align with base64's 3-byte groups.
fn base64_cores(secret: &str) -> Vec<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..3)
        .filter_map(|pad| {
            let bytes: Vec<u8> = std::iter::repeat_n(0u8, pad).chain(secret.bytes()).collect();
            // Whole groups only, then drop the group that mixes in the pad.
            let groups: Vec<&[u8]> = bytes.chunks_exact(3).skip(usize::from(pad > 0)).collect();
            let core: String = groups
                .iter()
                .flat_map(|g| {
                    let n = (u32::from(g[0]) << 16) | (u32::from(g[1]) << 8) | u32::from(g[2]);
                    (0..4).rev().map(move |i| ALPHABET[((n >> (6 * i)) & 63) as usize] as char)
                })
                .collect();
            (core.len() >= 16).then_some(core)
        })
        .collect()
}

#[test]
fn base64_cores_find_a_secret_inside_an_encoded_blob() {
    // base64("user:glpat-abcdefghijklmnopqrst!") computed independently (python3 -c 'import base64;...').
    let blob = "dXNlcjpnbHBhdC1hYmNkZWZnaGlqa2xtbm9wcXJzdCE=";
    assert!(base64_cores("glpat-abcdefghijklmnopqrst").iter().any(|c| blob.contains(c.as_str())));
    assert!(!base64_cores("glpat-abcdefghijKlmnopqrst").iter().any(|c| blob.contains(c.as_str())));
}
