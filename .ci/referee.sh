#!/usr/bin/env bash
# The python-gitlab referee: python-gitlab (a GitLab client written by others, at the version
# pinned in tests/referee/requirements.txt, from PyPI) is driven through everything patrol relies
# on against `patrol simulator --seed tests/referee/seed.toml`; tests/referee/check.py fails on
# any answer python-gitlab cannot take as it would take real GitLab's. Uses target/debug/patrol
# as `cargo test --locked` left it (builds it only when missing); installs python-gitlab into a
# throwaway virtualenv; Debian's python3-venv when the venv module is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

tmp=$(mktemp -d)
sim_pid=""
cleanup() {
  if [ -n "$sim_pid" ]; then
    kill "$sim_pid" 2>/dev/null || true
    wait "$sim_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv >/dev/null; fi
fi
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/referee/requirements.txt

if [ ! -x target/debug/patrol ]; then
  cargo build --locked
fi

target/debug/patrol simulator --seed tests/referee/seed.toml --listen 127.0.0.1:0 \
  >"$tmp/simulator.out" 2>"$tmp/simulator.err" &
sim_pid=$!
# The first line is the API root, the second `export PATROL_GITLAB_URL=… PATROL_TOKEN=…`.
for _ in $(seq 1 100); do
  [ "$(wc -l <"$tmp/simulator.out")" -ge 2 ] && break
  if ! kill -0 "$sim_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ "$(wc -l <"$tmp/simulator.out")" -lt 2 ]; then
  echo "referee: patrol simulator did not start:" >&2
  cat "$tmp/simulator.err" >&2
  exit 1
fi
url=$(sed -n 1p "$tmp/simulator.out")
token=$(sed -n 2p "$tmp/simulator.out" | sed -n 's/.*PATROL_TOKEN=\([^ ]*\).*/\1/p')
if [ -z "$token" ]; then
  echo "referee: the seed has no admin token: $(sed -n 2p "$tmp/simulator.out")" >&2
  exit 1
fi

status=0
"$tmp/venv/bin/python" tests/referee/check.py --url "$url" --token "$token" || status=$?
echo "referee: $(($(date +%s) - started))s"
exit "$status"
