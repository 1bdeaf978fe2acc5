#!/usr/bin/env bash
# The shop's OpenAPI document against the server: schemathesis (pinned below) with every
# check, authenticated, against a level-1 environment brought up for the run.
# Usage: bench/contract.sh [max-examples, default 30] [seed, default 1]
# Needs `pip install schemathesis==4.32.5` and a built scalectl (cargo build).
# POST /logout is excluded: the run would end its own session and see only 401s after.
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-30} seed=${2:-1}
bin=${SCALECTL_BIN:-./target/debug/scalectl}
command -v schemathesis >/dev/null || { echo "install it: pip install schemathesis==4.32.5" >&2; exit 2; }
work=$(mktemp -d /tmp/scalectl-contract-XXXX); chmod 755 "$work"
trap '"$bin" --home "$work/home" down --env contract -q >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
url=$("$bin" --home "$work/home" up --level 1 --env contract -q -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["endpoints"]["shop"])')
json() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
curl -sf -X POST "$url/register" -H 'content-type: application/json' -d '{"email":"contract@example.test","password":"password1","roles":"both"}' >/dev/null
token=$(curl -sf -X POST "$url/login" -H 'content-type: application/json' -d '{"email":"contract@example.test","password":"password1"}' | json token)
schemathesis run "$url/openapi.json" --checks all -H "Authorization: Bearer $token" \
  --max-examples "$examples" --seed "$seed" --exclude-path /logout
