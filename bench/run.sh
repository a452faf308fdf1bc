#!/usr/bin/env bash
# On-demand benchmark of the KaggleIngest accounts server, every ratio taken
# against a baseline measured in the same run. See bench/README.md.
# Usage: bench/run.sh        (from anywhere; writes bench/results.json)
#        BENCH_QUICK=1 bench/run.sh   (short phases, for developing the harness)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
cd "$ROOT"

# Knobs (environment); the defaults are the documented benchmark.
if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
  d_http=3 d_signup=4 d_ceiling=3 d_warmup=1 d_runs=3 d_after=5
else
  d_http=10 d_signup=15 d_ceiling=10 d_warmup=2 d_runs=5 d_after=60
fi
HTTP_SECONDS="${BENCH_HTTP_SECONDS:-${BENCH_ME_SECONDS:-$d_http}}" # each wrk phase on /me, verify, warp, nginx
SIGNUP_SECONDS="${BENCH_SIGNUP_SECONDS:-$d_signup}"
CEILING_SECONDS="${BENCH_CEILING_SECONDS:-$d_ceiling}"
WARMUP_SECONDS="${BENCH_WARMUP_SECONDS:-$d_warmup}"
STARTUP_RUNS="${BENCH_STARTUP_RUNS:-$d_runs}"
AFTER_CLOSE_SECONDS="${BENCH_AFTER_CLOSE_SECONDS:-$d_after}" # RSS is read this long after the idle connections close
IDLE_CONNS="${BENCH_IDLE_CONNS:-4096}"
PROBE_DELAY_MS="${BENCH_PROBE_DELAY_MS:-40}" # /me probe during signups: pause per connection between requests (see bench/README.md)
NGINX_PATH="${BENCH_NGINX_PATH:-/bench/data}" # a path nginx sends through auth_request to the upstream
COST=12 # the default: what start-up pays for its dummy hash and what signups cost
ACCOUNTS=50
CREDITS=1000000000 # per account: every verify, direct or through nginx, spends one
NPROC="$(nproc)"
INVOCATION="$0${*:+ $*}"
KNOBS="BENCH_QUICK=${BENCH_QUICK:-0} http=${HTTP_SECONDS}s signup=${SIGNUP_SECONDS}s ceiling=${CEILING_SECONDS}s warmup=${WARMUP_SECONDS}s startup_runs=$STARTUP_RUNS idle_conns=$IDLE_CONNS after_close=${AFTER_CLOSE_SECONDS}s"

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for knob in HTTP_SECONDS SIGNUP_SECONDS CEILING_SECONDS WARMUP_SECONDS STARTUP_RUNS \
            AFTER_CLOSE_SECONDS IDLE_CONNS PROBE_DELAY_MS; do
  [[ "${!knob}" =~ ^[0-9]+$ ]] || die "$knob must be a whole number, not '${!knob}'"
done
(( HTTP_SECONDS >= 1 && CEILING_SECONDS >= 1 && STARTUP_RUNS >= 1 && IDLE_CONNS >= 1 )) ||
  die "phase lengths, runs and connections must be at least 1"
(( SIGNUP_SECONDS >= 3 )) || die "BENCH_SIGNUP_SECONDS must be at least 3 (the probe runs 2 s less)"

# A KAGGLEINGEST_* variable in the caller's environment would change the
# server under test; so would ./kaggleingest.toml, hence servers and the
# admin CLI run from the temp dir.
for var in "${!KAGGLEINGEST_@}"; do unset "$var"; done

