#!/usr/bin/env python3
"""A mutation check: does each promise patrol makes fail a test when the code stops keeping it?

Each mutation below is a small, deliberate break of the product code, named after the promise it
breaks. For each, this script copies the tracked tree to a scratch directory, applies the
mutation there (the working tree is never touched), runs the tests that guard the promise, and
reports whether a test failed ("killed") or all passed ("SURVIVED": a hole in the net).

    python3 scripts/mutants.py              # every mutation
    python3 scripts/mutants.py retry leak   # those whose name contains any of the words
    python3 scripts/mutants.py --list

Builds go to target/mutants (kept between runs, so only the mutated crate recompiles). It does
not run in CI (about a minute per mutation on 2 cores); RELIABILITY.md has its last report.
Exit status: 0 when every mutation was killed, 1 when any survived or could not be applied.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


@dataclass
class Mutation:
    name: str
    promise: str
    path: str
    find: str
    replace: str
    # Arguments after `cargo test --locked`.
    tests: list[str]


ROTATION = ["--test", "rotation"]

MUTATIONS = [
    Mutation(
        "retry-off",
        "transient failures of idempotent requests are retried",
        "src/gitlab/mod.rs",
        "let retry = method != Method::POST;",
        "let retry = false;",
        ROTATION + ["every_fault"],
    ),
    Mutation(
        "leak-secret-body",
        "no secret, nor its body without the prefix, is logged",
        "src/engine/mod.rs",
        "        let id = issued.token.id;\n        let mut pause = WritePause::new(self.options.write_budget);",
        "        let id = issued.token.id;\n        tracing::info!(stored = &issued.secret.expose()[6..], \"variable written\");\n"
        "        let mut pause = WritePause::new(self.options.write_budget);",
        ROTATION + ["engine::"],
    ),
    Mutation(
        "leak-secret-cut-short",
        "no part of a secret of 12 characters or more is logged",
        "src/engine/mod.rs",
        "        let id = issued.token.id;\n        let mut pause = WritePause::new(self.options.write_budget);",
        "        let id = issued.token.id;\n        tracing::debug!(stored = &issued.secret.expose()[..16], \"variable written\");\n"
        "        let mut pause = WritePause::new(self.options.write_budget);",
        ROTATION + ["engine::"],
    ),
    Mutation(
        "retry-any-pipeline",
        "a pipeline is retried only if its latest run failed",
        "src/engine/mod.rs",
        'if (latest.status == "failed" || latest.status == "canceled")',
        "if true",
        ROTATION + ["pipelines::"],
    ),
    Mutation(
        "refuse-localhost",
        "plain http to localhost is allowed",
        "src/config.rs",
        'Some(url::Host::Domain(d)) => d == "localhost",',
        "Some(url::Host::Domain(_)) => false,",
        ROTATION + ["loopback::"],
    ),
    Mutation(
        "refuse-ipv6-loopback",
        "plain http to [::1] is allowed",
        "src/config.rs",
        "Some(url::Host::Ipv6(ip)) => ip.is_loopback(),",
        "Some(url::Host::Ipv6(_)) => false,",
        ROTATION + ["loopback::"],
    ),
    Mutation(
        "shorten-only-on-400",
        "a token create refused with 422 past the lifetime limit is shortened and retried",
        "src/gitlab/answers.rs",
        "if !matches!(self.status(), Some(400 | 422)) {",
        "if !matches!(self.status(), Some(400)) {",
        ROTATION + ["gitlab_answers::"],
    ),
    Mutation(
        "resend-before-the-deadline",
        "a rotate whose answer was lost is not sent again before GitLab's request deadline",
        "src/engine/mod.rs",
        "let deadline = sent + self.options.request_deadline;",
        "let deadline = sent;",
        ROTATION + ["gitlab_answers::a_rotate_that_commits"],
    ),
    Mutation(
        "self-resend-before-the-deadline",
        "a self-rotate whose answer was lost is not sent again before GitLab's request deadline",
        "src/engine/self_rotation.rs",
        "let deadline = sent + deadline;",
        "let deadline = sent;",
        ROTATION + ["self_rotation::a_self_rotate_that_commits"],
    ),
    Mutation(
        "429-on-a-post-fails-the-token",
        "a 429 is a refusal made before the application: any request, a POST too, is sent again",
        "src/gitlab/mod.rs",
        "Err(e) if (retry && e.is_transient() || e.status() == Some(429)) && attempt < policy.attempts => {",
        "Err(e) if retry && e.is_transient() && attempt < policy.attempts => {",
        ROTATION + ["every_fault"],
    ),
    Mutation(
        "stamp-the-current-token",
        "a marker never claims what is not stored",
        "src/engine/mod.rs",
        "let description = with_pending(description, id);",
        "let description = with_marker(description, id, None);",
        ROTATION + ["markers::", "every_fault"],
    ),
    Mutation(
        "create-whatever-the-name",
        "a token GitLab never had is created only with create = true",
        "src/engine/mod.rs",
        "observed.may_create = t.create || !family.is_empty();",
        "observed.may_create = true;",
        ROTATION + ["identity::"],
    ),
    Mutation(
        "overwrite-another-identity",
        "a variable holding a live token of another identity is never overwritten",
        "src/engine/mod.rs",
        "Ok(t) if t.active && !family.iter().any(|x| x.id == t.id) => foreign(t.id, Some(t.name)),",
        "Ok(t) if t.active && t.id == u64::MAX => foreign(t.id, Some(t.name)),",
        ROTATION + ["identity::"],
    ),
    Mutation(
        "own-credential-in-the-middle",
        "patrol's own credential is rotated last, after every other token and pipeline",
        "src/engine/mod.rs",
        "(true, true) => Step::Last(s),",
        "(true, true) => Step::Work(s),",
        ROTATION + ["identity::"],
    ),
    Mutation(
        "one-token-twice",
        "two entries for one GitLab token both fail before anything changes",
        "src/engine/mod.rs",
        "if !others.is_empty() {",
        "if others.is_empty() && others.len() > 1 {",
        ROTATION + ["identity::"],
    ),
    Mutation(
        "undecodable-2xx-is-a-refusal",
        "a success whose body cannot be read is an unknown outcome, recovered from GitLab's state",
        "src/gitlab/mod.rs",
        "matches!(self, GitlabError::Transport { .. } | GitlabError::Decode { .. })",
        "matches!(self, GitlabError::Transport { .. })",
        ROTATION + ["gitlab_answers::"],
    ),
    Mutation(
        "trust-a-put-blindly",
        "a variable written in another environment scope than asked is reported",
        "src/gitlab/endpoints.rs",
        "if stored.environment_scope != asked {",
        "if false {",
        ROTATION + ["gitlab_answers::"],
    ),
    Mutation(
        "generic-missing-ref",
        "a pipeline on a ref that does not exist fails naming the ref",
        "src/gitlab/answers.rs",
        'self.status() == Some(400) && self.message().contains("Reference not found")',
        "false",
        ROTATION + ["gitlab_answers::"],
    ),
    Mutation(
        "replay-a-lost-rotate",
        "a lost rotate answer is never replayed: GitLab's state decides",
        "src/engine/mod.rs",
        "(!now.iter().any(|x| x.id == old_id))",
        "(now.is_empty())",
        ROTATION + ["recovery::a_lost_rotate", "gitlab_answers::"],
    ),
    Mutation(
        "self-writes-unproven",
        "--self writes only where the job's token lives",
        "src/engine/self_rotation.rs",
        ") -> Result<(), String> {\n    let marked = marker(existing.description.as_deref());",
        ") -> Result<(), String> {\n    return Ok(());\n    #[allow(unreachable_code)]\n    let marked = marker(existing.description.as_deref());",
        ROTATION + ["self_rotation::"],
    ),
    Mutation(
        "proxy-for-plain-http",
        "a plain-http request never goes through a proxy",
        "src/gitlab/mod.rs",
        "builder = builder.tls_built_in_root_certs(false).no_proxy();",
        "builder = builder.tls_built_in_root_certs(false);",
        ROTATION + ["hygiene::"],
    ),
    Mutation(
        "debug-trace-true-only",
        "CI_DEBUG_TRACE is read as the runner reads it",
        "src/app.rs",
        'matches!(value, "1" | "t" | "T" | "TRUE" | "true" | "True")',
        'matches!(value, "true")',
        ROTATION + ["hygiene::"],
    ),
    Mutation(
        "unredacted-panic",
        "a panic message shows no secret",
        "src/secret.rs",
        "            redact(&payload)\n",
        "            payload\n",
        ROTATION + ["panic::"],
    ),
    Mutation(
        "unredacted-gitlab-errors",
        "GitLab's error texts are redacted before they reach any output",
        "src/gitlab/mod.rs",
        "truncate(&redact_known(&full_error_text(body), known))",
        "truncate(&full_error_text(body))",
        ROTATION + ["hygiene::"],
    ),
    Mutation(
        "lock-by-config-id",
        "two configs (or a config and a --self job) managing one token exclude each other",
        "src/engine/mod.rs",
        "lock::acquire(&self.client(), &self.run, &t.id, &identity, &holder, self.options.lock_lease)",
        "lock::acquire(&self.client(), &self.run, &t.id, &t.id, &holder, self.options.lock_lease)",
        ROTATION + ["concurrency::two_configs"],
    ),
    Mutation(
        "send-under-a-lost-lock",
        "nothing more is sent for a token whose lock was lost",
        "src/engine/mod.rs",
        "if held.holds_for(self.options.request_deadline + margin).await {",
        "if true {",
        ROTATION + ["locks::a_run_that_lost_its_lock"],
    ),
    Mutation(
        "release-with-a-request-in-flight",
        "a run that cannot learn its lost rotate's outcome keeps its lock until GitLab's deadline",
        "src/engine/mod.rs",
        "let kept = match in_flight.filter(|until| *until > Utc::now()) {",
        "let kept = match in_flight.filter(|_| false) {",
        ROTATION + ["gitlab_answers::a_run_that_cannot_learn"],
    ),
    Mutation(
        "rotate-under-an-expiring-lease",
        "a rotate is sent only while the lock outlasts GitLab's request deadline",
        "src/engine/lock.rs",
        "let needed = Utc::now() + chrono::Duration::from_std(left).unwrap_or_else(|_| chrono::Duration::hours(1));",
        "let needed = Utc::now();",
        ROTATION + ["locks::a_rotate_is_sent_only"],
    ),
    Mutation(
        "rotate-own-credential",
        "patrol's own credential is renewed by creating its successor first, so a lost answer loses nothing",
        "src/engine/mod.rs",
        "let overlap = (t.policy.strategy == Strategy::Overlap || own) && target.as_ref().is_some_and(|x| x.active);",
        "let overlap = t.policy.strategy == Strategy::Overlap && target.as_ref().is_some_and(|x| x.active);",
        ROTATION + ["identity::a_lost_answer_while_renewing"],
    ),
    Mutation(
        "overlap-wedged",
        "an overlap run stopped between create and revoke converges on the next run",
        "src/engine/mod.rs",
        "Some(_) if overlap => held.iter().max().and_then(|id| pick(*id)),",
        "Some(_) if overlap && false => held.iter().max().and_then(|id| pick(*id)),",
        ROTATION + ["overlap::"],
    ),
    Mutation(
        "old-credential-left-active",
        "the old credential left active after its successor is stored is revoked by the next run",
        "src/engine/mod.rs",
        "let overlap = t.policy.strategy == Strategy::Overlap || Some(current.id) == self.options.credential_token;",
        "let overlap = t.policy.strategy == Strategy::Overlap;",
        ROTATION + ["identity::the_old_credential"],
    ),
    Mutation(
        "duplicates-ignored",
        "two entries for one GitLab token (sharing a family token, or one user's token of one name) both fail",
        "src/engine/mod.rs",
        "                if !others.is_empty() {",
        "                if false {",
        ROTATION + ["identity::two_entries", "review::two_entries"],
    ),
    Mutation(
        "self-adopts-a-marked-variable",
        "--self never adopts a variable whose marker names another token",
        "src/engine/self_rotation.rs",
        "if existing.value.is_none() && only && marked.is_none() {",
        "if existing.value.is_none() && only {",
        ROTATION + ["self_rotation::the_only_variable_marked"],
    ),
    Mutation(
        "no-relist-under-lock",
        "a token is listed again under its lock, so a stale look is never acted on",
        "src/engine/mod.rs",
        "                Ok(now) if same_tokens(&now, &first.family) => self.work_on(t, first, report).await,",
        "                Ok(_) => self.work_on(t, first, report).await,",
        ROTATION + ["concurrency::a_token_another_run_rotated"],
    ),
    Mutation(
        "hint-trusted-under-lock",
        "a token due by its marker is acted on as GitLab lists it under the lock",
        "src/engine/mod.rs",
        "        if active != [hint.id] {",
        "        if active.is_empty() {",
        ROTATION + ["concurrency::a_token_due_by_its_marker"],
    ),
    Mutation(
        "never-defer",
        "a token due by its marker is listed once, under the lock (9 requests)",
        "src/engine/mod.rs",
        "        due.then_some(first)",
        "        due.then_some(first).filter(|_| false)",
        ROTATION + ["budget::"],
    ),
    Mutation(
        "fingerprint-unchecked",
        "a marker proves what a readable variable holds only with a fingerprint of its value",
        "src/engine/mod.rs",
        "    (p.fingerprint? == fingerprint(&stored, value)).then_some(stored)",
        "    p.fingerprint.map(|_| stored)",
        ROTATION + ["markers::a_value_replaced"],
    ),
    Mutation(
        "release-without-look",
        "a release never deletes a lock another run took over",
        "src/engine/lock.rs",
        "    if held.lost() || held.renewer.confirmed_until() <= Utc::now() + margin {",
        "    if held.lost() {",
        ROTATION + ["locks::release_leaves_alone"],
    ),
    Mutation(
        "write-answer-unchecked",
        "a write whose answer shows another value fails the token",
        "src/engine/mod.rs",
        "                        if !issued.secret.same_as(value.expose()) {",
        "                        if issued.secret.same_as(value.expose()) && false {",
        ROTATION + ["recovery::a_write_answered"],
    ),
    Mutation(
        "catch-up-forever",
        "pipelines owed a retry are checked for a week after patrol stored the token",
        "src/engine/mod.rs",
        "    if current.created_at.is_none_or(|made| now - made > CATCH_UP) {",
        "    if current.created_at.is_none() {",
        ROTATION + ["recovery::a_missed_pipeline"],
    ),
    Mutation(
        "cli-timeout-ignored",
        "--timeout / PATROL_TIMEOUT (with units) is the time a request may take",
        "src/app.rs",
        "        timeout: common.timeout,",
        "        timeout: ClientOptions::default().timeout,",
        ROTATION + ["cli::timeouts"],
    ),
    Mutation(
        "cli-env-source-unsaid",
        "a malformed value from the environment names its variable",
        "src/main.rs",
        "if let Some(name) = from_environment(&e) {",
        "if let Some(name) = from_environment(&e).filter(|_| false) {",
        ROTATION + ["cli::a_malformed"],
    ),
    Mutation(
        "cli-retry-the-unreachable",
        "a host that does not resolve or listen, or a refused certificate, fails at once, not after retries",
        "src/gitlab/mod.rs",
        "match permanent(e, &host, port, answered) {",
        "match permanent(e, &host, port, answered).filter(|_| false) {",
        ROTATION + ["cli::an_unknown_host", "cli::a_refused_certificate"],
    ),
    Mutation(
        "cli-validate-skips-settings",
        "validate refuses the settings plan and rotate would refuse",
        "src/app.rs",
        "    problems.extend(tunables_in_env(env));\n",
        "",
        ROTATION + ["cli::validate_refuses"],
    ),
    Mutation(
        "cli-first-problem-only",
        "validate reports every problem in the config at once",
        "src/config.rs",
        "    fn add(&mut self, offset: usize, key: Option<&str>, message: impl Into<String>) {\n",
        "    fn add(&mut self, offset: usize, key: Option<&str>, message: impl Into<String>) {\n        if !self.problems.is_empty() {\n            return;\n        }\n",
        ROTATION + ["cli::validate_reports"],
    ),
    Mutation(
        "cli-access-level-dropped",
        "a created project or group token gets the configured access_level",
        "src/engine/mod.rs",
        ".create_token(home, &t.name, scopes, access_level, expires_at, description)",
        ".create_token(home, &t.name, scopes, None, expires_at, description)",
        ROTATION + ["cli::access_level", "cli::an_overlap"],
    ),
    Mutation(
        "cli-report-dash-is-a-file",
        "--report - writes the report to stdout, alone",
        "src/app.rs",
        '        if path == Path::new("-") {',
        '        if path == Path::new("--") {',
        ROTATION + ["cli::a_report"],
    ),
    Mutation(
        "cli-idle-flags-allowed",
        "a flag the command would not use is refused",
        "src/cli.rs",
        "    let mut refused = Vec::new();\n",
        "    let mut refused = Vec::new();\n    if refused.is_empty() {\n        return refused;\n    }\n",
        ROTATION + ["cli::flags"],
    ),
    Mutation(
        "cli-lines-as-they-finish",
        "token lines are printed in config order",
        "src/app.rs",
        "while let Some(report) = finished.remove(&printed) {",
        "while let Some(report) = finished.pop_first().map(|(_, r)| r) {",
        ROTATION + ["cli::token_lines"],
    ),
    Mutation(
        "cli-log-at-info",
        "by default the log shows warnings only, repeating nothing stdout says",
        "src/main.rs",
        '        (false, 0) => "warn",',
        '        (false, 0) => "info",',
        ROTATION + ["cli::by_default"],
    ),
    Mutation(
        "cli-rotate-with-read-api",
        "rotate with a read_api credential stops before any change, naming the scope api",
        "src/app.rs",
        'Ok(me) if mode == Mode::Rotate && !me.scopes.iter().any(|s| s == "api")',
        'Ok(me) if false && mode == Mode::Rotate && !me.scopes.iter().any(|s| s == "api")',
        ROTATION + ["cli::a_read_api"],
    ),

    Mutation(
        "created-as-rotated",
        "a token made anew is reported created, not rotated",
        "src/engine/mod.rs",
        "            (Decision::Create { .. }, _) => Outcome::Created,",
        "            (Decision::Create { .. }, _) => Outcome::Rotated,",
        ROTATION + ["plan::"],
    ),
    Mutation(
        "plan-says-due",
        "plan says what rotate would do, not just due",
        "src/report/mod.rs",
        "        (Outcome::Due, Some(action)) => action.planned(),",
        "        (Outcome::Due, Some(_)) => \"due\",",
        ROTATION + ["plan::"],
    ),
    Mutation(
        "rotate-prints-no-blocks",
        "rotate shows per token what it wrote and which pipelines ran",
        "src/app.rs",
        "    if !plan {\n        print_blocks(out, &reports, gitlab_ci);\n    }",
        "    let _ = print_blocks;",
        ROTATION + ["plan::"],
    ),
    Mutation(
        "overlap-successor-maintainer",
        "an overlap successor keeps the role of the token it replaces",
        "src/engine/mod.rs",
        "named.iter().max_by_key(|x| x.id).and_then(|x| x.access_level).map(u16::from)",
        "None::<u16>",
        ROTATION + ["cli::an_overlap"],
    ),
    Mutation(
        "discover-revoked-is-active",
        "discover reports a variable holding a revoked token as a stale copy",
        "src/discover/mod.rs",
        '            State::Revoked => (Holds::Stale, Some(t.id), "revoked".to_owned()),',
        '            State::Revoked => (Holds::Active, Some(t.id), "revoked".to_owned()),',
        ROTATION + ["discover::"],
    ),
    Mutation(
        "discover-overwrites",
        "discover --write-config never overwrites a file without --force",
        "src/app.rs",
        "        if path.symlink_metadata().is_ok() && !args.force {",
        "        if path.symlink_metadata().is_ok() && !args.force && false {",
        ROTATION + ["discover::write_config_never_overwrites"],
    ),
    Mutation(
        "discover-one-place-enough",
        "a token stored in several variables is a finding",
        "src/discover/mod.rs",
        "        if t.variables.len() > 1 && t.state == State::Active {",
        "        if t.variables.len() > 2 && t.state == State::Active {",
        ROTATION + ["discover::"],
    ),

    Mutation(
        "defer-own-credential",
        "a token of the credential's user is never deferred past the run plan",
        "src/engine/mod.rs",
        "        if self.options.credential_user == Some(first.user_id) {",
        "        if self.options.credential_user == Some(first.user_id) && false {",
        ROTATION + ["review::patrols_own_credential"],
    ),
    Mutation(
        "duplicates-by-family-only",
        "entries naming one user's token of one name are one GitLab token",
        "src/engine/mod.rs",
        "                if let Some(key) = who(t, &s) {",
        "                if let Some(key) = who(t, &s).filter(|_| false) {",
        ROTATION + ["review::two_entries"],
    ),
    Mutation(
        "release-delete-resent",
        "a lock's DELETE is sent once",
        "src/gitlab/endpoints.rs",
        "self.request_with(None, Method::DELETE, &path, &[(FILTER, scope.into())], None, false)",
        "self.request_with(None, Method::DELETE, &path, &[(FILTER, scope.into())], None, true)",
        ROTATION + ["review::a_release_delete"],
    ),

    Mutation(
        "url-password-allowed",
        "a GitLab URL carrying a user name or password is refused, never shown",
        "src/config.rs",
        "    if !parsed.username().is_empty() || parsed.password().is_some() {",
        "    if false {",
        ROTATION + ["discover_review::review_a_secret_in_the_gitlab_url"],
    ),
    Mutation(
        "redact-whole-secrets-only",
        "an echo of a secret without its prefix is redacted",
        "src/secret.rs",
        "            if tail.len() < 12 {",
        "            if tail.len() < 1000 {",
        ROTATION + ["discover_review::review_echoed"],
    ),
    Mutation(
        "token-inside-ignored",
        "a token inside a longer value is identified",
        "src/discover/mod.rs",
        "        .find_map(|w| shape(w, custom).map(|s| (w.to_owned(), s, true)))",
        "        .find_map(|w| shape(w, custom).map(|s| (w.to_owned(), s, true)).filter(|_| false))",
        ROTATION + ["discover_review::review_a_token_inside"],
    ),

]


def tracked_files(repo: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=repo, check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p]


def scratch_copy(repo: str) -> str:
    dest = tempfile.mkdtemp(prefix="patrol-mutants-")
    for rel in tracked_files(repo):
        src = os.path.join(repo, rel)
        if not os.path.isfile(src):
            continue
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(src, target)
    return dest


def run(m: Mutation, scratch: str, target_dir: str) -> tuple[str, float, str]:
    path = os.path.join(scratch, m.path)
    with open(path, encoding="utf-8") as f:
        original = f.read()
    if original.count(m.find) != 1:
        return ("NOT APPLIED", 0.0, f"{m.path}: the text to mutate occurs {original.count(m.find)} times")
    with open(path, "w", encoding="utf-8") as f:
        f.write(original.replace(m.find, m.replace))
    started = time.monotonic()
    try:
        env = dict(os.environ, CARGO_TARGET_DIR=target_dir, CARGO_INCREMENTAL="1")
        # `cargo test` takes one name filter before `--`; several go to the test harness.
        target, filters = m.tests[:2], m.tests[2:]
        proc = subprocess.run(
            ["cargo", "test", "--locked", *target, "--", *filters],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        elapsed = time.monotonic() - started
        out = proc.stdout + proc.stderr
        if "error[E" in out or "could not compile" in out:
            return ("NOT APPLIED", elapsed, "the mutant does not compile")
        failed = [line.split()[1] for line in out.splitlines() if line.startswith("test ") and line.endswith("FAILED")]
        if proc.returncode != 0 and not failed:
            return ("NOT APPLIED", elapsed, "cargo failed without a failing test: " + out.strip()[-300:])
        if proc.returncode != 0:
            return ("killed", elapsed, ", ".join(failed[:3]))
        return ("SURVIVED", elapsed, "every test passed")
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original)


def main(argv: list[str]) -> int:
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    if "--list" in argv:
        for m in MUTATIONS:
            print(f"{m.name:32} {m.promise}")
        return 0
    chosen = [m for m in MUTATIONS if not argv or any(w in m.name for w in argv)]
    target_dir = os.path.join(repo, "target", "mutants")
    scratch = scratch_copy(repo)
    rows = []
    try:
        for m in chosen:
            print(f"mutant {m.name}: {m.promise} ...", flush=True)
            verdict, secs, detail = run(m, scratch, target_dir)
            print(f"  {verdict} in {secs:.0f}s: {detail}", flush=True)
            rows.append((m, verdict, detail))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print("| mutation | promise | result | caught by |")
    print("|---|---|---|---|")
    for m, verdict, detail in rows:
        print(f"| `{m.name}` | {m.promise} | {verdict} | {detail} |")
    bad = [m.name for m, verdict, _ in rows if verdict != "killed"]
    print(f"\n{len(rows) - len(bad)} killed, {len(bad)} not killed" + (f": {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
