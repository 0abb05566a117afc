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
        "src/app.rs",
        'Some(url::Host::Domain(d)) => d == "localhost",',
        "Some(url::Host::Domain(_)) => false,",
        ROTATION + ["loopback::"],
    ),
    Mutation(
        "refuse-ipv6-loopback",
        "plain http to [::1] is allowed",
        "src/app.rs",
        "Some(url::Host::Ipv6(ip)) => ip.is_loopback(),",
        "Some(url::Host::Ipv6(_)) => false,",
        ROTATION + ["loopback::"],
    ),
    Mutation(
        "shorten-only-on-400",
        "a token create refused with 422 past the lifetime limit is shortened and retried",
        "src/engine/mod.rs",
        "if matches!(error.status(), Some(400 | 422)) {",
        "if matches!(error.status(), Some(400)) {",
        ROTATION + ["gitlab_answers::"],
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
        "src/gitlab/mod.rs",
        'self.status() == Some(400) && self.message().contains("Reference not found")',
        "false",
        ROTATION + ["gitlab_answers::"],
    ),
    Mutation(
        "replay-a-lost-rotate",
        "a lost rotate answer is never replayed: GitLab's state decides",
        "src/engine/mod.rs",
        "            if now.iter().any(|x| x.id == old.id && !x.revoked) {",
        "            if true {",
        ROTATION + ["recovery::a_lost_rotate", "gitlab_answers::"],
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
        proc = subprocess.run(
            ["cargo", "test", "--locked", *m.tests],
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
        if proc.returncode != 0:
            return ("killed", elapsed, ", ".join(failed[:3]) or "a test failed")
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