# --- tools -------------------------------------------------------------------
apt_install() { # PROGRAM PACKAGE
  command -v "$1" >/dev/null 2>&1 && return
  log "installing $2"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
apt_install wrk wrk
apt_install nginx nginx-light
for tool in wrk nginx curl python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

# The idle-connection phase holds IDLE_CONNS sockets in this script's child.
wanted_files=$((IDLE_CONNS + 512))
if (( $(ulimit -n) < wanted_files )); then
  ulimit -n "$wanted_files" 2>/dev/null ||
    die "cannot raise the open-file limit to $wanted_files (hard limit $(ulimit -Hn)); lower BENCH_IDLE_CONNS or raise it"
fi

log "building release binary and examples bcrypt_ceiling, bare_warp"
cargo build --release --quiet --bin kaggleingest --example bcrypt_ceiling --example bare_warp
BIN="$ROOT/target/release/kaggleingest"
CEILING_BIN="$ROOT/target/release/examples/bcrypt_ceiling"
BARE_BIN="$ROOT/target/release/examples/bare_warp"

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

# --- processes ---------------------------------------------------------------
TMP="$(mktemp -d -t kaggleingest-bench.XXXXXX)"
LOGS="" # set below, once cleanup is armed
SERVER_PID="" BARE_PID="" NGINX_PID="" RAM_PID=""
BG_PIDS=()
: >"$TMP/commands.tsv" # phase id, command as shown in the report
: >"$TMP/cpu_snaps.txt"
: >"$TMP/phase_errors.txt"

# stop PID: SIGTERM, up to 5 s to exit, then SIGKILL. Only our own children.
stop() {
  local pid="$1"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  stop "$NGINX_PID"; stop "$BARE_PID"; stop "$RAM_PID"; stop "$SERVER_PID"
  rm -rf "$TMP" ${LOGS:+"$LOGS"}
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The server's request log lives in RAM (tmpfs), not in $TMP beside the
# database, whose WAL fsyncs its writeback delays (numbers: bench/README.md).
# A run writes about 0.5 GB of it, hence the free-space check.
LOGS_TEMPLATE=kaggleingest-bench-logs.XXXXXX
SHM_FREE_KIB="$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')" || true
if [[ -w /dev/shm ]] && (( ${SHM_FREE_KIB:-0} >= 1024 * 1024 )) &&
   LOGS="$(mktemp -d -p /dev/shm "$LOGS_TEMPLATE")"; then
  LOGS_SHOWN="/dev/shm/$LOGS_TEMPLATE"
else
  LOGS="$TMP" LOGS_SHOWN="\$TMP"
  log "warning: no /dev/shm with 1 GiB free; the server log shares the database's disk, and its writeback can slow commits"
fi

# port_from_log LOG PID WHAT: the port of the first "listening on
# http://127.0.0.1:PORT" line PID writes to LOG, waiting up to 30 s.
port_from_log() {
  local port=""
  for _ in $(seq 300); do
    port="$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$1" | head -n1 | sed 's/.*://')" || true
    [[ -n "$port" ]] && { echo "$port"; return; }
    kill -0 "$2" 2>/dev/null || { cat "$1" >&2; die "$3 exited at startup"; }
    sleep 0.1
  done
  cat "$1" >&2; die "$3 printed no 'listening on' line within 30 s"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# /proc/PID/stat fields after the ")" that ends the command name, so a name
# with spaces cannot shift them: $12 utime, $13 stime, $14 cutime, $15 cstime.
ticks_of() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 + $14 + $15 }'; }

# snap NAME: CPU counters at a phase boundary, to tell afterwards how much CPU
# went to processes other than ours during each phase: /proc/stat user nice
# system idle iowait irq softirq steal, then the ticks of our processes: the
# live ones (server, bare_warp, nginx and its workers) and, through this
# shell's cutime/cstime, every child already waited for (wrk, the ceilings,
# the helpers, stopped servers).
snap() {
  local cpu ours pid t
  read -r -a cpu < <(head -n1 /proc/stat)
  ours="$(sed 's/.*) //' "/proc/$$/stat" | awk '{ print $14 + $15 }')"
  for pid in "$SERVER_PID" "$BARE_PID" "$NGINX_PID" "$RAM_PID" \
             $([[ -n "$NGINX_PID" ]] && pgrep -P "$NGINX_PID" || true); do
    [[ -n "$pid" ]] || continue
    t="$(ticks_of "$pid")" || true
    ours=$((ours + ${t:-0}))
  done
  echo "$1 ${cpu[*]:1:8} $ours" >>"$TMP/cpu_snaps.txt"
}

rss_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVER_PID/status"; }

# load PHASE CONNS URL [WRK_ARGS...]: wrk with me.lua (keys rotating over the
# bench accounts) for HTTP_SECONDS; its WRK_JSON line ends in $TMP/PHASE.out.
load() {
  local phase="$1" conns="$2" url="$3"
  shift 3
  local cmd="wrk -t2 -c$conns -d${HTTP_SECONDS}s --timeout 10s --latency $* -s bench/me.lua $url -- KEYS"
  log "($phase) ${cmd//  / }"
  printf '%s\t%s\n' "$phase" "${cmd//  / }" >>"$TMP/commands.tsv"
  snap "start_$phase"
  wrk -t2 -c"$conns" -d"${HTTP_SECONDS}s" --timeout 10s --latency "$@" -s "$BENCH_DIR/me.lua" "$url" -- "$TMP/keys.txt" \
    >"$TMP/$phase.out"
  snap "end_$phase"
}
warm_up() { # URL
  wrk -t2 -c64 -d"${WARMUP_SECONDS}s" -s "$BENCH_DIR/me.lua" "$1" -- "$TMP/keys.txt" >/dev/null
}

# --- (1) start to first answer ------------------------------------------------
CMD_STARTUP="python3 bench/startup.py target/release/kaggleingest $STARTUP_RUNS   # each: serve --bind 127.0.0.1:0 --db FRESH (defaults, cost $COST)"
printf 'startup\t%s\n' "$CMD_STARTUP" >>"$TMP/commands.tsv"
log "(startup) $CMD_STARTUP"
snap start_startup
python3 "$BENCH_DIR/startup.py" "$BIN" "$STARTUP_RUNS" >"$TMP/startup.out"
snap end_startup

# --- the server under test ---------------------------------------------------
# One server for every phase. Its flags change nothing on the measured paths
# without proxy headers; they let the nginx phase behave as contrib/nginx.conf
# asks (403 on no credits, 127.0.0.1 trusted) and the idle-connection phase
# hold IDLE_CONNS connections from one address for the whole phase.
SERVER_ARGS=(serve --bind 127.0.0.1:0 --db "$TMP/bench.db" --bcrypt-cost "$COST" --hash-queue 1000
             --signup-rate-limit 0 --verify-deny-status 403 --trusted-proxies 127.0.0.1
             --max-connections $((IDLE_CONNS * 2 > 8192 ? IDLE_CONNS * 2 : 8192)) --max-connections-per-ip 0
             --client-timeout-secs 120)
SERVER_HELP="$("$BIN" serve --help 2>/dev/null)"
for flag in --signup-rate-limit --verify-deny-status --trusted-proxies --max-connections-per-ip --client-timeout-secs; do
  grep -q -- "$flag " <<<"$SERVER_HELP" || die "this build has no $flag flag; the benchmark needs it"
done
SERVER_CMD="target/release/kaggleingest ${SERVER_ARGS[*]}"
SERVER_CMD="${SERVER_CMD//$TMP/\$TMP} 2>$LOGS_SHOWN/server.log"

log "starting: $SERVER_CMD"
(cd "$TMP" && NO_COLOR=1 exec "$BIN" "${SERVER_ARGS[@]}") 2>"$LOGS/server.log" &
SERVER_PID=$!
PORT="$(port_from_log "$LOGS/server.log" "$SERVER_PID" "the server")"
BASE="http://127.0.0.1:$PORT"
log "server pid $SERVER_PID on $BASE"

# --- accounts ----------------------------------------------------------------
log "creating $ACCOUNTS accounts with $CREDITS credits each"
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
  (cd "$TMP" && "$BIN" user credits "seed-$RUN_TOKEN-$i@example.com" "=$CREDITS" --db "$TMP/bench.db" >/dev/null) ||
    die "kaggleingest user credits failed for account $i"
done
KEY1="$(head -n1 "$TMP/keys.txt")"
curl -sS --fail -o /dev/null -H "X-API-Key: $KEY1" "$BASE/api/auth/me" ||
  die "GET /api/auth/me with a fresh key failed"
remaining="$(curl -sS --fail -D - -o /dev/null -H "X-API-Key: $KEY1" "$BASE/api/auth/verify" |
  tr -d '\r' | awk -F': ' 'tolower($1) == "x-kaggleingest-credits-remaining" { print $2 }')" ||
  die "GET /api/auth/verify with a fresh key failed"
