#!/usr/bin/env bash
# The CI/CD component as a user gets it, run by gitlab-ci-local (npm, 4.64.1) in a throwaway
# project that includes ci-templates/patrol.yml with a config:
#   1. which jobs each pipeline source gets (schedule → rotate, web → the manual emergency job,
#      merge request changing the config → plan, push → none);
#   2. the scheduled rotate job, run with the shell executor against `patrol simulator`, end to end:
#      the job must pass, and the variable it manages must then hold a new, active token;
#   3. this project's own `component-check` job (.gitlab-ci.yml), which includes the component
#      from the same commit and runs it in dry-run mode against `patrol simulator`.
# Needs: target/debug/patrol (built by `cargo test`), node/npm, rsync, git, curl.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
sim_pid=""
cleanup() { [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

gcl_home="${PATROL_GCL_HOME:-$HOME/.cache/patrol-ci/gitlab-ci-local-4.64.1}"
if [ ! -x "$gcl_home/node_modules/.bin/gitlab-ci-local" ]; then
  mkdir -p "$gcl_home"
  npm install --prefix "$gcl_home" --no-audit --no-fund --silent gitlab-ci-local@4.64.1
fi
gcl="$gcl_home/node_modules/.bin/gitlab-ci-local"

# patrol on PATH, as the component's image would have it.
mkdir -p "$work/bin"
cp "$repo/target/debug/patrol" "$work/bin/patrol"
export PATH="$work/bin:$PATH"

# A consumer project: first commit on main without the config, then a branch adding it.
proj="$work/project"
mkdir -p "$proj/ci-templates"
cp "$repo/ci-templates/patrol.yml" "$proj/ci-templates/"
cat > "$proj/.gitlab-ci.yml" <<'YAML'
include:
  - local: /ci-templates/patrol.yml
    inputs:
      config: patrol.toml
YAML
git -C "$proj" init -q -b main
git -C "$proj" -c user.email=ci@example.com -c user.name=ci add -A
git -C "$proj" -c user.email=ci@example.com -c user.name=ci commit -qm "include patrol"
git -C "$proj" remote add origin https://gitlab.example.com/security/tokens.git
git -C "$proj" update-ref refs/remotes/origin/main HEAD
git -C "$proj" symbolic-ref refs/remotes/origin/HEAD refs/remotes/origin/main
git -C "$proj" checkout -q -b add-config
cp "$repo/ci-templates/example.toml" "$proj/patrol.toml"
git -C "$proj" -c user.email=ci@example.com -c user.name=ci add -A
git -C "$proj" -c user.email=ci@example.com -c user.name=ci commit -qm "manage tokens"

jobs_for() {
  (cd "$proj" && "$gcl" --list --ignore-predefined-vars CI_PIPELINE_SOURCE \
    --variable "CI_PIPELINE_SOURCE=$1" 2>"$work/gcl-list.err") | awk 'NR > 1 && $1 ~ /^patrol-/ { sub(":", "", $1); print $1 }' | sort | tr '\n' ' '
}
expect_jobs() {
  local got
  got="$(jobs_for "$1")"
  if [ "$got" != "$2" ]; then
    echo "component: pipeline source $1 gets jobs [$got], expected [$2]" >&2
    exit 1
  fi
  echo "component: $1 → [${got% }]"
}
expect_jobs schedule "patrol-rotate "
expect_jobs web "patrol-emergency "
expect_jobs merge_request_event "patrol-plan "
expect_jobs push ""

# The simulator with its demo data (the tokens example.toml manages), on a free port.
patrol simulator --listen 127.0.0.1:0 > "$work/simulator.out" 2> "$work/simulator.err" &
sim_pid=$!
for _ in $(seq 1 100); do grep -q '^export ' "$work/simulator.out" 2>/dev/null && break; sleep 0.1; done
eval "$(grep '^export ' "$work/simulator.out")"
api="$PATROL_GITLAB_URL"
# INVENTORY_API_TOKEN is hidden (GitLab never shows its value), so the evidence is GitLab's own:
# the token id patrol records in its description is active, and the pipeline reading the
# variable, which failed with the old token, passes when retried.
get() { curl -sf -H "PRIVATE-TOKEN: $PATROL_TOKEN" "$api/$1"; }
marker() { get "projects/security%2Finventory-builder/variables/INVENTORY_API_TOKEN" | sed -n 's/.*\[patrol: token \([0-9]*\)\].*/\1/p'; }
pipeline_status() { get "projects/security%2Finventory-builder/pipelines?ref=main&per_page=1" | sed -n 's/^\[{[^]]*"status":"\([a-z_]*\)".*/\1/p'; }
[ -z "$(marker)" ] && [ "$(pipeline_status)" = failed ] || { echo "component: unexpected seed" >&2; exit 1; }

(cd "$proj" && "$gcl" --force-shell-executor --ignore-predefined-vars CI_PIPELINE_SOURCE \
  --variable CI_PIPELINE_SOURCE=schedule --variable "PATROL_GITLAB_URL=$api" \
  --variable "PATROL_TOKEN=$PATROL_TOKEN" --variable GITLAB_CI=true patrol-rotate) > "$work/job.log" 2>&1 || {
  echo "component: the scheduled rotate job failed:" >&2
  grep -v "$PATROL_TOKEN" "$work/job.log" | tail -40 >&2
  exit 1
}
grep -q "patrol: 2 rotated" "$work/job.log" || { echo "component: no '2 rotated' totals line in the job log" >&2; exit 1; }
[ -s "$proj/patrol-junit.xml" ] && [ -s "$proj/patrol-report.json" ] || { echo "component: reports missing" >&2; exit 1; }
token="$(marker)"
[ -n "$token" ] && get "personal_access_tokens/$token" | grep -q '"active":true' || {
  echo "component: INVENTORY_API_TOKEN's description names no active token (${token:-none})" >&2; exit 1; }
for _ in $(seq 1 50); do [ "$(pipeline_status)" = success ] && break; sleep 0.1; done
[ "$(pipeline_status)" = success ] || { echo "component: the dependent pipeline is $(pipeline_status)" >&2; exit 1; }
echo "component: the scheduled rotate job passed; INVENTORY_API_TOKEN holds active token $token and its pipeline passed"

# This project's pipeline: its component-check job, from a clone with this tree's CI files.
self="$work/self"
git clone -q "$repo" "$self"
cp "$repo/.gitlab-ci.yml" "$self/"
cp "$repo/ci-templates/"* "$self/ci-templates/"
git -C "$self" remote set-url origin https://gitlab.example.com/security/patrol.git
(cd "$self" && "$gcl" --force-shell-executor component-check) > "$work/self.log" 2>&1 || {
  echo "component: this project's component-check job failed:" >&2
  tail -40 "$work/self.log" >&2
  exit 1
}
grep -q "PASS  component-check" "$work/self.log" || { echo "component: component-check did not pass" >&2; exit 1; }
echo "component: this project's component-check job passed (dry run against patrol simulator)"
