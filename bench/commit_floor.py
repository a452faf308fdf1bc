"""The disk's floor under verify's latency: one durable SQLite commit at a time.

    python3 bench/commit_floor.py DB_PATH SECONDS

Opens a fresh database at DB_PATH with the server's pragmas (WAL,
synchronous=FULL, checkpoints off the commit path, as the server's
checkpointer thread does every 250 ms), then for SECONDS commits one
`UPDATE ... SET credits = credits - 1` per transaction, back to back, from one
thread, with no HTTP and no batching. Prints one JSON object: commits, p50,
p99 and max latency in microseconds. A spend through the server waits for at
least one such commit (its batch's), usually two (the batch in flight first),
so this bounds from below what verify's p50 and p99 can be on this disk.
"""
import json
import sqlite3
import sys
import time

path, seconds = sys.argv[1], float(sys.argv[2])
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("PRAGMA wal_autocheckpoint=0")
db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, credits INTEGER NOT NULL)")
db.executemany("INSERT INTO accounts VALUES (?, ?)", [(i, 10**9) for i in range(50)])
checkpoints = sqlite3.connect(path, isolation_level=None)

latencies = []
start = last_checkpoint = time.monotonic()
while time.monotonic() - start < seconds:
    began = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE accounts SET credits = credits - 1 WHERE id = ?", (len(latencies) % 50,))
    db.execute("COMMIT")
    latencies.append(time.perf_counter() - began)
    if time.monotonic() - last_checkpoint >= 0.25:
        checkpoints.execute("PRAGMA wal_checkpoint(PASSIVE)")
        last_checkpoint = time.monotonic()

latencies.sort()
at = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6)
print(json.dumps({"commits": len(latencies), "p50_us": at(0.5), "p99_us": at(0.99),
                  "max_us": round(latencies[-1] * 1e6)}))