(( ${remaining:-0} >= CREDITS - 1 )) ||
  die "verify says ${remaining:-no} credits remain; the CLI's =$CREDITS did not take"
IDLE_RSS_KIB="$(rss_kib VmRSS)"

# --- (2) /me and verify at 64 and 8 connections, against bare warp -----------
log "starting: target/release/examples/bare_warp"
"$BARE_BIN" 2>"$LOGS/bare.log" &
BARE_PID=$!
BARE_PORT="$(port_from_log "$LOGS/bare.log" "$BARE_PID" "bare_warp")"
curl -sS --fail -o /dev/null -H "X-API-Key: $KEY1" "http://127.0.0.1:$BARE_PORT/api/auth/me" ||
  die "bare_warp does not answer GET /api/auth/me"

log "warm-up: /me and bare warp for ${WARMUP_SECONDS} s each"
warm_up "$BASE/api/auth/me"
warm_up "http://127.0.0.1:$BARE_PORT/api/auth/me"
# Pairs that are divided run back to back, so a passing disturbance hits
# both sides of a ratio alike.
load bare_64 64 "http://127.0.0.1:$BARE_PORT/api/auth/me"
load me_64 64 "$BASE/api/auth/me"
load verify_64 64 "$BASE/api/auth/verify"
load me_8 8 "$BASE/api/auth/me"
load verify_8 8 "$BASE/api/auth/verify"
# The disk's floor under verify's latency, right after it: one durable
# commit at a time, same pragmas, same file system, no HTTP (commit_floor.py).
CMD_FLOOR="python3 bench/commit_floor.py \$TMP/floor.db $HTTP_SECONDS"
printf 'commit_floor\t%s\n' "$CMD_FLOOR" >>"$TMP/commands.tsv"
log "(commit_floor) $CMD_FLOOR"
snap start_commit_floor
python3 "$BENCH_DIR/commit_floor.py" "$TMP/floor.db" "$HTTP_SECONDS" >"$TMP/commit_floor.out"
snap end_commit_floor
# The same loop with every CPU kept busy by SCHED_IDLE spinners, which never
# delay it: what the platform does to durable commits on a fully loaded
# machine, as during every load phase (bench/README.md, "Reading verify's p99").
CMD_FLOOR_BUSY="python3 bench/commit_floor.py \$TMP/floor_busy.db $HTTP_SECONDS busy"
printf 'commit_floor_busy\t%s\n' "$CMD_FLOOR_BUSY" >>"$TMP/commands.tsv"
log "(commit_floor_busy) $CMD_FLOOR_BUSY"
snap start_commit_floor_busy
python3 "$BENCH_DIR/commit_floor.py" "$TMP/floor_busy.db" "$HTTP_SECONDS" busy >"$TMP/commit_floor_busy.out"
snap end_commit_floor_busy
stop "$BARE_PID"; BARE_PID=""

