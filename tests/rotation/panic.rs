//! patrol's panic hook, run for real: this test runs its own binary again as a child that installs
//! the hook and panics with secrets in the message, and reads what the child printed.

use rand::Rng;
use std::process::Command;

/// Set in the child: how it panics (`string` or `str` payload).
const CHILD: &str = "PATROL_PANIC_CHILD";
/// Set in the child: the message it panics with.
const MESSAGE: &str = "PATROL_PANIC_MESSAGE";

/// A token of GitLab's shape: `prefix` and 20 random token characters.
fn secret(prefix: &str) -> (String, String) {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut rng = rand::rng();
    let body: String = (0..20).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect();
    (format!("{prefix}{body}"), body)
}

#[test]
fn the_panic_hook_prints_where_and_that_it_is_a_bug_with_every_secret_redacted() {
    if let Ok(kind) = std::env::var(CHILD) {
        let message = std::env::var(MESSAGE).unwrap_or_else(|e| panic!("the parent sets {MESSAGE}: {e}"));
        patrol::secret::install_panic_hook();
        match kind.as_str() {
            // `panic!` with arguments: a `String` payload.
            "string" => panic!("{message}"),
            // `panic!` with a literal: a `&'static str` payload.
            _ => std::panic::panic_any(&*Box::leak(message.into_boxed_str())),
        }
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("this test's binary: {e}"));
    let name = "panic::the_panic_hook_prints_where_and_that_it_is_a_bug_with_every_secret_redacted";
    for kind in ["string", "str"] {
        let (pat, pat_body) = secret("glpat-");
        let (runner, runner_body) = secret("glrt-");
        let marker = format!("marker-{}", rand::rng().random::<u64>());
        let message = format!("called `Result::unwrap()` on an `Err` value: \"{pat}\" ({marker}, runner {runner})");
        let output = Command::new(&exe)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, kind)
            .env(MESSAGE, &message)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "{kind}: the child panicked, so its test failed\n{stdout}\n{stderr}");
        // The test harness ran exactly the child test, which panicked.
        assert!(stdout.contains("1 failed"), "{kind}: the child test ran and failed:\n{stdout}\n{stderr}");
        let hook = stderr
            .lines()
            .find(|l| l.starts_with("patrol: internal error at "))
            .unwrap_or_else(|| panic!("{kind}: the hook's line is missing from the child's stderr:\n{stderr}"));
        let location = format!("patrol: internal error at {}:", file!());
        assert!(hook.starts_with(&location), "{kind}: names where it panicked ({location}): {hook}");
        assert!(
            hook.contains(&format!("\"glpat-[REDACTED]\" ({marker}, runner glrt-[REDACTED])"))
                && hook.contains("This is a bug in patrol; please report it."),
            "{kind}: the message, secrets redacted, and that it is a bug: {hook}"
        );
        for (what, text) in [("stderr", &stderr), ("stdout", &stdout)] {
            for leaked in [&pat, &pat_body, &runner, &runner_body] {
                assert!(!text.contains(leaked.as_str()), "{kind}: a secret leaked into the child's {what}:\n{text}");
            }
        }
    }
}
