#!/usr/bin/env bash
# Contract checks against the real binary, run by .ci/run after `cargo test`:
#  1. schemathesis fuzzes every operation of /openapi.json: no 5xx, and every
#     status, header, content type and body must match the document;
#  2. the seed page's own Python (requests) and JavaScript (fetch) examples
#     sign up and print a key that then authenticates.
# Usage: tests/clients/run.sh [path/to/kaggleingest]   (loopback only)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${1:-$here/../../target/debug/kaggleingest}"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

python3 -c 'import requests' 2>/dev/null || pip install -q requests
python3 -c "import schemathesis" 2>/dev/null || pip install -q schemathesis
command -v node >/dev/null 2>&1 || { echo "node is required" >&2; exit 1; }

# Rate limiting off: the fuzzer would otherwise see mostly 429s (documented,
# but it leaves the logic behind them untested).
"$bin" serve --bind 127.0.0.1:0 --db "$work/k.db" --bcrypt-cost 4 \
    --signup-rate-limit 0 2>"$work/server.log" &
pid=$!
base=""
for _ in $(seq 1 100); do
    base="$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$work/server.log" | grep -o 'http.*' || true)"
    [ -n "$base" ] && break
    sleep 0.1
done
[ -n "$base" ] || { cat "$work/server.log" >&2; exit 1; }

# --- the seed's own clients ---------------------------------------------------
check_client() { # name, runner, file, email
    local name="$1" runner="$2" file="$3" email="$4" out key
    sed -e "s#https://api.kaggleingest.com#$base#" -e "s#\[email protected\]#$email#" \
        "$here/$file" > "$work/$file"
    out="$($runner "$work/$file")"
    echo "$name client printed: $out"
    [[ "$out" =~ ^Your\ API\ key:\ (ki_[A-Za-z0-9]{32})$ ]] || { echo "unexpected output" >&2; exit 1; }
    key="${BASH_REMATCH[1]}"
    curl -fsS "$base/api/auth/me" -H "X-API-Key: $key" | grep -q "\"email\":\"$email\"" ||
        { echo "$name client's key does not authenticate" >&2; exit 1; }
    echo "$name client's key authenticates as $email"
}
check_client Python python3 seed_signup.py python-client@example.com
check_client JavaScript node seed_signup.mjs js-client@example.com

# --- schemathesis against the OpenAPI document --------------------------------
key="$(curl -fsS -X POST "$base/api/auth/signup" -H 'Content-Type: application/json' \
    -d '{"email":"fuzz@example.com","password":"securepassword123"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')"
# From the temp dir: schemathesis leaves a .schemathesis/ folder behind.
cd "$work"
python3 -m schemathesis.cli run "$base/openapi.json" --url "$base" -H "X-API-Key: $key" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --max-examples 50 --seed 1 --no-color