# --- (2b) verify with the database in RAM: a diagnostic, no target -----------
# The same server on a copy of bench.db in /dev/shm, where an fsync returns
# at once, under the same two verify loads. Beside the disk phases it splits
# verify's latency into what this code costs and what durable commits on this
# disk and machine add (bench/README.md, "Reading verify's p99"). Skipped,
# and reported as skipped, when the log could not go to /dev/shm.
B_RAM=0
if [[ "$LOGS" != "$TMP" ]]; then
  (cd "$TMP" && "$BIN" backup "$LOGS/ram.db" --db "$TMP/bench.db" >/dev/null) ||
    die "kaggleingest backup to $LOGS/ram.db failed"
  RAM_ARGS=("${SERVER_ARGS[@]//"$TMP/bench.db"/"$LOGS/ram.db"}")
  log "starting the same server on a copy of the database in $LOGS_SHOWN"
  (cd "$TMP" && NO_COLOR=1 exec "$BIN" "${RAM_ARGS[@]}") 2>"$LOGS/ram.log" &
  RAM_PID=$!
  RAM_BASE="http://127.0.0.1:$(port_from_log "$LOGS/ram.log" "$RAM_PID" "the server on the RAM copy")"
  warm_up "$RAM_BASE/api/auth/verify"
  load verify_ram_64 64 "$RAM_BASE/api/auth/verify"
  load verify_ram_8 8 "$RAM_BASE/api/auth/verify"
  stop "$RAM_PID"; RAM_PID=""
  B_RAM=1
