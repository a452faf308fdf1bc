#!/usr/bin/env bash
# On-demand benchmark of the KaggleIngest accounts server. See bench/README.md.
# Usage: bench/run.sh        (from anywhere; writes bench/results.json)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
cd "$ROOT"

# Knobs (environment); the defaults are the documented benchmark.
COST="${BENCH_BCRYPT_COST:-12}"
ME_SECONDS="${BENCH_ME_SECONDS:-10}"
SIGNUP_SECONDS="${BENCH_SIGNUP_SECONDS:-15}"
CEILING_SECONDS="${BENCH_CEILING_SECONDS:-10}"
PROBE_DELAY_MS="${BENCH_PROBE_DELAY_MS:-10}" # /me probe in (d): pause per connection between requests
ACCOUNTS=50
NPROC="$(nproc)"
INVOCATION="$0${*:+ $*}"

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
for tool in wrk curl python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

log "building release binary and examples/bcrypt_ceiling"
cargo build --release --quiet --bin kaggleingest --example bcrypt_ceiling
BIN="$ROOT/target/release/kaggleingest"
CEILING_BIN="$ROOT/target/release/examples/bcrypt_ceiling"

# cpu_busy_pct SECONDS: share of all CPUs busy machine-wide over SECONDS.
# Another job on the machine (a build, a test suite) skews every number here.
cpu_busy_pct() {
  local a b
  a="$(head -n1 /proc/stat)"; sleep "$1"; b="$(head -n1 /proc/stat)"
  awk -v a="$a" -v b="$b" 'BEGIN {
    split(a, x); split(b, y)
    busy = (y[2]+y[3]+y[4]+y[7]+y[8]+y[9]) - (x[2]+x[3]+x[4]+x[7]+x[8]+x[9])
    idle = (y[5]+y[6]) - (x[5]+x[6])
    printf "%.0f", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0 }'
}
BACKGROUND_BEFORE="$(cpu_busy_pct 2)"
(( BACKGROUND_BEFORE <= 10 )) ||
  log "warning: the machine is already ${BACKGROUND_BEFORE}% busy before the benchmark; results will be skewed"

