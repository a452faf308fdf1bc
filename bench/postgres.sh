#!/usr/bin/env bash
# The stores side by side: /me and verify with the server on a SQLite file
# and on PostgreSQL (a throwaway local cluster, default durability:
# fsync and synchronous_commit on), and verify through two nodes on one
# PostgreSQL against one node, all in one run. See bench/README.md.
# Usage: bench/postgres.sh   (writes bench/postgres-results.json)
#        BENCH_SECONDS=3 bench/postgres.sh   (short phases)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
cd "$ROOT"
SECONDS_EACH="${BENCH_SECONDS:-10}"
[[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] && (( SECONDS_EACH >= 1 )) || { echo "BENCH_SECONDS must be a whole number >= 1" >&2; exit 1; }
ACCOUNTS=50
CREDITS=1000000000

log() { printf '[bench-pg %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
for var in "${!KAGGLEINGEST_@}"; do unset "$var"; done

command -v wrk >/dev/null || die "wrk is required (apt-get install wrk)"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
[[ -x "$PG_BIN/initdb" ]] || die "PostgreSQL is required (apt-get install postgresql)"

log "building the release binary"
cargo build --release --quiet --bin kaggleingest
BIN="$ROOT/target/release/kaggleingest"

TMP="$(mktemp -d -t kaggleingest-bench-pg.XXXXXX)"
PIDS=()
as_postgres() { if (( EUID == 0 )); then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  [[ -f "$TMP/pg/data/postmaster.pid" ]] && as_postgres "$PG_BIN/pg_ctl" -D "$TMP/pg/data" -m fast -s stop || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- the cluster -------------------------------------------------------------
mkdir -p "$TMP/pg"
chmod 711 "$TMP" # postgres must reach its dir inside
(( EUID == 0 )) && chown postgres "$TMP/pg"
PG_PORT="$(free_port)"
log "initdb + pg_ctl start on 127.0.0.1:$PG_PORT ($PG_BIN)"
as_postgres "$PG_BIN/initdb" -U postgres --auth=trust -E UTF8 --locale=C -D "$TMP/pg/data" >/dev/null
as_postgres "$PG_BIN/pg_ctl" -D "$TMP/pg/data" -l "$TMP/pg/log" -w -s \
  -o "-p $PG_PORT -k $TMP/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start
"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE bench" postgres
PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/bench?sslmode=disable"

# start_server NAME DB: a server on DB; sets PORT_<NAME>.
start_server() {
  local name="$1" db="$2" port
  (cd "$TMP" && NO_COLOR=1 exec "$BIN" serve --bind 127.0.0.1:0 --db "$db" --bcrypt-cost 4 \
     --signup-rate-limit 0 --max-connections-per-ip 0 --log-level warn,kaggleingest::server=info) \
     2>"$TMP/$name.log" &
  PIDS+=($!)
  local pid=$!
  for _ in $(seq 300); do
    port="$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$TMP/$name.log" | head -n1 | sed 's/.*://')" || true
    [[ -n "$port" ]] && break
    kill -0 "$pid" 2>/dev/null || { cat "$TMP/$name.log" >&2; die "$name exited at startup"; }
    sleep 0.1
  done
  [[ -n "$port" ]] || die "$name printed no address"
  printf -v "PORT_$name" '%s' "$port"
}

# accounts NAME DB: ACCOUNTS accounts with CREDITS each; keys in $TMP/keys-NAME.txt.
accounts() {
  local name="$1" db="$2" port="PORT_$1" i key
  : >"$TMP/keys-$name.txt"
  for i in $(seq 1 "$ACCOUNTS"); do
    key="$(curl -sS --fail -H 'Content-Type: application/json' \
      -d "{\"email\":\"b$i-$name@example.com\",\"password\":\"benchpassword123\"}" \
      "http://127.0.0.1:${!port}/api/auth/signup" | grep -o 'ki_[A-Za-z0-9]*')" || die "signup failed on $name"
    echo "$key" >>"$TMP/keys-$name.txt"
    (cd "$TMP" && "$BIN" user credits "b$i-$name@example.com" "=$CREDITS" --db "$db" >/dev/null)
  done
}

# load PHASE KEYS CONNS THREADS URL: one wrk; its WRK_JSON line in $TMP/PHASE.json.
load() {
  local phase="$1" keys="$2" conns="$3" threads="$4" url="$5"
  wrk -t"$threads" -c"$conns" -d"${SECONDS_EACH}s" --timeout 10s --latency -s "$BENCH_DIR/me.lua" "$url" -- "$keys" \
    | sed -n 's/^WRK_JSON //p' >"$TMP/$phase.json"
  [[ -s "$TMP/$phase.json" ]] || die "wrk printed no result for $phase"
}

for store in sqlite postgres; do
  if [[ $store == sqlite ]]; then db="$TMP/bench.db"; else db="$PG_URL"; fi
  start_server "$store" "$db"
  accounts "$store" "$db"
  port="PORT_$store"; base="http://127.0.0.1:${!port}"
  log "($store) warm-up, then /me 64, verify 64, verify 8 for ${SECONDS_EACH}s each"
  wrk -t2 -c64 -d2s -s "$BENCH_DIR/me.lua" "$base/api/auth/me" -- "$TMP/keys-$store.txt" >/dev/null
  load "${store}_me_64" "$TMP/keys-$store.txt" 64 2 "$base/api/auth/me"
  load "${store}_verify_64" "$TMP/keys-$store.txt" 64 2 "$base/api/auth/verify"
  load "${store}_verify_8" "$TMP/keys-$store.txt" 8 2 "$base/api/auth/verify"
done

# Two nodes on the one database against one node, the same 64 connections
# split in two wrk runs at once (one per node, or both at the one node).
start_server node2 "$PG_URL"
log "(one node) verify, 2 x 32 connections at one node"
load one_node_a "$TMP/keys-postgres.txt" 32 1 "http://127.0.0.1:$PORT_postgres/api/auth/verify" &
a=$!
load one_node_b "$TMP/keys-postgres.txt" 32 1 "http://127.0.0.1:$PORT_postgres/api/auth/verify"
wait "$a"
log "(two nodes) verify, 32 connections at each node"
load two_nodes_a "$TMP/keys-postgres.txt" 32 1 "http://127.0.0.1:$PORT_postgres/api/auth/verify" &
a=$!
load two_nodes_b "$TMP/keys-postgres.txt" 32 1 "http://127.0.0.1:$PORT_node2/api/auth/verify"
wait "$a"
remaining="$("$PG_BIN/psql" -X -A -t -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "SELECT sum($CREDITS - credits) FROM accounts" bench)"

python3 - "$TMP" "$BENCH_DIR/postgres-results.json" "$SECONDS_EACH" "$remaining" "$(git rev-parse --short HEAD)" <<'PY'
import json, sys, datetime
tmp, out, secs, spent_pg, commit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
r = lambda p: json.load(open(f"{tmp}/{p}.json"))
phases = {p: r(p) for p in ["sqlite_me_64", "sqlite_verify_64", "sqlite_verify_8", "postgres_me_64",
                            "postgres_verify_64", "postgres_verify_8", "one_node_a", "one_node_b",
                            "two_nodes_a", "two_nodes_b"]}
bad = {p: v["non_200"] + v["errors_connect"] + v["errors_read"] + v["errors_timeout"] for p, v in phases.items()}
one = phases["one_node_a"]["rps"] + phases["one_node_b"]["rps"]
two = phases["two_nodes_a"]["rps"] + phases["two_nodes_b"]["rps"]
# Every 200 verify on PostgreSQL spent one credit: the database must agree.
acked_pg = sum(phases[p]["status"].get("200", 0) for p in
               ["postgres_verify_64", "postgres_verify_8", "one_node_a", "one_node_b", "two_nodes_a", "two_nodes_b"])
report = {"date": datetime.date.today().isoformat(), "commit": commit, "seconds_each": secs,
          "phases": phases, "failed_requests": bad,
          "one_node_verify_rps": one, "two_nodes_verify_rps": two,
          "two_nodes_over_one": two / one,
          "postgres_credits_spent": spent_pg, "postgres_verifies_acknowledged": acked_pg}
json.dump(report, open(out, "w"), indent=2)
ms = lambda us: f"{us / 1000:.2f} ms"
print(f"| load (wrk, {secs} s each) | SQLite | PostgreSQL |")
print("|---|---|---|")
for name, key in [("`/me`, 64 connections", "me_64"), ("verify, 64 connections", "verify_64"), ("verify, 8 connections", "verify_8")]:
    s, p = phases[f"sqlite_{key}"], phases[f"postgres_{key}"]
    print(f"| {name} | {s['rps']:,.0f} req/s, p99 {ms(s['p99_us'])} | {p['rps']:,.0f} req/s, p99 {ms(p['p99_us'])} |")
print()
print(f"PostgreSQL verify, 64 connections: one node {one:,.0f} req/s; two nodes on the one database {two:,.0f} req/s ({two / one:.2f}x)")
print(f"PostgreSQL: {acked_pg:,} verifies answered 200, {spent_pg:,} credits spent (at most the in-flight more)")
print("requests that failed:", {p: n for p, n in bad.items() if n} or "none")
PY