fi

# --- (3) nginx with contrib/nginx.conf, with and without auth_request ---------
# A failure here (the example changed under us) is reported loudly and the
# other phases still run; the script then exits 1 after the report.
# nginx_phase PHASE auth|noauth
nginx_phase() {
  local phase="$1" variant="$2" dir="$TMP/$1" listen api code
  mkdir -p "$dir"
  listen="127.0.0.1:$(free_port)"; api="127.0.0.1:$(free_port)"
  python3 "$BENCH_DIR/nginx_conf.py" "$ROOT/contrib/nginx.conf" "$dir" "127.0.0.1:$PORT" "$api" "$listen" "$variant" \
    2>"$dir/conf.err" || { cat "$dir/conf.err" >&2; echo "$phase: $(cat "$dir/conf.err")" >>"$TMP/phase_errors.txt"; return 1; }
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>>"$dir/error.log" &
  NGINX_PID=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://$listen/" && break
    kill -0 "$NGINX_PID" 2>/dev/null || break
    sleep 0.1
  done
  # Check the site does what the phase claims before loading it.
  local with_key without_key
  with_key="$(curl -s -o "$dir/answer.txt" -w '%{http_code}' -H "X-API-Key: $KEY1" "http://$listen$NGINX_PATH")" || true
  without_key="$(curl -s -o /dev/null -w '%{http_code}' "http://$listen$NGINX_PATH")" || true
  local expect_without=401
  [[ "$variant" == noauth ]] && expect_without=200
  if [[ "$with_key" != 200 || "$without_key" != "$expect_without" ]] || ! grep -q 'bench upstream' "$dir/answer.txt"; then
    local why="nginx ($variant) on $NGINX_PATH answered $with_key with a key and $without_key without (expected 200 and $expect_without, the upstream's body)"
    log "error: $why"; cat "$dir/error.log" >&2 || true
    echo "$phase: $why" >>"$TMP/phase_errors.txt"
    stop "$NGINX_PID"; NGINX_PID=""
    return 1
  fi
  warm_up "http://$listen$NGINX_PATH"
  load "$phase" 64 "http://$listen$NGINX_PATH"
  stop "$NGINX_PID"; NGINX_PID=""
}
log "(nginx) contrib/nginx.conf in front of a static upstream, via python3 bench/nginx_conf.py"
nginx_phase nginx_alone_64 noauth || true
nginx_phase nginx_verify_64 auth || true

# --- (4) signups, with a /me latency probe alongside -------------------------
CMD_SIGNUP="wrk -t2 -c16 -d${SIGNUP_SECONDS}s --timeout 60s --latency -s bench/signup.lua $BASE/api/auth/signup -- $RUN_TOKEN"
CMD_PROBE="wrk -t1 -c8 -d$((SIGNUP_SECONDS - 2))s --latency -s bench/me.lua $BASE/api/auth/me -- KEYS $PROBE_DELAY_MS"
printf 'signup\t%s\nme_probe_during_signup\t%s\n' "$CMD_SIGNUP" "$CMD_PROBE" >>"$TMP/commands.tsv"
snap start_signup
log "(signup) $CMD_SIGNUP"
log "(me_probe_during_signup) $CMD_PROBE"
wrk -t2 -c16 -d"${SIGNUP_SECONDS}s" --timeout 60s --latency -s "$BENCH_DIR/signup.lua" \
  "$BASE/api/auth/signup" -- "$RUN_TOKEN" >"$TMP/signup.out" &
