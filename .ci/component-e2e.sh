#!/usr/bin/env bash
# The CI/CD component as users get it, run by gitlab-ci-local (npm, 4.64.1) in throwaway projects
# against `patrol simulator`. A mirror of this repository at security/patrol, tagged with the
# version in Cargo.toml, is stood in for by gitlab-ci-local's include cache, filled from this tree.
#   1. Both include paths (include:project of ci-templates/patrol.yml, include:component of
#      templates/patrol.yml), with every input changed, give the same pipeline.
#   2. The README's way 1, its YAML taken from README.md as written: which jobs each pipeline
#      source gets; a merge-request pipeline without PATROL_TOKEN (plan fails and says why, then
#      passes with a read_api PATROL_PLAN_TOKEN); the scheduled rotation end to end; and way 3, the
#      emergency run from the web with PATROL_FORCE.
#   3. The README's way 2 (a token that renews itself), taken from README.md, end to end.
#   4. Shards: with parallel: 4, each job is run under a lock named by its resource group as GitLab
#      expands it (gitlab-ci-local does not implement resource_group, so this script does what
#      GitLab does: one job at a time per group). The 4 scheduled shards must start together, and
#      each emergency shard must wait for the scheduled shard with its tokens.
#   5. This project's own component-check job (.gitlab-ci.yml), in dry-run mode.
# Needs: patrol built in ${CARGO_TARGET_DIR:-target}/debug (cargo build or cargo test), node/npm,
# rsync, git, curl, flock.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
sim_pids=()
cleanup() {
  for pid in "${sim_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -n "${PATROL_E2E_KEEP:-}" ]; then echo "component: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
# Credentials reach a job only as the job's variables, never from this shell's environment
# (gitlab-ci-local's shell executor passes its own environment on to the jobs).
unset PATROL_TOKEN PATROL_PLAN_TOKEN PATROL_GITLAB_URL PATROL_CONFIG PATROL_FORCE

fail() { echo "component: $*" >&2; exit 1; }

target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
[ -x "$target/debug/patrol" ] || fail "no patrol binary at $target/debug/patrol: run cargo build first"

gcl_home="${PATROL_GCL_HOME:-$HOME/.cache/patrol-ci/gitlab-ci-local-4.64.1}"
if [ ! -x "$gcl_home/node_modules/.bin/gitlab-ci-local" ]; then
  mkdir -p "$gcl_home"
  npm install --prefix "$gcl_home" --no-audit --no-fund --silent gitlab-ci-local@4.64.1
fi
gcl="$gcl_home/node_modules/.bin/gitlab-ci-local"

# patrol on PATH, as the component's image would have it.
mkdir -p "$work/bin"
cp "$target/debug/patrol" "$work/bin/patrol"
export PATH="$work/bin:$PATH"

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)"
[ -n "$version" ] || fail "no version in Cargo.toml"