# --- server ------------------------------------------------------------------
TMP="$(mktemp -d -t kaggleingest-bench.XXXXXX)"
SERVER_PID=""
BG_PIDS=()
cleanup() {
  local pid
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SERVER_ARGS=(serve --bind 127.0.0.1:0 --db "$TMP/bench.db" --bcrypt-cost "$COST" --hash-queue 1000)
if "$BIN" serve --help 2>/dev/null | grep -q -- '--signup-rate-limit'; then
  SERVER_ARGS+=(--signup-rate-limit 0)
  RATE_LIMIT_FLAG=supported
else
  log "warning: this build has no --signup-rate-limit flag; running without it"
  RATE_LIMIT_FLAG=absent
fi
SERVER_CMD="target/release/kaggleingest ${SERVER_ARGS[*]}"

log "starting: $SERVER_CMD"
NO_COLOR=1 "$BIN" "${SERVER_ARGS[@]}" 2>"$TMP/server.log" &
SERVER_PID=$!
PORT=""
for _ in $(seq 300); do
  PORT="$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$TMP/server.log" | head -n1 | sed 's/.*://')" || true
  [[ -n "$PORT" ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/server.log" >&2; die "server exited at startup"; }
  sleep 0.1
done
[[ -n "$PORT" ]] || { cat "$TMP/server.log" >&2; die "no 'listening on' line within 30 s"; }
BASE="http://127.0.0.1:$PORT"
log "server pid $SERVER_PID on $BASE"

# snap NAME: CPU counters at a phase boundary, to tell afterwards how much CPU
# went to processes other than the server and this script's children (wrk,
# bcrypt_ceiling) during each phase: /proc/stat user nice system idle iowait
# irq softirq steal, then the server's and this shell's children's ticks.
snap() {
  local cpu server children
  read -r -a cpu < <(head -n1 /proc/stat)
  server="$(awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat")"
  children="$(awk '{ print $16 + $17 }' "/proc/$$/stat")"
  echo "$1 ${cpu[*]:1:8} $server $children" >>"$TMP/cpu_snaps.txt"
}

rss_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVER_PID/status"; }

# --- accounts for /me --------------------------------------------------------
log "creating $ACCOUNTS accounts"
RUN_TOKEN="$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')"
seq 1 "$ACCOUNTS" | xargs -P 8 -I{} curl -sS --max-time 120 -o "$TMP/account_{}.json" \
  -H 'Content-Type: application/json' \
  -d "{\"email\":\"seed-$RUN_TOKEN-{}@example.com\",\"password\":\"benchpassword123\"}" \
  "$BASE/api/auth/signup"
: >"$TMP/keys.txt"
for i in $(seq 1 "$ACCOUNTS"); do
  key="$(grep -o '"api_key":"ki_[A-Za-z0-9]*"' "$TMP/account_$i.json" | cut -d'"' -f4)" ||
    die "signup $i failed: $(cat "$TMP/account_$i.json")"
  echo "$key" >>"$TMP/keys.txt"
done
curl -sS --fail -o /dev/null -H "X-API-Key: $(head -n1 "$TMP/keys.txt")" "$BASE/api/auth/me" ||
  die "GET /api/auth/me with a fresh key failed"
IDLE_RSS_KIB="$(rss_kib VmRSS)"

# wrk_json FILE: the WRK_JSON line a Lua done() printed, or fail loudly.
wrk_json() {
  grep -m1 '^WRK_JSON ' "$1" | cut -d' ' -f2- || { cat "$1" >&2; die "no WRK_JSON line in $1"; }
}

# --- (a) /me and (b) the no-database ceiling ---------------------------------
CMD_ME="wrk -t2 -c64 -d${ME_SECONDS}s --latency -s bench/me.lua $BASE/api/auth/me -- KEYS"
CMD_NOPE="wrk -t2 -c64 -d${ME_SECONDS}s --latency -s bench/me.lua $BASE/nope -- KEYS"
log "warm-up: /me for 2 s"
wrk -t2 -c64 -d2s -s "$BENCH_DIR/me.lua" "$BASE/api/auth/me" -- "$TMP/keys.txt" >/dev/null
snap start_me
log "(a) $CMD_ME"
wrk -t2 -c64 -d"${ME_SECONDS}s" --latency -s "$BENCH_DIR/me.lua" "$BASE/api/auth/me" -- "$TMP/keys.txt" >"$TMP/me.out"
snap start_http_ceiling
log "(b) $CMD_NOPE"
wrk -t2 -c64 -d"${ME_SECONDS}s" --latency -s "$BENCH_DIR/me.lua" "$BASE/nope" -- "$TMP/keys.txt" >"$TMP/nope.out"

# --- (c) signups, with (d) a /me latency probe alongside ----------------------
CMD_SIGNUP="wrk -t2 -c16 -d${SIGNUP_SECONDS}s --timeout 60s --latency -s bench/signup.lua $BASE/api/auth/signup -- $RUN_TOKEN"
CMD_PROBE="wrk -t1 -c8 -d${SIGNUP_SECONDS}s --latency -s bench/me.lua $BASE/api/auth/me -- KEYS $PROBE_DELAY_MS"
snap start_signup
log "(c) $CMD_SIGNUP"
log "(d) $CMD_PROBE"
wrk -t2 -c16 -d"${SIGNUP_SECONDS}s" --timeout 60s --latency -s "$BENCH_DIR/signup.lua" \
  "$BASE/api/auth/signup" -- "$RUN_TOKEN" >"$TMP/signup.out" &
BG_PIDS+=($!)
SIGNUP_WRK=$!
sleep 1 # let the hashing pool fill up before probing
wrk -t1 -c8 -d"$((SIGNUP_SECONDS - 2))s" --latency -s "$BENCH_DIR/me.lua" \
  "$BASE/api/auth/me" -- "$TMP/keys.txt" "$PROBE_DELAY_MS" >"$TMP/probe.out"
wait "$SIGNUP_WRK"
snap end_signup
BG_PIDS=()

# Let the hashes still queued from (c) drain so the ceiling runs on an idle CPU:
# wait until the server uses under ~2 ticks of CPU per half second.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }
log "waiting for queued signups to drain"
for _ in $(seq 120); do
  t0="$(cpu_ticks)"; sleep 0.5; t1="$(cpu_ticks)"
  (( t1 - t0 <= 2 )) && break
done

CMD_CEILING="target/release/examples/bcrypt_ceiling --cost $COST --threads $NPROC --seconds $CEILING_SECONDS"
snap start_bcrypt_ceiling
log "(c) ceiling: $CMD_CEILING"
"$CEILING_BIN" --cost "$COST" --threads "$NPROC" --seconds "$CEILING_SECONDS" >"$TMP/ceiling.out"

# --- (e) memory --------------------------------------------------------------
snap end_bcrypt_ceiling
PEAK_RSS_KIB="$(rss_kib VmHWM)"
END_RSS_KIB="$(rss_kib VmRSS)"

BACKGROUND_AFTER="$(cpu_busy_pct 2)" # the server is idle again by now
(( BACKGROUND_AFTER <= 10 )) ||
  log "warning: the machine was ${BACKGROUND_AFTER}% busy after the benchmark with the server idle; results may be skewed"

# --- report ------------------------------------------------------------------
B_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
B_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
B_DIRTY=false
[[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]] && B_DIRTY=true
B_ME="$(wrk_json "$TMP/me.out")"
B_NOPE="$(wrk_json "$TMP/nope.out")"
B_SIGNUP="$(wrk_json "$TMP/signup.out")"
B_PROBE="$(wrk_json "$TMP/probe.out")"
B_CEILING="$(cat "$TMP/ceiling.out")"
export B_DATE B_COMMIT B_DIRTY B_ME B_NOPE B_SIGNUP B_PROBE B_CEILING
export B_NPROC="$NPROC" B_INVOCATION="$INVOCATION" B_COST="$COST"
export B_SERVER_CMD="$SERVER_CMD" B_RATE_LIMIT_FLAG="$RATE_LIMIT_FLAG" B_PROBE_DELAY_MS="$PROBE_DELAY_MS"
export B_CMD_ME="$CMD_ME" B_CMD_NOPE="$CMD_NOPE" B_CMD_SIGNUP="$CMD_SIGNUP"
export B_CMD_PROBE="$CMD_PROBE" B_CMD_CEILING="$CMD_CEILING"
export B_IDLE_KIB="$IDLE_RSS_KIB" B_PEAK_KIB="$PEAK_RSS_KIB" B_END_KIB="$END_RSS_KIB"
export B_BACKGROUND_BEFORE="$BACKGROUND_BEFORE" B_BACKGROUND_AFTER="$BACKGROUND_AFTER"
export B_CPU_SNAPS="$TMP/cpu_snaps.txt"
export B_OUT="$BENCH_DIR/results.json"
python3 "$BENCH_DIR/report.py"