BG_PIDS+=($!)
SIGNUP_WRK=$!
sleep 1 # let the hashing pool fill up before probing
wrk -t1 -c8 -d"$((SIGNUP_SECONDS - 2))s" --latency -s "$BENCH_DIR/me.lua" \
  "$BASE/api/auth/me" -- "$TMP/keys.txt" "$PROBE_DELAY_MS" >"$TMP/me_probe_during_signup.out"
wait "$SIGNUP_WRK"
snap end_signup
BG_PIDS=()

# Let the hashes still queued from the signups drain so the ceiling runs on an
# idle CPU: wait until the server uses under ~2 ticks of CPU per half second.
server_ticks() { sed 's/.*) //' "/proc/$SERVER_PID/stat" | awk '{ print $12 + $13 }'; }
log "waiting for queued signups to drain"
for _ in $(seq 120); do
  t0="$(server_ticks)"; sleep 0.5; t1="$(server_ticks)"
  (( t1 - t0 <= 2 )) && break
done

CMD_CEILING="target/release/examples/bcrypt_ceiling --cost $COST --threads $NPROC --seconds $CEILING_SECONDS"
printf 'bcrypt_ceiling\t%s\n' "$CMD_CEILING" >>"$TMP/commands.tsv"
snap start_bcrypt_ceiling
log "(bcrypt_ceiling) $CMD_CEILING"
"$CEILING_BIN" --cost "$COST" --threads "$NPROC" --seconds "$CEILING_SECONDS" >"$TMP/bcrypt_ceiling.out"
snap end_bcrypt_ceiling

# --- (5) memory --------------------------------------------------------------
LOADED_RSS_KIB="$(rss_kib VmRSS)"
LOADED_PEAK_KIB="$(rss_kib VmHWM)"
CMD_IDLE="python3 bench/idle_conns.py $PORT SERVER_PID $IDLE_CONNS $AFTER_CLOSE_SECONDS"
printf 'idle_conns\t%s\n' "$CMD_IDLE" >>"$TMP/commands.tsv"
log "(idle_conns) $CMD_IDLE   # about $((AFTER_CLOSE_SECONDS + 5)) s"
python3 "$BENCH_DIR/idle_conns.py" "$PORT" "$SERVER_PID" "$IDLE_CONNS" "$AFTER_CLOSE_SECONDS" >"$TMP/idle_conns.out"
PEAK_RSS_KIB="$(rss_kib VmHWM)"

BACKGROUND_AFTER="$(cpu_busy_pct 2)" # the server is idle again by now
(( BACKGROUND_AFTER <= 10 )) ||
  log "warning: the machine was ${BACKGROUND_AFTER}% busy after the benchmark with the server idle; results may be skewed"

# --- report ------------------------------------------------------------------
B_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
B_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
B_DIRTY=false
[[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]] && B_DIRTY=true
export B_DATE B_COMMIT B_DIRTY B_TMP="$TMP" B_KNOBS="$KNOBS"
export B_NPROC="$NPROC" B_INVOCATION="$INVOCATION" B_COST="$COST" B_ACCOUNTS="$ACCOUNTS" B_CREDITS="$CREDITS"
export B_SERVER_CMD="$SERVER_CMD" B_PROBE_DELAY_MS="$PROBE_DELAY_MS" B_NGINX_PATH="$NGINX_PATH"
export B_IDLE_KIB="$IDLE_RSS_KIB" B_LOADED_KIB="$LOADED_RSS_KIB" B_LOADED_PEAK_KIB="$LOADED_PEAK_KIB" B_PEAK_KIB="$PEAK_RSS_KIB"
export B_BACKGROUND_BEFORE="$BACKGROUND_BEFORE" B_BACKGROUND_AFTER="$BACKGROUND_AFTER" B_RAM="$B_RAM"
export B_OUT="$BENCH_DIR/results.json"
python3 "$BENCH_DIR/report.py"
if [[ -s "$TMP/phase_errors.txt" ]]; then
  log "error: some phases could not be measured:"
  cat "$TMP/phase_errors.txt" >&2
  exit 1
fi