# A fenced block of README.md, marked `<!-- e2e: NAME -->` on the line before it.
readme_block() {
  awk -v marker="<!-- e2e: $1 -->" '
    found == 2 && /^```/ { exit }
    found == 2 { print }
    found == 1 { found = 2 }
    $0 == marker { found = 1 }' "$repo/README.md"
}

git_commit() { git -C "$1" -c user.email=ci@example.com -c user.name=ci "${@:2}"; }

# A consumer project at gitlab.example.com/PATH with this tree as release $version of
# security/patrol in gitlab-ci-local's include cache (what include:project and include:component
# fetch), its .gitlab-ci.yml from stdin, committed on main.
new_project() {
  local dir="$1" path="$2"
  local mirror="$dir/.gitlab-ci-local/includes/gitlab.example.com/security/patrol/$version"
  mkdir -p "$mirror/ci-templates" "$mirror/templates"
  cp "$repo/ci-templates/patrol.yml" "$mirror/ci-templates/"
  cp "$repo/templates/patrol.yml" "$mirror/templates/"
  cat > "$dir/.gitlab-ci.yml"
  printf '.gitlab-ci-local/\npatrol-report.json\npatrol-junit.xml\n' > "$dir/.gitignore"
  git -C "$dir" init -q -b main
  git_commit "$dir" add -A
  git_commit "$dir" commit -qm "include patrol"
  git -C "$dir" remote add origin "https://gitlab.example.com/$path.git"
  git -C "$dir" update-ref refs/remotes/origin/main HEAD
  git -C "$dir" symbolic-ref refs/remotes/origin/HEAD refs/remotes/origin/main
}

# gitlab-ci-local in project DIR, output to LOG.
gcl_in() {
  local dir="$1" log="$2"
  shift 2
  (cd "$dir" && timeout 300 "$gcl" --ignore-predefined-vars CI_PIPELINE_SOURCE,CI_PROJECT_ID "$@") > "$log" 2>&1
}

# The jobs a pipeline of SOURCE gets in DIR (extra gitlab-ci-local arguments after), one name each.
jobs_for() {
  local dir="$1" source="$2"
  shift 2
  gcl_in "$dir" "$work/list.log" --list --variable "CI_PIPELINE_SOURCE=$source" "$@" || {
    cat "$work/list.log" >&2
    fail "gitlab-ci-local --list failed in $dir"
  }
  awk 'NR > 1 && $1 ~ /^patrol-/ { sub(":$", "", $1); print $1 }' "$work/list.log" | sort -u | tr '\n' ' '
}
expect_jobs() {
  local dir="$1" source="$2" expected="$3" got
  shift 3
  got="$(jobs_for "$dir" "$source" "$@")"
  [ "$got" = "$expected" ] || fail "$(basename "$dir"): a $source pipeline ${*:+($*) }gets jobs [$got], expected [$expected]"
  echo "component: $(basename "$dir"): $source ${*:+($*) }-> [${got% }]"
}

# `patrol simulator` on a free port (extra arguments after NAME); sets NAME_url and NAME_admin.
start_simulator() {
  local name="$1"
  shift
  patrol simulator --listen 127.0.0.1:0 "$@" > "$work/$name.out" 2> "$work/$name.err" &
  sim_pids+=($!)
  for _ in $(seq 1 100); do grep -q '^export ' "$work/$name.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^export ' "$work/$name.out" || { cat "$work/$name.err" >&2; fail "simulator $name printed no address"; }
  # Not exported: see the unset above.
  local line url token
  line="$(grep '^export ' "$work/$name.out")"
  url="$(printf '%s\n' "$line" | sed -n 's/.*PATROL_GITLAB_URL=\([^ ]*\).*/\1/p')"
  token="$(printf '%s\n' "$line" | sed -n 's/.*PATROL_TOKEN=\([^ ]*\).*/\1/p')"
  [ -n "$url" ] && [ -n "$token" ] || fail "simulator $name: unexpected address line"
  printf -v "${name}_url" '%s' "$url"
  printf -v "${name}_admin" '%s' "$token"
}

# GET against a simulator: URL TOKEN PATH.
get() { curl -sf -H "PRIVATE-TOKEN: $2" "$1/$3"; }

# The id of the token a variable's description names ([patrol: token N]): URL TOKEN PATH.
marker() { get "$1" "$2" "$3" | sed -n 's/.*\[patrol: token \([0-9]*\)\].*/\1/p'; }
latest_pipeline_status() {
  get "$1" "$2" "projects/$3/pipelines?ref=main&per_page=1" | sed -n 's/^\[{[^]]*"status":"\([a-z_]*\)".*/\1/p'
}
active_token() { get "$1" "$2" "personal_access_tokens/$3" | grep -q '"active":true'; }

# ---------------------------------------------------------------------------------------------
# 1. Both include paths, every input changed: the same pipeline.
both="$work/both"
mkdir -p "$both"
new_project "$both" security/both < /dev/null
inputs='    inputs:
      image: registry.example.com/tools/patrol:other
      stage: deploy
      job_prefix: tokens
      config: fleet.toml
      environment_scope: production
      retry_ref: release
      rotate_before_days: 21
      expires_in_days: 90
      dry_run: true
      parallel: 3
      resource_group: token-rotation'
printf 'stages: [deploy]\ninclude:\n  - project: security/patrol\n    ref: %s\n    file: /ci-templates/patrol.yml\n%s\n' \
  "$version" "$inputs" > "$both/via-project.yml"
printf 'stages: [deploy]\ninclude:\n  - component: $CI_SERVER_FQDN/security/patrol/patrol@%s\n%s\n' \
  "$version" "$inputs" > "$both/via-component.yml"
git_commit "$both" add -A
git_commit "$both" commit -qm "both ways"
for way in project component; do
  gcl_in "$both" "$work/preview-$way.log" --preview --file "via-$way.yml" || {
    cat "$work/preview-$way.log" >&2
    fail "gitlab-ci-local --preview failed for include:$way"
  }
  sed -n '/^---$/,$p' "$work/preview-$way.log" > "$work/preview-$way.yml"
done
grep -q 'tokens-emergency-rotate' "$work/preview-component.yml" || fail "include:component built no tokens-* jobs"
grep -q 'resource_group: token-rotation-shard-\$CI_NODE_INDEX' "$work/preview-component.yml" ||
  fail "include:component: the resource_group input is not in the jobs"
diff -u "$work/preview-component.yml" "$work/preview-project.yml" > "$work/preview.diff" || {
  head -40 "$work/preview.diff" >&2
  fail "include:project of ci-templates/patrol.yml and include:component differ"
}
echo "component: include:project (ci-templates/patrol.yml) and include:component (templates/patrol.yml) give the same pipeline, every input changed"

# ---------------------------------------------------------------------------------------------
# 2. The README's way 1, in a security-tooling project, and way 3 there.
one="$work/tokens"
mkdir -p "$one"
readme_block setup-1 > "$work/setup-1.yml"
grep -q 'file: /ci-templates/patrol.yml' "$work/setup-1.yml" || fail "README.md has no way-1 block marked e2e: setup-1"
new_project "$one" security/tokens < "$work/setup-1.yml"
# A merge request adding the config, so that plan's `changes:` holds.
git -C "$one" checkout -q -b add-config
cp "$repo/ci-templates/example.toml" "$one/patrol.toml"
git_commit "$one" add -A
git_commit "$one" commit -qm "manage tokens"
expect_jobs "$one" schedule "patrol-rotate "
expect_jobs "$one" merge_request_event "patrol-plan "
expect_jobs "$one" push ""
expect_jobs "$one" web ""
expect_jobs "$one" web "patrol-emergency patrol-emergency-rotate " --variable PATROL_FORCE=scanner

start_simulator sim1
api="$sim1_url"
admin="$sim1_admin"
run_one() { gcl_in "$one" "$@" --force-shell-executor --variable "PATROL_GITLAB_URL=$api" --variable GITLAB_CI=true; }

# A merge-request pipeline has no protected PATROL_TOKEN: plan fails and explains.
if run_one "$work/mr-none.log" --variable CI_PIPELINE_SOURCE=merge_request_event patrol-plan; then
  fail "plan passed with no credential at all"
fi
for words in "protected" "PATROL_PLAN_TOKEN" "read_api"; do
  grep -q "$words" "$work/mr-none.log" || { tail -20 "$work/mr-none.log" >&2; fail "plan's failure does not mention $words"; }
done
echo "component: a merge-request pipeline without credentials: plan fails and explains protected variables and PATROL_PLAN_TOKEN"

# A read_api token of the administrator, made through the API, as PATROL_PLAN_TOKEN only.
root_id="$(get "$api" "$admin" "users?username=root" | grep -o '"id":[0-9]*' | head -n 1 | cut -d: -f2)"
[ -n "$root_id" ] || fail "no root user in the simulator"
plan_token="$(curl -sf -H "PRIVATE-TOKEN: $admin" -X POST "$api/users/$root_id/personal_access_tokens" \
  --data-urlencode "name=patrol plan" --data-urlencode "scopes[]=read_api" --data-urlencode "expires_at=$(date -u -d '+30 days' +%F)" |
  sed -n 's/.*"token":"\([^"]*\)".*/\1/p')"
[ -n "$plan_token" ] || fail "could not create a read_api token"
# A wrong one must fail: proof that plan uses PATROL_PLAN_TOKEN, not some other credential.
if run_one "$work/mr-wrong.log" --variable CI_PIPELINE_SOURCE=merge_request_event \
  --variable PATROL_PLAN_TOKEN=glpat-NotAValidToken0000 patrol-plan; then
  fail "plan passed with a PATROL_PLAN_TOKEN GitLab rejects"
fi
run_one "$work/mr-plan.log" --variable CI_PIPELINE_SOURCE=merge_request_event \
  --variable "PATROL_PLAN_TOKEN=$plan_token" patrol-plan || {
  grep -v -e "$plan_token" "$work/mr-plan.log" | tail -30 >&2
  fail "plan with PATROL_PLAN_TOKEN (read_api) failed"
}
grep -q "PASS  patrol-plan" "$work/mr-plan.log" || fail "plan did not pass"
grep -q "due" "$work/mr-plan.log" || fail "plan did not say which tokens are due"
! grep -q -e "$plan_token" "$work/mr-plan.log" || fail "the plan job's log shows PATROL_PLAN_TOKEN"
echo "component: the merge-request plan passes with a read_api PATROL_PLAN_TOKEN and no PATROL_TOKEN"

# The scheduled rotation. INVENTORY_API_TOKEN is hidden (GitLab never shows its value), so the
# evidence is GitLab's own: the token id patrol records in its description is active, and the
# pipeline reading the variable, which failed with the old token, passes when retried.
inventory="projects/security%2Finventory-builder/variables/INVENTORY_API_TOKEN"
[ -z "$(marker "$api" "$admin" "$inventory")" ] &&
  [ "$(latest_pipeline_status "$api" "$admin" security%2Finventory-builder)" = failed ] || fail "unexpected seed"
run_one "$work/schedule.log" --variable CI_PIPELINE_SOURCE=schedule --variable "PATROL_TOKEN=$admin" patrol-rotate || {
  grep -v -e "$admin" "$work/schedule.log" | tail -40 >&2
  fail "the scheduled rotate job failed"
}
grep -q "patrol: 2 rotated" "$work/schedule.log" || fail "no '2 rotated' totals line in the scheduled job's log"
[ -s "$one/patrol-junit.xml" ] && [ -s "$one/patrol-report.json" ] || fail "the scheduled job left no reports"
token="$(marker "$api" "$admin" "$inventory")"
[ -n "$token" ] && active_token "$api" "$admin" "$token" ||
  fail "INVENTORY_API_TOKEN's description names no active token (${token:-none})"
for _ in $(seq 1 50); do
  [ "$(latest_pipeline_status "$api" "$admin" security%2Finventory-builder)" = success ] && break
  sleep 0.1
done
[ "$(latest_pipeline_status "$api" "$admin" security%2Finventory-builder)" = success ] ||
  fail "the dependent pipeline did not pass after the rotation"
echo "component: way 1: the scheduled rotation passed; INVENTORY_API_TOKEN holds active token $token and its pipeline passed"

# Way 3: a web pipeline with PATROL_FORCE; the manual job played, then the rotation it releases.
scanner_tokens() { get "$api" "$admin" "projects/security%2Fscanner/access_tokens?state=active" | grep -o '"id":[0-9]*' | tr '\n' ' '; }
before="$(scanner_tokens)"
run_one "$work/web.log" --variable CI_PIPELINE_SOURCE=web --variable PATROL_FORCE=scanner \
  --variable "PATROL_TOKEN=$admin" --manual patrol-emergency || {
  grep -v -e "$admin" "$work/web.log" | tail -40 >&2
  fail "the emergency pipeline failed"
}
grep -q "PASS  patrol-emergency " "$work/web.log" && grep -q "PASS  patrol-emergency-rotate" "$work/web.log" ||
  fail "the emergency pipeline did not run patrol-emergency and then patrol-emergency-rotate"
grep -q "patrol: 1 rotated" "$work/web.log" || fail "the emergency run did not rotate scanner (not due, forced)"
after="$(scanner_tokens)"
[ -n "$after" ] && [ "$after" != "$before" ] || fail "scanner's active token did not change ($before -> $after)"
echo "component: way 3: PATROL_FORCE=scanner, patrol-emergency played, patrol-emergency-rotate rotated scanner"

# ---------------------------------------------------------------------------------------------
# 3. The README's way 2: a project's token renews itself, included as a component.
# The simulator's seed: team/app's project token, due in 5 days, in its hidden MY_TOKEN, which
# main's failed pipeline reads.
cat > "$work/team.toml" <<'TOML'
groups = ["team"]

[[users]]
username = "root"
admin = true

[[projects]]
path = "team/app"
ci_uses = ["MY_TOKEN"]

[[tokens]]
name = "root admin"
user = "root"
expires_in_days = 300
secret = "glpat-TeamAppAdminForChecks"

[[tokens]]
name = "app-ci"
project = "team/app"
expires_in_days = 5
secret = "glpat-TeamAppSelfRotating0"

[[variables]]
project = "team/app"
key = "MY_TOKEN"
token = "app-ci"
masked = true
hidden = true

[[pipelines]]
project = "team/app"
status = "failed"
source = "schedule"
TOML
start_simulator sim2 --seed "$work/team.toml"
team_admin="glpat-TeamAppAdminForChecks"
app_id="$(get "$sim2_url" "$team_admin" "projects/team%2Fapp" | grep -o '"id":[0-9]*' | head -n 1 | cut -d: -f2)"
[ -n "$app_id" ] || fail "no team/app in the second simulator"
two="$work/app"
mkdir -p "$two"
readme_block setup-2 > "$work/setup-2.yml"
grep -q 'self_variable: MY_TOKEN' "$work/setup-2.yml" || fail "README.md has no way-2 block marked e2e: setup-2"
new_project "$two" team/app < "$work/setup-2.yml"
expect_jobs "$two" schedule "patrol-rotate "
expect_jobs "$two" web ""
expect_jobs "$two" web "patrol-emergency patrol-emergency-rotate " --variable PATROL_FORCE=self
gcl_in "$two" "$work/self.log" --force-shell-executor --variable CI_PIPELINE_SOURCE=schedule \
  --variable "PATROL_GITLAB_URL=$sim2_url" --variable GITLAB_CI=true --variable "CI_PROJECT_ID=$app_id" \
  --variable "MY_TOKEN=glpat-TeamAppSelfRotating0" patrol-rotate || {
  grep -v -e glpat-TeamAppSelfRotating0 "$work/self.log" | tail -40 >&2
  fail "way 2: the scheduled self-rotation failed"
}
grep -q "patrol: 1 rotated" "$work/self.log" || fail "way 2: no '1 rotated' totals line"
token="$(marker "$sim2_url" "$team_admin" "projects/$app_id/variables/MY_TOKEN")"
[ -n "$token" ] && active_token "$sim2_url" "$team_admin" "$token" || fail "way 2: MY_TOKEN names no active token"
for _ in $(seq 1 50); do [ "$(latest_pipeline_status "$sim2_url" "$team_admin" "$app_id")" = success ] && break; sleep 0.1; done
[ "$(latest_pipeline_status "$sim2_url" "$team_admin" "$app_id")" = success ] || fail "way 2: main's pipeline was not retried"
echo "component: way 2: MY_TOKEN renewed itself (now token $token) and main's failed pipeline was retried"

# ---------------------------------------------------------------------------------------------
# 4. Shards and resource groups, with parallel: 4 (the example config's 3 tokens fall in shards
#    1, 2 and 4). Latency makes each job last long enough to see who waits for whom.
fleet="$work/fleet"
mkdir -p "$fleet"
new_project "$fleet" security/fleet <<YAML
include:
  - component: \$CI_SERVER_FQDN/security/patrol/patrol@$version
    inputs:
      image: \$CI_REGISTRY/security/patrol:$version
      config: patrol.toml
      parallel: 4
YAML
cp "$repo/ci-templates/example.toml" "$fleet/patrol.toml"
git_commit "$fleet" add -A
git_commit "$fleet" commit -qm config
gcl_in "$fleet" "$work/fleet-preview.log" --preview || { cat "$work/fleet-preview.log" >&2; fail "fleet: --preview failed"; }
# Each job's resource_group as written, expanded as GitLab expands it for shard I (CI_NODE_INDEX).
group_of() {
  local written
  written="$(awk -v job="$1:" '$0 == job { inside = 1; next } inside && /^[^ ]/ { exit }
    inside && /^  resource_group:/ { sub(/^  resource_group: */, ""); print; exit }' "$work/fleet-preview.log")"
  [ -n "$written" ] || fail "fleet: $1 has no resource_group"
  written="${written//\$\{CI_NODE_INDEX\}/$2}"
  printf '%s\n' "${written//\$CI_NODE_INDEX/$2}"
}
start_simulator sim3 --latency-ms 150
mkdir -p "$work/locks" "$work/times"
# One job of the fleet project, in its own copy of the project (as a runner has its own checkout),
# under the lock of its resource group: start and end times in $work/times.
run_shard() {
  local job="$1" shard="$2" source="$3" group copy
  group="$(group_of "$job" "$shard")"
  copy="$work/run-$job-$shard"
  cp -r "$fleet" "$copy"
  (
    flock 9
    date +%s.%N > "$work/times/$job-$shard.start"
    gcl_in "$copy" "$work/$job-$shard.log" --force-shell-executor --variable "CI_PIPELINE_SOURCE=$source" \
      --variable PATROL_FORCE=all --variable "PATROL_GITLAB_URL=$sim3_url" --variable "PATROL_TOKEN=$sim3_admin" \
      --variable GITLAB_CI=true "$job: [$shard/4]" && echo ok > "$work/times/$job-$shard.ok"
    date +%s.%N > "$work/times/$job-$shard.end"
  ) 9> "$work/locks/$group.lock"
}
expect_jobs "$fleet" schedule "patrol-rotate "
for i in 1 2 3 4; do
  for j in 1 2 3 4; do
    if [ "$i" != "$j" ] && [ "$(group_of patrol-rotate "$i")" = "$(group_of patrol-rotate "$j")" ]; then
      fail "fleet: shards $i and $j share resource group $(group_of patrol-rotate "$i")"
    fi
  done
  [ "$(group_of patrol-emergency-rotate "$i")" = "$(group_of patrol-rotate "$i")" ] ||
    fail "fleet: emergency shard $i is not in scheduled shard $i's resource group"
done
# The scheduled pipeline starts its 4 shards; once they are under way, an emergency run of all
# tokens starts its 4 shards too.
shard_pids=()
for i in 1 2 3 4; do
  run_shard patrol-rotate "$i" schedule &
  shard_pids+=($!)
done
for _ in $(seq 1 300); do
  [ "$(find "$work/times" -name 'patrol-rotate-*.start' | wc -l)" -ge 1 ] && break
  sleep 0.05
done
sleep 0.3
for i in 1 2 3 4; do
  run_shard patrol-emergency-rotate "$i" web &
  shard_pids+=($!)
done
for pid in "${shard_pids[@]}"; do wait "$pid"; done
for job in patrol-rotate patrol-emergency-rotate; do
  for i in 1 2 3 4; do
    [ -f "$work/times/$job-$i.ok" ] || { grep -v -e "$sim3_admin" "$work/$job-$i.log" | tail -30 >&2; fail "fleet: $job shard $i failed"; }
  done
done
t() { cat "$work/times/$1"; }
# Side by side: every scheduled shard started before any of them ended.
first_end="$(for i in 1 2 3 4; do t "patrol-rotate-$i.end"; done | sort -n | head -n 1)"
last_start="$(for i in 1 2 3 4; do t "patrol-rotate-$i.start"; done | sort -n | tail -n 1)"
awk -v s="$last_start" -v e="$first_end" 'BEGIN { exit !(s < e) }' ||
  fail "fleet: the scheduled shards ran one after another (last start $last_start, first end $first_end)"
# Emergency shard I never ran beside scheduled shard I.
for i in 1 2 3 4; do
  awk -v s="$(t "patrol-emergency-rotate-$i.start")" -v e="$(t "patrol-rotate-$i.end")" 'BEGIN { exit !(s >= e) }' ||
    fail "fleet: emergency shard $i started before scheduled shard $i ended"
done
# And they worked on the same tokens, shard by shard, between them all of them, each once.
# (A shard may have no token: shard 3 here.)
ids_of() {
  { grep -o '"id": *"[a-z-]*"' "$work/run-$1-$2/patrol-report.json" || true; } | sed 's/.*"\([a-z-]*\)"$/\1/' | sort | tr '\n' ' '
}
all_ids=""
for i in 1 2 3 4; do
  [ "$(ids_of patrol-rotate "$i")" = "$(ids_of patrol-emergency-rotate "$i")" ] ||
    fail "fleet: shard $i: scheduled [$(ids_of patrol-rotate "$i")], emergency [$(ids_of patrol-emergency-rotate "$i")]"
  all_ids="$all_ids$(ids_of patrol-rotate "$i")"
done
[ "$(printf '%s' "$all_ids" | tr ' ' '\n' | sed '/^$/d' | sort | tr '\n' ' ')" = "inventory reports scanner " ] ||
  fail "fleet: the shards worked on [$all_ids], not on each token once"
echo "component: parallel: 4: the scheduled shards ran side by side in their own resource groups;" \
  "each emergency shard waited for the scheduled shard with its tokens"

# ---------------------------------------------------------------------------------------------
# 5. This project's pipeline: its component-check job, from a clone with this tree's CI files.
self="$work/self"
git clone -q "$repo" "$self"
cp "$repo/.gitlab-ci.yml" "$self/"
mkdir -p "$self/ci-templates" "$self/templates"
cp "$repo/ci-templates/"* "$self/ci-templates/"
cp "$repo/templates/"* "$self/templates/"
git -C "$self" remote set-url origin https://gitlab.example.com/security/patrol.git
(cd "$self" && timeout 300 "$gcl" --force-shell-executor component-check) > "$work/self-check.log" 2>&1 || {
  tail -40 "$work/self-check.log" >&2
  fail "this project's component-check job failed"
}
grep -q "PASS  component-check" "$work/self-check.log" || fail "component-check did not pass"
echo "component: this project's component-check job passed (dry run against patrol simulator)"
